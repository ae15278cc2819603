"""Rerun a shard whose worker died, alone, until the record that kills it is found and rejected.

A worker that dies (a segfault in a native library, the OOM killer) takes every task in flight
with it, so a crash says nothing about which record caused it. Each crashed shard is therefore
rebuilt in a fresh child process of its own; ``build_shard`` journals the key of the record it is
on (``.parts/<shard>.journal``), so when that child dies too, the journal names the culprit.
A record gets one retry: the second death on it makes it a ``worker_crashed`` reject and the
shard is rebuilt without it. The outcome depends only on which records crash, never on timing
or on what else was running, so the bytes stay deterministic.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import replace
from pathlib import Path

from fclm_data.build.shard import ShardResult, ShardTask, build_shard, journal_path, part_path

#: deaths on one record before it is rejected (the first is retried: it may have been the OOM killer)
DEATHS_PER_RECORD = 2


class ShardCrashError(RuntimeError):
    """A shard's process keeps dying outside any record (e.g. while opening its output)."""


def rebuild_isolated(task: ShardTask) -> ShardResult:
    """Build ``task`` in child processes until it finishes; records that kill it twice are rejected."""
    deaths: dict[str, int] = {}
    crashed = dict(task.crashed)
    outside = 0
    while True:
        attempt = replace(task, crashed=dict(crashed))
        status = _run_alone(attempt)
        if status == 0:
            return ShardResult.from_json(part_path(Path(task.out_dir), task.index).read_text(encoding="utf-8"))
        key = _last_journaled(Path(task.out_dir), task.index)
        if key is None:
            outside += 1
            if outside >= DEATHS_PER_RECORD:
                raise ShardCrashError(f"{task.name}: the build process died twice outside any record ({_how(status)})")
            continue
        deaths[key] = deaths.get(key, 0) + 1
        if deaths[key] >= DEATHS_PER_RECORD:
            crashed[key] = f"the build process died on this record {deaths[key]} times ({_how(status)})"


def _run_alone(task: ShardTask) -> int:
    """Exit status of ``build_shard(task)`` in a fresh child (0 = its ledger part is written)."""
    journal_path(Path(task.out_dir), task.index).unlink(missing_ok=True)
    context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    child = context.Process(target=_child, args=(task, os.getpid()), daemon=True)
    child.start()
    child.join()
    return child.exitcode if child.exitcode is not None else -1


def _child(task: ShardTask, parent: int) -> None:
    import faulthandler

    from fclm_data.build.executors import watch_parent

    faulthandler.disable()  # the crash is expected here and reported as the record's reject
    watch_parent(parent)
    build_shard(task)


def _last_journaled(out_dir: Path, index: int) -> str | None:
    path = journal_path(out_dir, index)
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[-1] if lines else None


def _how(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"
