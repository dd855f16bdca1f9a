"""The driver's eye on the object store a run uses: an outage said once, one that lasts stops the run.

Every process that reads or writes a URI rides out an outage of its endpoint by itself
(`adatad.retry`: decode actors, the checkpoint upload, the driver's uploads), so a short outage
costs waiting time and nothing else. The user should still hear of it, once, and a run should not
wait forever on a store that is gone: while training runs, the driver asks each bucket the run uses
whether it answers, every few seconds. The first failure prints one `warning:` line; recovery goes
to the log (`adatad` logger); an outage longer than `runtime.storage_retry_s` stops the run as SIGTERM does
(`pipelines/runs/stop.py`): the workers end, the last checkpoint Ray registered stays in the store,
the MLflow run is marked KILLED and `--resume` is printed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from adatad.locations import bucket_of, endpoint_url, is_uri, quick_filesystem, reason_of
from adatad.retry import set_window
from pipelines.runs.stop import stop_from_thread

log = logging.getLogger("adatad.storage")
EVERY_S = 3.0


class StorageWatch:
    """Use as a context manager around the fit; `outage` says whether the store is away now."""

    def __init__(self, uris: Iterable[str], window_s: float, warn: Callable[[str], None],
                 every_s: float = EVERY_S) -> None:
        self.buckets = sorted({f"{u.split('://', 1)[0]}://{bucket_of(u)}" for u in uris if is_uri(u)})
        self.window_s, self.warn, self.every_s = window_s, warn, every_s
        self.since: float | None = None  # when the current outage began (monotonic)
        self.stopped_for: str | None = None  # why the watch stopped the run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def outage(self) -> bool:
        return self.since is not None

    def __enter__(self) -> StorageWatch:
        if self.buckets:
            self._thread = threading.Thread(target=self._loop, name="adatad-storage-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _answers(self) -> str | None:
        """None when every bucket answers, else the first failure."""
        for bucket in self.buckets:
            try:
                quick_filesystem(bucket).get_file_info(bucket_of(bucket))
            except OSError as exc:
                return f"{bucket}: {reason_of(exc, bucket)}"
        return None

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            failure = self._answers()
            now = time.monotonic()
            if failure is None:
                if self.since is not None:
                    log.info("the object store answers again after %.0f s; reads and writes were retried",
                             now - self.since)
                    self.since = None
                continue
            if self.since is None:
                self.since = now
                where = endpoint_url() or ", ".join(self.buckets)
                self.warn(f"the object store ({where}) does not answer; reads and writes are retried for up to "
                          f"{self.window_s:.0f} s (runtime.storage_retry_s), then the run stops")
            elif now - self.since > self.window_s and self.stopped_for is None:
                self.stopped_for = (f"the object store did not answer for {now - self.since:.0f} s "
                                    f"(runtime.storage_retry_s={self.window_s:g}): {failure}")
                set_window(1.0)  # the driver's own remaining calls to the store fail fast from here on
                stop_from_thread(self.stopped_for)
                return
