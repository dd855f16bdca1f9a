"""The videos a data set leaves out: OpenTAD's ``block_list`` and ActivityNet's ``blocked.json``.

Why: some ActivityNet videos are no longer on YouTube. OpenTAD skips the ids listed in the
video folder's ``missing_files.txt`` (one id per line, written by
``tools/prepare_data/generate_missing_list.py``) when it builds its training and test sets, and its
evaluator drops the ids of ``annotations/blocked.json`` (a json list) from the ground truth and the
predictions. ``data.block_list`` takes either file; the videos it lists are left out of training,
test and evaluation alike (docs/recipe.md, "ActivityNet and Charades: data").
"""

from __future__ import annotations

import json
import os

from adatad.data.annotations import AnnotationError
from adatad.locations import as_path


def read_block_list(path: str | os.PathLike) -> frozenset[str]:
    """The video ids in ``path``: a json list of strings, or one id per line (blank lines ignored)."""
    source = os.fspath(path)
    try:
        text = as_path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotationError(f"{source}: cannot read the block list (data.block_list): "
                              f"{exc.strerror or exc}") from None
    if text.lstrip().startswith("["):
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{source}: invalid json at line {exc.lineno} column {exc.colno}: {exc.msg} "
                                  "(data.block_list: a json list of video ids, or one id per line)") from None
        bad = next((x for x in ids if not isinstance(x, str) or not x.strip()), None) if isinstance(ids, list) else ids
        if not isinstance(ids, list) or bad is not None:
            raise AnnotationError(f"{source}: expected a json list of video id strings (data.block_list), "
                                  f"found {bad!r}")
        return frozenset(x.strip() for x in ids)
    return frozenset(line.strip() for line in text.splitlines() if line.strip())
