"""Where the per-shard stages of `data prepare` and `data dedup` run: here, or on Ray.

A stage is a list of picklable zero-argument tasks; `run_tasks` yields their results in task
order (so the output never depends on timing) with at most `window` in flight (so memory
stays bounded). The local executor is a process pool; `ray` submits the same tasks to a Ray
cluster (RAY_ADDRESS, or a local instance started for the command), for corpora that
outgrow one machine. Both give identical outputs.

Both stop within moments on Ctrl-C or SIGTERM. A terminal sends SIGINT to the whole process
group; local workers ignore it and only the command decides, so no worker prints a traceback
of its own. Whatever ends the stage (an interrupt, a failed task, a dead worker), the workers
are ended with it: `multiprocessing.Pool` cannot promise that (its `terminate` waits on a queue
lock that a worker killed by the same Ctrl-C may never release), so the pool here is a small
one whose workers can always be killed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
from collections import deque
from multiprocessing.connection import Connection, wait
from multiprocessing.pool import ExceptionWithTraceback
from typing import Any, Callable, Iterable, Iterator, Protocol, TypeVar

from languini.errors import UserError
from languini.interrupts import SIGNALS, shielded, terminate_raises

T = TypeVar("T")
EXECUTORS = ("local", "ray")
PRELOAD = ["languini.data.prepare", "languini.data.dedup"]


class Pending(Protocol):
    def get(self) -> Any: ...


class Executor(Protocol):
    def apply_async(self, task: Callable[[], Any]) -> Pending: ...


def _call(task: Callable[[], T]) -> T:
    return task()


def _reply(key: int, task: Callable[[], Any]) -> bytes:
    """A task's result or exception (with its traceback, as multiprocessing.Pool sends it), pickled."""
    try:
        reply = (key, True, task())
    except Exception as e:
        reply = (key, False, ExceptionWithTraceback(e, e.__traceback__))
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        what = "result" if reply[1] else "exception"
        return pickle.dumps((key, False, RuntimeError(f"a task's {what} could not be sent back: {e}")))


def _work(tasks: Any, results: Connection, lock: Any) -> None:
    """A worker: SIGINT is the command's to handle, SIGTERM ends the worker at once. (The
    signals were held back while it was started; they count from here.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    while (item := tasks.get()) is not None:
        data = _reply(*item)
        with lock:
            results.send_bytes(data)


class _LocalResult:
    def __init__(self, pool: "LocalPool", key: int) -> None:
        self.pool, self.key = pool, key

    def get(self) -> Any:
        return self.pool.result(self.key)


class LocalPool:
    """Worker processes that take tasks from one queue and send results back over one pipe.

    Putting a task never blocks (a queue's feeder thread writes it), so the command can always
    read results; a worker that dies is noticed instead of waited for."""

    def __init__(self, ctx: Any, workers: int) -> None:
        self._tasks = ctx.Queue()
        self._results, send = ctx.Pipe(duplex=False)
        self._lock = ctx.Lock()  # kept: a forkserver's workers open it by name after start() returns
        self._procs = [ctx.Process(target=_work, args=(self._tasks, send, self._lock), daemon=True)
                       for _ in range(workers)]
        try:
            with shielded():  # a Ctrl-C in a fork's Python callbacks would be swallowed there
                for p in self._procs:
                    p.start()
        except BaseException:
            self.close()
            raise
        finally:
            send.close()  # the workers hold it now
        self._next = 0
        self._done: dict[int, tuple[bool, Any]] = {}

    def apply_async(self, task: Callable[[], Any]) -> Pending:
        key, self._next = self._next, self._next + 1
        self._tasks.put((key, task))
        return _LocalResult(self, key)

    def result(self, key: int) -> Any:
        while key not in self._done:
            self._receive()
        ok, value = self._done.pop(key)
        if not ok:
            raise value
        return value

    def _receive(self) -> None:
        """One result into `_done`, or the UserError of a worker that died."""
        wait([self._results, *(p.sentinel for p in self._procs)])
        if self._results.poll():
            with contextlib.suppress(EOFError):  # EOF: every worker is gone (said below)
                key, ok, value = pickle.loads(self._results.recv_bytes())
                self._done[key] = (ok, value)
                return
        codes = [p.exitcode for p in self._procs if p.exitcode is not None]
        if codes:  # (else it is still being reaped: the next wait returns at once)
            hint = "; out of memory? try fewer --workers" if codes[0] == -signal.SIGKILL else ""
            raise UserError(f"A worker process ended unexpectedly (exit code {codes[0]}{hint}).")

    def close(self) -> None:
        """End the workers, busy or not: SIGTERM, then SIGKILL for any still alive after a second."""
        started = [p for p in self._procs if p.pid is not None]
        for p in started:
            p.terminate()
        for p in started:
            p.join(1)
            if p.exitcode is None:
                p.kill()
                p.join()
        self._tasks.cancel_join_thread()  # tasks never taken must not hold up the exit
        self._tasks.close()
        self._results.close()


class _RayResult:
    def __init__(self, ex: "RayExecutor", ref: Any) -> None:
        self.ex, self.ref = ex, ref

    def get(self) -> Any:
        import ray

        value = ray.get(self.ref)
        self.ex.pending.discard(self.ref)
        return value


class RayExecutor:
    """Tasks as Ray remote functions; the task objects travel by Ray's (cloud)pickle."""

    def __init__(self) -> None:
        import ray

        self._remote = ray.remote(_call)
        self.pending: set[Any] = set()

    def apply_async(self, task: Callable[[], Any]) -> Pending:
        ref = self._remote.remote(task)
        self.pending.add(ref)
        return _RayResult(self, ref)

    def cancel(self) -> None:
        """Stop the tasks still running or queued: on a shared cluster nobody else would."""
        import ray

        for ref in self.pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


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
    ex = RayExecutor()
    try:
        yield ex
    except BaseException:
        with shielded():
            ex.cancel()
        raise
    finally:
        if started:
            with shielded():
                ray.shutdown()


def _single_threaded() -> bool:
    """No Python thread besides this one: none can hold a lock across the fork. (BLAS
    libraries' native threads register fork handlers of their own.)"""
    return threading.active_count() == 1


@contextlib.contextmanager
def _local(workers: int) -> Iterator[LocalPool]:
    """Local workers are forked, which is cheapest, only from a single-threaded process: one
    that already runs Python threads (TensorBoard's, tqdm's, a test runner's) can fork a child
    holding a lock no thread will release, and the pool then hangs; such a process gets its
    workers from a forkserver."""
    ctx = multiprocessing.get_context("fork" if _single_threaded() else "forkserver")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)  # workers start with the stage code imported
    pool = LocalPool(ctx, workers)
    try:
        yield pool
    finally:
        with shielded():
            pool.close()


@contextlib.contextmanager
def executor(kind: str, workers: int) -> Iterator[Executor | None]:
    """The workers of a stage, ended when the block ends however it ends; SIGTERM stops the
    block as Ctrl-C does. None for one local worker (cheaper, simpler to debug)."""
    if kind not in EXECUTORS:
        raise UserError(f"Unknown executor '{kind}' (use {' or '.join(EXECUTORS)}).")
    with terminate_raises():
        if kind == "ray":
            with _ray(workers) as ex:
                yield ex
        elif workers <= 1:
            yield None
        else:
            with _local(workers) as pool:
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
