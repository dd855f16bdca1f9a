"""Ray Data datasets: plan rows -> decode + augment on CPU actors -> fixed-shape uint8 batches.

This replaces DataLoader workers and prefetch: the actor-pool size is the "num workers" knob and
`iter_torch_batches(prefetch_batches=...)` the prefetch knob. Frames stay uint8 through the
object store; the model normalises them on its own device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, Dataset

from adatad.config import Config, DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.batch import collate_examples
from adatad.data.clips import ClipLoader, record_to_row, window_rows

# Columns the training step consumes (everything numeric; strings stay on the driver).
TRAIN_COLUMNS = ("frames", "masks", "segments", "labels", "num_segments", "valid")
TEST_COLUMNS = ("frames", "masks", "video_index", "window_start_frame", "fps", "duration", "frame_stride",
                "valid")


class DecodeClips:
    """Ray Data callable class: one instance per actor, reused for many rows.

    Randomness comes from fresh OS entropy per actor: Ray recreates the pool for every epoch's
    execution, so a constant seed here would repeat the same augmentations each epoch.
    """

    def __init__(self, data: dict[str, Any], train: bool) -> None:
        import cv2

        cv2.setNumThreads(1)  # one actor = one core; OpenCV's own pool would oversubscribe the node
        self.loader = ClipLoader(DataConfig(**_tuples(data)), train=train)
        self.rng = np.random.default_rng()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["video_index"])
        rows = [{key: _item(values[i]) for key, values in batch.items()} for i in range(n)]
        return collate_examples([self.loader.load(row, self.rng) for row in rows])


def _item(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """DataConfig from its dict (lists back to tuples where the schema has tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _decoded(ds: Dataset, cfg: Config, train: bool, actors: int) -> Dataset:
    """Decode + transform each row on an actor pool of `actors` (the DataLoader-workers knob)."""
    return ds.map_batches(
        DecodeClips,
        fn_constructor_kwargs={"data": cfg.to_dict()["data"], "train": train},
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


def test_dataset(cfg: Config, records: list[VideoRecord]) -> Dataset:
    """One row per sliding window, in video order, decoded with the test transform."""
    rows = window_rows(records, cfg.data)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    return _decoded(ds, cfg, train=False, actors=cfg.runtime.val_decode_actors)
