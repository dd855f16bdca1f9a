"""Running on a real multi-node Ray cluster: `ray start` nodes on this machine (tests/cluster_bed.py),
`ray job submit`, and placement: the trainer on the "GPU" node, the decode actors on CPU-only nodes.

The cluster runs in its own processes, so the session Ray of the other tests stays up; nodes are
stopped by signalling their own process groups (never `ray stop`, which would stop every Ray on
the machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.cluster_bed import RAY, ClusterBed
from tests.conftest import REPO, tiny_config, tiny_overrides

PYTHON = str(Path(sys.executable).parent / "python")
DECODE_ACTOR = "MapWorker"  # Ray Data's actor class for map_batches with an actor pool
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory):
    """A head (1 CPU, token auth as Ray sets it up by default), a "GPU" node (1 CPU + gpu_node) and two
    CPU-only data nodes (1 CPU + data_node each), started as a user starts them."""
    cluster = ClusterBed(tmp_path_factory.mktemp("bed"))
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_nodes([("gpu", 1, {"gpu_node": 1}), *[(f"data-{i}", 1, {"data_node": 100}) for i in range(2)]])
        yield cluster
    finally:
        cluster.stop()


def test_job_submit_trains_with_the_trainer_on_the_gpu_node_and_decoders_on_data_nodes(
        bed: ClusterBed, tiny_data: Path, tmp_path: Path) -> None:
    env = bed.env
    # `--cluster auto` from a shell on the head machine finds the head without any address.
    found = subprocess.run([PYTHON, "-c", "from pipelines.ray_layer.cluster import connect; import json, ray; "
                            "r = connect('auto'); print(json.dumps([r['CPU'], ray.get_runtime_context().gcs_address]))"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert found.returncode == 0, found.stderr[-2000:]
    cpus, gcs = json.loads(found.stdout.strip().splitlines()[-1])
    assert cpus == 4 and gcs.endswith(f":{bed.gcs_port}")

    db, storage = tmp_path / "mlflow.db", tmp_path / "runs"
    placement = ["runtime.worker_resources={gpu_node: 1}", "runtime.decode_actor_resources={data_node: 1}",
                 "runtime.decode_actors=2"]
    sets = [arg for o in tiny_overrides(tiny_data, storage, db, epochs=1) + placement for arg in ("--set", o)]
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", bed.dashboard, "--working-dir", str(REPO), "--submission-id", "tiny-job",
         "--", PYTHON, "pipelines/train.py", "--cluster", "auto", "--config", "configs/synthetic.yaml", *sets,
         "--run-name", "job-tiny", "--skip-data-check"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-3000:]
    assert "done: 1 epochs" in output
    status = subprocess.run([RAY, "job", "status", "tiny-job", "--address", bed.dashboard], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "Job 'tiny-job' succeeded" in status.stdout + status.stderr  # the CLI's words for SUCCEEDED

    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("adatad-tests").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "job-tiny"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0]
    assert (storage / "job-tiny" / "TRAINING_SUMMARY.md").is_file()

    # Where everything ran, from the GCS's actor table (dead actors included).
    names = bed.node_names()
    placed = [(a["class_name"], names.get(a["node_id"], "?")) for a in bed.actors()]
    print("placement:", json.dumps(placed, indent=1))  # shown with -s
    trainers = [node for cls, node in placed if cls == TRAIN_WORKER]
    decoders = [node for cls, node in placed if DECODE_ACTOR in cls]
    assert trainers and set(trainers) == {"gpu"}, placed
    assert len(decoders) >= 3 and set(decoders) <= {"data-0", "data-1"}, placed


def test_rayignore_keeps_the_job_package_small(tmp_path: Path) -> None:
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    # .rayignore alone (without .gitignore) must keep data, envs, runs and weights out of the upload.
    target = tmp_path / "pkg.zip"
    create_package(str(REPO), target, include_gitignore=False)
    names = zipfile.ZipFile(target).namelist()
    heavy = [n for n in names if n.split("/")[0] in {"data", ".venv", "runs", "mlruns", ".git", "pretrained"}
             or n.endswith((".pth", ".pt", "mlflow.db"))]
    assert not heavy, heavy[:10]
    assert "pipelines/train.py" in names and "configs/synthetic.yaml" in names
    # Packages named like a top-level folder that is left out travel too (else the job imports them from
    # wherever else Python finds them: an installed copy of another version).
    assert {"adatad/data/clips.py", "pipelines/runs/preflight.py"} <= set(names)
    assert target.stat().st_size < 5 * 2**20


@pytest.mark.parametrize("override, message", [
    ("runtime.worker_resources={CPU: 1}", "runtime.worker_resources: 'CPU' is invalid, expected a custom resource"),
    ("runtime.decode_actor_resources={data_node: -1}", "runtime.decode_actor_resources.data_node: -1.0 is invalid"),
    ("runtime.decode_actor_resources=4", "runtime.decode_actor_resources: expected a mapping"),
    ("runtime.worker_resources={gpu_node: many}", "runtime.worker_resources.gpu_node: expected a number"),
])
def test_placement_resources_are_validated(override: str, message: str) -> None:
    from adatad.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        tiny_config(Path("/d"), Path("/s"), Path("/m.db"), extra=[override])
    cfg = tiny_config(Path("/d"), Path("/s"), Path("/m.db"), extra=["runtime.worker_resources.gpu_node=1"])
    assert cfg.runtime.worker_resources == {"gpu_node": 1.0} and cfg.runtime.decode_actor_resources == {}


def test_workers_of_a_local_ray_ask_its_own_state_api(ray_session) -> None:
    """Ray Train's PlacementGroupCleaner calls the State API without an address, which Ray resolves
    to "the latest cluster" on the machine: with another Ray here (this bed, the runs of other tests)
    or a stale /tmp/ray/ray_current_cluster it asked the wrong cluster and each run's end waited on
    a 12-s stop timeout. A worker of the Ray that `connect("local")` started resolves its own."""
    from ray._private.worker import get_dashboard_url
    from ray.dashboard.utils import get_address_for_submission_client

    resolve = ray_session.remote(num_cpus=0)(lambda: get_address_for_submission_client(None))
    assert ray_session.get(resolve.remote()) == f"http://{get_dashboard_url()}"
