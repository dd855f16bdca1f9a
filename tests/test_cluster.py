"""Running on a real Ray cluster: `ray start --head` + `ray job submit`, and placement on a simulated
multi-node cluster (a "GPU" node for the trainer, CPU-only nodes for the decode actors).

Both need a Ray of their own, so they run in child processes: the session Ray of the other tests
stays up. The head node is stopped by signalling its own process group (never `ray stop`, which
would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # when run as a script (the placement child process)
    sys.path.insert(0, str(REPO))

from tests.conftest import tiny_config, tiny_overrides  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
RAY = str(VENV_BIN / "ray")
DECODE_ACTOR = "MapWorker"  # Ray Data's actor class for map_batches with an actor pool
TRAIN_WORKER = "RayTrainWorker"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _head_ready(url: str, gcs_port: int) -> bool:
    """The dashboard answers (401 counts: token auth is on) and `ray start` has recorded the head
    in /tmp/ray/ray_current_cluster, which `--cluster auto` reads (it is written last)."""
    from ray._private.utils import read_ray_address

    if not (read_ray_address() or "").endswith(f":{gcs_port}"):
        return False
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        pass
    except OSError:
        return False
    return True


def _stop(head: subprocess.Popen) -> None:
    """`ray start --block` shuts its node down on SIGTERM; anything left in its group is killed."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=5)  # a graceful drain takes ~30 s; the group kill below ends it
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture()
def head_node(tmp_path: Path):
    """A real head node on this machine (2 CPUs), token auth on as Ray sets it up by default."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    # Creates ~/.ray/auth_token if missing (a local ray.init() does the same); no-op otherwise.
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    gcs, dashboard, client, agent = _free_ports(4)
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed in the finally below
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _head_ready(f"http://127.0.0.1:{dashboard}/api/version", gcs):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
        yield {"env": env, "gcs_port": gcs, "address": f"http://127.0.0.1:{dashboard}", "log": tmp_path / "head.log"}
    finally:
        _stop(head)
        log.close()


def test_job_submit_to_a_head_node_trains_and_logs_to_mlflow(head_node: dict, tiny_data: Path,
                                                             tmp_path: Path) -> None:
    env, address = head_node["env"], head_node["address"]
    # `--cluster auto` from a shell on the head machine finds the head without any address.
    found = subprocess.run([PYTHON, "-c", "from pipelines.ray_layer.cluster import connect; import json, ray; "
                            "r = connect('auto'); print(json.dumps([r['CPU'], ray.get_runtime_context().gcs_address]))"],
                           cwd=REPO, env={k: v for k, v in env.items() if k != "RAY_ADDRESS"},
                           capture_output=True, text=True, timeout=180)
    assert found.returncode == 0, found.stderr[-2000:]
    cpus, gcs = json.loads(found.stdout.strip().splitlines()[-1])
    assert cpus == 2 and gcs.endswith(f":{head_node['gcs_port']}")

    db, storage = tmp_path / "mlflow.db", tmp_path / "runs"
    sets = [arg for o in tiny_overrides(tiny_data, storage, db, epochs=1) for arg in ("--set", o)]
    submit = subprocess.run(
        [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--submission-id", "tiny-job",
         "--", PYTHON, "pipelines/train.py", "--cluster", "auto", "--config", "configs/synthetic.yaml", *sets,
         "--run-name", "job-tiny", "--skip-data-check"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=420,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-3000:]
    assert "done: 1 epochs" in output
    status = subprocess.run([RAY, "job", "status", "tiny-job", "--address", address], env=env,
                            capture_output=True, text=True, timeout=60)
    assert "Job 'tiny-job' succeeded" in status.stdout + status.stderr  # the CLI's words for SUCCEEDED

    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("adatad-tests").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "job-tiny"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0]
    assert (storage / "job-tiny" / "TRAINING_SUMMARY.md").is_file()


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


# ---------------------------------------------------------------- simulated multi-node placement


def simulate_placement(data_root: Path, work: Path) -> dict:
    """Child process: head = "GPU" node (custom resource gpu_node), two CPU-only nodes (data_node).

    Trains one tiny epoch with the trainer pinned to gpu_node and decode actors to data_node, then
    reads from the GCS actor table which node each actor ran on.
    """
    import ray
    from ray.cluster_utils import Cluster

    from pipelines.ray_layer.training import RunPlan, run_training

    store = 120 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"gpu_node": 1}, "object_store_memory": store, "include_dashboard": False})
    labels = {cluster.head_node.node_id: "gpu-node"}
    for i in range(2):
        node = cluster.add_node(num_cpus=1, resources={"data_node": 4}, object_store_memory=store)
        labels[node.node_id] = f"cpu-node-{i}"
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        cfg = tiny_config(data_root, work / "runs", work / "mlflow.db", epochs=1, extra=[
            "runtime.worker_resources={gpu_node: 1}", "runtime.decode_actor_resources={data_node: 1}",
            "runtime.decode_actors=2"])
        summary = run_training(RunPlan(cfg=cfg, run_name="placement", storage=work / "runs", resumed=False),
                               quiet=True)
        from ray._private.state import actors  # the GCS actor table, dead actors included

        placed = [{"class": a["ActorClassName"], "node": labels.get(a["Address"]["NodeID"], "?"),
                   "state": a["State"]} for a in actors().values()]
        return {"actors": placed, "epochs": summary["final"]["epoch"] + 1}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_trainer_on_gpu_node_and_decode_actors_on_cpu_nodes(tiny_data: Path, tmp_path: Path) -> None:
    child = subprocess.run([PYTHON, __file__, "placement", str(tiny_data), str(tmp_path)], cwd=REPO,
                           env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                           timeout=420)
    assert child.returncode == 0, (child.stdout + child.stderr)[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print("placement:", json.dumps(result["actors"], indent=1))  # shown with -s; the report quotes it
    assert result["epochs"] == 1
    trainers = [a["node"] for a in result["actors"] if a["class"] == TRAIN_WORKER]
    decoders = [a["node"] for a in result["actors"] if DECODE_ACTOR in a["class"]]
    assert trainers and set(trainers) == {"gpu-node"}, result["actors"]
    assert len(decoders) >= 3 and all(n.startswith("cpu-node-") for n in decoders), result["actors"]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "placement":
    print(json.dumps(simulate_placement(Path(sys.argv[2]), Path(sys.argv[3]))), flush=True)
