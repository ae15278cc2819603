"""Executors: run one function over shard tasks, in-process, in local processes or on Ray.

All three take the same tasks and return the same results (in completion order); the shards they
write are byte-identical because each task is a pure function of its inputs. Ray is imported only
when the Ray executor is used, so ``fclm-data --help`` stays fast and Ray stays optional.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

EXECUTORS = ("auto", "serial", "processes", "ray")


@dataclass
class TaskCrashed:
    """A task whose worker process died (a native crash, the OOM killer): the driver retries it alone.

    Yielded instead of a result. Every task in flight when a pool breaks is reported, innocent or
    not, so crashes are attributed only by isolated reruns (:mod:`fclm_data.build.isolation`).
    """

    task: Any
    error: str


def watch_parent(parent: int | None = None, interval: float = 0.5) -> None:
    """Worker initializer: exit when the parent process is gone (killed -9 leaves no one to stop us).

    Pool workers block on a pipe whose write end they inherited themselves, so they would never
    see EOF; a daemon thread polls the parent pid instead.
    """
    parent = parent or os.getppid()

    def _watch() -> None:
        import time

        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=_watch, name="fclm-parent-watch", daemon=True).start()


class Executor(Protocol):
    name: str

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """In-process: the default for small builds and tests (no start-up cost, easy to debug)."""

    name = "serial"

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Local worker processes; at most ``2 * workers`` tasks in flight to bound memory."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None  # kept across calls: indexing, then shards

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """Results in completion order; a task whose worker died yields :class:`TaskCrashed`."""
        pending: dict = {}
        for task in tasks:
            pending[self._submit(fn, task)] = task
            if len(pending) >= 2 * self.workers:
                yield from self._collect(pending)
        while pending:
            yield from self._collect(pending)

    def _submit(self, fn: Callable[[Any], Any], task: Any) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, initializer=watch_parent, initargs=(os.getpid(),)
            )
        try:
            return self._pool.submit(fn, task)
        except BrokenProcessPool:  # broken by a crash we have not collected yet: start a fresh pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return self._submit(fn, task)

    def _collect(self, pending: dict) -> Iterator[Any]:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            task = pending.pop(future)
            try:
                yield future.result()
            except BrokenProcessPool as exc:
                if self._pool is not None:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
                yield TaskCrashed(task, f"worker process died ({exc})")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayExecutor:
    """One Ray core task per shard (not Ray Data), bounded in flight with ``ray.wait``.

    ``address=None`` starts a local cluster with ``workers`` CPUs; ``address="auto"`` or
    ``"ray://host:10001"`` joins an existing cluster (every node must see the data root and the
    output directory at the same paths, e.g. a shared filesystem).
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers = workers
        self.address = address
        self._started_here = False

    def _ray(self) -> Any:
        import ray  # optional dependency: pip install 'fclm[ray]'

        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            elif self.workers:
                kwargs["num_cpus"] = self.workers
            ray.init(**kwargs)
            self._started_here = True
        return ray

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        ray = self._ray()
        remote = ray.remote(num_cpus=1, max_retries=2)(fn)
        limit = 2 * int(ray.cluster_resources().get("CPU", 1))
        pending: dict = {}
        for task in tasks:
            pending[remote.remote(task)] = task
            if len(pending) >= limit:
                yield from self._collect(ray, pending)
        while pending:
            yield from self._collect(ray, pending)

    def _collect(self, ray: Any, pending: dict) -> Iterator[Any]:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                yield ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                yield TaskCrashed(task, f"Ray worker died ({type(exc).__name__})")

    def close(self) -> None:
        """Shut down the cluster only if this executor started it (never a cluster it joined)."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None, num_tasks: int = 0) -> Executor:
    """``auto``: Ray when an address is given, else worker processes (one by default).

    ``auto`` never builds in the driver process: a native crash on one record then costs that
    record (see :mod:`fclm_data.build.isolation`), not the build. ``serial`` builds in-process
    (debuggers, profilers) and has no such protection.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    if kind == "auto":
        if ray_address:
            kind = "ray"
        else:
            kind = "processes"
    if kind == "serial":
        return SerialExecutor()
    if kind == "processes":
        return ProcessExecutor(workers)
    return RayExecutor(workers, ray_address)
