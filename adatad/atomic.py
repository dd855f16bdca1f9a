"""Atomic file writes: a reader sees the old file or the new one, never half of one.

On disk: a temp file beside the target, renamed over it. At a URI (`adatad.locations`): one PUT,
which an object store makes visible whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remote(path: object):
    """The `ObjectPath` of a URI or ObjectPath, else None (a local path)."""
    from adatad.locations import ObjectPath, as_path, is_uri

    if isinstance(path, ObjectPath) or is_uri(path):
        return as_path(path)
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    remote = _remote(path)
    if remote is not None:
        remote.write_text(text)
        return remote
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    remote = _remote(path)
    if remote is not None:
        remote.write_bytes(data)
        return remote
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)
