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
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from adatad.locations import as_path
from tests.cluster_bed import RAY, ClusterBed
from tests.conftest import REPO, s3_overrides, tiny_config, tiny_overrides
from tests.run_watch import registered_epochs, wait_for

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
    # The run's bookkeeping actors stay with the driver (on the head under `ray job submit`): a lost node
    # must not take the console's progress or the decode actors' epoch with it.
    assert {node for cls, node in placed if cls in ("ProgressRelay", "EpochClock")} == {"head"}, placed


def test_a_run_on_s3_with_no_shared_folder_survives_an_outage_lost_nodes_and_a_killed_driver(
        bed: ClusterBed, s3, tiny_data: Path, tmp_path: Path) -> None:
    """Storage and data in a bucket, every node with a temporary folder of its own: the data nodes' decode
    actors read the videos from the bucket, the training node writes its checkpoints there, the driver its
    records and log. After epoch 0's checkpoint a data node and the training node are lost (Ray Train
    restarts the workers from that checkpoint on a spare node with the same resources); in the restarted
    epoch 1 the endpoint goes away for 4 s (reads and the checkpoint upload wait; one warning line); after
    epoch 1's checkpoint the driver is killed outright and `--resume` finishes the run from the bucket:
    every clip of every epoch, nothing repeated. test.py's and detect.py's plans then read the stored
    checkpoint. Runs last in this module: it kills nodes of the bed."""
    from pipelines import detect
    from pipelines.runs.evaluation_plan import plan_evaluation

    data = s3.upload_tree(tiny_data, s3.bucket("adatad-bed") + "/data")
    storage, db = "s3://adatad-bed/runs", tmp_path / "mlflow.db"
    run_dir = f"{storage}/bed-s3"
    placement = ["runtime.worker_resources={gpu_node: 1}", "runtime.decode_actor_resources={data_node: 1}",
                 "runtime.decode_actors=2", "runtime.max_failures=2", "train.val_start_epoch=2"]
    command = [PYTHON, "pipelines/train.py", "--cluster", bed.gcs_address, "--run-name", "bed-s3", "--skip-data-check",
               *[a for o in s3_overrides(data, storage, db, epochs=3) + placement for a in ("--set", o)]]
    spare = threading.Thread(target=bed.add_node, args=("gpu-2", 1, {"gpu_node": 1}))  # joins during epoch 0
    console = tmp_path / "console.txt"
    with console.open("w") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=bed.env, stdout=sink, stderr=subprocess.STDOUT)
        spare.start()
        try:
            alive = lambda: proc.poll() is None  # noqa: E731
            wait_for(lambda: 0 in registered_epochs(run_dir), 600, "epoch 0's checkpoint", 0.5, alive)
            (trainer,) = {a["node_id"] for a in bed.actors() if a["class_name"] == TRAIN_WORKER
                          and a["state"] == "ALIVE"}
            bed.kill_node("data-0")
            bed.kill_node(bed.node_names()[trainer])  # in epoch 1 (a few s long): the spare may still be joining
            spare.join()  # Ray Train waits for a node with the resources
            wait_for(lambda: "Ray Train restarted the workers" in console.read_text(), 600, "the restart", 0.5, alive)
            with s3.outage():
                time.sleep(4)
            wait_for(lambda: 1 in registered_epochs(run_dir), 600, "epoch 1's checkpoint", 0.5, alive)
        except AssertionError as error:  # what the run printed tells why
            raise AssertionError(f"{error}; the run printed:\n{console.read_text()[-3000:]}") from None
        finally:
            proc.kill()  # the driver is lost outright (SIGKILL): nothing of it runs on
            proc.wait(timeout=60)
    first = console.read_text()
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=bed.env, capture_output=True, text=True,
                             timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert [line for line in first.splitlines() if line.startswith("warning: the object store")] == [
        f"warning: the object store ({s3.url}) does not answer; reads and writes are retried for up to 120 s "
        "(runtime.storage_retry_s), then the run stops"], first[-3000:]
    assert "Ray Train restarted the workers from the checkpoint of epoch 0" in first, first[-3000:]
    assert f"run folder: {run_dir} (resumed)" in output
    history = json.loads(as_path(f"{run_dir}/history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [(h["clips_lost"], h["clips_repeated"]) for h in history] == [(0, 0)] * 3
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("adatad-tests-s3").experiment_id])
    assert run.info.status == "FINISHED" and [m.step for m in client.get_metric_history(run.info.run_id, "loss")] \
        == [0, 1, 2]
    assert run.info.run_id == as_path(f"{run_dir}/mlflow_run_id").read_text().strip()
    assert f"{run.info.run_id}/artifacts/TRAINING_SUMMARY.md" in s3.keys(f"{storage}/mlruns/adatad-tests-s3")
    log = as_path(f"{run_dir}/train.log").read_text()  # written on the head, uploaded as the run went
    assert "epochs 3 (0-2)" in log and "(resumed)" in log
    assert log.count("run folder: ") == 2, log[-3000:]  # this run and its resume: nothing of an earlier run
    assert not any(tmp_path.rglob("checkpoint.pt"))  # nothing of the run on a local disk of this test

    # test.py and detect.py plan from the stored run folder: its latest checkpoint read from the bucket
    stats = json.loads(as_path(f"{run_dir}/stats.json").read_text())
    plan = plan_evaluation(run_dir, None, [], None, False, "s3://adatad-bed/tests/t")
    assert str(plan.trained.path) == f"{stats['checkpoint']}/checkpoint.pt"
    assert plan.records[0].path.startswith(f"{data}/videos/")
    found = detect.plan_detection(detect.build_parser().parse_args(
        ["--checkpoint", run_dir, "--videos", f"{data}/videos", "--out", "s3://adatad-bed/det/d.json"]))
    assert str(found.checkpoint) == str(plan.trained.path) and len(found.paths) == 9


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
