"""The one TorchTrainer set-up (training and `test.py`), and the one rule for using GPUs.

Both `training.run_training` and `evaluation.run_evaluation` run a function on `runtime.num_workers`
Ray Train workers with the same resources (CPUs per worker, a GPU each when used, custom resources
such as `gpu_node`); detection's `Predict` actors and Tune's trial sizing take the GPU rule from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from adatad.config import Config
from adatad.locations import filesystem, is_uri


def uses_gpu(cfg: Config, cluster_gpus: float | None = None) -> bool:
    """GPUs are used when `runtime.use_gpu` asks for them and the cluster has at least one."""
    gpus = ray.cluster_resources().get("GPU", 0) if cluster_gpus is None else cluster_gpus
    return bool(cfg.runtime.use_gpu and gpus >= 1)


def build_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], cfg: Config, *,
                  name: str, storage: str, datasets: dict[str, Any], split: Sequence[str] = (),
                  ordered: Sequence[str] = (),
                  checkpoint_config: ray.train.CheckpointConfig | None = None, max_failures: int = 0,
                  callbacks: Sequence[ray.train.UserCallback] = ()) -> tuple[TorchTrainer, bool]:
    """A TorchTrainer running `loop(loop_config)` on every worker; returns it and whether it uses GPUs.

    `split`: the datasets Ray Train splits between the workers (the others, e.g. each worker's own
    `val_<rank>`, are read whole by the worker that asks for them). `ordered`: the datasets whose rows
    reach the workers in their order (Ray Data's preserve_order), whatever actor finishes first.
    `storage` may be a URI: Ray Train then writes the checkpoints there through the filesystem
    `adatad.locations` builds for it (the endpoint of the AWS variables, the same client every reader
    of the run uses).
    """
    r = cfg.runtime
    gpu = uses_gpu(cfg)
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if gpu else {}), **r.worker_resources}
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=name, **storage_arguments(storage), checkpoint_config=checkpoint_config,
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       callbacks=list(callbacks)),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=list(split),
                                            execution_options={n: _in_order() for n in ordered} or None),
    )
    return trainer, gpu


def _in_order():
    """Ray Train's ingest options with preserve_order: the data set's rows in their order, and split
    between the workers without locality (which would make the split depend on where blocks land)."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def storage_arguments(storage: str) -> dict[str, Any]:
    """`RunConfig`'s storage: a local folder as it is; a URI as (filesystem, path inside it)."""
    if not is_uri(storage):
        return {"storage_path": storage}
    fs, path = filesystem(storage)
    return {"storage_path": path, "storage_filesystem": fs}
