"""The plan of a run: steps, schedule, samples, and which shards each rank / worker reads (no torch needed).

``Trainer`` uses it to fix the run length, and ``fclm-train --dry-run`` prints it before anything heavy is built.
An epoch is one pass over every set's samples (recipe weights change the mix, not the length):
``steps_per_epoch = ceil(samples / global batch)``; ``total_steps = max_steps`` or ``ceil(epochs x steps_per_epoch)``.

**Schedule re-planning.** The LR schedule is a pure function of the step (warmup, then cosine over
``total_steps``). When a resume changes the run length (``--max-steps`` or ``--epochs``), warmup keeps the step
count it was planned with and the cosine is re-planned over the new total: from the resume step on, every step
uses the lr a run planned with the new length would use there (the lr jumps up to the longer curve; it is never
0 before the last step). The first run's steps keep the lr they trained with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import TrainConfig


class WarmupCosine:
    """LR multiplier: linear warmup from 1/(w+1) to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class SetPlan:
    name: str
    shards: int
    samples: int
    weight: float
    #: (min, max) shard reads per (rank, worker) stream in the first epoch (a read is a whole shard, or every
    #: k-th sample of one when streams outnumber shards)
    reads_per_stream: tuple[int, int]
    reads_per_rank: tuple[int, int]


@dataclass
class RunPlan:
    world_size: int
    num_workers: int
    accumulation: int
    global_batch_size: int
    micro_batch_size: int
    samples_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float
    sets: list[SetPlan] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.total_steps * self.global_batch_size

    def schedule(self, min_ratio: float) -> WarmupCosine:
        return WarmupCosine(self.warmup_steps, self.total_steps, min_ratio)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "samples": self.samples}

    def describe(self) -> str:
        """A few lines for a person (``--dry-run``)."""
        lines = [
            f"plan: {self.total_steps} steps ({self.total_steps / max(self.steps_per_epoch, 1):.3g} epochs of "
            f"{self.steps_per_epoch} steps), {self.samples} samples; warmup {self.warmup_steps} steps, peak lr "
            f"{self.lr:g}",
            f"  global batch {self.global_batch_size} = micro batch {self.micro_batch_size} x {self.world_size} "
            f"rank(s) x accumulation {self.accumulation}; {self.num_workers} loader worker(s) per rank",
        ]
        for s in self.sets:
            lines.append(
                f"  set {s.name}: {s.shards} shards, {s.samples} samples, weight {s.weight:g}; shard reads per rank "
                f"{_span(s.reads_per_rank)}, per worker {_span(s.reads_per_stream)}"
            )
        return "\n".join(lines)


def _span(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"


def plan_run(cfg: TrainConfig, world_size: int, sets: list, warmup_steps: int | None = None) -> RunPlan:
    """The run's plan for ``world_size`` ranks over resolved shard sets (``fclm_train.data.shards.ShardSet``).

    ``warmup_steps`` is given on resume (the count the run was planned with); else ``warmup_ratio x total``.
    """
    from .data.shards import epoch_items

    accumulation = cfg.accumulation(world_size)
    samples = sum(s.num_samples for s in sets)
    steps_per_epoch = max(1, math.ceil(samples / cfg.global_batch_size))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if warmup_steps is None:
        warmup_steps = math.ceil(cfg.optim.warmup_ratio * total) if cfg.optim.warmup_ratio else 0
    workers = max(1, cfg.data.num_workers)
    streams = world_size * workers
    set_plans = []
    for index, s in enumerate(sets):
        per_stream = [len(items) for items in epoch_items(s, streams, cfg.seed, index, 0)]
        per_rank = [sum(per_stream[r * workers : (r + 1) * workers]) for r in range(world_size)]
        set_plans.append(SetPlan(s.name, len(s.urls), s.num_samples, s.weight, (min(per_stream), max(per_stream)),
                                 (min(per_rank), max(per_rank))))  # fmt: skip
    return RunPlan(world_size, cfg.data.num_workers, accumulation, cfg.global_batch_size, cfg.data.micro_batch_size,
                   samples, steps_per_epoch, total, warmup_steps, cfg.optim.lr, set_plans)  # fmt: skip
