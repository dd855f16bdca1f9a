"""Stopping a run on SIGTERM as on Ctrl-C: a preempted node, `ray job stop` or a scheduler's kill
interrupts the driver, which then writes what the run has and exits with `--resume` printed."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

received: list[str] = []  # signals `stop_on_sigterm` turned into an interruption, newest last


class Terminated(KeyboardInterrupt):
    """SIGTERM (a preempted node, `ray job stop`, a scheduler's kill) turned into an interruption."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Meanwhile SIGTERM interrupts the driver like Ctrl-C, so a run stops cleanly (`save_stopped_run`)."""
    def terminate(signum: int, frame) -> None:
        received.append(signal.Signals(signum).name)  # Ray may re-raise the interruption as its own
        raise Terminated(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunStopped(Exception):
    """The driver was stopped (SIGTERM, Ctrl-C) after `epochs` finished epochs; `--resume` continues."""

    def __init__(self, run_name: str, epochs: int, why: str) -> None:
        super().__init__(f"run {run_name} stopped ({why}) after {epochs} finished epoch(s)")
        self.run_name, self.epochs, self.why = run_name, epochs, why


def stop_reason(exc: BaseException) -> str:
    """Why the run stopped: the last signal turned into an interruption, else the exception."""
    return received[-1] if received else (str(exc) or type(exc).__name__)
