"""Typed configuration of a training run (the model's own config is ``fclm_train.model.FCLMConfig``).

A default lives in one place, the field; its ``#:`` comment is the documentation ``fclm-train --help`` shows and
says where the value comes from: "paper" (FCLM §S1.1), "UniPixel" / "Osprey" / "LISA" (the peers' released
scripts) or "ours". The two stage-dependent defaults (global batch, learning rate) live in :data:`STAGE_DEFAULTS`
and fill fields left at ``None``.

A train recipe (``recipes/train/*.yaml``) is this dataclass as nested YAML; ``fclm-train`` options and
``--set section.field=value`` override it. Every field is type-checked when the config is built, and a wrong value
raises :class:`ConfigError` with one line naming the field (``optim.lr: expected a number, got 'fast'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A user's configuration mistake; the message is one line that names the field and the reason."""


class ResumeError(ConfigError):
    """A resume that cannot continue the run as asked (one line naming what changed)."""


#: exit status of a run that stopped on SIGTERM / SIGUSR1 after saving (EX_TEMPFAIL: "try again": resume it)
PREEMPTED_EXIT_CODE = 75


@dataclass(frozen=True)
class StageDefaults:
    global_batch_size: int  #: samples per optimizer step over all ranks
    lr: float


#: paper §S1.1: stage 1 global batch 32 at lr 2e-5 (all modules); stage 2 global batch 16 at lr 1e-5 (the LLM).
STAGE_DEFAULTS = {1: StageDefaults(global_batch_size=32, lr=2e-5), 2: StageDefaults(global_batch_size=16, lr=1e-5)}
#: presets whose LLM is Qwen2.5-VL-3B / 7B: without ``llm_path`` they train from random weights
LARGE_PRESETS = ("3b", "7b")
REPORTERS = ("tensorboard", "wandb", "none")


class _Checked:
    """Type-checks (and int -> float coerces) every field after ``__init__``; nested sections check themselves."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                setattr(self, f.name, _coerce(self._path(f.name), hints[f.name], value))
        self.validate()

    def _path(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def validate(self) -> None:
        """Range checks beyond the type (subclasses)."""

    def _positive(self, *names: str, allow_zero: bool = False, allow_none: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value is None and allow_none:
                continue
            if value is None or value < 0 or (value == 0 and not allow_zero):
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{self._path(name)}: must be {bound}, got {value!r}")


@dataclass
class ShardSetConfig:
    """One weighted entry of ``data.shards``: a brace pattern or a build directory."""

    pattern: str
    weight: float = 1.0
    name: str | None = None


@dataclass
class DataConfig(_Checked):
    section: ClassVar[str] = "data"

    #: shard sets: brace pattern or build directory, optional ':WEIGHT'; repeat to mix sets
    shards: list[ShardSetConfig] = field(default_factory=list)
    #: samples per rank per forward. paper §S1.1 stage 2: "per-GPU batch size 2", each sample giving both the
    #: DLC and the DL-RES row, i.e. 4 rows; we use 2 in stage 1 as well (ours; the paper gives only the global 32)
    micro_batch_size: int = 2
    #: "sample": batch sizes count samples, a paired sample once (the paper's reading); "row": they count rows
    batch_unit: Literal["sample", "row"] = "sample"
    num_workers: int = 2  #: loader worker processes per rank (ours)
    shuffle_buffer: int = 1000  #: raw samples per worker (ours; webdataset examples use 1000-5000)
    prefetch_factor: int = 2  #: batches each worker prepares ahead (torch default)
    max_length: int = 4096  #: paper §S1.1: input sequence length; longer samples are skipped and counted
    system_prompt: str | None = "You are a helpful assistant."  #: Qwen2.5-VL chat template default
    draft: bool = True  #: reduced-size JPEG decoding for originals >= 2x the long side (ours)
    #: stop the run when more than this fraction of the samples read is lost or skipped (unreadable or truncated
    #: shards, shards short of their manifest, undecodable / over-long samples), judged once 1 / fraction
    #: samples were seen and at the end (ours: 1%; 1.0 never stops). Counts by reason are in metrics.jsonl.
    max_skip_fraction: float = 0.01
    #: "worker": loader workers decode JPEGs (PIL, with ``draft``); "device": the training step does (nvJPEG on CUDA)
    jpeg_decode: Literal["worker", "device"] = "worker"
    #: MVP-LM shards (issue 15): names per word list after the loader pads it with absent categories. MVP-LM §3
    #: ("Randomness in Training Pairs") balances positives and negatives "within VLLM input sequence length
    #: constraints" and gives no number; 80 (COCO's category count) is ours. A list with more positives keeps them all
    mvplm_word_budget: int = 80

    def validate(self) -> None:
        self._positive("micro_batch_size", "prefetch_factor", "max_length", "mvplm_word_budget")
        self._positive("num_workers", "shuffle_buffer", allow_zero=True)


@dataclass
class OptimConfig(_Checked):
    section: ClassVar[str] = "optim"

    lr: float | None = None  #: peak learning rate; None: the paper's per stage (2e-5 / 1e-5)
    #: AdamW weight decay; UniPixel / Osprey (HF Trainer default) and LISA use 0, paper silent. Biases, norms and
    #: embeddings never decay
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  #: AdamW default (HF Trainer; UniPixel, Osprey)
    eps: float = 1e-8  #: AdamW epsilon
    warmup_ratio: float = 0.03  #: linear warmup over this fraction of the steps, then cosine (UniPixel, Osprey)
    min_lr_ratio: float = 0.0  #: the cosine decays to lr x min_lr_ratio (HF cosine: 0)
    grad_clip: float = 1.0  #: gradient-norm clipping (LISA, Sa2VA)

    def validate(self) -> None:
        self._positive("lr", allow_none=True)
        self._positive("weight_decay", "eps", allow_zero=True)
        self._positive("grad_clip")
        for name in ("warmup_ratio", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"optim.{name}: must be in [0, 1], got {getattr(self, name)!r}")


@dataclass
class ValConfig(_Checked):
    section: ClassVar[str] = "val"

    #: held-out shard sets evaluated during training (LM / mask losses; cIoU / gIoU where samples have [SEG])
    shards: list[ShardSetConfig] = field(default_factory=list)
    every: int = 0  #: optimizer steps between validations (0: only at the end when val shards are given)
    #: size of the fixed held-out set: a seeded selection of this many val samples, the same at every evaluation
    #: (ours: keeps a pass short)
    max_samples: int = 64
    micro_batch_size: int = 2  #: samples per forward during validation

    def validate(self) -> None:
        self._positive("every", allow_zero=True)
        self._positive("max_samples", "micro_batch_size")


@dataclass
class TrainConfig(_Checked):
    stage: int = 1  #: 1 trains all modules (paper lr 2e-5, global batch 32); 2 the LLM only (lr 1e-5, batch 16)
    model: Literal["tiny", "3b", "7b"] = "3b"  #: model preset (tiny: CPU tests and the quickstart)
    llm_path: str | None = None  #: local Qwen2.5-VL-*-Instruct directory (weights + tokenizer); None: random init
    sam_path: str | None = None  #: SAM checkpoint (sam_vit_h_4b8939.pth); None: random init
    #: start from the weights of a checkpoint (a step or run directory), e.g. stage 2 from stage 1's result;
    #: unlike resume the optimizer, schedule and data order start afresh
    init_from: str | None = None
    out_dir: str = "runs/fclm"  #: checkpoints, metrics.jsonl, tensorboard/, summary.json
    #: samples per optimizer step over all ranks; None: the paper's per stage (32 / 16); must be a multiple of
    #: ranks x micro batch
    global_batch_size: int | None = None
    epochs: float = 1.0  #: passes over the shard sets' samples (UniPixel / Sa2VA train one epoch; paper silent)
    max_steps: int | None = None  #: optimizer steps; overrides epochs
    seed: int = 0  #: seeds init, shard order, mixing, shuffling
    precision: Literal["auto", "bf16", "fp32"] = "auto"  #: auto: bf16 autocast on CUDA, fp32 on CPU
    gradient_checkpointing: bool = True  #: activation checkpointing in the LLM (UniPixel, Osprey, LISA)
    distributed: Literal["ddp", "fsdp"] = "ddp"  #: under torchrun; fsdp: FSDP2 fully_shard per block
    log_every: int = 1  #: steps between console / metrics lines
    save_every: int = 500  #: steps between checkpoints (one is always saved at the end and on preemption)
    keep_last: int | None = 3  #: checkpoints kept (None or 0: all)
    save_dtype: Literal["float32", "bfloat16"] = "float32"  #: float32 keeps resume exact
    #: where metrics go besides metrics.jsonl: comma list of tensorboard, wandb, none (wandb honours WANDB_MODE)
    report_to: str = "tensorboard"
    wandb_project: str = "fclm"  #: Weights & Biases project (with report_to wandb)
    #: nested FCLMConfig overrides, e.g. --set model_overrides.loss.dice_weight=1.0
    model_overrides: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)

    def validate(self) -> None:
        if self.stage not in STAGE_DEFAULTS:
            raise ConfigError(f"stage: must be one of {sorted(STAGE_DEFAULTS)}, got {self.stage!r}")
        defaults = STAGE_DEFAULTS[self.stage]
        if self.global_batch_size is None:
            self.global_batch_size = defaults.global_batch_size
        if self.optim.lr is None:
            self.optim.lr = defaults.lr
        if self.keep_last == 0:
            self.keep_last = None
        self._positive("global_batch_size", "epochs", "log_every", "save_every")
        self._positive("max_steps", "keep_last", allow_none=True)
        unknown = [r for r in self.reporters if r not in REPORTERS]
        if unknown:
            raise ConfigError(f"report_to: unknown reporter {unknown[0]!r}; choose from {', '.join(REPORTERS)}")

    @property
    def reporters(self) -> list[str]:
        """``report_to`` as a list, without ``none``."""
        return [r for r in (p.strip() for p in self.report_to.split(",")) if r and r != "none"]

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step so that ranks x micro batch x accumulation = global batch."""
        per_step = self.data.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size: {self.global_batch_size} is not a multiple of micro batch "
                f"{self.data.micro_batch_size} x {world_size} rank(s) = {per_step}"
            )
        return self.global_batch_size // per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as a recipe (feed it back with ``--recipe``)."""
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> TrainConfig:
        """Nested dict (YAML recipe, saved ``train_config.json``) -> config; unknown or mistyped keys raise
        :class:`ConfigError` naming them. ``tensorboard: false`` (older recipes) means ``report_to: none``."""
        body = dict(body)
        if "tensorboard" in body:
            legacy = body.pop("tensorboard")
            body.setdefault("report_to", "tensorboard" if legacy else "none")
        return _build(cls, body, "")


def _build(kind: type, body: Any, where: str) -> Any:
    if not isinstance(body, dict):
        raise ConfigError(f"{where or kind.__name__}: expected a mapping, got {body!r}")
    names = [f.name for f in dataclasses.fields(kind)]
    for key in body:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {_join(where, near[0])!r}?)" if near else ""
            raise ConfigError(f"{_join(where, key)}: no such field{hint}")
    hints = get_type_hints(kind)
    kwargs = {}
    for key, value in body.items():
        path = _join(where, key)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, path)
        elif _is_shard_list(hint):
            entries = [value] if isinstance(value, str) else (value or [])
            kwargs[key] = [_shard_set(entry, path) for entry in entries]
        else:
            kwargs[key] = value
    return kind(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _is_shard_list(hint: Any) -> bool:
    return get_origin(hint) is list and get_args(hint) == (ShardSetConfig,)


def _shard_set(entry: Any, where: str) -> ShardSetConfig:
    """``"pattern:2"`` (a ``--shards`` value) or ``{pattern, weight, name}`` (a recipe entry)."""
    from .data.shards import split_weight

    if isinstance(entry, ShardSetConfig):
        return entry
    if isinstance(entry, str):
        pattern, weight = split_weight(entry)
        return ShardSetConfig(pattern=pattern, weight=weight)
    if isinstance(entry, dict) and "pattern" in entry and set(entry) <= {"pattern", "weight", "name"}:
        return ShardSetConfig(**entry)
    raise ConfigError(f"{where}: a shard set is 'PATTERN[:WEIGHT]' or {{pattern, weight, name}}, got {entry!r}")


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (ints accepted for floats, lists for tuples)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(where, inner, value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {' | '.join(map(str, args))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (Ellipsis not in args and len(value) != len(args)):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {value!r}")
        kinds = [args[0]] * len(value) if Ellipsis in args else list(args)
        return tuple(_coerce(where, k, v) for k, v in zip(kinds, value))
    if origin is list and not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (for YAML / JSON output)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``; nested mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if nested else value
    return merged


def set_override(body: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``--set section.field=value`` (value parsed as YAML: ``1e-5``, ``true``, ``[a, b]``, ``null``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({exc.problem})") from None
    nested: Any = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return deep_merge(body, nested)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A train recipe YAML as a nested dict. Relative paths in it are relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--recipe {path}: no such file")
    try:
        body = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--recipe {path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(body, dict):
        raise ConfigError(f"--recipe {path}: a train recipe is a mapping of TrainConfig fields")
    return body


@dataclass(frozen=True)
class FieldInfo:
    """One leaf field of :class:`TrainConfig`, for the CLI and ``--help``."""

    path: str  #: dotted, e.g. "optim.lr"
    hint: Any  #: the resolved annotation
    default: Any
    doc: str


def leaf_fields(kind: type = TrainConfig, prefix: str = "") -> list[FieldInfo]:
    """Every leaf field (nested sections expanded) with its default and its ``#:`` documentation."""
    hints, docs, out = get_type_hints(kind), field_docs(kind), []
    for f in dataclasses.fields(kind):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += leaf_fields(hint, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(FieldInfo(prefix + f.name, hint, default, docs.get(f.name, "")))
    return out


@cache
def field_docs(kind: type) -> dict[str, str]:
    """Field name -> its ``#:`` comment (the lines above it and the one trailing it), read from the source."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(kind).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"^\s+(\w+): [^=]+?(?:=.*?)?(?:\s+#:\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "@", "section")):
            docs[match[1]] = " ".join(pending + ([match[2]] if match[2] else [])).strip()
        pending = []
    return docs
