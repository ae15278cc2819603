"""Run logging on rank 0: a console line per logged step (stderr), ``OUT/metrics.jsonl``, TensorBoard, W&B.

One JSON object per optimizer step: ``step``, ``epoch``, ``loss`` and its parts (``lm_loss``, ``mask_loss``,
``recon_loss``, ``latent_loss``; means over the step's micro-batches and ranks), ``lr``, ``grad_norm``,
``samples`` (seen so far), ``samples_per_s``, ``skipped_steps`` (non-finite), ``skipped_samples`` (by reason).
Validation results go to ``OUT/val.jsonl`` (one object per evaluation) and under ``val/`` in the reporters.

**Each step once.** A resumed run appends to the same files, but first drops every line past the step it resumes
from (lines a killed process wrote after its last checkpoint, and a line cut short by the kill); TensorBoard gets
``purge_step`` (events from the resumed step on are hidden), W&B continues the same run id (``OUT/wandb_id``).
So the files read as one run after any number of resumes.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from rich.console import Console

LOSS_PARTS = ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss")
METRICS_FILE, VAL_FILE, SUMMARY_FILE = "metrics.jsonl", "val.jsonl", "summary.json"


class MetricsLogger:
    def __init__(
        self, out_dir: Path, total_steps: int, enabled: bool, reporters: list[str], start_step: int = 0,
        run_config: dict[str, Any] | None = None, wandb_project: str = "fclm",
    ) -> None:  # fmt: skip
        self.enabled, self.total_steps, self.out_dir = enabled, total_steps, Path(out_dir)
        self.console = Console(stderr=True, soft_wrap=True)
        self.path = self.out_dir / METRICS_FILE
        self.started = time.perf_counter()
        self.start_step = start_step
        self.tensorboard = self.wandb = None
        if not enabled:
            return
        for name in (METRICS_FILE, VAL_FILE):
            truncate_after(self.out_dir / name, start_step)
        if "tensorboard" in reporters:
            self.tensorboard = _tensorboard(self.out_dir / "tensorboard", start_step + 1, self.console)
        if "wandb" in reporters:
            self.wandb = _wandb(self.out_dir, wandb_project, run_config or {})

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        _append(self.path, record)
        self._report("train", record)
        self.console.print(self._line(record), highlight=False)

    def log_val(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        _append(self.out_dir / VAL_FILE, record)
        self._report("val", record)
        parts = " ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step" and isinstance(v, float))
        self.console.print(f"val @ step {record['step']}: {parts} ({record.get('samples', 0)} samples)",
                           highlight=False)  # fmt: skip

    def _report(self, prefix: str, record: dict[str, Any]) -> None:
        step = record["step"]
        scalars = {f"{prefix}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}  # fmt: skip
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def _line(self, r: dict[str, Any]) -> str:
        parts = " ".join(f"{k.removesuffix('_loss')} {r[k]:.4f}" for k in LOSS_PARTS[1:] if k in r)
        elapsed = time.perf_counter() - self.started
        done = r["step"] - self.start_step
        eta = elapsed / done * (self.total_steps - r["step"]) if done > 0 else math.nan
        skipped = f" | skipped steps {r['skipped_steps']}" if r.get("skipped_steps") else ""
        return (f"step {r['step']}/{self.total_steps} | loss {r['loss']:.4f} ({parts}) | lr {r['lr']:.3g} | "
                f"grad {r['grad_norm']:.3g} | {r['samples_per_s']:.2f} samples/s | "
                f"ETA {_clock(eta)}{skipped}")  # fmt: skip

    def info(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def summary(self, summary: dict[str, Any]) -> None:
        """Write ``OUT/summary.json`` and print it as one screen."""
        if not self.enabled:
            return
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        self.console.print(format_summary(summary), highlight=False)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.tensorboard = self.wandb = None


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_after(path: Path, step: int) -> None:
    """Keep the lines of ``path`` whose ``step`` is <= ``step`` (and drop a line cut short); atomic rewrite."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _tensorboard(directory: Path, purge_step: int, console: Console):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        console.print("[yellow]tensorboard is not installed (pip install 'fclm[train]'): no OUT/tensorboard/[/]")
        return None
    return SummaryWriter(str(directory), purge_step=purge_step)


def _wandb(out_dir: Path, project: str, config: dict[str, Any]):
    """One W&B run per output directory: a resume continues it (same id). ``WANDB_MODE=offline`` needs no login."""
    import wandb

    id_file = out_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, dir=str(out_dir), id=run_id, resume="allow", name=out_dir.name,
                      config=config)  # fmt: skip


def read_metrics(out_dir: Path, name: str = METRICS_FILE) -> list[dict[str, Any]]:
    """Every record of ``metrics.jsonl`` (or ``val.jsonl``): one per step, resumed runs included."""
    path = Path(out_dir) / name
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def format_summary(s: dict[str, Any]) -> str:
    """The end-of-run screen: status, steps, samples, skips by reason, time, checkpoint, last losses."""
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(s.get("skipped_samples", {}).items())) or "none"
    losses = " ".join(f"{k.removesuffix('_loss')} {v:.4f}" for k, v in s.get("last_losses", {}).items())
    lines = [
        f"── fclm-train: {s['status']} ──",
        f"steps        {s['step']}/{s['total_steps']} (this process: {s['steps_this_run']})",
        f"samples      {s['samples']}",
        f"skipped      samples: {skipped}; non-finite steps: {s.get('skipped_steps', 0)}",
        f"time         {_clock(s['seconds'])} ({s['samples_per_s']:.2f} samples/s)",
        f"checkpoint   {s.get('checkpoint') or '-'}",
    ]
    if losses:
        lines.append(f"last losses  {losses}")
    if s.get("val"):
        lines.append("validation   " + " ".join(f"{k} {v:.4f}" for k, v in s["val"].items()
                                                if isinstance(v, float)))  # fmt: skip
    if s["status"] == "preempted":
        lines.append(f"resume with  fclm-train --resume {s['out_dir']}")
    return "\n".join(lines)


def plot_run(run_dir: str | Path, path: str | Path | None = None):
    """Draw loss parts, lr and throughput (and validation losses) of a run; returns (figure, PNG path)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records, val = read_metrics(run_dir), read_metrics(run_dir, VAL_FILE)
    if not records:
        raise FileNotFoundError(f"{run_dir / METRICS_FILE}: no metrics (is {run_dir} a fclm-train output?)")
    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_lr, ax_speed) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for key in LOSS_PARTS:
        values = [r.get(key, math.nan) for r in records]
        if any(v for v in values if math.isfinite(v)):
            ax_loss.plot(steps, values, label=key, linewidth=2.0 if key == "loss" else 1.0)
    for key in ("loss", "lm_loss", "mask_loss"):
        points = [(v["step"], v[key]) for v in val if key in v]
        if points:
            ax_loss.plot(*zip(*points), "o--", label=f"val {key}")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_lr.plot(steps, [r["lr"] for r in records], label="lr")
    ax_lr.set_ylabel("learning rate")
    ax_speed.plot(steps, [r["samples_per_s"] for r in records], label="samples/s")
    ax_speed.set_ylabel("samples / s")
    ax_speed.set_xlabel("step")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = Path(path) if path else run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    return fig, path
