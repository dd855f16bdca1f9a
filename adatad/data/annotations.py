"""THUMOS-14 annotation json (OpenTAD's or ActionFormer's layout) -> validated video records and a class map.

Both common layouts load (docs/recipe.md section 1)::

    OpenTAD:      {"database": {<video_id>: {"subset": "training" | "validation", "duration": s, "frame": int,
                                             "annotations": [{"segment": [start_s, end_s], "label": name}]}}}
    ActionFormer: {"version": ..., "database": {<video_id>: {"subset": "Validation" | "Test", "duration": s,
                                             "fps": 30.0, "annotations": [{"label", "segment", ...}]}}}

Frame count per video: ``frame`` when present; else ``round(duration * fps)``; else unknown
(:data:`UNKNOWN_FRAMES`): the decoder supplies it (``adatad.data.check.fill_frame_counts``), so
a hand-written json needs neither. The record's fps is ``frame / duration`` (json) or the
decoder's (unknown). Extra fields (``segment(frames)``, ``label_id``, ``version``) are ignored:
class indices always come from the class map.

The two layouts name the same subsets differently: ActionFormer's "Validation" (THUMOS'14
validation videos) is the TRAINING set, OpenTAD's "validation" (THUMOS'14 test videos) the TEST
set. Subsets therefore never match case-insensitively; OpenTAD's names are translated only when
they are absent and the file's subsets are exactly ActionFormer's (:func:`resolve_subset`).

ActivityNet-1.3's json (``activity_net.v1-3.min.json``: ``duration``, ``subset``, ``url``,
``resolution``, no ``frame`` / ``fps``) loads as it is; :func:`load_annotations` also takes the file
prefix (``v_``), a block list, a fixed frame rate (Charades) and the training filter of short
segments (docs/recipe.md, "ActivityNet and Charades: data").

Every problem is reported as one :class:`AnnotationError` line that names the file, the video id
and the field, because a silently dropped or mis-indexed segment is the classic cause of a
collapsed mAP.

Segments that do not fit their video are not problems: released files have them (ActionFormer's
thumos14.json has 30 that start after their video ends), and OpenTAD and ActionFormer accept them.
As they do (docs/recipe.md section 1): training drops a segment entirely outside [0, duration] and
clips one partly outside (``VideoRecord.segments``); evaluation scores the segments as the file
has them (``VideoRecord.eval_segments``), so numbers stay comparable with published ones; a
zero-length segment is dropped from both. :func:`segment_notices` lists them, for the data check's
warnings and the commands' ``note:`` line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adatad.locations import as_path, is_uri

# A segment may overshoot [0, duration] by this much (seconds) without a notice: float rounding when the
# json was written. Training clips it either way.
SEGMENT_TOLERANCE_S = 1e-3

# A record whose json has neither `frame` nor `fps`: num_frames and fps are 0 until the decoder fills them.
UNKNOWN_FRAMES = 0
# ActionFormer's subset names for OpenTAD's: "training" = THUMOS'14 validation videos, "validation" = test videos.
ACTIONFORMER_SUBSETS = {"training": "Validation", "validation": "Test"}


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video; segments in seconds, labels as class indices."""

    video_id: str
    path: str  # absolute path of the video file (existence is checked by the data check, not here)
    subset: str
    duration: float  # seconds
    num_frames: int
    fps: float  # num_frames / duration
    segments: np.ndarray  # (N, 2) float64 seconds: what training uses (inside [0, duration])
    labels: np.ndarray  # (N,) int64 class indices
    # What evaluation scores: the segments as the file has them, even outside the video (None: `segments`).
    eval_segments: np.ndarray | None = None  # (M, 2) float64 seconds
    eval_labels: np.ndarray | None = None  # (M,) int64 class indices

    @property
    def frames_known(self) -> bool:
        """False when the json gave neither `frame` nor `fps` and the decoder has not filled them yet."""
        return self.num_frames != UNKNOWN_FRAMES

    @property
    def evaluation_ground_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(segments (M, 2) seconds, labels (M,)) that validation and test score against: the file's own."""
        if self.eval_segments is None or self.eval_labels is None:
            return self.segments, self.labels
        return self.eval_segments, self.eval_labels


OUTSIDE, PARTLY_OUTSIDE, ZERO_LENGTH = "outside", "partly outside", "zero-length"


@dataclass(frozen=True)
class SegmentNotice:
    """A ground-truth segment that training does not use as the file has it (never an error: see the module doc)."""

    video_id: str
    index: int  # its place in the video's "annotations" list
    label: str
    segment: tuple[float, float]  # seconds, as the file has it
    duration: float  # the video's, from the file
    kind: str  # OUTSIDE (training drops it), PARTLY_OUTSIDE (training clips it), ZERO_LENGTH (dropped)

    def describe(self) -> str:
        """One line naming the video, the annotation and what happens to it."""
        start, end = self.segment
        where = f"video '{self.video_id}': annotations[{self.index}] ({self.label}) [{start:g}, {end:g}]"
        if self.kind == ZERO_LENGTH:
            return f"{where} has zero length"
        return f"{where} lies {self.kind} the video [0, {self.duration:g}]"


class AnnotationError(ValueError):
    """Bad annotation or class-map content; the message is one line naming file, video and field."""


def _read_json(annotation_file: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(annotation_file)
    try:
        text = as_path(path).read_text(encoding="utf-8")  # a URI too (adatad.locations)
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read annotation file ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f"{path}: invalid json at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    if not isinstance(data, dict) or "database" not in data:
        raise AnnotationError(f"{path}: missing top-level key 'database' (expected the THUMOS/OpenTAD layout)")
    database = data["database"]
    if not isinstance(database, dict):
        raise AnnotationError(
            f"{path}: 'database' must be an object mapping video id -> info, got {type(database).__name__}"
        )
    for vid, info in database.items():
        if not isinstance(info, dict):
            raise AnnotationError(f"{path}: video '{vid}': entry must be an object, got {type(info).__name__}")
    return database


def _field(path: str, vid: str, info: dict[str, Any], key: str) -> Any:
    if key not in info:
        raise AnnotationError(f"{path}: video '{vid}': missing field '{key}'")
    return info[key]


def _number(path: str, where: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{path}: {where}: expected {what}, got {value!r}")
    return float(value)


def _labels_of(database: dict[str, Any]) -> set[str]:
    labels: set[str] = set()
    for info in database.values():
        annos = info.get("annotations", [])
        if isinstance(annos, list):
            labels.update(a["label"] for a in annos if isinstance(a, dict) and isinstance(a.get("label"), str))
    return labels


def load_class_names(
    annotation_file: str | os.PathLike,
    class_map_file: str | os.PathLike | None = None,
    skip_labels: Sequence[str] = ("Ambiguous",),
) -> list[str]:
    """Class names in index order.

    From ``class_map_file`` (one name per line, blank lines ignored) when given; otherwise the
    alphabetically sorted set of labels over the whole json (as OpenTAD generates
    ``category_idx.txt``), minus ``skip_labels`` since the loaders never train on them.
    """
    if class_map_file is not None:
        path = os.fspath(class_map_file)
        try:
            names = [line.strip() for line in as_path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            raise AnnotationError(f"{path}: cannot read class map ({e.strerror or e})") from None
        if not names:
            raise AnnotationError(f"{path}: class map is empty (expected one class name per line)")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise AnnotationError(f"{path}: class map lists '{name}' twice")
            seen.add(name)
        return names
    database = _read_json(annotation_file)
    names = sorted(_labels_of(database) - set(skip_labels))
    if not names:
        raise AnnotationError(f"{os.fspath(annotation_file)}: no labels found to build a class map")
    return names


def _frame_count(path: str, vid: str, info: dict[str, Any], duration: float, fixed_fps: float | None = None) -> int:
    """`frame` (OpenTAD), else round(duration * `fps`) (ActionFormer), else UNKNOWN_FRAMES (decoder).

    With `fixed_fps` (Charades: 30): int(duration * fixed_fps) whatever the json says, as OpenTAD's
    fixed-fps datasets size their windows (`SlidingWindowDataset.split_video_to_windows`).
    """
    if fixed_fps is not None:
        frame = int(duration * fixed_fps)
        if frame < 1:
            raise AnnotationError(f"{path}: video '{vid}': field 'duration': {duration!r} s gives no frame at "
                                  f"data.fixed_fps={fixed_fps:g}")
        return frame
    if "frame" in info:
        frame = info["frame"]
        if isinstance(frame, float) and frame.is_integer():
            frame = int(frame)
        if isinstance(frame, bool) or not isinstance(frame, int) or frame <= 0:
            raise AnnotationError(f"{path}: video '{vid}': field 'frame': expected a positive integer, got {frame!r}")
        return frame
    if "fps" in info:
        fps = _number(path, f"video '{vid}': field 'fps'", info["fps"], "a positive frame rate")
        if fps <= 0 or round(duration * fps) < 1:
            raise AnnotationError(f"{path}: video '{vid}': field 'fps': expected a positive frame rate giving at "
                                  f"least one frame over duration {duration}, got {info['fps']!r}")
        return round(duration * fps)
    return UNKNOWN_FRAMES


def _fit_to_video(start: float, end: float, duration: float, tolerance: float) -> tuple[str | None, float, float]:
    """(notice kind or None, training start, training end) of a segment with start <= end.

    OpenTAD's and ActionFormer's random truncation intersect each GT with a window inside the video:
    a GT with no overlap is never a target, one partly outside keeps its inside part, and a
    zero-length GT (0 / 0 kept fraction) never passes the threshold; their evaluators drop e - s <= 0.
    """
    if end == start:
        return ZERO_LENGTH, start, end
    if end <= 0.0 or start >= duration:
        return OUTSIDE, start, end
    kind = PARTLY_OUTSIDE if start < -tolerance or end > duration + tolerance else None
    return kind, max(start, 0.0), min(end, duration)


@dataclass
class _ParsedVideo:
    duration: float
    frame: int
    train: list[tuple[float, float, str]]  # (start, end, label), inside the video
    file: list[tuple[float, float, str]]  # as the file has them: what evaluation scores
    notices: list[SegmentNotice]


def _parse_video(
    path: str,
    vid: str,
    info: dict[str, Any],
    class_index: dict[str, int] | None,
    skip: set[str],
    tolerance: float,
    fixed_fps: float | None = None,
    min_fraction: float = 0.0,
) -> _ParsedVideo:
    duration = _number(path, f"video '{vid}': field 'duration'", _field(path, vid, info, "duration"),
                       "a positive number of seconds")
    if duration <= 0:
        raise AnnotationError(f"{path}: video '{vid}': field 'duration': expected > 0, got {duration!r}")
    frame = _frame_count(path, vid, info, duration, fixed_fps)
    annos = _field(path, vid, info, "annotations")
    if not isinstance(annos, list):
        raise AnnotationError(f"{path}: video '{vid}': field 'annotations': expected a list, got {type(annos).__name__}")

    parsed = _ParsedVideo(duration, frame, [], [], [])
    seen: set[tuple[float, float, str]] = set()
    for i, anno in enumerate(annos):
        where = f"video '{vid}': annotations[{i}]"
        if not isinstance(anno, dict):
            raise AnnotationError(f"{path}: {where}: expected an object, got {type(anno).__name__}")
        if "segment" not in anno:
            raise AnnotationError(f"{path}: {where}: missing field 'segment'")
        if "label" not in anno:
            raise AnnotationError(f"{path}: {where}: missing field 'label'")
        label = anno["label"]
        if not isinstance(label, str):
            raise AnnotationError(f"{path}: {where}: field 'label': expected a class name string, got {label!r}")
        if label in skip:
            continue
        seg = anno["segment"]
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise AnnotationError(f"{path}: {where}: field 'segment': expected [start_s, end_s], got {seg!r}")
        start = _number(path, f"{where}: field 'segment'", seg[0], "numeric [start_s, end_s]")
        end = _number(path, f"{where}: field 'segment'", seg[1], "numeric [start_s, end_s]")
        if start > end:
            raise AnnotationError(f"{path}: {where}: field 'segment': start {start} >= end {end}")
        if class_index is not None and label not in class_index:
            raise AnnotationError(f"{path}: {where}: field 'label': '{label}' is not in the class map")
        key = (start, end, label)
        if key in seen:  # exact duplicate (same segment and label), dropped as OpenTAD does
            continue
        seen.add(key)
        kind, train_start, train_end = _fit_to_video(start, end, duration, tolerance)
        if kind is not None:
            parsed.notices.append(SegmentNotice(vid, i, label, (start, end), duration, kind))
        if kind == ZERO_LENGTH:
            continue
        parsed.file.append((start, end, label))
        # OpenTAD's filter_gt (AnetResizeDataset.get_gt): a training segment must cover more than
        # `min_fraction` of its video, measured on the file's segment.
        if kind != OUTSIDE and not (min_fraction > 0 and (end - start) / duration <= min_fraction):
            parsed.train.append((train_start, train_end, label))
    return parsed


def _subsets_of(path: str, database: dict[str, Any]) -> set[str]:
    present: set[str] = set()
    for vid, info in database.items():
        sub = _field(path, vid, info, "subset")
        if not isinstance(sub, str):
            raise AnnotationError(f"{path}: video '{vid}': field 'subset': expected a string, got {sub!r}")
        present.add(sub)
    return present


def resolve_subset(present: set[str], subset: str) -> str:
    """The subset name to select in a file whose subsets are `present`.

    As given when present (exact match, never case-insensitive: ActionFormer's "Validation" is
    the training set, OpenTAD's "validation" the test set). OpenTAD's "training" / "validation"
    become ActionFormer's "Validation" / "Test" only when absent and the file's subsets are
    exactly {"Validation", "Test"}, so a config written for OpenTAD's json reads ActionFormer's.
    """
    if subset in present or subset not in ACTIONFORMER_SUBSETS:
        return subset
    if present == set(ACTIONFORMER_SUBSETS.values()):
        return ACTIONFORMER_SUBSETS[subset]
    return subset


def subset_translation_note(annotation_file: str | os.PathLike, subsets: Sequence[str]) -> str | None:
    """One line saying which configured subsets :func:`load_annotations` reads under ActionFormer's
    names in this file, or None when every subset is used as given (command lines print it once)."""
    path = os.fspath(annotation_file)
    present = _subsets_of(path, _read_json(path))
    pairs = [(s, resolve_subset(present, s)) for s in dict.fromkeys(subsets)]
    moved = [f"'{s}' -> '{r}'" for s, r in pairs if r != s]
    if not moved:
        return None
    return (f"{path} uses ActionFormer's subset names: reading configured subset {', '.join(moved)} "
            f"(ActionFormer's 'Validation' = THUMOS'14 validation videos = training set, "
            f"'Test' = THUMOS'14 test videos = test set)")


def _selected(path: str, database: dict[str, Any], subset: str | Sequence[str]) -> list[str]:
    """Sorted ids of the videos of `subset` (after :func:`resolve_subset`); none is an error."""
    requested = [subset] if isinstance(subset, str) else list(subset)
    if not requested:
        raise AnnotationError(f"{path}: no subset requested")
    present = _subsets_of(path, database)
    wanted = {resolve_subset(present, s) for s in requested}
    selected = sorted(vid for vid, info in database.items() if info["subset"] in wanted)
    if not selected:
        raise AnnotationError(
            f"{path}: no video in subset {sorted(wanted)}; subsets present: {sorted(present) or 'none'}"
        )
    return selected


def _segment_array(items: list[tuple[float, float, str]], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    segments = np.asarray([(s, e) for s, e, _ in items], dtype=np.float64).reshape(-1, 2)
    return segments, np.asarray([index[n] for _, _, n in items], dtype=np.int64)


def segment_notices(
    annotation_file: str | os.PathLike,
    subset: str | Sequence[str],
    skip_labels: Sequence[str] = ("Ambiguous",),
    segment_tolerance_s: float = SEGMENT_TOLERANCE_S,
) -> list[SegmentNotice]:
    """Every segment of `subset`'s videos that lies (partly) outside its video or has zero length, in
    video order: what :func:`load_annotations` drops or clips for training (never an error)."""
    path = os.fspath(annotation_file)
    database = _read_json(path)
    skip = set(skip_labels)
    return [notice for vid in _selected(path, database, subset)
            for notice in _parse_video(path, vid, database[vid], None, skip, segment_tolerance_s).notices]


def segment_note(annotation_file: str | os.PathLike, subsets: Sequence[str], training: bool = True) -> str | None:
    """One line for a command's output about :func:`segment_notices` of `subsets` (None when there are none).

    `training` False (test.py): only what evaluation does with them.
    """
    notices = segment_notices(annotation_file, list(dict.fromkeys(subsets)))
    if not notices:
        return None
    count = {kind: sum(n.kind == kind for n in notices) for kind in (OUTSIDE, PARTLY_OUTSIDE, ZERO_LENGTH)}
    videos = len({n.video_id for n in notices if n.kind != ZERO_LENGTH})
    parts = []
    if count[OUTSIDE] or count[PARTLY_OUTSIDE]:
        if training:
            what = (f"{count[OUTSIDE]} entirely: not trained on, {count[PARTLY_OUTSIDE]} partly: clipped to the "
                    f"video for training")
        else:
            what = f"{count[OUTSIDE]} entirely, {count[PARTLY_OUTSIDE]} partly"
        parts.append(f"{count[OUTSIDE] + count[PARTLY_OUTSIDE]} ground-truth segment(s) in {videos} video(s) lie "
                     f"outside their video ({what}) and are scored as the file has them, as OpenTAD does")
    if count[ZERO_LENGTH]:
        parts.append(f"{count[ZERO_LENGTH]} zero-length segment(s) are dropped")
    return f"{os.fspath(annotation_file)}: " + "; ".join(parts) + "; pipelines/check_data.py lists them"


def load_annotations(
    annotation_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    subset: str | Sequence[str],
    class_names: Sequence[str] | None = None,
    video_ext: str = "mp4",
    skip_labels: Sequence[str] = ("Ambiguous",),
    segment_tolerance_s: float = SEGMENT_TOLERANCE_S,
    video_prefix: str = "",
    blocked: Collection[str] = (),
    fixed_fps: float | None = None,
    min_segment_fraction: float = 0.0,
) -> tuple[list[VideoRecord], list[str]]:
    """Validated records of the videos whose ``subset`` equals one of ``subset`` (exact match,
    after :func:`resolve_subset`'s OpenTAD -> ActionFormer translation).

    ActivityNet and Charades (docs/recipe.md, "ActivityNet and Charades: data"): a video's file is
    ``video_dir/<video_prefix><id>.<video_ext>`` (ActivityNet: ``v_``); ids in ``blocked`` (a block
    list) are left out; ``fixed_fps`` gives every video that fps and ``int(duration * fixed_fps)``
    frames; training drops segments no longer than ``min_segment_fraction`` of their video.

    A video whose json has neither ``frame`` nor ``fps`` gets ``num_frames == UNKNOWN_FRAMES`` and
    ``fps == 0.0`` (``record.frames_known`` is False); ``adatad.data.check.check_videos`` accepts
    such records and ``fill_frame_counts`` fills them from the decoder before training.
    ``class_names`` fixes the label -> index map (an unknown label is an error); without it the
    map is built by :func:`load_class_names` over the whole file. ``segments`` are what training
    uses: segments entirely outside [0, duration] dropped, those partly outside clipped;
    ``eval_segments`` keep the file's values; zero-length segments are in neither (start > end is
    an error). Overshoots up to ``segment_tolerance_s`` raise no notice (:func:`segment_notices`).
    Returns (records sorted by video id, class names).
    """
    path = os.fspath(annotation_file)
    database = _read_json(path)
    selected = _selected(path, database, subset)
    if blocked:
        kept = [vid for vid in selected if vid not in blocked]
        if not kept:
            raise AnnotationError(f"{path}: every video of subset {subset!r} ({len(selected)}) is in the block list "
                                  "(data.block_list)")
        selected = kept

    skip = set(skip_labels)
    if class_names is None:
        names = sorted(_labels_of(database) - skip)
        class_index = None  # every label seen is in the derived map
    else:
        names = list(class_names)
        class_index = {n: i for i, n in enumerate(names)}
    index = {n: i for i, n in enumerate(names)}

    root = os.fspath(video_dir)
    root = root if is_uri(root) else os.path.abspath(root)  # a URI's videos: s3://bucket/videos/<id>.mp4
    records: list[VideoRecord] = []
    for vid in selected:
        info = database[vid]
        parsed = _parse_video(path, vid, info, class_index, skip, segment_tolerance_s, fixed_fps,
                              min_segment_fraction)
        segments, labels = _segment_array(parsed.train, index)
        eval_segments, eval_labels = _segment_array(parsed.file, index)
        if fixed_fps is not None:
            fps = float(fixed_fps)
        else:
            fps = parsed.frame / parsed.duration if parsed.frame != UNKNOWN_FRAMES else 0.0
        records.append(
            VideoRecord(
                video_id=vid,
                path=os.path.join(root, f"{video_prefix}{vid}.{video_ext}"),
                subset=info["subset"],
                duration=parsed.duration,
                num_frames=parsed.frame,
                fps=fps,
                segments=segments,
                labels=labels,
                eval_segments=eval_segments,
                eval_labels=eval_labels,
            )
        )
    return records, names
