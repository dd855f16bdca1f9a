"""What a user sees: a few clean lines per epoch on the console, Ray's output in the run's log file."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from pipelines.cli.console import Console, ProgressBar, format_duration, strip_ansi
from pipelines.ray_layer.progress_relay import TrainingProgressView, epoch_summary
from pipelines.ray_layer.run_log import RunLog

ANSI = re.compile(r"\x1b\[")


def _epoch_metrics(epoch: int, validated: bool) -> dict:
    metrics = {"epoch": epoch, "loss": 0.5, "clips_per_s": 3.25, "epoch_time_s": 4.4, "data_wait_frac": 0.12,
               "best_average_mAP": 0.8467 if validated else -1.0}
    if validated:
        metrics.update(average_mAP=0.8467, val_time_s=9.1)
    return metrics


def test_epoch_summary_line() -> None:
    assert epoch_summary(_epoch_metrics(3, False), 14) == "epoch  3/14  loss 0.5000  3.25 clips/s  4.4 s  wait 12%"
    assert epoch_summary(_epoch_metrics(14, True), 14).endswith("|  mAP 84.67 % (best 84.67 %)  val 9.1 s")


def test_not_a_terminal_prints_plain_throttled_progress() -> None:
    out = io.StringIO()
    console = Console(stream=out)
    assert not console.terminal
    bar = console.progress(100, "epoch 0/1", interval_s=0.0)
    for step in range(1, 4):
        bar.update(step, {"loss": "0.5"})
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [f"epoch 0/1 {s}/100  loss 0.5  eta {lines[s - 1].rsplit('eta ', 1)[1]}" for s in (1, 2, 3)]
    assert "\r" not in out.getvalue() and not ANSI.search(out.getvalue())

    quiet = io.StringIO()
    slow = ProgressBar(Console(stream=quiet), 10, "x", interval_s=3600)
    for step in range(10):
        slow.update(step)
    assert quiet.getvalue() == ""  # at most one line per interval


def test_progress_view_renders_events_as_lines() -> None:
    out = io.StringIO()
    view = TrainingProgressView(Console(stream=out), relay=None, epochs=2, val_windows=4)
    view.handle({"kind": "epoch_start", "epoch": 0, "steps": 3})
    view.handle({"kind": "step", "epoch": 0, "step": 1, "steps": 3, "loss": 0.5, "lr": 1e-3, "clips_per_s": 2.0,
                 "wait_frac": 0.1})
    view.handle({"kind": "val", "epoch": 0, "rank": 0, "windows": 2})
    view.handle({"kind": "val", "epoch": 0, "rank": 1, "windows": 2})
    view.handle({"kind": "epoch", "metrics": _epoch_metrics(0, True)})
    view.handle({"kind": "warning", "text": "a clip was skipped"})
    assert out.getvalue().splitlines() == [epoch_summary(_epoch_metrics(0, True), 1)]


def test_run_log_takes_ray_and_library_output(tmp_path: Path) -> None:
    import ray.data  # noqa: F401 - configures Ray Data's own logger, as any command using it does

    before = {name: list(logging.getLogger(name).handlers) for name in ("ray", "ray.data", "mlflow")}
    log = RunLog(tmp_path / "run.log").attach()
    try:
        logging.getLogger("ray.data").info("Execution plan of Dataset x")
        logging.getLogger("mlflow.store").info("Creating initial MLflow database tables...")
        log._worker_lines({"pid": 42, "actor_name": "RayTrainWorker",
                           "lines": ["\x1b[36mReporting training result 1: TrainingReport(...)\x1b[0m",
                                     "__ray_tqdm_magic_token__ {}"]})
        Console(log, stream=io.StringIO()).say("epoch 0/1  loss 0.5")
    finally:
        log.close()
    text = (tmp_path / "run.log").read_text()
    assert "Execution plan of Dataset x" in text and "Creating initial MLflow database tables" in text
    assert "(RayTrainWorker pid=42) Reporting training result 1: TrainingReport(...)" in text
    assert "epoch 0/1  loss 0.5" in text
    assert "tqdm_magic" not in text and not ANSI.search(text)
    assert {name: list(logging.getLogger(name).handlers) for name in before} == before  # restored by close()
    assert strip_ansi("\x1b[1m\x1b[32mhttp://x\x1b[39m") == "http://x"
    assert [format_duration(s) for s in (45, 125, 3723)] == ["45 s", "2:05", "1:02:03"]


def test_training_console_to_a_file_is_a_few_clean_lines(trained_run: dict) -> None:
    """The demo's command (the session's 2-epoch run on the tiny data, resumed for its epoch 1) with
    stdout/stderr sent to a file: one summary line per epoch, nothing of Ray's internals, no escapes,
    no line twice; Ray's output is in the run's train.log instead."""
    console, epochs = trained_run["console"], 2
    lines = console.splitlines()
    for internal in ("TrainingReport(", "Execution plan", "Checkpoint successfully created", "core_worker.cc",
                     "RayTrainWorker", "Started a local Ray instance", "mlflow.store"):
        assert internal not in console, internal
    assert not ANSI.search(console) and "\r" not in console
    repeated = [a for a, b in zip(lines, lines[1:], strict=False) if a == b and a.strip()]
    assert not repeated, repeated
    assert len(lines) <= 15 * epochs, console
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/1"]  # after epoch 0
    assert lines[-4].startswith(f"done: {epochs} epochs")
    assert "(MLflow model models:/" in lines[-1]
    run_dir = Path(trained_run["summary"]["run_dir"])
    full_log = (run_dir / "train.log").read_text()
    assert f"full log: {run_dir / 'train.log'}" in console
    for internal in ("TrainingReport(", "Execution plan", "Started a local Ray instance"):
        assert internal in full_log, internal  # routed to the file, not dropped
    assert len(re.findall(r"\) epoch 1: \{", full_log)) == 1  # the worker's own log line, once


def test_a_cluster_error_is_one_console_line_and_whole_in_the_log(tmp_path: Path, capsys) -> None:
    """Ray prints the GCS's cluster errors (a node marked dead) raw and coloured; the run log keeps
    them whole and the console gets one line."""
    log = RunLog(tmp_path / "run.log")
    passed: list[dict] = []
    log._error_hook = (None, lambda data, ignore_prefix: passed.append(data))  # what attach_ray installs
    log.attach()
    try:
        log._cluster_error_lines({"pid": "raylet", "is_err": False, "lines": [
            "\x1b[33m(raylet)\x1b[0m The node with node id: 869afbd9251b03b27a3bd9ac0d006e3b9c600ca8 and address: "
            "192.0.2.2 has been marked dead because the detector has missed too many heartbeats from it.",
            "\t(2) raylet has lagging heartbeats due to slow network or busy workload."]})
        log._cluster_error_lines({"pid": 123, "lines": ["worker output"], "is_err": False})
    finally:
        log._error_hook = None
        log.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: Ray marked node 869afbd9 dead (it stopped answering); the work it held is retried "
                   f"on other nodes (details in {tmp_path / 'run.log'})"]
    text = (tmp_path / "run.log").read_text()
    assert "missed too many heartbeats" in text and "lagging heartbeats" in text and "\x1b" not in text
    assert passed == [{"pid": 123, "lines": ["worker output"], "is_err": False}]  # anything else: Ray's printer
