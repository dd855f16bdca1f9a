"""Session-wide fixtures: one local Ray, one tiny synthetic data set, one short training run.

Starting Ray and training cost seconds to minutes on 2 cores, so tests share them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from adatad.config import CONFIG_DIR, Config, load_config

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
# Ray Train's controller polls its workers every 2 s and each change of state waits for a poll: a
# run's start and end cost ~4.5 s more than at 0.2 s (measured on a bare TorchTrainer here). The
# tests run ~10 short trainings; users keep Ray's default (seconds are nothing in a real run, and a
# faster poll means more calls on a large cluster). Subprocesses and `ray start` nodes inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.s3_server import S3Server, session_server  # noqa: E402

# The session's S3 endpoint (moto, started by the `s3` fixture when a test asks for it). Its AWS
# variables are set now, before any Ray starts, so that Ray's workers, decode actors and `ray start`
# nodes inherit them as a cloud node holds its own; no test reaches a real AWS account.
S3 = session_server()
S3.export()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train + 3 test real mp4 videos (112x64, 12 s, 3 classes) in the THUMOS layout."""
    from adatad.datasets.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(root, num_train=6, num_test=3, num_classes=3, duration_s=(10.0, 12.0), fps=30,
                     width=112, height=64, seed=3, action_duration_s=(1.5, 3.0), gap_s=(1.0, 3.0))
    return root


_MLFLOW_TEMPLATE: list[Path] = []  # an empty store with MLflow's tables, made once per session


def fresh_mlflow_db(path: Path) -> Path:
    """An empty MLflow sqlite store at `path` (unless one is there): a copy of one made once per
    session, because creating MLflow's ~70 tables costs seconds per store on this machine."""
    import shutil
    import tempfile

    path = Path(path)
    if path.exists():
        return path
    if not _MLFLOW_TEMPLATE:
        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="adatad-mlflow-template-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates the tables
        _MLFLOW_TEMPLATE.append(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MLFLOW_TEMPLATE[0], path)
    return path


def tiny_overrides(data_root: Path, storage: Path, mlflow_db: Path, epochs: int = 2) -> list[str]:
    """The synthetic demo config shrunk further, pointed at a test's data and stores."""
    fresh_mlflow_db(mlflow_db)
    return [
        f"data.annotation_file={data_root / 'annotations.json'}",
        f"data.video_dir={data_root / 'videos'}",
        f"data.class_map_file={data_root / 'category_idx.txt'}",
        "data.window_size=64",
        "model.head.num_classes=3",
        f"train.epochs={epochs}",
        f"train.schedule_epochs={epochs + 1}",
        "train.warmup_epochs=1",
        "train.batch_size=2",
        "train.val_interval=1",
        "train.val_start_epoch=0",
        f"runtime.storage_path={storage}",
        f"tracking.tracking_uri=sqlite:///{mlflow_db}",
        "tracking.experiment_name=adatad-tests",
        # Off in test runs (each costs seconds per run); on where tests check them (trained_run).
        "tracking.log_model=false",
        "tracking.system_metrics=false",
    ]


def s3_overrides(data: str, storage: str, mlflow_db: Path, epochs: int = 2) -> list[str]:
    """`tiny_overrides` with the data set (annotations, class map, videos: `S3Server.upload_tree` of
    `tiny_data`) and the run storage at URIs, and an MLflow experiment whose artifacts live there."""
    replaced = ("data.annotation_file", "data.video_dir", "data.class_map_file", "runtime.storage_path",
                "tracking.experiment_name")
    kept = [o for o in tiny_overrides(Path("/unused"), Path("/unused"), mlflow_db, epochs) if not o.startswith(replaced)]
    return [*kept, f"data.annotation_file={data}/annotations.json", f"data.video_dir={data}/videos",
            f"data.class_map_file={data}/category_idx.txt", f"runtime.storage_path={storage}",
            "tracking.experiment_name=adatad-tests-s3"]


def tiny_config(data_root: Path, storage: Path, mlflow_db: Path, epochs: int = 2, extra: list[str] | None = None
                ) -> Config:
    return load_config(CONFIG_DIR / "synthetic.yaml", tiny_overrides(data_root, storage, mlflow_db, epochs)
                       + (extra or []))


@pytest.fixture(scope="session")
def s3() -> S3Server:
    """The session's S3 endpoint (moto in this process): `s3.bucket(name)`, `s3.outage()`, `s3.keys(uri)`."""
    S3.start()
    yield S3
    S3.close()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, small object store, dashboard on loopback for Tune's cleanup)."""
    import ray

    from pipelines.ray_layer.cluster import connect

    connect("local", num_cpus=2, num_gpus=0, object_store_memory_mb=400)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_run(ray_session, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished 2-epoch training run on the tiny data, made by the real command line as a user
    whose job is preempted makes it: `train.py --verbose` gets SIGTERM once epoch 0's checkpoint is
    registered, then `train.py --resume` finishes the run with its output sent to a file (as CI or
    `> file` captures it). Returns the run folder, MLflow store, summary (read back from the run
    folder, as `run_training` returns it), the resumed run's console text and what the stop left
    (`stopped`: exit code, console, history, files, MLflow status, processes left), which
    tests/test_faults.py checks. One run serves both: a second training run would cost a minute.

    It depends on `ray_session` only so that its users find Ray connected; the command starts its
    own local Ray, as a user's would.
    """
    import json
    import signal
    import subprocess

    from mlflow.tracking import MlflowClient

    from pipelines.runs.plan import RunPlan
    from tests.run_watch import registered_epochs, session_processes, wait_for

    work = tmp_path_factory.mktemp("trained_run")
    storage, db = work / "runs", work / "mlflow.db"
    extra = ["tracking.log_model=true", "tracking.system_metrics=true"]
    sets = [a for o in tiny_overrides(tiny_data, storage, db) + extra for a in ("--set", o)]
    command = [sys.executable, "pipelines/train.py", "--cluster", "local", "--run-name", "tiny", *sets]
    run_dir = storage / "tiny"

    with (work / "first.txt").open("w") as sink:
        first = subprocess.Popen([*command, "--verbose"], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            wait_for(lambda: 0 in registered_epochs(run_dir), 600, "the checkpoint of epoch 0",
                     alive=lambda: first.poll() is None)
            first.send_signal(signal.SIGTERM)  # the driver alone, as `ray job stop` or a scheduler does
            first_rc = first.wait(timeout=90)
            # Ray's own processes share the driver's fate (nothing of the stopped run keeps running).
            wait_for(lambda: not session_processes(first.pid), 60, "the stopped run's processes to exit")
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
    stopped = {
        "returncode": first_rc, "processes_left": session_processes(first.pid), "console": (work / "first.txt").read_text(),
        "history": json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file()
        else None,
        "files": sorted(p.name for p in run_dir.iterdir()),
        "mlflow_status": MlflowClient(f"sqlite:///{db}").get_run(
            (run_dir / "mlflow_run_id").read_text().strip()).info.status,
    }
    assert first_rc == 143, stopped["console"][-3000:]

    with (work / "console.txt").open("w") as sink:
        proc = subprocess.run([*command, "--resume"], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT,
                              timeout=900)
    console = (work / "console.txt").read_text()
    assert proc.returncode == 0, console[-3000:]
    history = json.loads((run_dir / "history.json").read_text())
    summary = {"final": history[-1], "stats": json.loads((run_dir / "stats.json").read_text()),
               "run_dir": str(run_dir), "mlflow_run_id": (run_dir / "mlflow_run_id").read_text().strip()}
    plan = RunPlan(cfg=tiny_config(tiny_data, storage, db, extra=extra), run_name="tiny", storage=storage,
                   resumed=False)
    return {"plan": plan, "summary": summary, "storage": storage, "mlflow_db": db, "data": tiny_data,
            "console": console, "stopped": stopped}


@pytest.fixture
def one_torch_thread():
    """Tiny ops on a shared 2-core machine run far faster without intra-op thread hand-offs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Skip the interpreter's last garbage collection (as the commands do, pipelines/_bootstrap.py):
    with torch, Ray, MLflow and hundreds of models' objects alive it took seconds after the summary."""
    import gc

    gc.freeze()


_USES_SESSION_RAY = {"ray_session", "trained_run"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules that need no Ray run first, then the module with its own multi-node cluster, then the
    modules that use the session's Ray (alphabetical within each part).

    Why: an idle local Ray (raylet, GCS, dashboard and its agents, log monitor) keeps ~40 % of one
    core busy, a fifth of this 2-core machine; started at the first test that asks for it, the
    session's Ray would otherwise idle through most of the unit tests that come after it. Whole
    modules move, so a module-scoped fixture is still built once.
    """
    part: dict[Path, int] = {}
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        need = 1 if "bed" in names else 2 if names & _USES_SESSION_RAY else 0
        part[item.path] = max(part.get(item.path, 0), need)
    items.sort(key=lambda item: part[item.path])  # stable: the order inside each part is kept
