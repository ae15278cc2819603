"""``Predictor``: a trained FCLM as a few calls -- segment, describe, classify, grounded caption, overlays.

    predictor = Predictor.from_checkpoint("runs/stage2")           # a step or run directory
    masks = predictor.segment("photo.jpg", "the dog on the left")   # [(H, W) bool] one per [SEG]
    text = predictor.describe("photo.jpg", [40, 30, 200, 180])      # region: mask | box [x0, y0, x1, y1] | point (x, y)
    label = predictor.classify("photo.jpg", (120, 95))
    caption, phrases, masks = predictor.grounded_caption("photo.jpg")
    predictor.render("photo.jpg", predictor.predict(...), "overlay.png")

Every call builds its inputs with the trainer's own encoding (:mod:`.requests`), asks a training template
(:mod:`.prompts`), generates with a KV cache (:mod:`.generate`) and returns masks at the original image size.
:meth:`Predictor.predict_batch` answers several :class:`~.requests.Query` objects in one padded batch (the
evaluation driver's path). Nothing is kept between calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fclm_data.masks import encode_mask
from fclm_data.render import render_sample
from fclm_train.config import DataConfig
from fclm_train.data.encode import EncoderConfig
from fclm_train.eval.gcg import parse_gcg_output
from fclm_train.model import FCLMModel

from .generate import GenerationConfig, decode_masks, forced_seg_hidden, generate
from .prompts import PromptTemplates
from .requests import (
    ImageInput,
    LoadedImage,
    Query,
    RegionInput,
    Request,
    RequestBuilder,
    collate_requests,
    image_bytes,
    load_image,
    region_from_input,
)  # fmt: skip


@dataclass
class Prediction:
    """The answer to one :class:`~.requests.Query`."""

    key: str
    prompt: str  #: the user turn asked (``<image>``, ``<region>`` placeholders)
    text: str  #: the answer (generated or teacher-forced), ``[SEG]`` kept, the stop token dropped
    masks: list[np.ndarray] = field(default_factory=list)  #: (H, W) bool per ``[SEG]``, in order
    region_masks: list[np.ndarray] = field(default_factory=list)  #: the ``<region>`` prompts, (H, W) bool
    stopped: bool = True  #: False when max_new_tokens cut the answer


class GroundedCaption(NamedTuple):
    text: str  #: the caption without tags (GLaMM's cleaning)
    phrases: list[str]  #: the ``<p>`` phrases; phrase i goes with mask i
    masks: list[np.ndarray]  #: (H, W) bool per [SEG]


def encoder_config_for(model: FCLMModel, system_prompt: str | None = DataConfig.system_prompt,
                       draft: bool = DataConfig.draft) -> EncoderConfig:  # fmt: skip
    """The :class:`EncoderConfig` the trainer used for ``model`` (sizes from the model, text from the run)."""
    vision = model.qwen.config.vision_config
    rx = model.region_extractor
    region_text = "<mask>" * rx.use_mask_token + "<pos>" * rx.use_pos_token
    return EncoderConfig(side=model.frame_side, patch_size=vision.patch_size, merge_size=vision.spatial_merge_size,
                         temporal_patch_size=vision.temporal_patch_size, region_text=region_text,
                         max_length=1 << 30, system_prompt=system_prompt, draft=draft)  # fmt: skip


class Predictor:
    """FCLM inference on single images (or batches of queries)."""

    def __init__(
        self, model: FCLMModel, tokenizer, encoder_config: EncoderConfig | None = None,
        generation: GenerationConfig | None = None, templates: PromptTemplates | None = None,
    ) -> None:  # fmt: skip
        self.model = model.eval()
        self.model.uniform_graph = False  # the DDP dummy branches are training-only
        self.tokenizer = tokenizer
        self.config = encoder_config or encoder_config_for(model)
        self.generation = generation or GenerationConfig()
        self.templates = templates or PromptTemplates()
        self.builder = RequestBuilder(tokenizer, self.config)
        self.stop_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id
        self.image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **kwargs
    ) -> Predictor:  # fmt: skip
        """A checkpoint step or run directory; the system prompt and JPEG decoding follow its training run."""
        from fclm_train.checkpoint import load_model, resolve_checkpoint

        step_dir = resolve_checkpoint(path)
        model, tokenizer = load_model(step_dir, device=device, dtype=dtype)
        data = json.loads((step_dir / "train_config.json").read_text()).get("data", {})
        config = encoder_config_for(model, data.get("system_prompt", DataConfig.system_prompt),
                                    data.get("draft", DataConfig.draft))  # fmt: skip
        return cls(model, tokenizer, encoder_config=kwargs.pop("encoder_config", config), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------------------------------- tasks
    def segment(self, image: ImageInput, text: str, query: str = "res") -> list[np.ndarray]:
        """(H, W) bool masks, one per generated [SEG]. ``query``: res (an expression), dlres (a detailed
        caption, Table 12's DL-RES question) or raw (``text`` is the whole instruction, e.g. ReasonSeg's)."""
        return self.predict(image, self.templates.segment(text, query)).masks

    def describe(self, image: ImageInput, region: RegionInput) -> str:
        """A detailed localized caption of ``region`` (mask, box [x0, y0, x1, y1] or point (x, y))."""
        return self.predict(image, self.templates.describe(), [region]).text

    def classify(self, image: ImageInput, region: RegionInput) -> str:
        """The category name of ``region`` (referring object classification)."""
        return self.predict(image, self.templates.classify(), [region]).text.strip()

    def grounded_caption(self, image: ImageInput) -> GroundedCaption:
        """A caption with its grounded phrases and one mask per phrase (GLaMM's ``<p> .. </p> [SEG]`` output)."""
        prediction = self.predict(image, self.templates.grounded_caption())
        caption, phrases = parse_gcg_output(prediction.text)
        return GroundedCaption(caption, phrases, prediction.masks)

    # ------------------------------------------------------------------------------------------- core
    def query(self, image: ImageInput | LoadedImage, prompt: str, regions: Sequence[RegionInput] = (),
              answer: str | None = None) -> Query:  # fmt: skip
        """A :class:`Query` from a user turn and user regions (all of one visual-prompt kind)."""
        loaded = image if isinstance(image, LoadedImage) else load_image(image, self.config.side, self.config.draft)
        height, width = loaded.original_size
        converted = [region_from_input(region, height, width) for region in regions]
        kinds = {kind for _, kind in converted}
        if len(kinds) > 1:
            raise ValueError(f"regions of one query share one visual prompt kind, got {sorted(kinds)}")
        return Query(loaded, [{"role": "user", "content": prompt}], [r for r, _ in converted],
                     list(range(len(converted))), kinds.pop() if kinds else "mask", answer=answer)  # fmt: skip

    def predict(self, image: ImageInput | LoadedImage, prompt: str, regions: Sequence[RegionInput] = (),
                answer: str | None = None) -> Prediction:  # fmt: skip
        """Answer ``prompt`` (with ``<image>`` and one ``<region>`` per region) about ``image``."""
        return self.predict_batch([self.query(image, prompt, regions, answer)])[0]

    @torch.no_grad()
    def predict_batch(self, queries: Sequence[Query]) -> list[Prediction]:
        """Answer queries in one left-padded batch; all generate, or all are teacher-forced (``answer``)."""
        forced = {q.answer is not None for q in queries}
        if len(forced) != 1:
            raise ValueError("a batch is either generated or teacher-forced, not both")
        requests = [self.builder.build(q) for q in queries]
        inputs = collate_requests(requests, self.pad_id, self.image_id, self.builder.seg_token_id,
                                  self.config).prepare(self.device)  # fmt: skip
        if forced.pop():
            texts, queries_per_row, stopped = self._forced(queries, inputs)
        else:
            texts, queries_per_row, stopped = self._generated(inputs)
        rows = [b for b, qs in enumerate(queries_per_row) for _ in qs]
        masks = decode_masks(self.model, inputs, [h for qs in queries_per_row for h in qs], rows)
        predictions = []
        for b, (query, request) in enumerate(zip(queries, requests)):
            own = [m for m, r in zip(masks, rows) if r == b]
            predictions.append(Prediction(query.key, query.turns[-1]["content"], texts[b], own,
                                          self._original_regions(request, inputs, b), stopped[b]))  # fmt: skip
        return predictions

    def _generated(self, inputs) -> tuple[list[str], list[list[torch.Tensor]], list[bool]]:
        rows = generate(self.model, inputs, self.generation, self.stop_id, self.pad_id)
        texts = [self.tokenizer.decode(row.token_ids) for row in rows]
        return texts, [row.seg_hidden for row in rows], [row.stopped for row in rows]

    def _forced(self, queries, inputs) -> tuple[list[str], list[list[torch.Tensor]], list[bool]]:
        hidden = forced_seg_hidden(self.model, inputs)  # (K, D) row-major
        per_row = [[] for _ in queries]
        for k, b in enumerate(inputs.seg_batch_index.tolist()):
            per_row[b].append(hidden[k])
        return [q.answer for q in queries], per_row, [True] * len(queries)

    def _original_regions(self, request: Request, inputs, row: int) -> list[np.ndarray]:
        """The region prompts as the model saw them, mapped back to the original image size (overlays)."""
        (h, w), size = request.sam_size, request.original_size
        out = []
        for mask in inputs.region_masks[inputs.region_batch_index == row].cpu():
            inside = mask[:h, :w].float()[None, None]
            out.append((F.interpolate(inside, size=size, mode="nearest-exact")[0, 0] > 0.5).numpy())
        return out

    # ------------------------------------------------------------------------------------------- overlays
    def render(self, image: ImageInput | LoadedImage, prediction: Prediction, path: str | Path) -> Path:
        """A PNG: the image with the region prompts and predicted masks outlined, the dialogue beside it."""
        loaded = image if isinstance(image, LoadedImage) else load_image(image, self.config.side, self.config.draft)
        sample = overlay_sample(prediction, loaded.original_size)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        render_sample(image_bytes(loaded), sample).save(path)
        return path


def overlay_sample(prediction: Prediction, size: tuple[int, int]) -> dict:
    """A schema-shaped dict that ``fclm_data.render`` draws: region prompts first, then the [SEG] masks."""
    height, width = size
    masks = prediction.region_masks + prediction.masks
    labels = [f"<region> {i}" for i in range(len(prediction.region_masks))]
    labels += [f"[SEG] {k}" for k in range(len(prediction.masks))]
    regions = [{"mask": encode_mask(m), "bbox": mask_bbox(m), "label": label} for m, label in zip(masks, labels)]
    n_in = len(prediction.region_masks)
    return {
        "key": prediction.key, "source": "fclm-infer", "task": "prediction",
        "image": {"file_name": "", "width": width, "height": height},
        "regions": regions,
        "conversations": [{"role": "user", "content": prediction.prompt},
                          {"role": "assistant", "content": prediction.text}],
        "region_inputs": list(range(n_in)), "seg_targets": list(range(n_in, len(masks))), "pair": None,
    }  # fmt: skip


def mask_bbox(mask: np.ndarray) -> list[float]:
    """[x0, y0, x1, y1] of a mask (x1 / y1 exclusive); an empty mask gets a zero box at the origin."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
