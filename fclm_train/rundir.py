"""A run directory's layout, readable without torch: step directories, ``latest``, the saved configs.

``fclm-train`` reads it before any heavy import, so a wrong ``--resume`` or an exactness-breaking change is
reported in a second, in one line. Writing checkpoints is ``fclm_train.checkpoint``'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: fields whose change makes the next batches differ from an uninterrupted run's (with the world size)
EXACT_FIELDS = ("seed", "global_batch_size", "data.shards", "data.micro_batch_size", "data.batch_unit",
                "data.num_workers", "data.shuffle_buffer", "data.max_length")  # fmt: skip
#: fields whose change makes the checkpoint unloadable: start a new run with --init instead
INCOMPATIBLE_FIELDS = ("model", "stage", "model_overrides")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def resolve_checkpoint(path: str | Path) -> Path:
    """A step directory, or a run directory (-> the checkpoint its ``latest`` file names, else the newest)."""
    path = Path(path)
    if (path / "trainer_state.json").exists():
        return path
    latest = path / "latest"
    if latest.exists():
        candidate = path / latest.read_text().strip()
        if (candidate / "trainer_state.json").exists():
            return candidate
    steps = sorted(p for p in path.glob("step-*") if (p / "trainer_state.json").exists())
    if not steps:
        what = "does not exist" if not path.exists() else "holds no checkpoint (step-*/trainer_state.json)"
        raise FileNotFoundError(f"{path} {what}")
    return steps[-1]


def has_checkpoint(path: str | Path) -> bool:
    try:
        resolve_checkpoint(path)
    except FileNotFoundError:
        return False
    return True


@dataclass
class SavedRun:
    """What a checkpoint says about the run that wrote it."""

    step_dir: Path
    train_config: dict[str, Any]
    trainer_state: dict[str, Any]
    world_size: int

    @classmethod
    def read(cls, step_dir: Path) -> SavedRun:
        state = json.loads((step_dir / "trainer_state.json").read_text())
        world = state.get("world_size") or len(json.loads((step_dir / "loader.json").read_text())["ranks"])
        return cls(step_dir, json.loads((step_dir / "train_config.json").read_text()), state, world)

    def changes(self, config: dict[str, Any], world_size: int) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """(incompatible, inexact) changes of ``config`` (``TrainConfig.to_dict()``) against the saved run:
        dotted field -> (saved, now)."""
        changed = {k: (_dotted(self.train_config, k), _dotted(config, k)) for k in EXACT_FIELDS + INCOMPATIBLE_FIELDS}
        changed = {k: v for k, v in changed.items() if _norm(v[0]) != _norm(v[1])}
        if self.world_size != world_size:
            changed["world size"] = (self.world_size, world_size)
        incompatible = {k: v for k, v in changed.items() if k in INCOMPATIBLE_FIELDS}
        return incompatible, {k: v for k, v in changed.items() if k not in INCOMPATIBLE_FIELDS}

    def check(self, config: dict[str, Any], world_size: int, allow_inexact: bool) -> dict[str, tuple]:
        """Raise ``ResumeError`` for what cannot continue as asked; returns the accepted inexact changes."""
        from .config import ResumeError

        incompatible, inexact = self.changes(config, world_size)
        for key, (was, now) in incompatible.items():
            raise ResumeError(f"--resume {self.step_dir}: {key} was {was!r}, now {now!r}; the checkpoint cannot "
                              f"continue as another model (start a new run with --init)")  # fmt: skip
        if inexact and not allow_inexact:
            what = "; ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in inexact.items())
            raise ResumeError(f"--resume {self.step_dir}: {what} changes the batches an uninterrupted run would "
                              f"see; pass --allow-inexact-resume to continue statistically")  # fmt: skip
        return inexact


def _dotted(body: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        body = body.get(part) if isinstance(body, dict) else None
    return body


def _norm(value: Any) -> Any:
    """JSON round trip: a saved config and a live one compare equal when they are (tuples vs lists)."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict) and "pattern" in value[0]:
        return ",".join(f"{s['pattern']}:{s['weight']:g}" for s in value)
    return repr(value)
