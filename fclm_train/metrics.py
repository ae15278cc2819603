"""Run logging on rank 0: a console line per logged step (stderr), ``OUT/metrics.jsonl``, TensorBoard if present.

One JSON object per optimizer step: ``step``, ``epoch``, ``loss`` and its parts (``lm_loss``, ``mask_loss``,
``recon_loss``, ``latent_loss``; means over the step's micro-batches and ranks), ``lr``, ``grad_norm``,
``samples`` (seen so far), ``samples_per_s``, ``skipped_steps`` (non-finite), ``skipped_samples`` (by reason),
``time``. A resumed run appends to the same file, so the file reads as one run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console

LOSS_PARTS = ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss")


class MetricsLogger:
    def __init__(self, out_dir: Path, total_steps: int, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.total_steps = enabled, total_steps
        self.console = Console(stderr=True, soft_wrap=True)
        self.path = out_dir / "metrics.jsonl"
        self.started = time.perf_counter()
        self.start_step: int | None = None
        self.writer = _tensorboard(out_dir / "tensorboard") if (enabled and tensorboard) else None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        step = record["step"]
        if self.start_step is None:
            self.start_step = step - 1
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"train/{key}", value, step)
        self.console.print(self._line(record), highlight=False)

    def _line(self, r: dict[str, Any]) -> str:
        parts = " ".join(f"{k.removesuffix('_loss')} {r[k]:.4f}" for k in LOSS_PARTS[1:] if k in r)
        elapsed = time.perf_counter() - self.started
        done = r["step"] - (self.start_step or 0)
        eta = elapsed / done * (self.total_steps - r["step"]) if done > 0 else math.nan
        skipped = f" | skipped steps {r['skipped_steps']}" if r.get("skipped_steps") else ""
        return (f"step {r['step']}/{self.total_steps} | loss {r['loss']:.4f} ({parts}) | lr {r['lr']:.3g} | "
                f"grad {r['grad_norm']:.3g} | {r['samples_per_s']:.2f} samples/s | "
                f"ETA {_clock(eta)}{skipped}")  # fmt: skip

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))


def read_metrics(out_dir: Path) -> list[dict[str, Any]]:
    """Every line of ``metrics.jsonl`` (a resumed run's lines follow the interrupted run's)."""
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]
