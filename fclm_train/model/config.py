"""Typed configuration of the FCLM model: architecture, switches for the paper's ablations, loss weights.

A default lives in exactly one place, the field, and its comment says where the value comes from:
"paper" (FCLM main text or supplement §S1.1 / Tables 8-11), "LISA", "Osprey", "DAM", "HF config"
(the released Qwen2.5-VL-*-Instruct ``config.json``), "SAM" (``build_sam_vit_h``) or "ours" when the paper
is silent and we chose. ``FCLMConfig.preset(name)`` returns ``tiny`` (CPU tests, seconds), ``3b`` or ``7b``.

No ``nn.Module`` receives these objects: :func:`fclm_train.model.build_fclm` turns them into keyword arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from fclm_train.config import deep_merge

#: Names of the trainable parameter groups that ``FCLMModel.parameter_groups`` can return.
GROUP_NAMES = ("vision_tower", "llm", "region_extractor", "mask_decoder")


@dataclass
class LLMConfig:
    """Qwen2.5-VL text + vision architecture (defaults: Qwen2.5-VL-3B-Instruct) and the token ids FCLM uses."""

    hidden_size: int = 2048  # HF config
    intermediate_size: int = 11008  # HF config
    num_hidden_layers: int = 36  # HF config
    num_attention_heads: int = 16  # HF config
    num_key_value_heads: int = 2  # HF config
    vocab_size: int = 151936  # HF config (rows beyond the tokenizer's 151,665 are padding)
    tie_word_embeddings: bool = True  # HF config: 3B ties lm_head to the input embeddings, 7B does not
    max_position_embeddings: int = 128000  # HF config
    rope_theta: float = 1_000_000.0  # HF config
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # HF config: t/h/w split of head_dim / 2
    rms_norm_eps: float = 1e-6  # HF config
    vision_depth: int = 32  # HF config
    vision_hidden_size: int = 1280  # HF config
    vision_intermediate_size: int = 3420  # HF config
    vision_num_heads: int = 16  # HF config
    vision_window_size: int = 112  # HF config (pixels)
    vision_fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)  # HF config
    patch_size: int = 14  # HF config
    spatial_merge_size: int = 2  # HF config: 2x2 patches -> one LLM image token
    temporal_patch_size: int = 2  # HF config
    tokens_per_second: int = 2  # HF config (videos only)
    bos_token_id: int = 151643  # HF config
    eos_token_id: int = 151645  # HF config (<|im_end|>)
    pad_token_id: int = 151643  # Qwen tokenizer pad (<|endoftext|>)
    image_token_id: int = 151655  # <|image_pad|>
    video_token_id: int = 151656  # <|video_pad|>
    vision_start_token_id: int = 151652  # <|vision_start|>
    vision_end_token_id: int = 151653  # <|vision_end|>
    #: FCLM tokens, added to the tokenizer in this order by ``add_fclm_tokens``; the Qwen2.5 tokenizer has
    #: 151,665 entries, so they land on 151665..151667. A tokenizer passed to ``build_fclm`` overrides these.
    mask_token_id: int = 151665
    pos_token_id: int = 151666
    seg_token_id: int = 151667
    attn_implementation: str = "sdpa"  # ours: "flash_attention_2" on GPU when flash-attn is installed
    gradient_checkpointing: bool = False  # ours: the trainer turns it on for long sequences


@dataclass
class SamConfig:
    """segment-anything architecture (defaults: SAM ViT-H, ``sam_vit_h_4b8939.pth``)."""

    image_size: int = 1024  # SAM: the encoder's native input (its pos_embed grid is image_size / patch_size)
    patch_size: int = 16  # SAM
    encoder_embed_dim: int = 1280  # SAM ViT-H
    encoder_depth: int = 32  # SAM ViT-H
    encoder_num_heads: int = 16  # SAM ViT-H
    encoder_mlp_ratio: float = 4.0  # SAM
    encoder_window_size: int = 14  # SAM
    encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)  # SAM ViT-H
    prompt_dim: int = 256  # paper §S1.1: "hidden unit size inside the prompt encoder is 256"
    mask_in_chans: int = 16  # SAM
    decoder_depth: int = 2  # SAM
    decoder_mlp_dim: int = 2048  # SAM
    decoder_num_heads: int = 8  # SAM
    iou_head_hidden_dim: int = 256  # SAM


@dataclass
class RegionExtractorConfig:
    """Hybrid region extractor (paper Fig. 3). Every component is switchable for Tables 8-10."""

    #: which visual-prompt tokens a ``<region>`` becomes (Table 8): "both" -> ``<mask><pos>``.
    tokens: Literal["both", "mask", "pos"] = "both"
    local_aggregation: bool = True  # Table 9; off -> a learned query replaces the mask-pooled SAM feature
    pixel_enhancement: bool = True  # Table 9
    semantic_guidance: bool = True  # Table 9
    guidance_attention: Literal["deformable", "cross"] = "deformable"  # Table 10: deformable is best
    num_points: int = 4  # Table 10: 4 sampling points around the region centre
    num_heads: int = 16  # ours: head width 128 for 3B (2048 / 16)
    #: where the pixel features come from. "crop": SAM encodes the region's crop (paper: "encode the cropped
    #: region with SAM"; one extra frozen SAM pass per region). "image": mask-pool the full-image SAM embedding
    #: (no extra pass; a cheaper variant the paper does not use).
    local_features: Literal["crop", "image"] = "crop"
    crop_size: int = 1024  # ours: SAM's native input, so crops need no pos-embed interpolation
    crop_expand: float = 1.0  # DAM focal crop: box widened by one box width / height on each side
    crop_min_size: int = 48  # DAM focal crop: boxes narrower than this (SAM-frame px) are widened first
    pos_mask_size: int = 112  # Osprey code: the mask is resized to 112x112 and flattened for <pos>
    pos_hidden_size: int = 1024  # ours (Osprey uses a 3-layer MLP to the LLM width)
    gate_init: float = 0.0  # DAM: residual gates start at 0 so the branches start as identity


@dataclass
class MaskDecoderConfig:
    """[SEG] hidden state -> projection -> SAM prompt encoder / mask decoder."""

    #: which LLM hidden state is the mask query. "seg": the [SEG] position itself (Sa2VA). "before_seg": the
    #: token that predicts [SEG] (LISA, UniPixel). Default "seg": that hidden state has read the [SEG] input
    #: row, it is an input-position token like <pos> (which the latent loss pairs it with), and with
    #: "[SEG] and [SEG]" answers the preceding token ("and") would have to carry both the next-token
    #: prediction and the mask query. Generation costs nothing extra: [SEG] is fed back for the next token.
    hidden_source: Literal["seg", "before_seg"] = "seg"
    max_objects_per_sample: int = 5  # paper §S1.1: up to five objects per sample in the mask loss
    object_seed: int = 0  # ours: seeds the per-batch subsampling together with ``FCLMInputs.seed``


@dataclass
class LossConfig:
    """L = ce * L_ce + L_seg + self_recon * L_self + latent * L_latent (paper Eqs. 3-5)."""

    ce_weight: float = 1.0  # LISA code
    bce_weight: float = 2.0  # LISA code; the paper says it "follows LISA"
    #: LISA code uses 0.5; a public summary of the FCLM paper states 1.0. We follow the code.
    dice_weight: float = 0.5
    dice_eps: float = 1.0  # ours: additive smoothing of the Dice ratio
    self_recon_weight: float = 1.0  # paper Eq. 4 (unweighted sum in the total)
    latent_weight: float = 1.0  # paper Eq. 5 (unweighted sum in the total)
    latent_kind: Literal["cosine", "mse", "kl"] = "cosine"  # paper Eq. 5; MSE / KL are its ablation
    #: the vector space of the latent loss. "llm": T_seg and T_pos in LLM width (Eq. 5 read literally).
    #: "prompt": both after the shared [SEG] projection, in SAM's 256-d prompt space.
    latent_space: Literal["llm", "prompt"] = "llm"
    #: T_pos for the latent loss. "extractor": the extractor's <pos> output; with the extractor frozen in stage
    #: 2 it is the fixed pseudo-label the paper describes ("unstable pseudo-labels" when it trains). In both
    #: stages the loss then trains the LLM through T_seg. "llm_hidden": the LLM's hidden state at <pos>.
    latent_pos_source: Literal["extractor", "llm_hidden"] = "extractor"
    latent_detach_pos: bool = True  # ours: T_pos is a target; gradient flows into T_seg only
    #: T_pos for self-reconstruction (Eq. 4, L_self = L_seg(F_dec(T_pos), M)), per stage (a single string in a
    #: recipe applies to every stage). Stage 1 "extractor": Eq. 4 read literally, the visual-prompt embedding
    #: decoded back into its mask trains the position branch (and projection + decoder) to encode the region.
    #: Stage 2 "llm_hidden" (ours; the paper freezes extractor and decoder there and tunes "the targeted
    #: modules"): the extractor's <pos> through the frozen projection and decoder would be a constant loss, so
    #: the LLM's hidden state at <pos> is decoded instead, which trains the LLM to carry a decodable region at
    #: the visual prompt, the same decoder reading both <pos> and [SEG]. Alternatives: "extractor" in stage 2
    #: together with ``stage_groups[2]`` containing "mask_decoder" (the decoder projection trains too; with the
    #: LLM alone it is skipped as constant), or "off" (the reading "stage 2 adds the latent loss" only).
    self_recon_source: dict[int, Literal["extractor", "llm_hidden", "off"]] = field(
        default_factory=lambda: {1: "extractor", 2: "llm_hidden"}
    )
    #: which extractor token plays T_pos in both consistency losses (paper: <pos>; <mask> is its ablation).
    consistency_token: Literal["pos", "mask"] = "pos"
    #: ours: a term whose gradient reaches no trainable parameter (e.g. stage 2 self-reconstruction from the
    #: frozen extractor) is not computed and reads 0 (listed in ``FCLMOutput.skipped``). Only while training:
    #: under ``torch.no_grad`` or with nothing trainable every term is computed (evaluation losses).
    skip_constant_terms: bool = True

    def __post_init__(self) -> None:
        source = self.self_recon_source
        if isinstance(source, str):  # one source for every stage
            source = {1: source, 2: source}
        self.self_recon_source = {int(stage): value for stage, value in source.items()}  # JSON keys are strings
        bad = {v for v in self.self_recon_source.values()} - {"extractor", "llm_hidden", "off"}
        if bad:
            raise ValueError(f"loss.self_recon_source: unknown {sorted(bad)}; choose extractor, llm_hidden or off")


def _default_stage_groups() -> dict[int, tuple[str, ...]]:
    # paper: stage 1 trains all modules (the SAM image encoder stays frozen); stage 2 tunes the LLM only.
    return {1: ("vision_tower", "llm", "region_extractor", "mask_decoder"), 2: ("llm",)}


@dataclass
class FCLMConfig:
    """Everything ``build_fclm`` needs. Use :meth:`preset` rather than the bare defaults."""

    name: str = "3b"
    llm: LLMConfig = field(default_factory=LLMConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    region_extractor: RegionExtractorConfig = field(default_factory=RegionExtractorConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: paper §S1.1: image input and decoder segmentation both at a long side of 1024. This is the side of the
    #: square, zero-padded "SAM frame" in which ``FCLMInputs`` carries images and masks.
    image_long_side: int = 1024
    stage_groups: dict[int, tuple[str, ...]] = field(default_factory=_default_stage_groups)
    #: ours: run the extractor / mask decoder on a dummy input (loss x 0) when a batch has no regions / masks,
    #: so every rank executes the same graph under DDP / FSDP (Sa2VA's remedy). Off for single-process runs.
    uniform_graph: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject combinations that cannot be built (raise early, not in the middle of a forward)."""
        rx, loss = self.region_extractor, self.loss
        if rx.tokens != "pos" and not (rx.local_aggregation or rx.pixel_enhancement or rx.semantic_guidance):
            raise ValueError("region_extractor: the <mask> token needs at least one semantic component")
        enabled = {"both": ("mask", "pos"), "mask": ("mask",), "pos": ("pos",)}[rx.tokens]
        if loss.consistency_token not in enabled:
            raise ValueError(f"loss.consistency_token={loss.consistency_token!r} but tokens={rx.tokens!r}")
        if rx.num_points < 1 or self.llm.hidden_size % rx.num_heads:
            raise ValueError("region_extractor: num_points >= 1 and num_heads dividing the LLM width")
        if self.image_long_side % self.sam.patch_size or rx.crop_size % self.sam.patch_size:
            raise ValueError("image_long_side and crop_size must be multiples of the SAM patch size")
        if sum(self.llm.mrope_section) * 2 != self.llm.hidden_size // self.llm.num_attention_heads:
            raise ValueError("llm.mrope_section must sum to head_dim / 2")
        unknown = {g for groups in self.stage_groups.values() for g in groups} - set(GROUP_NAMES)
        if unknown:
            raise ValueError(f"stage_groups name unknown groups {sorted(unknown)}; known: {GROUP_NAMES}")

    @property
    def region_token_text(self) -> str:
        """What the collate writes for each ``<region>`` placeholder."""
        return {"both": "<mask><pos>", "mask": "<mask>", "pos": "<pos>"}[self.region_extractor.tokens]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> FCLMConfig:
        """``tiny`` / ``3b`` / ``7b``; ``overrides`` are nested dicts merged over the preset."""
        presets = {"tiny": _tiny, "3b": _qwen_3b, "7b": _qwen_7b}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        body = presets[name]().to_dict()
        return cls.from_dict(deep_merge(body, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FCLMConfig:
        """Inverse of :meth:`to_dict` (YAML recipes); unknown keys raise ``TypeError``."""
        nested = {f.name: f.type for f in dataclasses.fields(cls)}
        parts = {"llm": LLMConfig, "sam": SamConfig, "region_extractor": RegionExtractorConfig,
                 "mask_decoder": MaskDecoderConfig, "loss": LossConfig}  # fmt: skip
        kwargs: dict[str, Any] = {}
        for key, value in body.items():
            if key not in nested:
                raise TypeError(f"FCLMConfig has no field {key!r}")
            if key in parts:
                kwargs[key] = _from_flat(parts[key], value)
            elif key == "stage_groups":
                kwargs[key] = {int(stage): tuple(groups) for stage, groups in value.items()}
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _from_flat(kind: type, body: dict[str, Any]) -> Any:
    tuples = {f.name for f in dataclasses.fields(kind) if str(f.type).startswith("tuple")}
    return kind(**{k: tuple(v) if k in tuples else v for k, v in body.items()})


def _qwen_3b() -> FCLMConfig:
    return FCLMConfig(name="3b")


def _qwen_7b() -> FCLMConfig:
    llm = LLMConfig(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)  # fmt: skip
    return FCLMConfig(name="7b", llm=llm, region_extractor=RegionExtractorConfig(num_heads=28))


def _tiny() -> FCLMConfig:
    """Real architectures at toy widths; token ids match ``testing.build_tiny_tokenizer``."""
    llm = LLMConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=263, tie_word_embeddings=True, max_position_embeddings=4096, mrope_section=(2, 3, 3),
        vision_depth=2, vision_hidden_size=32, vision_intermediate_size=64, vision_num_heads=2,
        vision_window_size=56, vision_fullatt_block_indexes=(1,),
        bos_token_id=256, eos_token_id=258, pad_token_id=256, image_token_id=261, video_token_id=262,
        vision_start_token_id=259, vision_end_token_id=260, mask_token_id=263, pos_token_id=264, seg_token_id=265,
    )  # fmt: skip
    sam = SamConfig(
        image_size=64, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_mlp_ratio=2.0,
        encoder_window_size=2, encoder_global_attn_indexes=(1,), prompt_dim=32, decoder_mlp_dim=64,
        decoder_num_heads=2, iou_head_hidden_dim=32,
    )  # fmt: skip
    extractor = RegionExtractorConfig(num_heads=4, crop_size=64, pos_mask_size=16, pos_hidden_size=32)
    return FCLMConfig(name="tiny", llm=llm, sam=sam, region_extractor=extractor, image_long_side=64)
