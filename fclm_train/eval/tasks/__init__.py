"""Evaluation task registry: ``fclm_train/eval/tasks/<name>.py`` defines ``TASK = TaskSpec(...)``.

``fclm-eval --task NAME`` offers exactly the module names of this package (:func:`task_names` lists them without
importing anything heavy, so ``--help`` stays fast); :func:`get_task` imports the module and checks that its
``TASK`` carries the same name. Adding a task is adding one module: no tuple, no if-chain.

A task turns evaluation-shard samples into predictor queries and feeds the metric classes, per recipe entry
(:class:`fclm_train.eval.run.EvalTask`). A task that does not read shards (DLC-Bench) overrides ``run``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TaskOptions", "TaskSpec", "get_task", "task_names"]


@dataclass(frozen=True)
class TaskOptions:
    """Everything the CLI can tell a task; each task reads the fields it needs (defaults = the CLI's)."""

    seg_mode: str = "generate"  #: generate | forced (LISA's validate: teacher-force the sample's answer)
    minilm: Path | None = None  #: roc / gcg: a local all-MiniLM-L6-v2
    bert: Path | None = None  #: gcg: a local bert-base-uncased for GLaMM's recall text gate
    captions: bool = True  #: gcg / dlc / reg: METEOR and CIDEr (Java)
    recall: bool = True  #: gcg: mask recall
    dlc_bench: Path | None = None  #: dlc: a DLC-Bench checkout
    judge_url: str | None = None  #: dlc: judge endpoint
    judge_model: str | None = None  #: dlc: judge model
    box_frame: str = "input"  #: rec: the frame of box answers (see ``tasks/rec.py``)
    extra: dict[str, Any] = field(default_factory=dict)  #: free-form, for tasks added later


#: run(predictor, spec, options, shards, limit, batch_size, on_batch, writer) -> (results, extra report meta)
Runner = Callable[..., tuple[dict[str, dict[str, Any]], dict[str, Any]]]


@dataclass(frozen=True)
class TaskSpec:
    name: str  #: the module name, the ``--task`` value
    description: str  #: one line for ``--help`` and the README table
    make: Callable[[TaskOptions], Any]  #: options -> an ``EvalTask`` (``run_batch`` + ``results``)
    needs_shards: Callable[[TaskOptions], bool] = lambda options: True
    run: Runner | None = None  #: replaces the shard loop (DLC-Bench); None = :func:`run_over_shards`


def task_names() -> list[str]:
    """The registered task names (module names; ``_``-prefixed modules are helpers)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_task(name: str) -> TaskSpec:
    """The task ``name``; a clear error naming the choices when there is none."""
    if name not in task_names():
        raise KeyError(f"unknown eval task {name!r}; registered: {', '.join(task_names())}")
    spec = getattr(importlib.import_module(f"{__name__}.{name}"), "TASK", None)
    if not isinstance(spec, TaskSpec) or spec.name != name:
        raise TypeError(f"{__name__}.{name} must define TASK = TaskSpec(name={name!r}, ...)")
    return spec


def run_over_shards(predictor, spec: TaskSpec, options: TaskOptions, shards, limit, batch_size, on_batch=None,
                    writer=None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """The default runner: the task over the shards' samples, ``{entry: metrics}`` and no extra meta."""
    from fclm_train.eval.run import evaluate

    return evaluate(predictor, spec.make(options), shards, limit, batch_size, on_batch=on_batch), {}


def run_task(predictor, name: str, options: TaskOptions, shards, limit=None, batch_size=8, on_batch=None,
             writer=None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Run task ``name`` with its own runner (or the shard loop)."""
    spec = get_task(name)
    runner = spec.run or run_over_shards
    return runner(predictor, spec, options, shards, limit, batch_size, on_batch, writer)
