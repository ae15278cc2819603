"""The FCLM training loop: ``setup`` -> ``train`` -> ``cleanup`` (read it top to bottom; no trainer framework).

    cfg = TrainConfig(stage=2, model="3b", llm_path=..., sam_path=..., data=DataConfig(shards=[...]))
    Trainer(cfg).run()                      # or: fclm-train --shards ... --stage 2 --model 3b ...

One optimizer step = ``accumulation`` micro-batches on every rank, so that ranks x micro batch x accumulation =
the paper's global batch (stage 1: 32 samples at lr 2e-5, all modules; stage 2: 16 at lr 1e-5, the LLM only).
AdamW, linear warmup then cosine decay, gradient clipping at 1.0, bf16 autocast on CUDA (fp32 on CPU). A step
whose gradient norm (or loss) is not finite is skipped -- no optimizer update, gradients dropped -- and counted
in ``skipped_steps``; the scheduler still advances, so the LR schedule stays a function of the step.

Resume (``Trainer(cfg, resume=RUN)``) restores model, optimizer, schedule position, RNG and loader position, and
refuses a config that would change the data order (``fclm_train.rundir.EXACT_FIELDS``, the world size) unless
``allow_inexact_resume``; a longer run re-plans the schedule (``fclm_train.plan``). SIGTERM / SIGUSR1 set a flag
that the ranks all-reduce after every step: all of them save at the same step and stop (``status == "preempted"``).
With ``val.shards`` the model is evaluated on a fixed held-out set every ``val.every`` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import sys
import threading
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
from .config import LARGE_PRESETS, ConfigError, TrainConfig, deep_merge
from .data.encode import EncoderConfig
from .data.loader import LoaderBatch, LoaderConfig, RottenDataError, ShardLoader, rotten_data
from .data.shards import resolve_shard_set
from .data.tokenizer import build_tokenizer
from .metrics import LOSS_PARTS, MetricsLogger
from .plan import WarmupCosine, plan_run  # noqa: F401  (WarmupCosine: re-exported)
from .rundir import SavedRun


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters; biases, norms (1-D) and embeddings get no weight decay."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
@dataclasses.dataclass
class StepResult:
    losses: dict[str, float]  #: means over the step's micro-batches (this rank)
    grad_norm: float
    finite: bool
    samples: int  #: samples this rank consumed
    lr: float  #: the learning rate this step used


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None, allow_inexact_resume: bool = False) -> None:
        self.cfg, self.resume_from, self.allow_inexact = cfg, resume, allow_inexact_resume
        self.step = 0
        self.samples = 0
        self.skipped_steps = 0
        self.status = "running"  #: completed | preempted | failed
        self.checkpoint: Path | None = None
        self.last_val: dict[str, Any] = {}
        self._stop_signal: int | None = None
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        self._install_signal_handlers()
        self.info = D.init()
        self.accumulation = cfg.accumulation(self.info.world_size)  # fails before any model is built
        self.out_dir = Path(cfg.out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(f"out_dir: {self.out_dir} is a file, not a directory")
        resume_dir = resolve_checkpoint(self.resume_from) if self.resume_from is not None else None
        saved = self._check_resume(resume_dir) if resume_dir is not None else None
        self.val_sets = [resolve_shard_set(s.pattern, s.weight, s.name) for s in cfg.val.shards]
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _warn_random_init(cfg)
        torch.manual_seed(cfg.seed)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.info.device.type == "cuda")
        self.tokenizer = build_tokenizer(cfg.model, cfg.llm_path or _tokenizer_dir(cfg.init_from))
        self.model = self._setup_model()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                           betas=cfg.optim.betas, eps=cfg.optim.eps)  # fmt: skip
        self.loader = self._setup_data()
        self.plan = plan_run(cfg, self.info.world_size, self.loader.sets, saved.get("warmup_steps") if saved else None)
        self.steps_per_epoch, self.total_steps = self.plan.steps_per_epoch, self.plan.total_steps
        self.schedule = self.plan.schedule(cfg.optim.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        replanned = self._resume(resume_dir, saved) if resume_dir is not None else None
        self.checkpoint = resume_dir
        self.start_step = self.step
        self.logger = MetricsLogger(self.out_dir, self.total_steps, self.info.is_main, cfg.reporters,
                                    start_step=self.step, run_config=cfg.to_dict(),
                                    wandb_project=cfg.wandb_project)  # fmt: skip
        self.logger.info(
            f"fclm-train stage {cfg.stage} | model {cfg.model} | {self.info.world_size} rank(s) on "
            f"{self.info.device.type} | {self.loader.num_samples} samples/epoch in {len(self.loader.sets)} set(s) | "
            f"global batch {cfg.global_batch_size} = {cfg.data.micro_batch_size} x {self.info.world_size} x "
            f"{self.accumulation} | {self.total_steps} steps from step {self.step} | lr {cfg.optim.lr:g}"
        )  # fmt: skip
        if replanned:
            self.logger.info(replanned)

    def _setup_model(self) -> nn.Module:
        from fclm_train.model import FCLMConfig, build_fclm

        cfg = self.cfg
        overrides = {"llm": {"gradient_checkpointing": cfg.gradient_checkpointing},
                     "uniform_graph": self.info.distributed}  # fmt: skip
        self.model_config = FCLMConfig.preset(cfg.model, **deep_merge(overrides, cfg.model_overrides))
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

    def _encoder_config(self) -> EncoderConfig:
        fclm, data = self.model_config, self.cfg.data
        return EncoderConfig(
            side=fclm.image_long_side, patch_size=fclm.llm.patch_size, merge_size=fclm.llm.spatial_merge_size,
            temporal_patch_size=fclm.llm.temporal_patch_size, region_text=fclm.region_token_text,
            max_length=data.max_length, system_prompt=data.system_prompt, draft=data.draft,
            jpeg_decode=data.jpeg_decode,
        )  # fmt: skip

    def _setup_data(self) -> ShardLoader:
        cfg = self.cfg
        if not cfg.data.shards:
            raise ConfigError("data.shards: no shards; pass --shards PATTERN[:WEIGHT] (or data.shards in a recipe)")
        sets = [resolve_shard_set(s.pattern, s.weight, s.name) for s in cfg.data.shards]
        loader = LoaderConfig.from_data(cfg.data, seed=cfg.seed)
        return ShardLoader(sets, self.tokenizer, self._encoder_config(), loader, self.info.rank,
                           self.info.world_size, pin_memory=self.info.device.type == "cuda")  # fmt: skip

    # ------------------------------------------------------------------------------------------- resume
    def _check_resume(self, step_dir: Path) -> dict[str, Any]:
        """Compare the checkpoint's run with this config before anything is built; refuse what breaks exactness."""
        saved = SavedRun.read(step_dir)
        inexact = saved.check(self.cfg.to_dict(), self.info.world_size, self.allow_inexact)
        self.exact_resume = not inexact
        if inexact and self.info.is_main:
            warnings.warn(f"inexact resume ({', '.join(inexact)} changed): the data order continues statistically",
                          stacklevel=2)  # fmt: skip
        return saved.trainer_state

    def _resume(self, step_dir: Path, saved: dict[str, Any]) -> str | None:
        """Restore the state; re-plan the schedule for this config's length. Returns a note when it changed."""
        fsdp = self.cfg.distributed == "fsdp" and self.info.distributed
        state, loader_state = load_training_state(step_dir, self.model, self.optimizer, self.scheduler, self.info,
                                                  fsdp=fsdp)  # fmt: skip
        self.loader.load_state_dict(loader_state, exact=self.exact_resume)
        self.step, self.samples, self.skipped_steps = state["step"], state["samples"], state["skipped_steps"]
        old_total = state.get("total_steps", self.total_steps)
        old_lr = self.optimizer.param_groups[0]["lr"]
        self._apply_hyperparameters()
        if old_total == self.total_steps:
            return None
        lr = self.optimizer.param_groups[0]["lr"]
        return (f"re-planned: {old_total} -> {self.total_steps} steps; warmup stays {self.plan.warmup_steps} steps, "
                f"the cosine now spans {self.total_steps}; lr for step {self.step + 1}: {old_lr:.3g} -> {lr:.3g}")

    def _apply_hyperparameters(self) -> None:
        """The optimizer and scheduler states carry the first run's lr, schedule and AdamW settings: this
        config's win (flags given with --resume), and the lr follows the re-planned schedule at this step."""
        optim = self.cfg.optim
        self.schedule.__init__(self.plan.warmup_steps, self.total_steps, optim.min_lr_ratio)  # load_state_dict
        self.scheduler.base_lrs = [optim.lr for _ in self.optimizer.param_groups]  # overwrote both
        for group, decay in zip(self.optimizer.param_groups, (optim.weight_decay, 0.0)):
            group.update(lr=optim.lr * self.schedule(self.step), initial_lr=optim.lr, weight_decay=decay,
                         betas=optim.betas, eps=optim.eps)  # fmt: skip
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ------------------------------------------------------------------------------------------- train
    def train(self) -> None:
        self.model.train()
        self.started = time.perf_counter()
        if self.step >= self.total_steps:
            self.logger.info(f"the run is at step {self.step} of {self.total_steps}: nothing to train "
                             f"(extend it with --max-steps or --epochs)")  # fmt: skip
        batches = self._start_loader()
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
            saved = self.step % self.cfg.save_every == 0 or self.step == self.total_steps
            if saved:
                self.checkpoint = self.save()
            # every rank agrees: one rank's signal stops all of them after this same step
            if D.any_true(self._stop_signal is not None, self.info.device):
                if not saved:
                    self.checkpoint = self.save()
                self.status = "preempted"
                self.logger.info(f"preempted: checkpoint at step {self.step} in {self.checkpoint}")
                break
            if self.val_sets and self.cfg.val.every and self.step % self.cfg.val.every == 0:
                self.validate()
        else:
            self.status = "completed"
            if self.val_sets and not self.last_val.get("step") == self.step:
                self.validate()
        read, skipped = self._data_stats()
        self.logger.info(f"data: {read} samples read, skipped by reason: {skipped or 'none'}")
        self._check_data(read, skipped, final=self.status == "completed")

    def _start_loader(self) -> Iterator[LoaderBatch]:
        """The batch iterator, its worker processes started with the preemption signals blocked: a launcher that
        signals the whole process group (torchrun, SLURM) must not kill the loader workers before the save."""
        batches = iter(self.loader)
        if self.step >= self.total_steps:
            return batches
        if threading.current_thread() is threading.main_thread():
            signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPT_SIGNALS)  # inherited by the forked workers
        try:
            first = next(batches)  # forks the workers
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPT_SIGNALS)  # pending ones arrive now
        return itertools.chain([first], batches)

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
        losses = self.last_losses = D.all_mean(result.losses, self.info.device)
        steps = self.cfg.log_every if self.step % self.cfg.log_every == 0 else self.step % self.cfg.log_every
        read, skipped = self._data_stats()
        record = {
            "step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), **losses,
            "lr": result.lr, "grad_norm": result.grad_norm, "samples": self.samples,
            "samples_per_s": steps * self.cfg.global_batch_size / max(seconds, 1e-9),
            "skipped_steps": self.skipped_steps, "skipped_samples": skipped, "read_samples": read,
            "finite": result.finite,
        }  # fmt: skip
        self.logger.log(record)
        self._check_data(read, skipped, final=False)

    def _data_stats(self) -> tuple[int, dict[str, int]]:
        """Raw samples read and samples lost / skipped by reason, over all ranks (every rank gets the same)."""
        stats = D.all_gather_objects(self.loader.data_stats())
        return sum(s["read"] for s in stats), _sum_counts([s["skipped"] for s in stats])

    def _check_data(self, read: int, skipped: dict[str, int], final: bool) -> None:
        """Stop a run whose data is rotten (``data.max_skip_fraction``); every rank decides on the same counts."""
        reason = rotten_data(read, skipped, self.cfg.data.max_skip_fraction, final)
        if reason is not None:
            self.logger.info(f"stopping: {reason}")
            raise RottenDataError(f"{reason}; fix or drop the shards (or raise data.max_skip_fraction)")

    # ------------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean LM / mask losses over the fixed held-out set; cIoU / gIoU of the [SEG] masks (teacher-forced, as
        LISA's validation), scored by ``fclm_train.eval.segmentation`` on the pre-pad SAM frame."""
        from fclm_train.eval.segmentation import SegmentationMeter
        from fclm_train.model.mask_decoder import postprocess_masks

        val, world = self.cfg.val, self.info.world_size
        total = min(val.max_samples, sum(s.num_samples for s in self.val_sets))
        config = LoaderConfig.from_data(self.cfg.data, seed=self.cfg.seed, micro_batch_size=val.micro_batch_size,
                                        num_workers=0, shuffle_buffer=1)  # fmt: skip
        loader = ShardLoader(self.val_sets, self.tokenizer, self._encoder_config(), config, self.info.rank, world)
        meter = SegmentationMeter()
        lm = mask = tokens = objects = loss = batches = samples = 0.0
        self.model.eval()
        for index, batch in zip(range(math.ceil(total / (world * val.micro_batch_size))), loader):
            inputs = batch.inputs
            inputs.seed = index
            inputs = inputs.prepare(self.info.device)
            with self._autocast():
                out = self.model(inputs)
            n_tokens, n_objects = out.num_lm_tokens, 0 if out.seg_index is None else int(out.seg_index.numel())
            lm += float(out.lm_loss) * n_tokens
            mask += float(out.mask_loss) * n_objects
            loss, tokens, objects, batches = loss + float(out.loss), tokens + n_tokens, objects + n_objects, batches + 1
            samples += batch.num_samples
            for k, occurrence in enumerate((out.seg_index if n_objects else torch.zeros(0)).tolist()):
                row = int(inputs.seg_batch_index[occurrence])
                h, w = inputs.sam_input_sizes[row].tolist()
                pred = postprocess_masks(out.seg_logits[k : k + 1].float(), self.model_config.image_long_side,
                                         (h, w), (h, w))[0] > 0  # fmt: skip
                ignore = None if inputs.seg_ignore is None else inputs.seg_ignore[occurrence, :h, :w].cpu().numpy()
                meter.update(pred.cpu().numpy(), inputs.seg_masks[occurrence, :h, :w].cpu().numpy(), ignore)
        self.model.train()
        sums = D.all_sum([lm, mask, tokens, objects, loss, batches, samples, meter.intersection, meter.union,
                          meter.iou_sum, meter.n], self.info.device)  # fmt: skip
        lm, mask, tokens, objects, loss, batches, samples, inter, union, iou_sum, n = sums
        record: dict[str, Any] = {"step": self.step, "loss": loss / max(batches, 1),
                                  "lm_loss": lm / max(tokens, 1), "samples": int(samples)}  # fmt: skip
        if objects:
            record["mask_loss"] = mask / objects
        if n:
            meter.intersection, meter.union, meter.iou_sum, meter.n = int(inter), int(union), iou_sum, int(n)
            record.update({k: v for k, v in meter.compute().items() if k != "n"}, expressions=int(n))
        self.logger.log_val(record)
        self.last_val = record
        return record

    def save(self) -> Path:
        trainer_state = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "samples": self.samples,
                         "skipped_steps": self.skipped_steps, "total_steps": self.total_steps,
                         "warmup_steps": self.plan.warmup_steps, "world_size": self.info.world_size,
                         "steps_per_epoch": self.steps_per_epoch,
                         "skipped_samples": self._data_stats()[1]}  # fmt: skip
        dtype = torch.bfloat16 if self.cfg.save_dtype == "bfloat16" else torch.float32
        return save_checkpoint(
            self.out_dir, self.step, self.model, self.optimizer, self.scheduler, self.loader.state_dict(),
            trainer_state, self.model_config.to_dict(), self.cfg.to_dict(), self.tokenizer, self.info, dtype,
            self.cfg.keep_last,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------- cleanup
    def summary(self) -> dict[str, Any]:
        """What the end-of-run screen and ``OUT/summary.json`` hold (collective: every rank calls it)."""
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        done = self.step - self.start_step
        read, skipped = self._data_stats()
        return {
            "status": self.status, "step": self.step, "total_steps": self.total_steps, "steps_this_run": done,
            "samples": self.samples, "skipped_steps": self.skipped_steps,
            "skipped_samples": skipped, "read_samples": read,
            "seconds": round(seconds, 3), "samples_per_s": done * self.cfg.global_batch_size / max(seconds, 1e-9),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None, "out_dir": str(self.out_dir),
            "last_losses": getattr(self, "last_losses", {}), "val": self.last_val,
        }  # fmt: skip

    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}
        D.cleanup()

    def run(self) -> Path:
        """setup -> train -> summary -> cleanup; returns the output directory (``status`` says how it ended)."""
        try:
            self.setup()
            self.train()
            self.logger.summary(self.summary())
        except BaseException:
            self.status = "failed"
            raise
        finally:
            self.cleanup()
        return self.out_dir

    def _install_signal_handlers(self) -> None:
        """SIGTERM (Kubernetes, torchrun's forward) / SIGUSR1 (SLURM --signal): stop after the current step."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in PREEMPT_SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if self._stop_signal is None:
            print(f"fclm-train: got {signal.Signals(signum).name}: saving at the next step boundary",
                  file=sys.stderr, flush=True)  # fmt: skip
        self._stop_signal = signum


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




def _warn_random_init(cfg: TrainConfig) -> None:
    """A 3B / 7B preset without pretrained weights trains from noise: say so where it cannot be missed."""
    if cfg.model not in LARGE_PRESETS or cfg.init_from is not None:
        return
    missing = [flag for flag, value in (("--llm", cfg.llm_path), ("--sam", cfg.sam_path)) if value is None]
    if missing:
        from rich.console import Console

        Console(stderr=True).print(
            f"[bold red]WARNING: model {cfg.model} without {' and '.join(missing)}: "
            f"{'the Qwen2.5-VL LLM' if '--llm' in missing else ''}{' and ' if len(missing) == 2 else ''}"
            f"{'SAM' if '--sam' in missing else ''} start from RANDOM weights. Pass --llm /ckpt/Qwen2.5-VL-"
            f"{cfg.model.upper()}-Instruct --sam /ckpt/sam_vit_h_4b8939.pth for the paper's setup.[/]"
        )
