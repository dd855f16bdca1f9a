"""Silencing the decoder's own stderr while our one-line messages say what went wrong."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_decoder() -> Iterator[None]:
    """Silence ffmpeg's and decord's C-level stderr lines (e.g. "moov atom not found") meanwhile.

    They repeat, unordered and without context, what our one-line messages already say. decord's
    own C++ log has no off switch, so file descriptor 2 itself points at /dev/null for the
    duration; Python exceptions are unaffected (they propagate and print after it is restored).
    The redirect is process-wide: threads share one around their whole pool, never one each.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
