"""Typed configuration of a training run (the model's own config is ``fclm_train.model.FCLMConfig``).

A default lives in one place, the field; its comment says where it comes from: "paper" (FCLM §S1.1),
"UniPixel" / "Osprey" / "LISA" (the peers' released scripts) or "ours". The two stage-dependent defaults
(global batch, learning rate) live in :data:`STAGE_DEFAULTS` and fill fields left at ``None``.

A train recipe (``recipes/train/*.yaml``) is this dataclass as nested YAML; ``fclm-train`` options override it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass(frozen=True)
class StageDefaults:
    global_batch_size: int  #: samples per optimizer step over all ranks
    lr: float


#: paper §S1.1: stage 1 global batch 32 at lr 2e-5 (all modules); stage 2 global batch 16 at lr 1e-5 (the LLM).
STAGE_DEFAULTS = {1: StageDefaults(global_batch_size=32, lr=2e-5), 2: StageDefaults(global_batch_size=16, lr=1e-5)}


@dataclass
class ShardSetConfig:
    """One weighted entry of ``data.shards``: a brace pattern or a build directory."""

    pattern: str
    weight: float = 1.0
    name: str | None = None


@dataclass
class DataConfig:
    shards: list[ShardSetConfig] = field(default_factory=list)
    #: samples per rank per forward. paper §S1.1 stage 2: "per-GPU batch size 2", each sample giving both the
    #: DLC and the DL-RES row, i.e. 4 rows; we use 2 in stage 1 as well (ours; the paper gives only the global 32).
    micro_batch_size: int = 2
    #: "sample": batch sizes count samples, a paired sample once (the paper's reading); "row": they count rows.
    batch_unit: Literal["sample", "row"] = "sample"
    num_workers: int = 2  #: loader worker processes per rank (ours)
    shuffle_buffer: int = 1000  #: raw samples per worker (ours; webdataset examples use 1000-5000)
    prefetch_factor: int = 2  #: batches each worker prepares ahead (torch default)
    max_length: int = 4096  #: paper §S1.1: input sequence length; longer samples are skipped and counted
    system_prompt: str | None = "You are a helpful assistant."  #: Qwen2.5-VL chat template default
    draft: bool = True  #: reduced-size JPEG decoding for originals >= 2x the long side (ours)
    #: "worker": loader workers decode JPEGs (PIL, with ``draft``); "device": the training step does (nvJPEG on CUDA)
    jpeg_decode: Literal["worker", "device"] = "worker"


@dataclass
class OptimConfig:
    lr: float | None = None  #: None -> STAGE_DEFAULTS (paper)
    #: UniPixel / Osprey (HF Trainer default) and LISA use 0; paper silent. Biases, norms and embeddings never decay.
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  #: AdamW default (HF Trainer; UniPixel, Osprey)
    eps: float = 1e-8
    warmup_ratio: float = 0.03  #: UniPixel stage 3 and Osprey: cosine schedule with 3% warmup
    min_lr_ratio: float = 0.0  #: cosine decays to lr * min_lr_ratio (HF cosine: 0)
    grad_clip: float = 1.0  #: LISA, Sa2VA


@dataclass
class TrainConfig:
    stage: int = 1  #: paper: 1 trains all modules, 2 the LLM only (``FCLMModel.set_stage``)
    model: Literal["tiny", "3b", "7b"] = "3b"
    llm_path: str | None = None  #: local Qwen2.5-VL-*-Instruct directory; None -> random init
    sam_path: str | None = None  #: sam_vit_h_4b8939.pth; None -> random init
    #: start from the weights of a checkpoint (a step or run directory), e.g. stage 2 from stage 1's result;
    #: unlike ``--resume`` the optimizer, schedule and data order start afresh
    init_from: str | None = None
    out_dir: str = "runs/fclm"
    global_batch_size: int | None = None  #: None -> STAGE_DEFAULTS (paper); must divide into ranks x micro batch
    epochs: float = 1.0  #: UniPixel / Sa2VA train one epoch; the paper does not say
    max_steps: int | None = None  #: overrides epochs
    seed: int = 0
    precision: Literal["auto", "bf16", "fp32"] = "auto"  #: auto: bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool = True  #: UniPixel, Osprey, LISA all train with it
    distributed: Literal["ddp", "fsdp"] = "ddp"  #: under torchrun; FSDP2 shards decoder and ViT blocks
    log_every: int = 1  #: steps between console / metrics lines
    save_every: int = 500  #: steps between checkpoints (and one at the end)
    keep_last: int | None = 3  #: checkpoints kept (None: all)
    save_dtype: Literal["float32", "bfloat16"] = "float32"  #: float32 keeps resume exact
    tensorboard: bool = True  #: if torch.utils.tensorboard imports
    model_overrides: dict[str, Any] = field(default_factory=dict)  #: nested FCLMConfig overrides
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.stage not in STAGE_DEFAULTS:
            raise ValueError(f"stage must be one of {sorted(STAGE_DEFAULTS)}, got {self.stage}")
        defaults = STAGE_DEFAULTS[self.stage]
        if self.global_batch_size is None:
            self.global_batch_size = defaults.global_batch_size
        if self.optim.lr is None:
            self.optim.lr = defaults.lr

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step so that ranks x micro batch x accumulation = global batch."""
        per_step = self.data.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(f"global batch {self.global_batch_size} is not a multiple of micro batch "
                             f"{self.data.micro_batch_size} x {world_size} ranks")  # fmt: skip
        return self.global_batch_size // per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> TrainConfig:
        """Nested dict (YAML recipe) -> config; unknown keys raise ``TypeError`` naming them."""
        body = dict(body)
        optim = OptimConfig(**_tuples(OptimConfig, body.pop("optim", {}) or {}))
        data_body = dict(body.pop("data", {}) or {})
        shards = [_shard_set(s) for s in data_body.pop("shards", []) or []]
        _check_keys(cls, body)
        return cls(**body, optim=optim, data=DataConfig(shards=shards, **data_body))


def _shard_set(entry: Any) -> ShardSetConfig:
    """``"pattern:2"`` (a ``--shards`` value) or ``{pattern, weight, name}`` (a recipe entry)."""
    from .data.shards import split_weight

    if isinstance(entry, str):
        pattern, weight = split_weight(entry)
        return ShardSetConfig(pattern=pattern, weight=weight)
    return ShardSetConfig(**entry)


def _tuples(kind: type, body: dict[str, Any]) -> dict[str, Any]:
    tuples = {f.name for f in dataclasses.fields(kind) if str(f.type).startswith("tuple")}
    return {k: tuple(v) if k in tuples else v for k, v in body.items()}


def _check_keys(kind: type, body: dict[str, Any]) -> None:
    unknown = set(body) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        raise TypeError(f"{kind.__name__} has no field(s) {sorted(unknown)}")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A train recipe YAML as a nested dict. Relative paths in it are relative to the working directory."""
    body = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(body, dict):
        raise ValueError(f"{path}: a train recipe is a mapping of TrainConfig fields")
    return body
