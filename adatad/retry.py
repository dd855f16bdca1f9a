"""Reads and writes of an object store through an outage of its endpoint: retried, said once, given up late.

Why here and not only in the S3 client: pyarrow's client retries a request a few times within a
second or two and then fails, and a failed read in a decode actor would cost a clip, a failed
checkpoint upload a restart of the workers. Every call of `adatad.locations.ObjectPath` (and the
checkpoint upload of `pipelines/ray_layer/worker.py`) goes through `retrying`: while the endpoint
cannot be reached it waits and tries again (1, 2, 4, 8, 8, ... s), logs one warning per process,
and gives up with `StorageUnavailable` once the outage has lasted `runtime.storage_retry_s`
(`set_window`; 120 s by default). Errors that waiting does not fix (no such object, access
denied) are raised at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEFAULT_WINDOW_S = 120.0
_window = [DEFAULT_WINDOW_S]
_warned: list[str] = []  # what this process has warned about (one line per process)
log = logging.getLogger("adatad.storage")

# pyarrow's (AWS SDK's) words for a failure that may pass: no connection, a 5xx, throttling.
TRANSIENT_MARKERS = ("NETWORK_CONNECTION", "Could not connect", "Could not resolve", "Connection refused",
                     "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "SLOW_DOWN", "Timeout was reached",
                     "HTTP status 500", "HTTP status 502", "HTTP status 503", "HTTP status 504",
                     "curlCode: 7", "curlCode: 28", "curlCode: 52", "curlCode: 56", "cannot reach")


class StorageUnavailable(OSError):
    """The object store could not be reached for longer than the retry window (one line)."""


def set_window(seconds: float) -> None:
    """How long this process keeps retrying through an outage (`runtime.storage_retry_s`)."""
    _window[0] = float(seconds)


def window_s() -> float:
    return _window[0]


def is_transient(exc: BaseException) -> bool:
    """An error that waiting may fix: the endpoint unreachable, overloaded or failing (not a missing
    object or refused credentials)."""
    if isinstance(exc, (FileNotFoundError, StorageUnavailable)):
        return False
    text = str(exc)
    return isinstance(exc, OSError) and any(marker in text for marker in TRANSIENT_MARKERS)


def retrying(action: Callable[[], T], what: str, warn: Callable[[str], None] | None = None) -> T:
    """`action()`, retried through a transient failure for up to the window; `what` names the call
    ("reading s3://b/x.mp4") in the one warning and in `StorageUnavailable`."""
    started: float | None = None
    delay = 1.0
    while True:
        try:
            result = action()
            if started is not None and _warned:
                log.warning("%s: succeeded after %.0f s of retries", what, time.monotonic() - started)
                _warned.clear()  # a later outage is said again
            return result
        except OSError as exc:
            if not is_transient(exc):
                raise
            detail = _first_line(exc)
            named = what.rsplit(" ", 1)[-1] + ": "  # the location, when `what` ends with it and the error starts with it
            detail = detail.removeprefix(named) if what.endswith(named[:-2]) else detail
            now = time.monotonic()
            started = now if started is None else started
            if now - started >= _window[0]:
                _warned.clear()  # the next outage is said again
                # Without the client's "AWS Error ..." words, which callers such as Ray Train's
                # checkpoint upload take as a reason to retry again.
                short = re.sub(r"AWS Error \w+", "error", detail)
                raise StorageUnavailable(f"{what}: still failing after {_window[0]:.0f} s "
                                         f"(runtime.storage_retry_s): {short}") from None
            if not _warned:
                _warned.append(what)
                (warn or log.warning)(f"{what}: {detail}; retrying for up to {_window[0]:.0f} s")
            time.sleep(min(delay, max(0.1, started + _window[0] - now)))
            delay = min(delay * 2, 8.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else type(exc).__name__
