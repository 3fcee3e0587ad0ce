"""Where the per-shard stages of `data prepare` and `data dedup` run: here, or on Ray.

A stage is a list of picklable zero-argument tasks; `run_tasks` yields their results in task
order (so the output never depends on timing) with at most `window` in flight (so memory
stays bounded). The local executor is a process pool; `ray` submits the same tasks to a Ray
cluster (RAY_ADDRESS, or a local instance started for the command), for corpora that
outgrow one machine. Both give identical outputs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from languini.errors import UserError

T = TypeVar("T")
EXECUTORS = ("local", "ray")
PRELOAD = ["languini.data.prepare", "languini.data.dedup"]


class Pending(Protocol):
    def get(self) -> Any: ...


class Executor(Protocol):
    def apply_async(self, task: Callable[[], Any]) -> Pending: ...


def _call(task: Callable[[], T]) -> T:
    return task()


class _RayResult:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)


class RayExecutor:
    """Tasks as Ray remote functions; the task objects travel by Ray's (cloud)pickle."""

    def __init__(self) -> None:
        import ray

        self._remote = ray.remote(_call)

    def apply_async(self, task: Callable[[], Any]) -> Pending:
        return _RayResult(self._remote.remote(task))


@contextlib.contextmanager
def _ray(workers: int) -> Iterator[RayExecutor]:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'languini[ray]'.") from None
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kwargs)
    try:
        yield RayExecutor()
    finally:
        if started:
            ray.shutdown()


def _single_threaded() -> bool:
    """No Python thread besides this one: none can hold a lock across the fork. (BLAS
    libraries' native threads register fork handlers of their own.)"""
    return threading.active_count() == 1


@contextlib.contextmanager
def executor(kind: str, workers: int) -> Iterator[Executor | None]:
    """Local workers are forked, which is cheapest, only from a single-threaded process: one
    that already runs Python threads (TensorBoard's, tqdm's, a test runner's) can fork a child
    holding a lock no thread will release, and the pool then hangs; such a process gets its
    workers from a forkserver. None for one local worker (cheaper, simpler to debug)."""
    if kind not in EXECUTORS:
        raise UserError(f"Unknown executor '{kind}' (use {' or '.join(EXECUTORS)}).")
    if kind == "ray":
        with _ray(workers) as ex:
            yield ex
    elif workers <= 1:
        yield None
    else:
        ctx = multiprocessing.get_context("fork" if _single_threaded() else "forkserver")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)  # workers start with the stage code imported
        with ctx.Pool(workers) as pool:
            yield pool


def run_tasks(ex: Executor | None, tasks: Iterable[Callable[[], T]], window: int) -> Iterator[T]:
    """Run tasks on `ex`, at most `window` ahead, yielding their results in task order."""
    if ex is None:
        yield from (task() for task in tasks)
        return
    pending: deque = deque()
    for task in tasks:
        pending.append(ex.apply_async(task))
        if len(pending) > window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
