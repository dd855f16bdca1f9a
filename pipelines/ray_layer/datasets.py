"""Ray Data datasets: plan rows -> decode + augment on CPU actors -> fixed-shape uint8 batches.

This replaces DataLoader workers and prefetch: the actor-pool size is the "num workers" knob and
`iter_torch_batches(prefetch_batches=...)` the prefetch knob. Frames stay uint8 through the
object store; the model normalises them on its own device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Dataset

from adatad.config import Config, DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.batch import collate_examples
from adatad.data.clips import ClipLoader, count_windows, record_to_row
from adatad.retry import DEFAULT_WINDOW_S, set_window


class DecodeClips:
    """Ray Data callable class for training rows (one row = one video -> one random clip): one
    instance per actor, reused for many rows.

    Randomness comes from fresh OS entropy per actor: Ray recreates the pool for every epoch's
    execution, so a constant seed here would repeat the same augmentations each epoch.
    """

    def __init__(self, data: dict[str, Any], storage_retry_s: float = DEFAULT_WINDOW_S) -> None:
        import cv2

        cv2.setNumThreads(1)  # one actor = one core; OpenCV's own pool would oversubscribe the node
        set_window(storage_retry_s)  # data at a URI: how long reads ride out an outage (adatad.retry)
        self.loader = ClipLoader(DataConfig(**_tuples(data)), train=True)
        self.rng = np.random.default_rng()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["video_index"])
        rows = [{key: _item(values[i]) for key, values in batch.items()} for i in range(n)]
        return collate_examples([self.loader.load(row, self.rng) for row in rows])


class DecodeVideoWindows:
    """Ray Data callable class for test rows (one row = one video): decodes the video once, front
    to back, and yields its test windows one output batch each (`ClipLoader.iter_video_windows`):
    its sliding windows, holding about two at a time, never the whole video; or, with
    `data.sampling: resize`, its one window of frames spread over the whole video."""

    def __init__(self, data: dict[str, Any], storage_retry_s: float = DEFAULT_WINDOW_S) -> None:
        import cv2

        cv2.setNumThreads(1)
        set_window(storage_retry_s)
        self.loader = ClipLoader(DataConfig(**_tuples(data)), train=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(batch["video_index"])):
            row = {key: _item(values[i]) for key, values in batch.items()}
            for example in self.loader.iter_video_windows(row):
                yield collate_examples([example])


def _item(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """DataConfig from its dict (lists back to tuples where the schema has tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _decoded(ds: Dataset, cfg: Config, train: bool, actors: int) -> Dataset:
    """Decode + transform each row on an actor pool of `actors` (the DataLoader-workers knob)."""
    return ds.map_batches(
        DecodeClips if train else DecodeVideoWindows,
        fn_constructor_kwargs={"data": cfg.to_dict()["data"], "storage_retry_s": cfg.runtime.storage_retry_s},
        batch_size=1,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cfg.runtime.decode_actor_cpus,
        resources=cfg.runtime.decode_actor_resources or None,  # e.g. {"data_node": 1}: CPU-only nodes
    )


def train_dataset(cfg: Config, records: list[VideoRecord]) -> Dataset:
    """One row per training video; each epoch re-executes with a new random window + augmentation."""
    rows = [record_to_row(r, i) for i, r in enumerate(records)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.randomize_block_order()  # seed None: a new video order every epoch
    return _decoded(ds, cfg, train=True, actors=cfg.runtime.decode_actors)


def test_dataset(cfg: Config, records: list[VideoRecord], indices: list[int] | None = None,
                 actors: int | None = None) -> Dataset:
    """One input row per video (`indices` into `records`, default all), one output row per test
    window (sliding windows, or one resized window): each video is decoded once and its windows are
    cut from that stream, in order."""
    chosen = range(len(records)) if indices is None else indices
    rows = [record_to_row(records[i], i) for i in chosen]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    return _decoded(ds, cfg, train=False, actors=actors or cfg.runtime.val_decode_actors)


def assign_videos(cfg: Config, records: list[VideoRecord], workers: int) -> list[list[int]]:
    """Test videos per training worker, balanced by window count (largest first, to the least loaded).

    Validation does not use Ray Train's split: `streaming_split(equal=True)` truncates to equal
    row counts, which would silently drop test windows; each worker reads its own videos instead.
    """
    load = [0] * workers
    parts: list[list[int]] = [[] for _ in range(workers)]
    by_size = sorted(range(len(records)), key=lambda i: (-count_windows(records[i], cfg.data), i))
    for i in by_size:
        rank = min(range(workers), key=lambda r: (load[r], r))
        parts[rank].append(i)
        load[rank] += count_windows(records[i], cfg.data)
    return [sorted(p) for p in parts]


def validation_datasets(cfg: Config, records: list[VideoRecord]) -> dict[str, Dataset]:
    """`val_<rank>` for every training worker: its own videos, decoded once each.

    The decode actors are shared out between the workers' pools (at least one each)."""
    workers = cfg.runtime.num_workers
    actors = max(1, cfg.runtime.val_decode_actors // workers)
    return {val_name(rank): test_dataset(cfg, records, part, actors)
            for rank, part in enumerate(assign_videos(cfg, records, workers))}


def val_name(rank: int) -> str:
    return f"val_{rank}"
