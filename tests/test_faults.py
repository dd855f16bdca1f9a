"""Faults injected into real short training runs on a local Ray: what survives, what is lost.

Whole nodes lost on a multi-node cluster are measured by benchmarks/bench_node_faults.py.

Processes are found by their Ray process title among the descendants of this process
(tests/run_watch.py), so a test only ever kills processes it started, never another Ray on the
machine. Timings are kept small: tiny model, 64-position windows, 2 epochs. The in-run faults use
two DDP workers, so the same run also shows the workers' shards and validation split exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray.cloudpickle
import ray.train
from mlflow.tracking import MlflowClient

from adatad.engine.state import read_checkpoint
from pipelines.cli.console import strip_ansi
from pipelines.ray_layer.worker import TRAIN_VIDEOS_KEY
from tests.conftest import REPO, tiny_config, tiny_overrides
from tests.run_watch import registered_epochs, titled, wait_for
from tests.test_test_command import ONE_WINDOW, TWO_WORKERS, _per_window_predictions, _same_detections

DECODE_ACTOR = "ray::MapWorker(MapBatches(DecodeClips))"
TRAIN_WORKER = "ray::RayTrainWorker"
FAST = ["train.checkpoints_to_keep=10", "train.val_start_epoch=1"]  # keep every checkpoint; validate last epoch only


# ------------------------------------------------------------------ run folders


def _checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def _assert_nothing_lost(run_dir: Path, db: Path, epochs: int, validated: list[int],
                         clips_per_epoch: int | None = None) -> list[dict]:
    """Continuous history, one MLflow point per epoch, every checkpoint loadable, schedule continued."""
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(epochs))
    for h in history:  # every clip of every epoch trained exactly once (none lost, none repeated)
        assert (h["clips_lost"], h["clips_repeated"]) == (0, 0), h
        assert h["steps"] == 3, h
        if clips_per_epoch is not None:  # one worker: its rate covers the whole epoch
            assert round(h["clips_per_s"] * h["epoch_time_s"]) == clips_per_epoch, h
    client = MlflowClient(f"sqlite:///{db}")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("loss", "steps", "decode_failures"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(epochs)), key
    assert sorted(m.step for m in client.get_metric_history(run_id, "average_mAP")) == validated
    loss = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert loss == pytest.approx({h["epoch"]: h["loss"] for h in history})  # MLflow and history agree
    states = [read_checkpoint(d) for d in _checkpoint_dirs(run_dir)]  # none corrupt
    assert sorted(s["epoch"] for s in states) == list(range(epochs))  # one per epoch: none redone
    final = max(states, key=lambda s: s["epoch"])
    assert final["history"] == history
    assert final["scheduler"]["last_epoch"] == sum(int(h["steps"]) for h in history)  # lr schedule continued
    return history


# ------------------------------------------------------------------ faults inside a run


# The callback below runs on the Train controller, which cannot import this test module by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class _RecordShards(ray.train.UserCallback):
    """Runs on the Train controller: writes every rank's list of trained video indices per report."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps([m.get(TRAIN_VIDEOS_KEY) for m in metrics]) + "\n")


def test_two_workers_lose_nothing_to_killed_actors_or_a_corrupt_video(ray_session, tiny_data: Path, tmp_path: Path,
                                                                      one_torch_thread) -> None:
    """DDP on CPU (gloo), two training workers with one clip each per step. Epoch 0: SIGKILL the
    decode actor mid-epoch. Epoch 1: SIGKILL a training worker mid-epoch (Ray Train restarts the
    group from epoch 0's checkpoint). One training video is corrupt: its clip is skipped with a
    warning and counted each epoch (data.max_decode_failures), and the worker whose whole batch it
    was still takes part in that step (DDP pairs the workers' steps; skipping it left the other
    waiting in its gradient all-reduce until the process group's timeout).

    Every epoch the two shards are disjoint and cover the decodable videos, the history loses and
    repeats nothing, and validation, each worker predicting its own videos, gathers every test
    window exactly once: the final checkpoint's merged predictions equal one process predicting
    every window (to 1e-6; a lost or doubled window would change them)."""
    from adatad.data.splits import load_splits
    from pipelines.ray_layer.training import run_training
    from pipelines.runs.plan import RunPlan

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    corrupt = sorted((data / "videos").glob("video_validation_*.mp4"))[0]  # a training video
    corrupt.write_bytes(corrupt.read_bytes()[:4000])
    storage, db = tmp_path / "runs", tmp_path / "mlflow.db"
    cfg = tiny_config(data, storage, db, epochs=2, extra=[*FAST, *TWO_WORKERS, ONE_WINDOW, "runtime.max_failures=1",
                                                          "data.max_decode_failures=2"])
    plan = RunPlan(cfg=cfg, run_name="faults", storage=storage, resumed=False)
    record = tmp_path / "shards.jsonl"
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["summary"] = run_training(plan, extra_callbacks=[_RecordShards(record)], quiet=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            outcome["error"] = exc

    me, run_dir = os.getpid(), plan.run_dir
    earlier = set(titled(me, DECODE_ACTOR))  # another test's actors, possibly still shutting down
    thread = threading.Thread(target=fit, daemon=True)
    thread.start()

    # The first decode actor is epoch 0's training pool (validation comes after): kill it once
    # it is busy with a clip.
    busy = wait_for(lambda: [p for p, cmd in titled(me, DECODE_ACTOR).items()
                              if cmd.endswith(".submit") and p not in earlier],
                     300, "epoch 0's decode actor at work", interval=0.05, alive=thread.is_alive)
    time.sleep(0.3)
    assert registered_epochs(run_dir) == []  # still inside epoch 0
    os.kill(busy[0], signal.SIGKILL)

    wait_for(lambda: 0 in registered_epochs(run_dir), 300, "the checkpoint of epoch 0", alive=thread.is_alive)
    workers = wait_for(lambda: sorted(titled(me, TRAIN_WORKER)) if len(titled(me, TRAIN_WORKER)) == 2 else [],
                       30, "the two training workers")
    time.sleep(1.0)  # into epoch 1's training steps
    assert registered_epochs(run_dir) == [0]  # epoch 1 not finished: the kill lands mid-epoch
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: [p for p in titled(me, TRAIN_WORKER) if p not in workers], 120,
              "Ray Train to start new training workers", alive=thread.is_alive)

    thread.join(timeout=400)
    assert not thread.is_alive(), "training did not finish after the faults"
    assert "error" not in outcome, repr(outcome.get("error"))
    history = _assert_nothing_lost(run_dir, db, epochs=2, validated=[1])
    assert all(h["decode_failures"] == 1 for h in history)  # the corrupt video, once per epoch, whichever rank

    train, _, _ = load_splits(cfg)
    decodable = {i for i, r in enumerate(train) if Path(r.path) != corrupt}
    epochs = [json.loads(line) for line in record.read_text().splitlines()]  # the killed try reported nothing
    assert len(epochs) == 2
    for ranks in epochs:
        assert len(ranks) == 2 and all(ranks)
        first, second = set(ranks[0]), set(ranks[1])
        assert not first & second and first | second == decodable
    final = Path(outcome["summary"]["stats"]["checkpoint"])
    predictions = json.loads((final / "predictions.json").read_text())
    _same_detections(predictions, _per_window_predictions(final))


# ------------------------------------------------------------------ the driver itself


def test_sigterm_stops_the_driver_cleanly_and_resume_continues(trained_run: dict) -> None:
    """SIGTERM to `train.py` mid-epoch 1 (a preempted head, `ray job stop`): it stops within seconds,
    writes what it has (history and reports of its last checkpoint, MLflow run KILLED) and says how
    to continue; then the same command with --resume finishes the run. The session's training run
    is made exactly so (tests/conftest.py `trained_run`); this test checks what each step left.

    The stopped run also shows that `--verbose` keeps Ray's own output on the console."""
    stopped, run_dir = trained_run["stopped"], Path(trained_run["summary"]["run_dir"])
    output = stopped["console"]
    assert stopped["returncode"] == 143 and stopped["processes_left"] == []
    assert "Execution plan of Dataset" in output and "(RayTrainWorker pid=" in output  # --verbose: Ray's lines
    # --verbose: Ray Data's progress bars share the console, so the line may follow their escapes
    lines = [m.strip() for m in re.findall(r"stopped: run [^\r\n]*", strip_ansi(output))]
    py = os.path.relpath(sys.executable, REPO)  # the interpreter that ran, as pipelines/cli/hints.py prints it
    py = sys.executable if py.startswith("..") else py
    assert lines == ["stopped: run tiny stopped (SIGTERM) after 1 finished epoch(s); continue with: "
                     f"{py} pipelines/train.py --resume --run-name tiny"], output[-3000:]
    assert [h["epoch"] for h in stopped["history"]] == [0]
    assert {"TRAINING_SUMMARY.md", "training_curves.png"} <= set(stopped["files"])
    assert not [name for name in stopped["files"] if name.endswith(".tmp")]  # nothing half-written (adatad/atomic.py)
    assert stopped["mlflow_status"] == "KILLED"

    resumed = trained_run["console"]
    assert "resumed from the checkpoint of epoch 0" in resumed
    assert "done: 2 epochs" in resumed
    assert "Execution plan" not in resumed  # without --verbose: in train.log only
    _assert_nothing_lost(run_dir, trained_run["mlflow_db"], epochs=2, validated=[0, 1], clips_per_epoch=6)


# ------------------------------------------------------------------ too many decode failures


def test_too_many_decode_failures_stop_the_run_with_the_files(ray_session, tiny_data: Path, tmp_path: Path,
                                                              capsys) -> None:
    from pipelines import train

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    corrupt = sorted((data / "videos").glob("video_validation_*.mp4"))[1]
    corrupt.write_text("not a video\n")
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", tmp_path / "mlflow.db", epochs=1)
            + ["data.max_decode_failures=0", "runtime.max_failures=0"] for a in ("--set", o)]
    rc = train.main([*sets, "--skip-data-check", "--run-name", "decode"])
    err = capsys.readouterr().err
    assert rc == 2
    line = [x for x in err.splitlines() if x.startswith("error: ")]
    assert line == [f"error: 1 training clips failed to decode this epoch, more than data.max_decode_failures=0; "
                    f"fix or remove these videos (pipelines/check_data.py lists every problem): {corrupt}: cannot "
                    "open as a video (corrupt, truncated or not a video)"], err[-2000:]


# ------------------------------------------------------------------ the MLflow gap a killed driver can leave


def _epoch_metrics(epoch: int, validated: bool) -> dict:
    metrics = {"epoch": epoch, "loss": 1.0 / (epoch + 1), "cls_loss": 0.5, "reg_loss": 0.5, "lr_base": 1e-3,
               "lr_adapter": 1e-3, "epoch_time_s": 2.0, "clips_per_s": 3.0, "data_wait_frac": 0.1, "steps": 3.0,
               "decode_failures": 0.0, "peak_memory_mb": 100.0, "best_average_mAP": -1.0, "val_score": -1.0}
    if validated:
        metrics.update({f"mAP_{t}": 0.1 for t in ("0.3", "0.4", "0.5", "0.6", "0.7")}, average_mAP=0.1,
                       best_average_mAP=0.1, val_score=0.1)
    return metrics


def test_finalize_logs_epochs_the_killed_driver_never_logged(tiny_data: Path, tmp_path: Path) -> None:
    """Ray registers a checkpoint before the MLflow callback logs its epoch; a driver killed in
    between leaves a gap that the resumed run's finalisation fills from the checkpoint's history."""
    from adatad.run_folder import CHECKPOINT_FILE
    from pipelines.ray_layer.training import finalize_run
    from pipelines.runs.plan import RunPlan
    from pipelines.tracking.runs import log_epoch, start_or_resume_run

    storage, db = tmp_path / "runs", tmp_path / "mlflow.db"
    plan = RunPlan(cfg=tiny_config(tiny_data, storage, db), run_name="gap", storage=storage, resumed=True)
    plan.run_dir.mkdir(parents=True)
    uri = f"sqlite:///{db}"
    run_id = start_or_resume_run(plan.cfg, uri, plan.folder, plan.run_name)
    history = [_epoch_metrics(0, False), _epoch_metrics(1, True)]
    client = MlflowClient(uri)
    log_epoch(client, run_id, history[1])  # epoch 0's logging was cut off by the kill
    checkpoint = plan.run_dir / "checkpoint_x"
    checkpoint.mkdir()
    (checkpoint / "history.json").write_text(json.dumps(history))
    (checkpoint / CHECKPOINT_FILE).write_bytes(b"0" * 1024)

    class Checkpoint:
        path = str(checkpoint)

        @contextlib.contextmanager
        def as_directory(self):
            yield self.path

    finalize_run(plan, SimpleNamespace(checkpoint=Checkpoint(), best_checkpoints=[]), 1.0, uri, run_id)
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert loss == [(0, 1.0), (1, 0.5)]  # filled once, from the history; nothing logged twice
    assert client.get_run(run_id).info.status == "FINISHED"
    # This history has the -1 placeholders older versions wrote: MLflow gets no point for them, and mAP in
    # percent (what people read); `val_score` (Ray's checkpoint ranking) is not logged at all.
    points = {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
              for key in ("average_mAP", "best_average_mAP", "val_score", "steps")}
    assert points == {"average_mAP": [(1, 10.0)], "best_average_mAP": [(1, 10.0)], "val_score": [],
                      "steps": [(0, 3.0), (1, 3.0)]}
