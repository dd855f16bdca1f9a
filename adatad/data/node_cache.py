"""Data at a URI (videos, frame store entries), read from a bounded cache on the node's own disk.

Why a cache and not byte ranges (measured: benchmarks/README.md, "Object storage"): decord needs the
whole file (handed a file object, it copies all of it into memory before opening it), so a clip read
straight from the object store costs the whole video every time; and a frame store entry, although
Parquet reads ranges, is read almost whole by one training clip (a 768-frame window of the THUMOS
rows holds as many stored frames as the whole H.264 file's bytes several times over). Cached, a file
crosses the network once per node until it is evicted, and the epochs after the first read it from
disk. `data.cache_gb` bounds it (0: only the file in use is kept, and store entries are read by ranges).

Entries are named by the object's URI, size and modification time (one HEAD per read), so a
replaced object is fetched again; each is downloaded to a temporary name and renamed, so decode
actors sharing a node share the cache and never see half a file. When the cache exceeds its
bound, the least recently used entries go (a file a decoder has open stays readable until closed).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from adatad.locations import as_path

DEFAULT_LIMIT_BYTES = 20 * 2**30
_limit = [DEFAULT_LIMIT_BYTES]
_lock = threading.Lock()
# Counters of this process (benchmarks/bench_object_storage.py reads them).
stats = {"hits": 0, "misses": 0, "bytes_fetched": 0}


def cache_dir() -> Path:
    """`$TMPDIR/adatad-cache`: the node's own disk, shared by the decode actors on it."""
    return Path(tempfile.gettempdir()) / "adatad-cache"


def set_limit(limit_bytes: int) -> None:
    """The cache's bound on this node (`data.cache_gb`)."""
    _limit[0] = int(limit_bytes)


def local_copy(uri: str) -> str:
    """A local file with the bytes of the object at `uri` (FileNotFoundError when there is none)."""
    source = as_path(uri)
    info = source.info()  # retried through an outage (adatad.retry)
    if info.size is None or info.type.name != "File":
        raise FileNotFoundError(f"{uri}: file not found")
    stamp = info.mtime.timestamp() if info.mtime is not None else 0.0
    key = hashlib.blake2b(f"{uri}|{info.size}|{stamp}".encode(), digest_size=10).hexdigest()
    folder = cache_dir()
    path = folder / f"{key}-{source.name}"
    if path.is_file():
        os.utime(path)  # most recently used
        stats["hits"] += 1
        return str(path)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{source.name}.", suffix=".part")
    os.close(fd)
    try:
        source.download(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    stats["misses"] += 1
    stats["bytes_fetched"] += int(info.size)
    _evict(folder, keep=path)
    return str(path)


def _evict(folder: Path, keep: Path) -> None:
    """Least recently used entries out until the cache fits its bound (`keep`, just fetched, stays)."""
    with _lock:
        entries = []
        for entry in folder.iterdir():
            if entry.name.startswith(".") or entry == keep:
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # evicted meanwhile by another actor
                continue
            entries.append((st.st_mtime, st.st_size, entry))
        total = sum(size for _, size, _ in entries) + keep.stat().st_size
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total <= _limit[0]:
                break
            entry.unlink(missing_ok=True)
            total -= size
