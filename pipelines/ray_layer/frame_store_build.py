"""Building a frame store on the cluster: one Ray Data task per video, each entry written by its task.

Videos go out as rows (`from_items`, one block each) and come back as one summary row per video
(`adatad.data.frame_store.build.BuiltEntry`), in the order they finish, so the driver's bar moves with
the work. Ray Data spreads the tasks over every CPU of the cluster (`num_cpus` each: one decoder
thread) and retries a task whose node died; an entry is written atomically by its task, so a retry
or a killed build leaves whole entries only. The store folder must be one every node writes to
(a shared filesystem, or a bucket: `s3://...`, each entry uploaded whole), as the video folder must
be one every node reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from adatad.data.frame_store.build import BuiltEntry, VideoToStore, build_entry
from adatad.data.frame_store.spec import StoreSpec


def _store_row(row: dict[str, Any], root: str, spec: dict[str, Any]) -> dict[str, Any]:
    import cv2

    cv2.setNumThreads(1)  # one task = one core
    video = VideoToStore(row["video_id"], row["path"], row["record_frames"] or None)
    built = build_entry(root, video, StoreSpec.from_dict(spec))
    return {**asdict(built), "error": built.error or ""}

def build_on_ray(root: str, spec: StoreSpec, videos: list[VideoToStore], cpus_per_video: float = 1.0
                 ) -> Iterator[BuiltEntry]:
    """Store ``videos`` on the connected cluster; yields each video's outcome as it completes."""
    import ray.data

    if not videos:
        return
    rows = [{"video_id": v.video_id, "path": v.path, "record_frames": v.record_frames or 0} for v in videos]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(_store_row, fn_kwargs={"root": root, "spec": spec.to_dict()}, num_cpus=cpus_per_video)
    for row in ds.iter_rows():
        yield BuiltEntry(video_id=str(row["video_id"]), frames=int(row["frames"]), bytes=int(row["bytes"]),
                         cpu_s=float(row["cpu_s"]), video_hours=float(row["video_hours"]),
                         error=str(row["error"]) or None)
