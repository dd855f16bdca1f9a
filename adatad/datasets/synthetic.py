"""Writing the synthetic THUMOS-like data set: real H.264 mp4 files with visible actions at known times.

What the videos show is planned in :mod:`adatad.datasets.synthetic_plan` and drawn by
:mod:`adatad.datasets.synthetic_render`; this module encodes them and writes the data set.

Layout written (OpenTAD THUMOS layout, docs/recipe.md section 1)::

    out_dir/videos/<video_id>.mp4
    out_dir/category_idx.txt        one class name per line, index order
    out_dir/synthetic_spec.json     the generation parameters (used to detect a stale data set)
    out_dir/annotations.json        {"database": {...}}, written LAST: its presence means complete

Every file goes through `adatad/atomic.py` (temp file beside it, rename). The json states each
video's own ``frame`` and ``duration`` (videos may differ in frame rate, see ``fps_cycle``).
``SyntheticSpec(layout="anet")`` follows ActivityNet's conventions instead (``v_<id>.mp4`` files,
no ``frame`` in the json, a block list and a video classifier file: :mod:`adatad.datasets.synthetic_anet`),
``layout="epic"`` EPIC-KITCHENS-100's (``train`` / ``val`` subsets, durations only, ``id_NNN`` labels:
:mod:`adatad.datasets.synthetic_epic`).
:func:`segment_rows` lists the segments as rows of the CSV that ``pipelines/prepare_dataset.py``
reads.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import IO

import av

from adatad.atomic import atomic_open, atomic_write_text
from adatad.datasets import synthetic_anet, synthetic_epic
from adatad.datasets.synthetic_plan import ACTION_CLASSES, SyntheticSpec, VideoLayout, plan_dataset
from adatad.datasets.synthetic_render import render_frames

ANNOTATION_FILE = "annotations.json"
CLASS_MAP_FILE = "category_idx.txt"
SPEC_FILE = "synthetic_spec.json"
VIDEO_DIR = "videos"


def _count_frames(source: IO[bytes]) -> int:
    with av.open(source) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def _encode(spec: SyntheticSpec, layout: VideoLayout, target: IO[bytes]) -> None:
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(layout.fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        # mbtree off: x264's macroblock-tree rate control was measured to give different
        # bitstreams for identical input from run to run (even single-threaded); without it
        # the output is bit-exact, which makes "same seed -> same frames" hold.
        # One x264 thread: parallelism comes from encoding several videos at once.
        options = {"preset": "veryfast", "threads": "1", "mbtree": "0"}
        if spec.bitrate_kbps is None:
            options["crf"] = str(spec.crf)
        else:
            stream.bit_rate = spec.bitrate_kbps * 1000
        stream.options = options
        pts = 0
        for chunk in render_frames(spec, layout):
            for img in chunk:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = pts, Fraction(1, layout.fps)
                pts += 1
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_video(spec: SyntheticSpec, layout: VideoLayout, path: Path) -> int:
    """Encode the video to ``path`` atomically (H.264, yuv420p); return the encoded frame count.

    The frames are counted back from the finished file before it replaces ``path``.
    """
    with atomic_open(path, "w+b") as fh:
        _encode(spec, layout, fh)
        fh.seek(0)
        count = _count_frames(fh)
        if count != layout.num_frames:
            raise RuntimeError(f"{path}: encoded {count} frames, expected {layout.num_frames}")
    return count


def dataset_is_complete(out_dir: str | os.PathLike, spec: SyntheticSpec | None = None) -> bool:
    """True if ``out_dir`` holds a finished data set (and, if given, one generated from ``spec``)."""
    root = Path(out_dir)
    try:
        database = json.loads((root / ANNOTATION_FILE).read_text(encoding="utf-8"))["database"]
        saved = json.loads((root / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (root / CLASS_MAP_FILE).is_file():
        return False
    if spec is not None and saved != spec.to_json():
        return False
    anet = saved.get("layout") == "anet"
    spec_of_files = SyntheticSpec(layout="anet") if anet else SyntheticSpec()
    # listed without a file: ActivityNet's blocked videos, EPIC's test video
    unwritten = set(synthetic_anet.missing_entries(SyntheticSpec(layout="anet"))) if anet else set(
        synthetic_epic.extra_entries(SyntheticSpec(layout=saved.get("layout", "thumos"))))
    if anet and not (root / synthetic_anet.CLASSIFIER_FILE).is_file():
        return False
    return all((root / VIDEO_DIR / synthetic_anet.video_file_name(spec_of_files, vid)).is_file()
               for vid in database if vid not in unwritten)


def saved_spec(out_dir: str | os.PathLike) -> dict | None:
    """The generation parameters recorded in ``out_dir``, or None."""
    try:
        return json.loads((Path(out_dir) / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_one(args: tuple[SyntheticSpec, VideoLayout, Path]) -> int:
    return write_video(*args)


def generate_from_spec(out_dir: str | os.PathLike, spec: SyntheticSpec,
                       progress: Callable[[str], None] | None = None, workers: int = 1) -> Path:
    """Write the data set described by ``spec`` into ``out_dir``; return the annotation file.

    annotations.json is removed first and written last, so an interrupted run never leaves a data
    set that looks complete. Stale ``*.mp4`` files of an earlier generation are removed at the end.
    ``workers > 1`` encodes videos in that many processes (x264 itself runs single-threaded,
    because its threaded mode is not bit-exact from run to run).
    """
    spec.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    videos = root / VIDEO_DIR
    videos.mkdir(parents=True, exist_ok=True)
    ann_path = root / ANNOTATION_FILE
    ann_path.unlink(missing_ok=True)
    (root / SPEC_FILE).unlink(missing_ok=True)

    epic = synthetic_epic.is_epic(spec)
    names = synthetic_epic.class_names(spec) if epic else [c.name for c in ACTION_CLASSES[: spec.num_classes]]
    index_in_split: dict[str, int] = {}
    database: dict[str, dict] = {}
    layouts = plan_dataset(spec)
    jobs = [(spec, layout, videos / synthetic_anet.video_file_name(spec, layout.video_id)) for layout in layouts]
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: the caller may hold threads (torch, Ray) that fork would break
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(jobs)),
                                                           mp_context=multiprocessing.get_context("spawn")))
            counts = pool.map(_write_one, jobs)
        else:
            counts = (write_video(*job) for job in jobs)
        for i, (layout, frames) in enumerate(zip(layouts, counts, strict=True)):
            place = index_in_split[layout.subset] = index_in_split.get(layout.subset, -1) + 1
            database[layout.video_id] = (synthetic_epic.json_entry(layout, frames, place) if epic
                                         else synthetic_anet.json_entry(spec, layout, frames, names))
            if progress is not None:
                progress(f"[{i + 1}/{len(layouts)}] {layout.video_id}: {frames} frames, "
                         f"{len(layout.instances)} actions")

    keep = {synthetic_anet.video_file_name(spec, vid) for vid in database}
    for stale in videos.glob("*.mp4"):
        if stale.name not in keep:
            stale.unlink()
    if synthetic_anet.is_anet(spec):
        missing = synthetic_anet.missing_entries(spec)
        database.update(missing)
        atomic_write_text(videos / synthetic_anet.BLOCK_LIST_FILE, "".join(f"{vid}\n" for vid in missing))
        atomic_write_text(root / synthetic_anet.CLASSIFIER_FILE,
                          json.dumps(synthetic_anet.classifier_results(spec, layouts, names)) + "\n")
    database.update(synthetic_epic.extra_entries(spec))
    atomic_write_text(root / CLASS_MAP_FILE, "".join(f"{n}\n" for n in names))
    atomic_write_text(root / SPEC_FILE, json.dumps(spec.to_json(), indent=1) + "\n")
    atomic_write_text(ann_path, json.dumps({"database": database}, indent=1) + "\n")
    return ann_path


def generate_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 20,
    num_test: int = 10,
    num_classes: int = 4,
    duration_s: float | tuple[float, float] = (20.0, 30.0),
    fps: int = 30,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
    crf: int = 23,
    bitrate_kbps: int | None = None,
    action_duration_s: tuple[float, float] = (1.5, 6.0),
    gap_s: tuple[float, float] = (1.0, 5.0),
    noise: int = 16,
    progress: Callable[[str], None] | None = None,
    workers: int = 1,
    fps_cycle: tuple[int, ...] = (),
) -> Path:
    """Generate a synthetic THUMOS-like data set into ``out_dir``; return the annotation file.

    ``duration_s`` is a fixed length or a (min, max) range. Defaults: 320x180 at 30 fps like
    THUMOS; ``generate_dataset(out, **asdict(synthetic_plan.DEMO_SPEC))`` gives the demo set. ``fps_cycle``
    (e.g. (25, 30)) gives the videos of each split alternating frame rates instead of ``fps``.
    """
    if isinstance(duration_s, (int, float)):
        duration_s = (float(duration_s), float(duration_s))
    spec = SyntheticSpec(
        num_train=num_train, num_test=num_test, num_classes=num_classes,
        duration_s=(float(duration_s[0]), float(duration_s[1])), fps=fps, width=width, height=height,
        seed=seed, crf=crf, bitrate_kbps=bitrate_kbps,
        action_duration_s=(float(action_duration_s[0]), float(action_duration_s[1])),
        gap_s=(float(gap_s[0]), float(gap_s[1])), noise=noise, fps_cycle=tuple(fps_cycle),
    )
    return generate_from_spec(out_dir, spec, progress, workers)



def segment_rows(out_dir: str | os.PathLike, video_ext: str = "mp4") -> list[dict[str, str]]:
    """The generated set's segments as CSV rows (video file name, start, end, label, split), the
    input of ``pipelines/prepare_dataset.py``; split is "train" / "test". Seconds are written with
    full precision (repr), so the CSV states exactly the json's segments."""
    database = json.loads((Path(out_dir) / ANNOTATION_FILE).read_text(encoding="utf-8"))["database"]
    split_of = {"training": "train", "validation": "test"}
    return [{"video": f"{vid}.{video_ext}", "start": repr(float(a["segment"][0])), "end": repr(float(a["segment"][1])),
             "label": a["label"], "split": split_of[info["subset"]]}
            for vid, info in sorted(database.items()) for a in info["annotations"]]
