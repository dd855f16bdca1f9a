"""The segment CSV of `pipelines/prepare_dataset.py`: one labelled segment per row.

    video,start,end,label
    kitchen_01.mp4,12.4,15.0,chop
    kitchen_01.mp4,31.0,33.5,stir
    kitchen_02,,,

`video` is a file name inside the videos folder, with or without its extension; `start` / `end`
are seconds from the start of the video; `label` is the class name. A row with empty start, end
and label lists a video without segments (a background video). Other columns are ignored unless
named as the split column (values exactly `train` / `test`). Header names can be renamed
(`columns={"video": "clip"}`). Row numbers in messages are the file's line numbers (the header
is row 1), i.e. the row a spreadsheet shows.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from adatad.atomic import atomic_write_text
from adatad.datasets.segment_table import SPLITS, Segment, SegmentTable, VideoRows

REQUIRED = ("video", "start", "end", "label")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_segments_csv(path: str | os.PathLike, columns: Mapping[str, str] | None = None,
                      split_column: str | None = None) -> SegmentTable:
    """Every row of the CSV as per-video segments; every bad row is one line in `problems`.

    `columns` maps a required name (video, start, end, label) to the header used in this file.
    Problems: unreadable file, missing columns, an empty video name, a row with only some of
    start/end/label, a bad number, a negative start, start >= end, a bad split value, one video
    given two splits. Exact duplicate rows are dropped with a note.
    """
    source = os.fspath(path)
    table = SegmentTable(source=source)
    names = {key: (columns or {}).get(key, key) for key in REQUIRED}
    try:
        with open(source, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        table.problems.append(f"{source}: cannot read the segment CSV ({getattr(exc, 'strerror', None) or exc})")
        return table
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    wanted = [*names.values(), *([split_column] if split_column else [])]
    missing = [n for n in wanted if n not in header]
    doubled = sorted({h for h in header if h and header.count(h) > 1})
    if missing or doubled:
        what = (f"missing column(s) {', '.join(repr(m) for m in missing)}" if missing
                else f"column(s) {', '.join(repr(d) for d in doubled)} appear twice")
        table.problems.append(f"{source}: row 1: {what}; the header has {header} (expected "
                              f"{', '.join(wanted)}; rename with --columns, e.g. --columns video=clip)")
        return table
    index = {key: header.index(name) for key, name in names.items()}
    split_index = header.index(split_column) if split_column else None
    seen = _Seen()
    rows = 0
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue  # blank line
        rows += 1
        where = f"{source}: row {line}"
        if len(fields) != len(header):
            table.problems.append(f"{where}: {len(fields)} fields, the header has {len(header)}: {fields}")
            continue
        value = {key: fields[i].strip() for key, i in index.items()}
        if not value["video"]:
            table.problems.append(f"{where}: column '{names['video']}' is empty (expected a video file name)")
            continue
        entry = table.video(value["video"], where)
        if split_index is not None:
            _set_split(table, entry, fields[split_index].strip(), where, split_column)
        given = [key for key in ("start", "end", "label") if value[key]]
        if not given:
            entry.unlabelled_at = entry.unlabelled_at or where
            continue
        problems_before = len(table.problems)
        _read_segment(table, entry, value, names, where, seen)
        entry.rejected += len(table.problems) > problems_before
    if rows == 0:
        table.problems.append(f"{source}: no rows below the header (expected one segment per row)")
    if seen.duplicates:
        table.notes.append(f"{source}: {seen.duplicates} duplicate row(s) (same video, start, end and label) ignored")
    return table


@dataclass
class _Seen:
    """Segments read so far (video, start, end, label), counting the exact duplicates dropped."""

    keys: set[tuple[str, float, float, str]] = field(default_factory=set)
    duplicates: int = 0


def _read_segment(table: SegmentTable, entry: VideoRows, value: dict[str, str], names: dict[str, str], where: str,
                  seen: _Seen) -> None:
    if not all(value[k] for k in ("start", "end", "label")):
        empty = [names[k] for k in ("start", "end", "label") if not value[k]]
        table.problems.append(f"{where}: column(s) {', '.join(repr(e) for e in empty)} empty but not all of "
                              f"start/end/label (a video without segments has all three empty); got "
                              f"start={value['start']!r} end={value['end']!r} label={value['label']!r}")
        return
    start, end = _number(value["start"]), _number(value["end"])
    bad = [(k, value[k]) for k, v in (("start", start), ("end", end)) if v is None]
    if bad:
        table.problems.extend(f"{where}: column '{names[k]}': expected a number of seconds, got {v!r}"
                              for k, v in bad)
        return
    if start < 0:
        table.problems.append(f"{where}: column '{names['start']}': expected seconds >= 0, got {value['start']!r}")
        return
    if start >= end:
        table.problems.append(f"{where}: start {value['start']} >= end {value['end']} (expected start < end)")
        return
    key = (value["video"], start, end, value["label"])
    if key in seen.keys:
        seen.duplicates += 1
        return
    seen.keys.add(key)
    entry.segments.append(Segment(start, end, value["label"], where))


def _set_split(table: SegmentTable, entry: VideoRows, value: str, where: str, column: str) -> None:
    if value not in SPLITS:
        table.problems.append(f"{where}: column '{column}': expected 'train' or 'test' (exact), got {value!r}")
    elif entry.split is None:
        entry.split = value
    elif entry.split != value:
        table.problems.append(f"{where}: column '{column}': video '{entry.name}' is '{value}' here but "
                              f"'{entry.split}' in an earlier row (a video belongs to one split)")


def parse_columns(items: Sequence[str]) -> dict[str, str]:
    """`["video=clip", "label=action"]` -> {"video": "clip", "label": "action"}; ValueError names the bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or key.strip() not in REQUIRED or not name.strip():
            raise ValueError(f"--columns {item!r}: expected NAME=HEADER with NAME one of {', '.join(REQUIRED)}")
        out[key.strip()] = name.strip()
    return out


def write_segments_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, str]],
                       fieldnames: Sequence[str] = (*REQUIRED, "split")) -> None:
    """Write `rows` (dicts keyed by `fieldnames`) as a segment CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
