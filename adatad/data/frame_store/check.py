"""Does a frame store serve a config's videos? Every problem at once, before anything expensive starts.

Checked per store: a manifest exists and its grid and frame size serve the config
(``spec.why_not_served``). Per video: an entry exists, is readable, was made from this very file
(the source's fingerprint; a source that is absent, e.g. deleted once stored or on another node,
is not checked: the entry is used as it is) and holds every frame the config's windows can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow.parquet as pq

from adatad.config import DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.frame_store.entry import FrameStoreError, read_entry_info
from adatad.data.frame_store.fingerprint import source_fingerprint
from adatad.data.frame_store.spec import StoreSpecError, entry_path, needed_indices, read_manifest, why_not_served
from adatad.locations import as_path, open_input_file

NAMED = 5  # videos named per problem line


@dataclass
class StoreReport:
    """What stops a store from serving a config's videos (empty lists and no ``unusable``: it serves)."""

    root: str
    videos: int = 0
    unusable: str | None = None  # the whole store: missing, unreadable, another grid or frame size
    mismatch: bool = False  # unusable because it holds another grid or frame size (build in another folder)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unverified: int = 0  # entries whose source video is absent (used as stored)

    @property
    def ok(self) -> bool:
        return self.unusable is None and not (self.missing or self.changed or self.incomplete or self.unreadable)

    def lines(self, fix: str) -> list[str]:
        """One line per kind of problem, naming the videos and ending with ``fix`` (the command to run;
        for a ``mismatch``, one that builds a store in another folder)."""
        where = f"frame store {self.root}"
        if self.unusable is not None:
            where_to = "in another folder" if self.mismatch else "there"
            return [f"{where}: {self.unusable}; build one for this config {where_to}: {fix}"]
        kinds = ((self.missing, "not stored", "store them"),
                 (self.changed, "changed since they were stored (size or content differs)", "store them again"),
                 (self.incomplete, "stored without frames this config reads (the annotation's frame count "
                                   "changed?)", "store them again"),
                 (self.unreadable, "stored in unreadable entries", "store them again"))
        return [f"{where}: {len(ids)} of {self.videos} videos {what}: {_named(ids)}; {how}: {fix}"
                for ids, what, how in kinds if ids]

    def summary(self) -> str:
        shown = f"; {self.unverified} without their source video, used as stored" if self.unverified else ""
        return f"frame store {self.root}: all {self.videos} videos stored{shown}"


def check_store(root: str, records: Sequence[VideoRecord], data: DataConfig, num_threads: int | None = None
                ) -> StoreReport:
    """Every reason the store at ``root`` cannot serve ``records`` under ``data`` (see the module)."""
    unique = list({r.video_id: r for r in records}.values())
    report = StoreReport(root=root, videos=len(unique))
    try:
        spec = read_manifest(root)
    except StoreSpecError as exc:
        report.unusable = str(exc)
        return report
    if spec is None:
        report.unusable = "no frame store there (no frame_store.json)" if as_path(root).is_dir() else "folder not found"
        return report
    why = why_not_served(spec, data)
    if why is not None:
        report.unusable, report.mismatch = f"cannot serve this config: {why}", True
        return report
    workers = max(1, min(num_threads or 8, len(unique) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(lambda r: _check_entry(root, r, data), unique))
    for record, verdict in zip(unique, verdicts, strict=True):
        if verdict == "unverified":
            report.unverified += 1
        elif verdict != "ok":
            getattr(report, verdict).append(record.video_id)
    return report


def _check_entry(root: str, record: VideoRecord, data: DataConfig) -> str:
    path = entry_path(root, record.path)
    if not path.is_file():
        return "missing"
    try:
        info = read_entry_info(path)
        stored = pq.read_table(open_input_file(path), columns=["index"]).column(0).to_numpy()
    except (FrameStoreError, OSError):
        return "unreadable"
    try:
        if source_fingerprint(record.path) != info.source:
            return "changed"
        source_present = True
    except OSError:
        source_present = False
    frames = record.num_frames if record.frames_known else info.source_frames
    needed = np.clip(needed_indices(data, frames), 0, info.source_frames - 1)
    if not np.isin(needed, stored).all():
        return "incomplete"
    return "ok" if source_present else "unverified"


def fill_frame_counts_from_store(records: Sequence[VideoRecord], root: str) -> list[VideoRecord]:
    """Records whose json has no frame count get the stored video's (the decoder's count and fps, as
    ``adatad.data.check.fill_frame_counts`` gives them), so a store needs no video file. Raises
    FrameStoreError naming the videos whose entry cannot be read (run ``check_store`` first)."""
    out, failed = [], []
    for record in records:
        if record.frames_known:
            out.append(record)
            continue
        try:
            info = read_entry_info(entry_path(root, record.path))
        except (FrameStoreError, OSError) as exc:
            failed.append(f"'{record.video_id}': {exc}")
            continue
        fps = info.source_fps if info.source_fps > 0 else info.source_frames / record.duration
        out.append(replace(record, num_frames=info.source_frames, fps=fps))
    if failed:
        raise FrameStoreError(f"{len(failed)} video(s) have no frame count in the annotation file and no readable "
                              f"entry in the frame store {root}: " + "; ".join(failed))
    return out


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:NAMED])
    return shown + (f" (+{len(ids) - NAMED} more)" if len(ids) > NAMED else "")
