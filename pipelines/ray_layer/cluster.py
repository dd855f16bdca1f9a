"""`--cluster local|auto|<address>` -> a connected Ray, with errors that say what to do."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import ray

from adatad.config import RuntimeConfig

DASHBOARD_HOST = "127.0.0.1"  # never expose the dashboard/job server unless the user asks


class ClusterError(RuntimeError):
    """Could not connect to the requested Ray cluster (one line, says how to fix it)."""


def _reachable(address: str, timeout_s: float = 3.0) -> bool:
    """TCP check of host:port first, so a wrong address fails in seconds instead of minutes."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise ClusterError(f"--cluster {address!r}: expected local, auto, host:port or ray://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _free_port() -> int:
    """A TCP port free on this machine now (for the local dashboard)."""
    with socket.socket() as probe:
        probe.bind((DASHBOARD_HOST, 0))
        return probe.getsockname()[1]


def connect(
    cluster: str,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_memory_mb: int | None = None,
) -> dict:
    """Start or attach to Ray and return `ray.cluster_resources()`.

    local   - start Ray in this process with this machine's CPUs/GPUs (or the given counts);
    auto    - attach to a running cluster (`ray start --head`, or inside `ray job submit`);
    address - attach to that cluster (host:port of the GCS, or ray://host:10001).
    An already-initialised Ray (tests, notebooks) is reused as it is.
    """
    if ray.is_initialized():
        return ray.cluster_resources()
    # Train V2 routes worker `print` through its logger AND the wrapped stdout of a Ray worker, so
    # every printed line reached the driver twice; without the patch a print is forwarded once.
    env = {"RAY_DEDUP_LOGS": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if cluster == "local":
        # Ray Train's PlacementGroupCleaner asks the State API about the run's controller without an
        # address: Ray then picks "the latest cluster" on this machine (/tmp/ray/ray_current_cluster,
        # or the newest GCS process). With another Ray here, or a stale file left by a killed
        # `ray start`, it asked the wrong cluster and every run's end stalled 12 s on its stop
        # timeout. Its workers are told this cluster's dashboard instead.
        dashboard_port = _free_port()
        env["RAY_API_SERVER_ADDRESS"] = f"http://{DASHBOARD_HOST}:{dashboard_port}"
        if num_gpus is None:
            import torch

            num_gpus = torch.cuda.device_count()
        store = object_store_memory_mb * 1024 * 1024 if object_store_memory_mb else None
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=num_gpus,
            object_store_memory=store,
            include_dashboard=True,  # Tune needs the State API to free stopped trials' resources
            dashboard_host=DASHBOARD_HOST,
            dashboard_port=dashboard_port,
            runtime_env={"env_vars": env},
            log_to_driver=True,
        )
    elif cluster == "auto":
        pinned = os.environ.get("RAY_ADDRESS", "")
        if pinned and pinned != "auto" and not pinned.startswith(("ray://", "http")):
            if not _reachable(pinned):
                raise ClusterError(f"--cluster auto: RAY_ADDRESS={pinned} does not answer within 3 s "
                                   "(unset it, or start the cluster with `ray start --head`)")
            env["RAY_ADDRESS"] = pinned  # the workers' State API calls go to this cluster (see above)
        try:
            ray.init(address="auto", runtime_env={"env_vars": env})
        except ConnectionError as exc:
            raise ClusterError(
                "--cluster auto: no running Ray cluster found (start one with "
                "`ray start --head --num-cpus=N`, or use --cluster local)"
            ) from exc
    else:
        if not cluster.startswith("ray://") and not _reachable(cluster):
            raise ClusterError(
                f"--cluster {cluster}: no Ray cluster answers at that address within 3 s "
                "(check host/port, firewall, and that `ray start --head` runs there)"
            )
        if not cluster.startswith("ray://"):
            env["RAY_ADDRESS"] = cluster  # the workers' State API calls go to this cluster (see above)
        try:
            ray.init(address=cluster, runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterError(f"--cluster {cluster}: could not connect ({exc})") from exc
    return ray.cluster_resources()


def connect_for_run(cluster: str, runtime: RuntimeConfig, say: Callable[[str], None] = print,
                    verbose: bool = False) -> dict:
    """`connect` with a run config's local-cluster sizes; says what it got (train, test, tune).

    Ray Data's per-operator progress bars (redrawn many times a second) stay off unless `verbose`:
    the commands draw their own bars.
    """
    resources = connect(cluster, runtime.local_num_cpus, None, runtime.object_store_memory_mb)
    where = "local Ray" if cluster == "local" else f"Ray cluster {cluster}"
    say(f"{where}: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = verbose
    return resources


@contextmanager
def ray_data_progress_bars(enabled: bool) -> Iterator[None]:
    """Ray Data's own per-operator progress bars on or off meanwhile (a command draws its own bar)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    before, context.enable_progress_bars = context.enable_progress_bars, enabled
    try:
        yield
    finally:
        context.enable_progress_bars = before


def on_driver_node() -> dict:
    """`.options(...)` that place an actor on the driver's own node (hard affinity).

    The run's bookkeeping actors (progress relay, epoch clock) live exactly as long as the driver: left
    to Ray's scheduler they land on any node, and a lost node took them with it while the run went on (the
    console fell silent for the rest of the run; a restarted clock forgot the epoch)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}
