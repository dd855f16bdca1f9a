"""Tune sweeps: sweep files checked up front, ASHA that lets last epochs finish, a real 2-trial sweep
(one parent MLflow run, each trial a TorchTrainer run nested under it), and the settings comparison table."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from adatad.config import CONFIG_DIR, PROJECT_ROOT
from pipelines.cli.console import Console
from pipelines.ray_layer.run_log import RunLog
from pipelines.ray_layer.sweeps import param_space
from pipelines.sweeps.spec import SweepError, check_sweep, load_sweep, num_trials, trial_overrides
from tests.conftest import tiny_overrides

SWEEP_EXPERIMENT = "adatad-tests-sweep"
TINY_SWEEP = """
name: tiny_lr
description: two adapter learning rates on the tiny data
metric: average_mAP
mode: max
scheduler: asha
asha: {grace_period: 1, reduction_factor: 2}
set: [runtime.prefetch_batches=2]
params:
  train.adapter_lr: {grid: [1.0e-4, 4.0e-4]}
"""


def tiny_sweep(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the 2-trial sweep once per session (memoised on disk: tests in other files reuse it).

    It writes into the MLflow store of `trained_run`, so one store holds a train run and a sweep.
    """
    from pipelines.ray_layer.sweeps import run_sweep

    work = tmp_path_factory.getbasetemp() / "tiny_sweep"
    memo = work / "summary.json"
    if memo.is_file():
        return json.loads(memo.read_text())
    work.mkdir(exist_ok=True)
    (work / "tiny_lr.yaml").write_text(TINY_SWEEP)
    overrides = tiny_overrides(trained_run["data"], work / "runs", trained_run["mlflow_db"], epochs=2)
    # Validation only at the last epoch: epoch 0 reports no average_mAP (Tune must accept it).
    overrides += ["train.val_interval=2", f"tracking.experiment_name={SWEEP_EXPERIMENT}",
                  # one trial fits in 1 CPU (0.1 driver + 0.5 trainer + 2 x 0.2 decode actors): both run at once
                  "runtime.cpus_per_worker=0.5", "runtime.decode_actor_cpus=0.2"]
    start = time.perf_counter()
    shown = io.StringIO()
    log = RunLog(work / "tune.log").attach()  # as tune.py: Ray's and Tune's own output goes to the log
    try:
        out = run_sweep(load_sweep(work / "tiny_lr.yaml"), str(CONFIG_DIR / "synthetic.yaml"), None, overrides,
                        max_concurrent=2, sweep_name="sweep-tiny", out=str(work / "best.md"),
                        console=Console(log, stream=shown))
    finally:
        log.close()
    summary = {
        "seconds": time.perf_counter() - start,
        "sweep_dir": out["sweep_dir"],
        "results_file": out["results_file"],
        "markdown": out["markdown"],
        "mlflow_db": str(trained_run["mlflow_db"]),
        "train_run_id": trained_run["summary"]["mlflow_run_id"],
        "parent_run_id": out["mlflow_run_id"],
        "rows": [{"trial_id": r.trial_id, "params": r.params, "status": r.status, "epochs": r.epochs,
                  "best": r.best, "mlflow_run_id": r.mlflow_run_id} for r in out["rows"]],
        "best": out["best"].trial_id if out["best"] else None,
        "console": shown.getvalue(),
        "log": (work / "tune.log").read_text(),
    }
    memo.write_text(json.dumps(summary))
    return summary


@pytest.fixture(scope="module")
def sweep(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return tiny_sweep(trained_run, tmp_path_factory)


# ---------------------------------------------------------------- sweep files (no Ray)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_shipped_sweeps_validate_against_their_configs() -> None:
    files = sorted((PROJECT_ROOT / "configs" / "sweeps").glob("*.yaml"))
    assert {f.stem for f in files} >= {"adapter_lr", "batch_workers", "batch_workers_synthetic"}
    for f in files:
        spec = load_sweep(f)
        cfg = check_sweep(spec, PROJECT_ROOT / spec.config)
        assert num_trials(spec) >= 2, f.name
        assert cfg.name
    lr = load_sweep(PROJECT_ROOT / "configs/sweeps/adapter_lr.yaml")
    assert lr.params[0].key == "train.adapter_lr" and lr.params[0].values == (1e-4, 2e-4, 4e-4)
    bw = load_sweep(PROJECT_ROOT / "configs/sweeps/batch_workers.yaml")
    assert bw.settings["64gb"]["runtime.decode_actors"] == 12 and bw.scheduler == "none"


def test_trial_overrides_apply_sweep_values_last(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, "set: [train.lr=0.5]\nparams:\n  train.lr: {grid: [0.1, 2.0e-5]}\n"
                                       "settings:\n  a: {train.batch_size: 8}\n"))
    out = trial_overrides(spec, {"setting": "a", "train.lr": 2e-5}, ["train.lr=9", "train.epochs=3"])
    assert out == ["train.lr=0.5", "train.lr=9", "train.epochs=3", "train.batch_size=8", "train.lr=2e-05"]
    space = param_space(spec)
    assert space["setting"] == {"grid_search": ["a"]} and space["train.lr"] == {"grid_search": [0.1, 2e-5]}


@pytest.mark.parametrize("text, message", [
    ("params:\n  train.adapter_l: {grid: [1.0e-4]}\n", "unknown key 'train.adapter_l' (did you mean 'train.adapter_lr'?)"),
    ("params:\n  train.batch_size: {grid: [4, 3]}\n", "train.batch_size"),
    ("params:\n  train.adapter_lr: {loguniform: [0, 1]}\n", "0 < low < high"),
    ("params:\n  train.adapter_lr: [1, 2]\n", "expected one of {grid"),
    ("scheduler: hyperband\nparams:\n  train.lr: {grid: [1]}\n", "scheduler: expected one of asha, none"),
    ("metric: average_mAP\n", "nothing to sweep"),
    ("parms:\n  train.lr: {grid: [1]}\n", "parms: unknown key"),
])
def test_bad_sweep_values_fail_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SweepError) as info:
        check_sweep(load_sweep(path), CONFIG_DIR / "synthetic.yaml", extra_overrides=["runtime.num_workers=2"])
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_rejects_a_bad_key_before_starting_ray(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.ray_layer.cluster
    from pipelines.tune import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the sweep was checked")

    monkeypatch.setattr(pipelines.ray_layer.cluster, "connect", no_ray)
    path = _write(tmp_path, "params:\n  runtime.decode_actor: {grid: [1, 2]}\n")
    start = time.perf_counter()
    code = main(["--sweep", str(path), "--config", str(CONFIG_DIR / "synthetic.yaml")])
    assert code == 2 and time.perf_counter() - start < 1.0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "did you mean 'runtime.decode_actors'" in err and "\n" not in err


def test_asha_stops_laggards_but_never_a_last_epoch() -> None:
    from ray.tune.schedulers import TrialScheduler

    from pipelines.ray_layer.sweeps import finishing_asha

    asha = finishing_asha(last_iteration=4, grace_period=1, reduction_factor=2)
    assert asha.set_search_properties("average_mAP", "max")  # what Tuner does with TuneConfig's
    good, bad, late = (SimpleNamespace(trial_id=name) for name in ("good", "bad", "late"))
    for trial in (good, bad, late):
        asha.on_trial_add(None, trial)
    assert asha.on_trial_result(None, good, {"training_iteration": 1, "average_mAP": 0.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, bad, {"training_iteration": 1, "average_mAP": 0.1}) == TrialScheduler.STOP
    # Epochs without validation carry no metric: ASHA waits for the next validated one.
    assert asha.on_trial_result(None, late, {"training_iteration": 1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, good, {"training_iteration": 4, "average_mAP": 0.6}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, late, {"training_iteration": 4, "average_mAP": 0.0}) == TrialScheduler.CONTINUE


def test_trial_sizing_fits_two_cpus() -> None:
    from pipelines.ray_layer.sweeps import concurrent_trials, trial_cpus
    from tests.conftest import tiny_config

    cfg = tiny_config(Path("/d"), Path("/s"), Path("/m.db"))
    assert trial_cpus(cfg) == pytest.approx(0.1 + 1.0 + 2 * 0.5)
    assert concurrent_trials(cfg, {"CPU": 2}) == 1
    assert concurrent_trials(cfg, {"CPU": 64}) == 30


# ---------------------------------------------------------------- a real sweep on the session Ray


def test_two_trial_sweep_logs_each_trial_to_mlflow(sweep: dict, tmp_path: Path) -> None:
    from pipelines.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_RUN_TAG

    rows = sweep["rows"]
    assert len(rows) == 2 and all(r["status"] == "finished" and r["epochs"] == 2 for r in rows), rows
    assert sorted(r["params"]["train.adapter_lr"] for r in rows) == [1e-4, 4e-4]
    best = max(rows, key=lambda r: r["best"])
    assert sweep["best"] == best["trial_id"]
    client = MlflowClient(f"sqlite:///{sweep['mlflow_db']}")
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    parent_id = sweep["parent_run_id"]
    assert {r.info.run_id for r in runs} == {parent_id} | {r["mlflow_run_id"] for r in rows}
    for row in rows:
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags[PARENT_RUN_TAG] == parent_id  # nested under the sweep's run
        assert run.data.tags["adatad.sweep"] == "tiny_lr" and run.data.tags["adatad.trial_id"] == row["trial_id"]
        assert float(run.data.params["train.adapter_lr"]) == row["params"]["train.adapter_lr"]
        assert run.data.params["runtime.prefetch_batches"] == "2"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "average_mAP")] == [1]
    text = Path(sweep["sweep_dir"], "SWEEP_RESULTS.md").read_text()
    assert text == Path(sweep["results_file"]).read_text()
    assert "**Best setting**: train.adapter_lr=" in text and best["trial_id"] in text and parent_id in text
    assert text.count("| finished |") == 2
    # mAP in percent, as the epoch lines show it (one unit wherever a person reads it)
    best_cells = [line.split(" | ")[4] for line in text.splitlines() if "| finished |" in line]
    assert all(re.fullmatch(r"\d+\.\d\d %", cell) for cell in best_cells), best_cells
    assert re.search(r"-> average_mAP \d+\.\d\d % \(trial", text)

    parent = client.get_run(parent_id)
    assert parent.info.run_name == "sweep-tiny" and parent.info.status == "FINISHED"
    assert PARENT_RUN_TAG not in parent.data.tags and parent.data.tags["adatad.sweep"] == "tiny_lr"
    params = parent.data.params
    assert json.loads(params["sweep.params.train.adapter_lr"]) == {"grid": [1e-4, 4e-4]}
    assert (params["sweep.metric"], params["sweep.mode"], params["sweep.scheduler"]) == ("average_mAP", "max", "asha")
    assert params["sweep.config"] == str(CONFIG_DIR / "synthetic.yaml") and params["sweep.trials"] == "2"
    assert params["best.trial_id"] == best["trial_id"]
    assert float(params["best.train.adapter_lr"]) == best["params"]["train.adapter_lr"]
    assert parent.data.metrics["best_average_mAP"] == pytest.approx(100 * best["best"])  # percent, as people read it
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["trials_error"] == 0
    assert parent.data.tags["adatad.best_run_id"] == best["mlflow_run_id"]
    assert [a.path for a in client.list_artifacts(parent_id)] == ["SWEEP_RESULTS.md"]
    assert Path(client.download_artifacts(parent_id, "SWEEP_RESULTS.md", str(tmp_path))).read_text() == text


def test_sweep_run_fails_only_when_every_trial_failed(sweep: dict, tmp_path: Path) -> None:
    from pipelines.sweeps.results import TrialRow
    from pipelines.tracking.runs import new_run
    from pipelines.tracking.sweep_runs import close_sweep_run

    uri = f"sqlite:///{sweep['mlflow_db']}"
    spec = load_sweep(_write(tmp_path, TINY_SWEEP))
    results = tmp_path / "SWEEP_RESULTS.md"
    results.write_text("# results\n")
    failed = TrialRow("t1", {}, "error", 0, None, None, None, None, error="boom")
    stopped = TrialRow("t2", {"train.adapter_lr": 1e-4}, "stopped early", 1, 0.1, 0.1, 1.0, None)
    client = MlflowClient(uri)
    for rows, status in (([failed], "FAILED"), ([failed, stopped], "FINISHED")):
        run_id = new_run(uri, SWEEP_EXPERIMENT + "-close", tmp_path / status / "mlflow_run_id", "close", {})
        assert close_sweep_run(uri, run_id, rows, spec, results) == status
        run = client.get_run(run_id)
        assert run.info.status == status and run.data.metrics["trials_error"] == 1
        assert ("best.trial_id" in run.data.params) == (status == "FINISHED")


def test_compare_table_from_two_runs(sweep: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipelines.report import main

    uri = f"sqlite:///{sweep['mlflow_db']}"
    trial = sweep["rows"][0]
    out = tmp_path / "compare.md"
    # Reference by run id (the train run) and by run name (the sweep trial).
    name = f"tiny_lr_{trial['trial_id']}"
    assert main(["compare", "--tracking-uri", uri, "--runs", sweep["train_run_id"], name, "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["setting"].count("|") == 5  # setting, two runs, one ratio
    assert "| prefetch | 1 | 2 | 2.00x |" in text
    assert "| batch size | 2 | 2 | 1.00x |" in text
    for row in ("decode workers", "val batch", "val workers", "train.adapter_lr", "clips/s (mean over epochs)",
                "time per epoch (mean)", "peak memory", "final average mAP"):
        assert row in lines, row
    client = MlflowClient(uri)
    speeds = [m.value for m in client.get_metric_history(sweep["train_run_id"], "clips_per_s")]
    assert f"| {sum(speeds) / len(speeds):.2f} |" in lines["clips/s (mean over epochs)"]
    assert lines["final average mAP"].rstrip(" |").endswith("x")


def test_compare_reports_unknown_runs(sweep: dict, capsys: pytest.CaptureFixture) -> None:
    from pipelines.report import main

    uri = f"sqlite:///{sweep['mlflow_db']}"
    assert main(["compare", "--tracking-uri", uri, "--runs", sweep["train_run_id"], "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert "run 'no-such-run': no MLflow run with that id or name" in err
    assert main(["compare", "--tracking-uri", uri, "--runs", sweep["train_run_id"]]) == 2
    assert "at least two runs" in capsys.readouterr().err


def test_sweep_console_is_one_line_per_trial_epoch(sweep: dict) -> None:
    """No Tune status tables: a line per trial epoch (epoch summary with the swept value), one per
    finished trial, then the results table."""
    lines = sweep["console"].splitlines()
    assert not [line for line in lines if "Trial status" in line or "TrainingReport(" in line]
    for row in sweep["rows"]:
        mine = [line for line in lines if line.startswith(f"trial {row['trial_id']} (adapter_lr=")]
        assert [line.split(")  ", 1)[1].split("  ")[0] for line in mine[:-1]] == ["epoch 0/1", "epoch 1/1"], mine
        assert mine[-1].endswith(" finished") and "mAP" in mine[1]
    assert "# Sweep `tiny_lr`" in sweep["console"]
    # Tune's own prints (its configuration box, where its results and TensorBoard files are) go to the log
    for tune_line in ("Configuration for experiment", "View detailed results"):
        assert tune_line not in sweep["console"] and tune_line in sweep["log"], tune_line
