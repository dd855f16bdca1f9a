"""Own videos + a segment table -> a data set the THUMOS recipe trains on (`pipelines/prepare_dataset.py`).

Steps: read the table (CSV, or a THUMOS / ActivityNet json) -> find every video file -> probe
every video with the real decoder (worker processes: frame count, fps, first and last frame) ->
check each segment against its video's decoded length -> split the videos -> build the outputs
in memory -> load them back with the project's own loaders (`load_annotations`, `load_config`)
-> only then write them, each atomically. Any problem anywhere: all are raised together in one
:class:`PrepareError` (one line each, naming the row and the value) and nothing is written.

Written into `out`: `annotations.json` (OpenTAD layout; `frame` and `fps` from the decoder,
`duration` = frame / fps; subsets "training" / "validation" as the THUMOS recipe expects),
`category_idx.txt` (labels sorted), `split.csv` (one row per video, for people), and, when the
videos do not share one extension, `video_links/<id>.<ext>` symlinks (the loader builds paths
as `video_dir/<id>.<video_ext>`; ffmpeg reads a file by its content, not its name). The config
goes to `config_out` (default `configs/<name>.yaml`), composed from `base` via `_base_`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adatad.atomic import atomic_write_text
from adatad.config import CONFIG_DIR, PROJECT_ROOT, ConfigError, load_config, work_root
from adatad.data.annotations import AnnotationError, load_annotations, load_class_names
from adatad.data.inspect import VideoInspection, inspect_videos
from adatad.data.video_files import find_video, index_video_dir
from adatad.datasets.config_yaml import config_text
from adatad.datasets.segment_table import SegmentTable, VideoRows
from adatad.datasets.segments_csv import read_segments_csv
from adatad.datasets.segments_json import read_thumos_json
from adatad.datasets.split import Split, coverage_notes, stratified_split
from adatad.datasets.stride_advice import advise_frame_stride

DEFAULT_BASE = "configs/thumos_videomae_s_768x1_160_adapter.yaml"
ANNOTATION_FILE, CLASS_MAP_FILE, SPLIT_FILE, LINK_DIR = "annotations.json", "category_idx.txt", "split.csv", \
    "video_links"
SUBSET_OF = {"train": "training", "test": "validation"}  # OpenTAD's names, which the THUMOS recipe reads
ACTIVITYNET_PREFIX = "v_"  # ActivityNet's video files are v_<id>.mp4
SKIP_LABELS = ("Ambiguous",)  # THUMOS's "ambiguous" marks: kept in the json, never a class (as the loader)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


_ROW = re.compile(r": row (\d+)[:,]")


def in_file_order(problems: list[str]) -> list[str]:
    """Problems sorted by the input row they name (stable; lines without a row keep their place first)."""
    def row(line: str) -> int:
        match = _ROW.search(line)
        return int(match.group(1)) if match else 0

    return sorted(problems, key=row)


class PrepareError(ValueError):
    """Everything wrong with the inputs, one line per problem (`problems`, in file order); nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = in_file_order(problems)
        problems = self.problems
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3
                                                                                     else ""))


@dataclass
class PrepareRequest:
    videos: Path
    segments: Path
    out: Path
    name: str | None = None  # default: the name of `out`
    config_out: Path | None = None  # default: configs/<name>.yaml in the project
    base: Path = PROJECT_ROOT / DEFAULT_BASE
    test_fraction: float = 0.2
    split_column: str | None = None  # take the split from this column instead
    seed: int = 0
    keep_unlabelled: bool = False
    subsets: tuple[str, ...] = ()  # json input: only these subsets
    columns: dict[str, str] = field(default_factory=dict)  # CSV header renames
    workers: int | None = None  # probing processes (None: min(8, CPUs))
    force: bool = False  # replace existing outputs
    python: str = "python"  # the interpreter the config's header names (the command passes the running one)


@dataclass
class Video:
    """A video of the data set: what the table says plus what the decoder says."""

    rows: VideoRows
    path: Path
    inspection: VideoInspection

    @property
    def video_id(self) -> str:
        return self.path.stem


@dataclass
class PreparedDataset:
    name: str
    annotation_file: Path
    class_map_file: Path
    split_file: Path
    config_file: Path
    video_dir: Path
    video_ext: str
    runs_dir: Path  # where train.py puts the runs of this config (runtime.storage_path)
    classes: list[str]
    train: list[str]
    test: list[str]
    background: int
    segments: int
    notes: list[str]


def _display(path: Path) -> str:
    """`path` relative to the work root when inside it (portable configs), else absolute."""
    try:
        return str(path.resolve().relative_to(work_root()))
    except ValueError:
        return str(path.resolve())


def _base_reference(base: Path, config_file: Path) -> str:
    """`_base_` as written: relative to the config's folder when both live in the project, else absolute."""
    base, folder = base.resolve(), config_file.resolve().parent
    inside = all(p.is_relative_to(PROJECT_ROOT) for p in (base, folder))
    return os.path.relpath(base, folder) if inside else str(base)


def _outputs(req: PrepareRequest, name: str) -> tuple[Path, Path]:
    out = req.out.resolve()
    return out, (req.config_out or CONFIG_DIR / f"{name}.yaml").resolve()


def _check_request(req: PrepareRequest, name: str, problems: list[str]) -> None:
    if not NAME_PATTERN.fullmatch(name):
        problems.append(f"--dataset-name {name!r}: expected letters, digits, '_', '.' or '-' (it names the config and runs)")
    if not req.videos.is_dir():
        problems.append(f"--videos {req.videos}: not a folder")
    if req.segments.suffix.lower() not in (".csv", ".json"):
        problems.append(f"--segments {req.segments}: expected a .csv segment table or a THUMOS .json")
    if req.split_column is None and not 0.0 < req.test_fraction < 1.0:
        problems.append(f"--test-fraction {req.test_fraction}: expected a number in (0, 1)")
    if req.seed < 0:
        problems.append(f"--seed {req.seed}: expected an integer >= 0")
    out, config_file = _outputs(req, name)
    if not req.force:
        taken = [p for p in (out / ANNOTATION_FILE, out / CLASS_MAP_FILE, out / SPLIT_FILE, out / LINK_DIR,
                             config_file) if p.exists() or p.is_symlink()]
        problems.extend(f"{p}: exists (pass --force to replace it)" for p in taken)


def _read_table(req: PrepareRequest) -> SegmentTable:
    if req.segments.suffix.lower() == ".json":
        return read_thumos_json(req.segments, req.subsets, req.split_column)
    table = read_segments_csv(req.segments, req.columns, req.split_column)
    if req.subsets:
        table.problems.append("--subset: only for a THUMOS json input (a CSV has no subsets)")
    return table


def _find_videos(req: PrepareRequest, table: SegmentTable, problems: list[str]) -> dict[str, tuple[VideoRows, Path]]:
    """Video id -> (its rows, its file); every unresolvable or doubled name is a problem.

    A released json's id without a file of its own finds `v_<id>` (ActivityNet's file names, which
    OpenTAD reads with `PrepareVideoInfo(prefix="v_")`); the video id is then the file's stem.
    """
    index = index_video_dir(req.videos) if req.videos.is_dir() else {}
    found: dict[str, tuple[VideoRows, Path]] = {}
    prefixed = 0
    for rows in table.videos.values():
        path = find_video(req.videos, rows.name, index)
        if isinstance(path, str) and table.released:
            other = find_video(req.videos, ACTIVITYNET_PREFIX + rows.name, index)
            if not isinstance(other, str):
                path, prefixed = other, prefixed + 1
        if isinstance(path, str):
            problems.append(f"{rows.where}: video {rows.name!r}: {path}")
            continue
        if path.stem in found and found[path.stem][1] != path:
            problems.append(f"{rows.where}: video {rows.name!r} ({path.name}) has the id '{path.stem}' of "
                            f"{found[path.stem][1].name} (named at {found[path.stem][0].where}); ids are file names "
                            "without extension, so rename one")
            continue
        if path.stem in found:  # the same file under two spellings ("a" and "a.mp4"): one video
            found[path.stem][0].segments.extend(rows.segments)
            found[path.stem][0].rejected += rows.rejected
            continue
        if not rows.segments and not req.keep_unlabelled and not rows.rejected:
            problems.append(f"{rows.unlabelled_at or rows.where}: video {rows.name!r} has no segments; pass "
                            "--keep-unlabelled to keep it as a background video (or remove the row)")
            continue
        found[path.stem] = (rows, path)
    if prefixed:
        table.notes.append(f"{prefixed} video(s) of {table.source} were found as {ACTIVITYNET_PREFIX}<id> files "
                           f"(ActivityNet's names); their ids in {ANNOTATION_FILE} are the file names, with the prefix")
    return found


def _check_segments(videos: list[Video], problems: list[str], released: bool = False) -> list[str]:
    """Segments must lie in the decoded video; up to one frame past the end is clipped (rounding).

    `released` (a released json, e.g. ActivityNet-1.3, whose durations and the re-encoded videos
    differ): a segment past the end is clipped to the video, one starting at or after the end is
    dropped, each counted in the returned notes, as the loaders treat them for training.
    """
    clipped = dropped = 0
    for video in videos:
        info = video.inspection.info
        duration = video.inspection.duration
        kept = []
        for seg in video.rows.segments:
            if released and seg.start >= duration:
                dropped += 1
                continue
            if seg.end > duration + 1.0 / info.fps:
                if not released:
                    problems.append(f"{seg.where}: segment [{seg.start:g}, {seg.end:g}] of video '{video.video_id}' "
                                    f"ends after the video ({duration:.3f} s: {info.num_frames} frames at "
                                    f"{info.fps:g} fps)")
                    continue
                clipped += 1
            kept.append(seg if seg.end <= duration else type(seg)(seg.start, duration, seg.label, seg.where))
        video.rows.segments = kept
        for seg in kept:
            if seg.start >= seg.end:  # the start lies in the last frame: nothing left after clipping
                problems.append(f"{seg.where}: segment [{seg.start:g}, ...] of video '{video.video_id}' starts at "
                                f"the end of the video ({duration:.3f} s)")
    notes = []
    if clipped:
        notes.append(f"{clipped} segment(s) ending after their decoded video were clipped to its end")
    if dropped:
        notes.append(f"{dropped} segment(s) starting at or after the end of their decoded video were dropped")
    return notes


def _split(req: PrepareRequest, videos: list[Video], problems: list[str]) -> Split | None:
    labels = {v.video_id: {s.label for s in v.rows.segments if s.label not in SKIP_LABELS} for v in videos}
    if req.split_column is None:
        try:
            return stratified_split(labels, req.test_fraction, req.seed)
        except ValueError as exc:
            problems.append(str(exc))
            return None
    test = sorted(v.video_id for v in videos if v.rows.split == "test")
    train = sorted(v.video_id for v in videos if v.rows.split == "train")
    for side, ids in (("train", train), ("test", test)):
        if not ids:
            problems.append(f"--split-column {req.split_column}: no video has the value '{side}'")
    return Split(tuple(train), tuple(test), tuple(coverage_notes(labels, set(test))))


def _video_location(req: PrepareRequest, out: Path, videos: list[Video], notes: list[str]) -> tuple[Path, str, bool]:
    """(video_dir, video_ext, links needed): the videos' folder when they share an extension."""
    extensions = Counter(v.path.suffix for v in videos)
    ext = extensions.most_common(1)[0][0]
    if len(extensions) == 1:
        return req.videos.resolve(), ext[1:], False
    notes.append(f"the videos have {len(extensions)} extensions ({', '.join(sorted(extensions))}): "
                 f"{out / LINK_DIR} gets one symlink <id>{ext} per video (the loader expects one extension)")
    return out / LINK_DIR, ext[1:], True


def _database(videos: list[Video], split: Split) -> dict[str, dict]:
    database = {}
    for v in sorted(videos, key=lambda v: v.video_id):
        info = v.inspection.info
        database[v.video_id] = {
            "subset": SUBSET_OF[split.of(v.video_id)],
            "duration": info.num_frames / info.fps,
            "frame": info.num_frames,
            "fps": info.fps,
            "annotations": [{"segment": [s.start, s.end], "label": s.label}
                            for s in sorted(v.rows.segments, key=lambda s: (s.start, s.end, s.label))],
        }
    return database


def _split_csv(videos: list[Video], split: Split) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "split", "subset", "frames", "fps", "duration_s", "segments", "labels", "file"])
    for v in sorted(videos, key=lambda v: (split.of(v.video_id) == "test", v.video_id)):
        info, side = v.inspection.info, split.of(v.video_id)
        writer.writerow([v.video_id, side, SUBSET_OF[side], info.num_frames, f"{info.fps:.6g}",
                         f"{v.inspection.duration:.3f}", len(v.rows.segments),
                         ";".join(sorted({s.label for s in v.rows.segments})), str(v.path)])
    return buffer.getvalue()


def _fps_notes(videos: list[Video]) -> list[str]:
    rates = sorted({round(v.inspection.info.fps, 3) for v in videos})
    if len(rates) > 1 and rates[-1] / rates[0] > 1.25:
        return [f"frame rates range from {rates[0]:g} to {rates[-1]:g} fps: seconds stay right (each video uses its "
                "own fps), but one window position spans a different time per video; re-encoding to one rate "
                "makes actions look alike to the model"]
    return []


def _self_check(database: dict, classes: list[str], config: str, problems: list[str]) -> None:
    """Load the outputs with the loaders train.py uses, from a scratch folder (nothing published yet)."""
    with tempfile.TemporaryDirectory(prefix="prepare-check-") as scratch:
        ann, cmap, cfg = Path(scratch, ANNOTATION_FILE), Path(scratch, CLASS_MAP_FILE), Path(scratch, "config.yaml")
        ann.write_text(json.dumps({"database": database}))
        cmap.write_text("".join(f"{c}\n" for c in classes))
        cfg.write_text(config)
        try:
            names = load_class_names(ann, cmap)
            for subset in SUBSET_OF.values():
                load_annotations(ann, scratch, subset, names)
            loaded = load_config(cfg)
            if loaded.model.head.num_classes != len(names):
                problems.append(f"the written config has {loaded.model.head.num_classes} classes, the class map "
                                f"{len(names)}")
        except (AnnotationError, ConfigError) as exc:
            problems.append(f"the prepared data set does not load: {exc}")


def _publish_links(link_dir: Path, videos: list[Video], ext: str, force: bool) -> None:
    """Create the symlink folder beside its final place, then move it in (replacing our own old one)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{LINK_DIR}.", dir=link_dir.parent))
    try:
        for v in videos:
            (staging / f"{v.video_id}.{ext}").symlink_to(v.path)
        if link_dir.exists() and force:
            shutil.rmtree(link_dir)
        os.replace(staging, link_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def prepare_dataset(req: PrepareRequest, say: Callable[[str], None] | None = None) -> PreparedDataset:
    """Check everything, then write the data set (see the module doc); raises PrepareError with every problem."""
    say = say or (lambda _: None)
    req = dataclasses.replace(req, videos=Path(os.path.abspath(req.videos)))
    name = req.name or req.out.resolve().name
    out, config_file = _outputs(req, name)
    problems: list[str] = []
    _check_request(req, name, problems)
    base_cfg = None
    try:
        base_cfg = load_config(req.base)
    except ConfigError as exc:
        problems.append(f"--base: {exc}")
    table = _read_table(req) if req.segments.suffix.lower() in (".csv", ".json") else SegmentTable(str(req.segments))
    problems.extend(table.problems)
    found = _find_videos(req, table, problems)

    paths = sorted({str(p) for _, p in found.values()})
    if paths:
        say(f"probing {len(paths)} videos with the decoder ...")
    inspections = {i.path: i for i in inspect_videos(paths, req.workers)}
    videos = []
    for rows, path in found.values():
        inspection = inspections[str(path)]
        if inspection.problem is not None:
            problems.append(f"{rows.where}: video {rows.name!r}: {inspection.problem}")
        else:
            videos.append(Video(rows, path, inspection))
    segment_notes = _check_segments(videos, problems, table.released)
    if problems:
        raise PrepareError(problems)

    notes = list(table.notes) + segment_notes
    split = _split(req, videos, problems)
    classes = [c for c in table.labels() if c not in SKIP_LABELS]
    if not classes:
        problems.append(f"{table.source}: no labelled segment (every class name comes from the segments)")
    if problems or split is None:
        raise PrepareError(problems)
    notes.extend(split.notes)
    notes.extend(_fps_notes(videos))
    skipped = sum(s.label in SKIP_LABELS for v in videos for s in v.rows.segments)
    if skipped:
        notes.append(f"{skipped} segment(s) labelled {' / '.join(SKIP_LABELS)} are kept in {ANNOTATION_FILE} but are "
                     "no class (training and evaluation skip them, as for THUMOS)")
    background = sum(not v.rows.segments for v in videos)
    if background:
        notes.append(f"{background} video(s) without segments kept as background (--keep-unlabelled)")
    listed = {v.path for v in videos}
    unlisted = [p for files in index_video_dir(req.videos).values() for p in files
                if Path(os.path.abspath(p)) not in listed]
    if unlisted:
        notes.append(f"{len(unlisted)} video file(s) in {req.videos} are not in the segment table and were left "
                     f"out (e.g. {unlisted[0].name})")

    video_dir, video_ext, links = _video_location(req, out, videos, notes)
    database = _database(videos, split)
    stride = advise_frame_stride([v.inspection.info.fps for v in videos],
                                 [s.end - s.start for v in videos for s in v.rows.segments if s.label not in SKIP_LABELS],
                                 base_cfg.data.frame_stride, base_cfg.data.window_size)
    notes.extend(f"data.frame_stride {base_cfg.data.frame_stride} -> {stride.stride}: {r}" for r in stride.reasons)
    most = max((len(v.rows.segments) for v in videos), default=0)
    max_segments = most if most > base_cfg.data.max_segments else None
    if max_segments:
        notes.append(f"data.max_segments {base_cfg.data.max_segments} -> {most} (a video has {most} segments)")
    segments = sum(len(v.rows.segments) for v in videos)
    how = (f"from column '{req.split_column}'" if req.split_column
           else f"stratified by class, --test-fraction {req.test_fraction:g} --seed {req.seed}")
    fields = dict(name=name, video_ext=video_ext, num_classes=len(classes), experiment_name=f"adatad-{name}",
                  train_subset=SUBSET_OF["train"], test_subset=SUBSET_OF["test"],
                  frame_stride=stride if stride.stride != base_cfg.data.frame_stride else None,
                  max_segments=max_segments, header=[
                      f"Data set '{name}', written by pipelines/prepare_dataset.py from {req.segments.resolve()}",
                      f"  {len(videos)} videos ({len(split.train)} train, {len(split.test)} test, {background} "
                      f"background), {len(classes)} classes, {segments} segments; split {how}",
                      f"Train: {req.python} pipelines/train.py --config {_display(config_file)}"])
    config = config_text(base=_base_reference(req.base, config_file), annotation_file=_display(out / ANNOTATION_FILE),
                         video_dir=_display(video_dir), class_map_file=_display(out / CLASS_MAP_FILE), **fields)
    check_config = config_text(base=str(req.base.resolve()), annotation_file=str(out / ANNOTATION_FILE),
                               video_dir=str(video_dir), class_map_file=str(out / CLASS_MAP_FILE), **fields)
    _self_check(database, classes, check_config, problems)
    if problems:
        raise PrepareError(problems)

    out.mkdir(parents=True, exist_ok=True)
    if links:
        _publish_links(video_dir, videos, video_ext, req.force)
    atomic_write_text(out / CLASS_MAP_FILE, "".join(f"{c}\n" for c in classes))
    atomic_write_text(out / SPLIT_FILE, _split_csv(videos, split))
    atomic_write_text(out / ANNOTATION_FILE, json.dumps({"database": database}, indent=1) + "\n")
    atomic_write_text(config_file, config)
    runs_dir = Path(base_cfg.resolve_path(base_cfg.runtime.storage_path))
    return PreparedDataset(name, out / ANNOTATION_FILE, out / CLASS_MAP_FILE, out / SPLIT_FILE, config_file,
                           video_dir, video_ext, runs_dir, classes, list(split.train), list(split.test), background,
                           segments, notes)
