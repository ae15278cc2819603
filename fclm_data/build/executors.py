"""Executors: run one function over shard tasks, in-process, in local processes or on Ray.

All three take the same tasks and return the same results (in completion order); the shards they
write are byte-identical because each task is a pure function of its inputs. Ray is imported only
when the Ray executor is used, so ``fclm-data --help`` stays fast and Ray stays optional.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Protocol

EXECUTORS = ("auto", "serial", "processes", "ray")


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
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        pending: set = set()
        for task in tasks:
            pending.add(self._pool.submit(fn, task))
            if len(pending) >= 2 * self.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)

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
        pending: list = []
        for task in tasks:
            pending.append(remote.remote(task))
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(done)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done)

    def close(self) -> None:
        """Shut down the cluster only if this executor started it (never a cluster it joined)."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None, num_tasks: int = 0) -> Executor:
    """``auto``: Ray when an address is given, processes when workers > 1 and there are >= 4 shards."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    if kind == "auto":
        if ray_address:
            kind = "ray"
        elif workers > 1 and num_tasks >= 4:
            kind = "processes"
        else:
            kind = "serial"
    if kind == "serial":
        return SerialExecutor()
    if kind == "processes":
        return ProcessExecutor(workers)
    return RayExecutor(workers, ray_address)
