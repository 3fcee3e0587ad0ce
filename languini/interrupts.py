"""Stopping on a person's signal: SIGTERM behaves like Ctrl-C, and cleanup is not cut short.

Python turns SIGINT into KeyboardInterrupt, so `finally` blocks and `except BaseException`
cleanups (temporary folders, worker pools) run; SIGTERM would kill the process before any of
them. `terminate_raises` makes SIGTERM raise too, and `shielded` holds both signals back while
cleanup runs, so a second Ctrl-C cannot leave a temporary folder half removed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Terminated(KeyboardInterrupt):
    """SIGTERM received: a KeyboardInterrupt, so everything that cleans up after Ctrl-C runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM raises `Terminated` in the main thread while inside (elsewhere: no change).

    A handler someone else installed (the trainer's, which checkpoints first) is left alone."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (then they are delivered)."""
    if not _main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def signal_name(e: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
