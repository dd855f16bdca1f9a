"""Finding a video file in a folder by the name a user wrote (with or without its extension).

Why: a segment table names videos the way people do ("kitchen_01" or "kitchen_01.MP4"), while the
loader builds paths as `video_dir/<id>.<video_ext>`. Resolving every name once, up front, turns a
typo into one line naming the row instead of a decode failure an hour into training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from adatad.locations import as_path

# Containers ffmpeg (hence decord) reads; matched case-insensitively on the file's suffix.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def index_video_dir(video_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """File stem -> the video files of that stem directly inside `video_dir` (sorted)."""
    index: dict[str, list[Path]] = {}
    root = Path(video_dir)
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if is_video_file(path) and path.is_file():
            index.setdefault(path.stem, []).append(path)
    return index


def find_video(video_dir: str | os.PathLike, name: str, index: dict[str, list[Path]]) -> Path | str:
    """The file `name` means inside `video_dir`, or why there is none (a phrase for a one-line message).

    A name with a known video extension must exist as written; a name without one matches the
    single file `<name>.<ext>` of any known extension. Names are file names, not paths.
    """
    root = Path(video_dir)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return f"expected a file name inside {root}, not a path"
    path = Path(name)
    if path.suffix and is_video_file(path):
        if (root / name).is_file():
            return Path(os.path.abspath(root / name))
        return f"file not found: {root / name}"
    found = index.get(name, [])
    if len(found) == 1:
        return Path(os.path.abspath(found[0]))
    if len(found) > 1:
        return f"ambiguous: {', '.join(p.name for p in found)} in {root}; write the file name with its extension"
    known = ", ".join(VIDEO_EXTENSIONS)
    if path.suffix and (root / name).exists():
        return f"unknown extension '{path.suffix}' (expected one of {known}; re-encode or rename the file)"
    if path.suffix:
        return f"no file '{name}.<ext>' in {root}, and '{path.suffix}' is not a video extension (expected one of {known})"
    return f"no video file '{name}.<ext>' in {root} (extensions: {known})"


class VideoListError(ValueError):
    """A video argument that names nothing usable (one line naming it)."""


def list_videos(inputs: Sequence[str | os.PathLike], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given plus the video files directly inside each folder; sorted by video id (file stem).

    The video id of a file is its name without extension, so two files of one stem are refused.
    """
    found: dict[str, Path] = {}
    for item in inputs:
        path = as_path(item)  # a folder or file at a URI too (adatad.locations)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
            if not files:
                raise VideoListError(f"--videos {item}: folder holds no video files ({', '.join(extensions)})")
        elif path.exists():
            files = [path]
        else:
            raise VideoListError(f"--videos {item}: no such file or folder")
        for f in files:
            if isinstance(f, Path):
                f = Path(os.path.abspath(f))  # not resolve(): a symlink's own name is the video id the user chose
            if f.stem in found and found[f.stem] != f:
                raise VideoListError(f"video id {f.stem!r} (the file name without extension) is used by both "
                                     f"{found[f.stem]} and {f}; rename one")
            found[f.stem] = f
    return [found[k] for k in sorted(found)]
