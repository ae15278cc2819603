"""The FCLM training loop: ``setup`` -> ``train`` -> ``cleanup`` (read it top to bottom; no trainer framework).

    cfg = TrainConfig(stage=2, model="3b", llm_path=..., sam_path=..., data=DataConfig(shards=[...]))
    Trainer(cfg).run()                      # or: fclm-train --shards ... --stage 2 --model 3b ...

One optimizer step = ``accumulation`` micro-batches on every rank, so that ranks x micro batch x accumulation =
the paper's global batch (stage 1: 32 samples at lr 2e-5, all modules; stage 2: 16 at lr 1e-5, the LLM only).
AdamW, linear warmup then cosine decay, gradient clipping at 1.0, bf16 autocast on CUDA (fp32 on CPU). A step
whose gradient norm (or loss) is not finite is skipped -- no optimizer update, gradients dropped -- and counted
in ``skipped_steps``; the scheduler still advances, so the LR schedule stays a function of the step.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed as D
from .checkpoint import MODEL_FILE, load_model_state, load_training_state, resolve_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.encode import EncoderConfig
from .data.loader import LoaderBatch, LoaderConfig, ShardLoader
from .data.shards import resolve_shard_set
from .data.tokenizer import build_tokenizer
from .metrics import LOSS_PARTS, MetricsLogger


class WarmupCosine:
    """LR multiplier: linear warmup from 1/(w+1) to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters; biases, norms (1-D) and embeddings get no weight decay."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclasses.dataclass
class StepResult:
    losses: dict[str, float]  #: means over the step's micro-batches (this rank)
    grad_norm: float
    finite: bool
    samples: int  #: samples this rank consumed
    lr: float  #: the learning rate this step used


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None) -> None:
        self.cfg, self.resume_from = cfg, resume
        self.step = 0
        self.samples = 0
        self.skipped_steps = 0

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        self.info = D.init()
        self.accumulation = cfg.accumulation(self.info.world_size)  # fails before any model is built
        self.out_dir = Path(cfg.out_dir)
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.info.device.type == "cuda")
        self.tokenizer = build_tokenizer(cfg.model, cfg.llm_path or _tokenizer_dir(cfg.init_from))
        self.model = self._setup_model()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                           betas=cfg.optim.betas, eps=cfg.optim.eps)  # fmt: skip
        self.loader = self._setup_data()
        # an epoch is one pass over every set's samples (recipe weights change the mix, not the length)
        self.steps_per_epoch = math.ceil(self.loader.num_samples / cfg.global_batch_size)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        warmup = math.ceil(cfg.optim.warmup_ratio * self.total_steps) if cfg.optim.warmup_ratio else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(warmup, self.total_steps, cfg.optim.min_lr_ratio)
        )
        if self.resume_from is not None:
            self._resume(resolve_checkpoint(self.resume_from))
        self.logger = MetricsLogger(self.out_dir, self.total_steps, self.info.is_main, cfg.tensorboard)
        self.logger.info(
            f"fclm-train stage {cfg.stage} | model {cfg.model} | {self.info.world_size} rank(s) on "
            f"{self.info.device.type} | {self.loader.num_samples} samples/epoch in {len(self.loader.sets)} set(s) | "
            f"global batch {cfg.global_batch_size} = {cfg.data.micro_batch_size} x {self.info.world_size} x "
            f"{self.accumulation} | {self.total_steps} steps from step {self.step} | lr {cfg.optim.lr:g}"
        )  # fmt: skip

    def _setup_model(self) -> nn.Module:
        from fclm_train.model import FCLMConfig, build_fclm

        cfg = self.cfg
        overrides = {"llm": {"gradient_checkpointing": cfg.gradient_checkpointing},
                     "uniform_graph": self.info.distributed}  # fmt: skip
        self.model_config = FCLMConfig.preset(cfg.model, **_merge(overrides, cfg.model_overrides))
        model = build_fclm(self.model_config, cfg.llm_path, cfg.sam_path, tokenizer=self.tokenizer)
        if cfg.init_from is not None:
            model.load_state_dict(load_model_state(resolve_checkpoint(cfg.init_from) / MODEL_FILE), strict=True)
        model.set_stage(cfg.stage)
        model.to(self.info.device)
        if cfg.distributed == "fsdp" and self.info.distributed:
            return D.wrap_fsdp(model, self.bf16)
        if self.info.distributed:
            return D.wrap_ddp(model, self.info)
        return model

    def _setup_data(self) -> ShardLoader:
        cfg, fclm = self.cfg, self.model_config
        if not cfg.data.shards:
            raise ValueError("no shards: pass --shards PATTERN[:WEIGHT] (or data.shards in a recipe)")
        sets = [resolve_shard_set(s.pattern, s.weight, s.name) for s in cfg.data.shards]
        encoder = EncoderConfig(
            side=fclm.image_long_side, patch_size=fclm.llm.patch_size, merge_size=fclm.llm.spatial_merge_size,
            temporal_patch_size=fclm.llm.temporal_patch_size, region_text=fclm.region_token_text,
            max_length=cfg.data.max_length, system_prompt=cfg.data.system_prompt, draft=cfg.data.draft,
            jpeg_decode=cfg.data.jpeg_decode,
        )  # fmt: skip
        loader = LoaderConfig(
            micro_batch_size=cfg.data.micro_batch_size, batch_unit=cfg.data.batch_unit,
            num_workers=cfg.data.num_workers, shuffle_buffer=cfg.data.shuffle_buffer,
            prefetch_factor=cfg.data.prefetch_factor, seed=cfg.seed,
        )  # fmt: skip
        return ShardLoader(sets, self.tokenizer, encoder, loader, self.info.rank, self.info.world_size,
                           pin_memory=self.info.device.type == "cuda")  # fmt: skip

    def _resume(self, step_dir: Path) -> None:
        fsdp = self.cfg.distributed == "fsdp" and self.info.distributed
        state, loader_state = load_training_state(step_dir, self.model, self.optimizer, self.scheduler, self.info,
                                                  fsdp=fsdp)  # fmt: skip
        self.loader.load_state_dict(loader_state)
        self.step, self.samples, self.skipped_steps = state["step"], state["samples"], state["skipped_steps"]

    # ------------------------------------------------------------------------------------------- train
    def train(self) -> None:
        self.model.train()
        batches = iter(self.loader)
        last = time.perf_counter()
        while self.step < self.total_steps:
            result = self.train_step(batches)
            self.step += 1
            self.samples += result.samples * self.info.world_size  # every rank consumes the same count
            if not result.finite:
                self.skipped_steps += 1
            if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                now = time.perf_counter()
                self._log(result, now - last)
                last = now
            if self.step % self.cfg.save_every == 0 or self.step == self.total_steps:
                self.save()

    def train_step(self, batches: Iterator[LoaderBatch]) -> StepResult:
        """``accumulation`` forward / backward passes, one clipped AdamW update (or a counted skip)."""
        sums: dict[str, float] = defaultdict(float)
        samples = 0
        for micro in range(self.accumulation):
            batch = next(batches)
            inputs = batch.inputs
            inputs.seed = ((self.step * self.accumulation + micro) * self.info.world_size) + self.info.rank
            inputs = inputs.prepare(self.info.device)  # Qwen patches, SAM frames, masks built on the device
            with self._no_sync(last=micro == self.accumulation - 1), self._autocast():
                out = self.model(inputs)
                (out.loss / self.accumulation).backward()
            for name in LOSS_PARTS:
                sums[name] += float(getattr(out, name).detach()) / self.accumulation
            samples += batch.num_samples
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = _full(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        # the norm is global already; the loss is per rank: every rank must take the same decision
        finite = D.all_true(math.isfinite(grad_norm) and math.isfinite(sums["loss"]), self.info.device)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
            self.scheduler.step()
        return StepResult(dict(sums), grad_norm, finite, samples, lr)

    def _no_sync(self, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if last or not self.info.distributed:
            return nullcontext()
        if hasattr(self.model, "no_sync"):  # DDP
            return self.model.no_sync()
        return _FsdpNoSync(self.model)

    def _autocast(self):
        if self.bf16 and self.info.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _log(self, result: StepResult, seconds: float) -> None:
        losses = D.all_mean(result.losses, self.info.device)
        steps = self.cfg.log_every if self.step % self.cfg.log_every == 0 else self.step % self.cfg.log_every
        skipped = D.all_gather_objects(self.loader.skipped())
        record = {
            "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), **losses,
            "lr": result.lr, "grad_norm": result.grad_norm, "samples": self.samples,
            "samples_per_s": steps * self.cfg.global_batch_size / max(seconds, 1e-9),
            "skipped_steps": self.skipped_steps, "skipped_samples": _sum_counts(skipped), "finite": result.finite,
        }  # fmt: skip
        self.logger.log(record)

    def save(self) -> Path:
        trainer_state = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "samples": self.samples,
                         "skipped_steps": self.skipped_steps, "total_steps": self.total_steps,
                         "steps_per_epoch": self.steps_per_epoch,
                         "skipped_samples": _sum_counts(D.all_gather_objects(self.loader.skipped()))}  # fmt: skip
        dtype = torch.bfloat16 if self.cfg.save_dtype == "bfloat16" else torch.float32
        return save_checkpoint(
            self.out_dir, self.step, self.model, self.optimizer, self.scheduler, self.loader.state_dict(),
            trainer_state, self.model_config.to_dict(), self.cfg.to_dict(), self.tokenizer, self.info, dtype,
            self.cfg.keep_last,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
        D.cleanup()

    def run(self) -> Path:
        """setup -> train -> cleanup; returns the output directory."""
        try:
            self.setup()
            self.train()
        finally:
            self.cleanup()
        return self.out_dir


class _FsdpNoSync:
    """FSDP2's counterpart of DDP's ``no_sync``: no reduce-scatter until the last micro-batch."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *exc) -> None:
        self.model.set_requires_gradient_sync(True)


def _tokenizer_dir(init_from: str | None) -> Path | None:
    """The tokenizer files saved with an ``init_from`` checkpoint (runs started with ``--llm``), if any."""
    if init_from is None:
        return None
    step_dir = resolve_checkpoint(init_from)
    return step_dir if (step_dir / "tokenizer_config.json").exists() else None


def _full(norm: torch.Tensor) -> float:
    """A DTensor (FSDP2) or plain tensor norm as a float."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _sum_counts(per_rank: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for counts in per_rank:
        for reason, n in counts.items():
            total[reason] += n
    return dict(total)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged
