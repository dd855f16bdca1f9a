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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train + 3 test real mp4 videos (112x64, 12 s, 3 classes) in the THUMOS layout."""
    from adatad.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    generate_dataset(root, num_train=6, num_test=3, num_classes=3, duration_s=(10.0, 12.0), fps=30,
                     width=112, height=64, seed=3, action_duration_s=(1.5, 3.0), gap_s=(1.0, 3.0))
    return root


def tiny_overrides(data_root: Path, storage: Path, mlflow_db: Path, epochs: int = 2) -> list[str]:
    """The synthetic demo config shrunk further, pointed at a test's data and stores."""
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


def tiny_config(data_root: Path, storage: Path, mlflow_db: Path, epochs: int = 2, extra: list[str] | None = None
                ) -> Config:
    return load_config(CONFIG_DIR / "synthetic.yaml", tiny_overrides(data_root, storage, mlflow_db, epochs)
                       + (extra or []))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, small object store, dashboard on loopback for Tune's cleanup)."""
    import ray

    from pipelines.cluster import connect

    connect("local", num_cpus=2, num_gpus=0, object_store_memory_mb=400)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_run(ray_session, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished 2-epoch training run on the tiny data: run folder, MLflow store, summary."""
    from pipelines.train import RunPlan, run_training

    work = tmp_path_factory.mktemp("trained_run")
    storage, db = work / "runs", work / "mlflow.db"
    cfg = tiny_config(tiny_data, storage, db, extra=["tracking.log_model=true", "tracking.system_metrics=true"])
    plan = RunPlan(cfg=cfg, run_name="tiny", storage=storage, resumed=False)
    summary = run_training(plan, quiet=True)
    return {"plan": plan, "summary": summary, "storage": storage, "mlflow_db": db, "data": tiny_data}


@pytest.fixture
def one_torch_thread():
    """Tiny ops on a shared 2-core machine run far faster without intra-op thread hand-offs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
