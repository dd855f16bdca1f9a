"""A THUMOS or ActivityNet json as the input of `pipelines/prepare_dataset.py`.

Why: a user re-splitting THUMOS or ActivityNet, or keeping only some subsets of it, starts from the
released file rather than a CSV. Layouts: OpenTAD's and ActionFormer's THUMOS json, and
ActivityNet-1.3's (`activity_net.v1-3.min.json`: `duration`, `subset`, `url`, `resolution`, no
`frame` or `fps`). Only labels and segments are read: frame counts, fps and durations come from
the decoder when the videos are probed, so `frame` / `fps` may be there or not. The json's subset
becomes the split `subset` of the table (OpenTAD and ActivityNet "training" / ActionFormer
"Validation" -> train, OpenTAD and ActivityNet "validation" / ActionFormer "Test" -> test), used
with `--split-column subset`; ActivityNet's "testing" videos have no segments (leave them out with
`--subset training --subset validation`).

Released files hold segments a hand-written table would not (ActivityNet-1.3 has zero-length
segments and segments past their video's end, as OpenTAD's loaders accept): a zero-length segment
is dropped with a note here, and the table is marked `released`, so segments outside the decoded
video are clipped or dropped with a note (`adatad.datasets.prepare`) instead of refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

from adatad.datasets.segment_table import Segment, SegmentTable, VideoRows

# json subset -> split; the two layouts disagree on what "validation" means, so matching is exact.
SUBSET_SPLITS = {"training": "train", "validation": "test", "Validation": "train", "Test": "test"}
SPLIT_COLUMN = "subset"


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_thumos_json(path: str | os.PathLike, subsets: Sequence[str] = (), split_column: str | None = None
                     ) -> SegmentTable:
    """Videos (optionally only those of `subsets`, exact names) with their segments; problems collected,
    zero-length segments dropped with a note."""
    source = os.fspath(path)
    table = SegmentTable(source=source, released=True)
    try:
        with open(source, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        table.problems.append(f"{source}: cannot read the annotation json ({exc.strerror or exc})")
        return table
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        table.problems.append(f"{source}: invalid json{where}: {getattr(exc, 'msg', exc)}")
        return table
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        table.problems.append(f"{source}: missing object 'database' (expected the THUMOS / ActivityNet layout "
                              '{"database": {video_id: {"subset", "annotations": [...]}}})')
        return table
    if split_column not in (None, SPLIT_COLUMN):
        table.problems.append(f"--split-column {split_column}: a json input has only '{SPLIT_COLUMN}' "
                              "(its own train/test subsets)")
    present = sorted({str(info.get("subset")) for info in database.values() if isinstance(info, dict)})
    for name in subsets:
        if name not in present:
            table.problems.append(f"{source}: --subset {name!r}: no video has it (subsets present: {present}; "
                                  "names match exactly)")
    for vid, info in database.items():
        where = f"{source}: video '{vid}'"
        if not isinstance(info, dict):
            table.problems.append(f"{where}: expected an object, got {type(info).__name__}")
            continue
        subset = info.get("subset")
        if subsets and subset not in subsets:
            continue
        entry = table.video(str(vid), where)
        if split_column == SPLIT_COLUMN:
            entry.split = SUBSET_SPLITS.get(subset) if isinstance(subset, str) else None
            if entry.split is None:
                table.problems.append(f"{where}: field 'subset': {subset!r} is not a training or test subset "
                                      f"({', '.join(SUBSET_SPLITS)}), so --split-column subset cannot place it "
                                      "(--subset keeps only the named subsets)")
        _read_annotations(table, entry, info.get("annotations", []), where)
    if not table.videos and not table.problems:
        table.problems.append(f"{source}: no videos (subsets present: {present})")
    dropped = sum(v.zero_length for v in table.videos.values())
    if dropped:
        table.notes.append(f"{source}: {dropped} zero-length segment(s) dropped (start = end; OpenTAD's evaluator "
                           "drops them too)")
    return table


def _read_annotations(table: SegmentTable, entry: VideoRows, annotations: object, where: str) -> None:
    if not isinstance(annotations, list):
        table.problems.append(f"{where}: field 'annotations': expected a list, got {type(annotations).__name__}")
        return
    seen: set[tuple[float, float, str]] = set()
    problems_before = len(table.problems)
    for i, anno in enumerate(annotations):
        at = f"{where} annotations[{i}]"
        segment = anno.get("segment") if isinstance(anno, dict) else None
        label = anno.get("label") if isinstance(anno, dict) else None
        if not isinstance(label, str) or not label.strip():
            table.problems.append(f"{at}: field 'label': expected a class name, got {label!r}")
            continue
        if not isinstance(segment, (list, tuple)) or len(segment) != 2:
            table.problems.append(f"{at}: field 'segment': expected [start_s, end_s], got {segment!r}")
            continue
        start, end = _seconds(segment[0]), _seconds(segment[1])
        if start is None or end is None:
            table.problems.append(f"{at}: field 'segment': expected numbers of seconds, got {segment!r}")
        elif start < 0:
            table.problems.append(f"{at}: field 'segment': start {start} < 0")
        elif start == end:
            entry.zero_length += 1
        elif start > end:
            table.problems.append(f"{at}: field 'segment': start {start} > end {end}")
        elif (start, end, label) not in seen:  # exact duplicates dropped, as the loader does
            seen.add((start, end, label))
            entry.segments.append(Segment(start, end, label.strip(), at))
    entry.rejected += len(table.problems) - problems_before
    if not entry.segments and entry.unlabelled_at is None:
        entry.unlabelled_at = where
