"""Stopping a run on SIGTERM as on Ctrl-C: a preempted node, `ray job stop` or a scheduler's kill
interrupts the driver, which then writes what the run has and exits with `--resume` printed."""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

received: list[str] = []  # signals `stop_on_sigterm` turned into an interruption, newest last
_reasons: list[str] = []  # why `stop_from_thread` stops the run (said instead of the signal's name)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a preempted node, `ray job stop`, a scheduler's kill) turned into an interruption."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Meanwhile SIGTERM interrupts the driver like Ctrl-C, so a run stops cleanly (`save_stopped_run`)."""
    def terminate(signum: int, frame) -> None:
        why = _reasons.pop() if _reasons else signal.Signals(signum).name
        received.append(why)  # Ray may re-raise the interruption as its own
        raise Terminated(why)

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_from_thread(reason: str) -> None:
    """Stop the run from another thread exactly as SIGTERM does, saying `reason` (e.g. the object store
    has not answered for too long: `pipelines/runs/storage_watch.py`)."""
    _reasons.append(reason)
    _thread.interrupt_main(signal.SIGTERM)  # the main thread's SIGTERM handler runs, as for a real signal


class RunStopped(Exception):
    """The driver was stopped (SIGTERM, Ctrl-C) after `epochs` finished epochs; `--resume` continues."""

    def __init__(self, run_name: str, epochs: int, why: str) -> None:
        super().__init__(f"run {run_name} stopped ({why}) after {epochs} finished epoch(s)")
        self.run_name, self.epochs, self.why = run_name, epochs, why


def stop_reason(exc: BaseException) -> str:
    """Why the run stopped: the last signal turned into an interruption, else the exception."""
    return received[-1] if received else (str(exc) or type(exc).__name__)
