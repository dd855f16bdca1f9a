"""The pre-training data check: every problem with every video, listed at once.

Why before training: a missing or truncated video otherwise surfaces as a decode failure deep
inside a Ray actor, minutes (or hours) into a run. Each video is opened with the real decoder and
its first and last needed frames are decoded (a truncated file whose header survived opens fine
and only fails at the frames after the cut). decord releases the GIL while decoding, so a thread
pool checks many videos at once.

A record whose json has no frame count (``record.frames_known`` False) is checked against the
json's duration instead; :func:`fill_frame_counts` then gives such records the decoder's frame
count and fps. The check remembers each successful probe (keyed by path, size and modification
time), so filling right after checking opens no video a second time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from adatad.data.annotations import (
    OUTSIDE,
    PARTLY_OUTSIDE,
    ZERO_LENGTH,
    AnnotationError,
    SegmentNotice,
    VideoRecord,
)
from adatad.data.inspect import inspect_video
from adatad.data.quiet_decoder import quiet_decoder
from adatad.data.video import VideoDecodeError, VideoInfo, probe_video

# The decoder may count a few frames fewer than the annotation (container vs. json rounding);
# sampling clamps indices for that. Fewer than this share means the file is not the annotated video.
MIN_FRAME_RATIO = 0.9


# (path, size, mtime_ns) -> the decoder's answer, for fill_frame_counts after check_videos.
_PROBED: dict[tuple[str, int, int], VideoInfo] = {}


def _file_key(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _remember(path: str, info: VideoInfo) -> None:
    key = _file_key(path)
    if key is not None:
        _PROBED[key] = info


def _probe_remembered(path: str) -> VideoInfo:
    """The decoder's answer for `path`: remembered from this process's check when the file is unchanged."""
    key = _file_key(path)
    if key is not None and key in _PROBED:
        return _PROBED[key]
    info = probe_video(path)  # missing, empty, unreadable, not a video, no frames
    _remember(path, info)
    return info


def _length_problem(record: VideoRecord, info: VideoInfo, min_frame_ratio: float) -> str | None:
    """The decoder's length against the annotation's: its frame count, or its duration when the json has none."""
    if not record.frames_known:  # the json has no frame count: compare durations instead
        seconds = info.num_frames / info.fps if info.fps > 0 and math.isfinite(info.fps) else math.nan
        if not seconds >= min_frame_ratio * record.duration:
            return (f"{record.path}: decoder sees {info.num_frames} frames at {info.fps:g} fps ({seconds:.2f} s), "
                    f"the annotation of video '{record.video_id}' says {record.duration:g} s "
                    f"(expected at least {min_frame_ratio:.0%} of it)")
        return None
    if info.num_frames < min_frame_ratio * record.num_frames:
        return (f"{record.path}: decoder sees {info.num_frames} frames, the annotation of video "
                f"'{record.video_id}' says {record.num_frames} (expected at least {min_frame_ratio:.0%} of them)")
    return None


def check_video(record: VideoRecord, min_frame_ratio: float = MIN_FRAME_RATIO) -> str | None:
    """One line describing what is wrong with `record`'s video file, or None when it is usable.

    A json frame count bounds the frames training reads (the last needed one is decoded) and the
    json then gives the fps; a wrong length is reported before an undecodable last frame.
    """
    inspection = inspect_video(record.path, last_frame=record.num_frames - 1 if record.frames_known else None,
                               require_fps=not record.frames_known)
    if inspection.info is None:
        return inspection.problem
    _remember(record.path, inspection.info)
    return _length_problem(record, inspection.info, min_frame_ratio) or inspection.problem


def check_videos(records: Sequence[VideoRecord], num_threads: int | None = None,
                 min_frame_ratio: float = MIN_FRAME_RATIO, quiet: bool = True) -> list[str]:
    """Every problem with the videos of `records`, one line each, in record order (empty = all fine).

    A video shared by several records (e.g. listed in two subsets) is checked per record, since
    each record may claim a different frame count. `quiet` hides the decoder's own stderr noise.
    """
    if not records:
        return []
    workers = num_threads or min(8, os.cpu_count() or 1)
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(quiet_decoder())
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(records)))) as pool:
            results = list(pool.map(lambda r: check_video(r, min_frame_ratio), records))
    return [problem for problem in results if problem is not None]


def with_decoder_frames(record: VideoRecord, info: VideoInfo) -> VideoRecord:
    """`record` with the decoder's frame count and fps (its clock), the json's duration and segments kept."""
    fps = info.fps if info.fps > 0 and math.isfinite(info.fps) else info.num_frames / record.duration
    return dataclasses.replace(record, num_frames=info.num_frames, fps=fps)


def fill_frame_counts(records: Sequence[VideoRecord], num_threads: int | None = None,
                      quiet: bool = True) -> list[VideoRecord]:
    """`records` with every unknown frame count (json without `frame` and `fps`) filled from the decoder.

    Records that already know their frame count are returned as they are, and a file checked
    by :func:`check_videos` in this process is not opened again. Raises one AnnotationError
    listing every video that cannot be opened (run `check_videos` first for the full report).
    """
    unknown = [r for r in records if not r.frames_known]
    if not unknown:
        return list(records)
    workers = max(1, min(num_threads or min(8, os.cpu_count() or 1), len(unknown)))

    def probe(record: VideoRecord) -> VideoInfo | str:
        try:
            return _probe_remembered(record.path)
        except VideoDecodeError as exc:
            return str(exc)

    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(quiet_decoder())
        with ThreadPoolExecutor(max_workers=workers) as pool:
            infos = dict(zip((r.path for r in unknown), pool.map(probe, unknown), strict=True))
    failed = [f"'{r.video_id}': {infos[r.path]}" for r in unknown if isinstance(infos[r.path], str)]
    if failed:
        raise AnnotationError(f"{len(failed)} video(s) have no frame count in the annotation file ('frame' or "
                              f"'fps') and the decoder cannot open them: " + "; ".join(failed))
    return [r if r.frames_known else with_decoder_frames(r, infos[r.path]) for r in records]


def format_problems(problems: Sequence[str], num_videos: int) -> str:
    """The report printed by `pipelines/check_data.py` and `pipelines/train.py` (first line = summary)."""
    head = f"data check: {len(problems)} problem(s) in {num_videos} video(s):"
    return "\n  ".join([head, *problems])


# What training and evaluation do with each kind of segment notice (docs/recipe.md section 1).
_FATE = {
    OUTSIDE: ("lie entirely outside their video", "training skips them, evaluation scores them as the file has them"),
    PARTLY_OUTSIDE: ("lie partly outside their video",
                     "training clips them to the video, evaluation scores them as the file has them"),
    ZERO_LENGTH: ("have zero length", "training and evaluation drop them"),
}


def segment_warnings(notices: Sequence[SegmentNotice], first: int = 5) -> list[str]:
    """The data check's warnings about segments that do not fit their video: per kind, one line with
    the count and what happens to them, then the first `first` of them, indented. Never errors:
    released annotation files have such segments and OpenTAD and ActionFormer accept them."""
    lines = []
    for kind, (what, fate) in _FATE.items():
        of_kind = [n for n in notices if n.kind == kind]
        if not of_kind:
            continue
        videos = len({n.video_id for n in of_kind})
        shown = f"; the first {first}" if len(of_kind) > first else ""
        lines.append(f"warning: {len(of_kind)} ground-truth segment(s) in {videos} video(s) {what}: {fate}, "
                     f"as OpenTAD and ActionFormer do{shown}:")
        lines.extend(f"  {n.describe()}" for n in of_kind[:first])
    return lines


class DecodeFailureError(RuntimeError):
    """More clips failed to decode than `data.max_decode_failures` allows; names the files."""


@dataclass
class DecodeFailures:
    """Counts the clips of one epoch whose video failed to decode, and stops past a ceiling.

    Decode actors mark such clips invalid (and log the reason) instead of crashing; the training
    loop drops them and reports them here by video index, which `paths` maps back to files.
    """

    paths: Sequence[str]
    ceiling: int
    what: str = "training clips"
    failed: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.failed)

    def path_of(self, video_index: int) -> str:
        if 0 <= video_index < len(self.paths):
            return self.paths[video_index]
        return f"<video index {video_index}>"

    def add(self, video_indices: Iterable[int]) -> list[str]:
        """Record failed clips; returns their files. Raises DecodeFailureError past the ceiling."""
        new = [int(i) for i in video_indices]
        self.failed.extend(new)
        if len(self.failed) > self.ceiling:
            raise DecodeFailureError(self.message())
        return [self.path_of(i) for i in new]

    def message(self, max_files: int = 10) -> str:
        """One line: how many, the ceiling, and each failing file with the decoder's reason."""
        files = list(dict.fromkeys(self.path_of(i) for i in self.failed))
        parts = []
        for path in files[:max_files]:
            reason = inspect_video(path, require_fps=False).problem if not path.startswith("<") else None
            # the problem names the file itself; a window-only failure gets a generic reason
            parts.append(reason or f"{path}: a sampled window failed to decode (see the decode actor's warning)")
        more = f"; (+{len(files) - max_files} more files)" if len(files) > max_files else ""
        return (f"{len(self.failed)} {self.what} failed to decode this epoch, more than "
                f"data.max_decode_failures={self.ceiling}; fix or remove these videos (pipelines/check_data.py "
                f"lists every problem): " + "; ".join(parts) + more)
