"""Ray Data datasets: plan rows -> decode + augment on CPU actors -> fixed-shape uint8 batches.

This replaces DataLoader workers and prefetch: the actor-pool size is the "num workers" knob and
`iter_torch_batches(prefetch_batches=...)` the prefetch knob. Frames stay uint8 through the
object store; the model normalises them on its own device.

Training clips repeat: Ray Train executes the training dataset once per epoch, and the decode
actors learn which epoch it is from an `EpochClock` (a 0-CPU actor the training workers set before
they read an epoch). Each row is a slot of the epoch's video order, `epoch_order(seed, epoch)`, and
each clip draws from `clip_rng(seed, epoch, video)` (`adatad/data/clips.py`): the same config and
`train.seed` give the same clips, whichever actor decodes them; with `runtime.preserve_order` (the
trainer's ingest options, `trainer.py`) they also leave the pipeline in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Dataset

from adatad.config import Config, DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.batch import collate_examples
from adatad.data.clips import ClipLoader, clip_rng, count_windows, epoch_order, record_to_row
from adatad.retry import DEFAULT_WINDOW_S, set_window

SLOT = "slot"  # a training row: its place in the epoch's video order


@ray.remote(num_cpus=0, max_restarts=-1)
class EpochClock:
    """The epoch each training worker is about to read. Ray Data starts an epoch's execution only once
    every worker has asked for it (streaming_split's barrier), and each worker sets its epoch before it
    asks; the decode actors read the lowest, so a worker still finishing the previous epoch keeps it.
    (Restarted after its node died, it knows no epoch until the workers set the next one.)"""

    def __init__(self) -> None:
        self._epochs: dict[int, int] = {}

    def set(self, rank: int, epoch: int) -> None:
        self._epochs[rank] = epoch

    def epoch(self) -> int:
        return min(self._epochs.values(), default=0)


class ClockReader:
    """The decode actors' view of an `EpochClock` (a plain callable, so tests can pass `lambda: 3`)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def __call__(self) -> int:
        return int(ray.get(self.clock.epoch.remote()))


class DecodeClips:
    """Ray Data callable class for training rows (one row = a slot of the epoch's video order -> that
    video's random clip): one instance per actor, reused for many rows.

    A clip's randomness comes from (train.seed, epoch, video) alone, not from the actor: which actor
    decodes which clip depends on timing, and the run must repeat (`adatad/data/clips.py: clip_rng`).
    """

    def __init__(self, data: dict[str, Any], rows: list[dict[str, Any]], seed: int,
                 epoch_of: Callable[[], int] | None = None, storage_retry_s: float = DEFAULT_WINDOW_S) -> None:
        import cv2

        cv2.setNumThreads(1)  # one actor = one core; OpenCV's own pool would oversubscribe the node
        set_window(storage_retry_s)  # data at a URI: how long reads ride out an outage (adatad.retry)
        self.loader = ClipLoader(DataConfig(**_tuples(data)), train=True)
        self.rows, self.seed = rows, seed
        self.epoch_of = epoch_of or (lambda: 0)  # no clock (a benchmark reading once): epoch 0
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.seed, epoch, len(self.rows)))
        return self._order[1]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        epoch = self.epoch_of()
        videos = [self.order(epoch)[int(slot)] for slot in batch[SLOT]]
        return collate_examples([self.loader.load(self.rows[v], clip_rng(self.seed, epoch, v)) for v in videos])


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


def _decoded(ds: Dataset, cfg: Config, train: bool, actors: int, **kwargs: Any) -> Dataset:
    """Decode + transform each row on an actor pool of `actors` (the DataLoader-workers knob)."""
    return ds.map_batches(
        DecodeClips if train else DecodeVideoWindows,
        fn_constructor_kwargs={"data": cfg.to_dict()["data"], "storage_retry_s": cfg.runtime.storage_retry_s, **kwargs},
        batch_size=1,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cfg.runtime.decode_actor_cpus,
        resources=cfg.runtime.decode_actor_resources or None,  # e.g. {"data_node": 1}: CPU-only nodes
    )


def train_dataset(cfg: Config, records: list[VideoRecord], clock: Any | None = None) -> Dataset:
    """One row per training video: slot i of an epoch decodes the i-th video of `epoch_order(seed,
    epoch)` with that video's `clip_rng(seed, epoch, video)`, the epoch read from `clock` (an
    `EpochClock`; without one every execution is epoch 0). Each epoch re-executes: new order, new
    windows and augmentation, the same in every run of the same seed."""
    rows = [record_to_row(r, i) for i, r in enumerate(records)]
    ds = ray.data.from_items([{SLOT: i} for i in range(len(rows))], override_num_blocks=max(1, len(rows)))
    return _decoded(ds, cfg, train=True, actors=cfg.runtime.decode_actors, rows=rows, seed=cfg.train.seed,
                    epoch_of=ClockReader(clock) if clock is not None else None)


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
