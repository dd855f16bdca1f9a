"""A cheap fingerprint of a source video: its size and a hash of its first and last 64 KiB.

Why not the modification time: copying a data set to another disk or node changes it, and every
entry would look stale. Why not a hash of the whole file: THUMOS-14's 412 videos are ~5 GB, and
the check runs before every training. A re-encoded or replaced video changes its size or its head
(the container header) or its tail, so the sampled hash catches it.
"""

from __future__ import annotations

import hashlib
import os

from adatad.locations import as_path

SAMPLE_BYTES = 64 * 1024


def source_fingerprint(path: str | os.PathLike) -> str:
    """``<size>:<blake2b-128 of the first and last 64 KiB>``; raises OSError if the file cannot be read."""
    with as_path(path).open("rb") as fh:  # a video at a URI: two ranged reads
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(fh.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            fh.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(fh.read(SAMPLE_BYTES))
    return f"{size}:{digest.hexdigest()}"
