"""A command's log kept current in a run folder at a URI: written locally as the run goes, uploaded
every 30 s while it grows and once more at the end.

Why not write the log at the URI directly: an object is written whole (one PUT), never appended to,
and the log is written line by line. Why not at every epoch: an epoch of a full-size run takes
minutes to an hour, and a user following a run on the object store wants its lines sooner; 30 s of
PUTs of a file of a few MB cost nothing. A failed upload (the endpoint away for longer than the retry
window) is said once and tried again at the next round; the local file is the complete record
meanwhile (its path is printed at the start).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from pathlib import Path

from adatad.locations import ObjectPath, as_path, is_uri

EVERY_S = 30.0


def adopt_remote_log(local: Path, remote: ObjectPath) -> None:
    """Make `local` continue the log at `remote`. The local file is a mirror under the temp folder, named
    after the URI, so it may be left by another run: kept only where it extends the remote log (this
    machine's run, with lines not uploaded yet when it was killed); else replaced by the remote log (a
    resume on another machine, or after one), or removed where there is no remote log (a new run at a URI
    used before: the lines of a run whose folder is gone, or of another endpoint's bucket)."""
    remote_bytes = remote.read_bytes() if remote.is_file() else None
    if remote_bytes is None:
        local.unlink(missing_ok=True)
        return
    if local.is_file() and local.read_bytes().startswith(remote_bytes):
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".{local.name}.part")
    partial.write_bytes(remote_bytes)
    partial.replace(local)


class LogUploads:
    """`follow(local, remote)` starts the uploads; `close()` (or leaving the `with` block) uploads a last time."""

    def __init__(self, every_s: float = EVERY_S) -> None:
        self.every_s = every_s
        self._followed: list[tuple[Path, ObjectPath]] = []
        self._sent: dict[Path, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._lock = threading.Lock()

    def __enter__(self) -> LogUploads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def follow(self, local: Path, remote: ObjectPath) -> None:
        """Upload `local` to `remote` from now on, the remote log being the record the lines append to."""
        local = Path(local)
        adopt_remote_log(local, remote)
        self._followed.append((local, remote))
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="adatad-log-uploads", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._upload_all()

    def _upload_all(self) -> None:
        with self._lock:
            for local, remote in self._followed:
                try:
                    st = local.stat()
                except FileNotFoundError:
                    continue
                if self._sent.get(local) == (st.st_size, st.st_mtime):
                    continue
                try:
                    remote.upload(local)
                    self._sent[local] = (st.st_size, st.st_mtime)
                except OSError as exc:
                    if not self._warned:
                        self._warned = True
                        print(f"warning: the log was not uploaded to {remote} ({exc}); it is complete in {local} "
                              "and is uploaded again at the next try", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # The run log is closed by now: a retry's warning would reach the console as a bare line; the
        # one warning below says it if the upload fails.
        storage_log = logging.getLogger("adatad.storage")
        level = storage_log.level
        storage_log.setLevel(logging.ERROR)
        try:
            self._upload_all()
        finally:
            storage_log.setLevel(level)


def local_log_for(target: str) -> tuple[Path, ObjectPath | None]:
    """Where a command writes its log for an output `target` (a file or folder): beside it when local;
    for a URI in a local folder named after it, with the URI it is uploaded to."""
    if not is_uri(target):
        return Path(target), None
    local = Path(tempfile.gettempdir()) / "adatad-logs" / target.replace("://", "/", 1)
    local.parent.mkdir(parents=True, exist_ok=True)
    return local, as_path(target)
