"""pipelines/report.py: curves PNG, TRAINING_SUMMARY.md and the `run` CLI, from fabricated run records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from adatad.config import CONFIG_DIR, load_config, write_config
from adatad.reports import curves, summary
from adatad.reports import history as records
from adatad.run_folder import RunFolder
from pipelines import report as report_command

MAP_KEYS = ("mAP_0.3", "mAP_0.4", "mAP_0.5", "mAP_0.6", "mAP_0.7", "average_mAP")  # THUMOS's thresholds

FILES = RunFolder(Path("."))  # the file names of a run folder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_PY = Path(report_command.__file__)


def make_history(epochs: int = 10, first_val: int = 3, every: int = 2, old_format: bool = False) -> list[dict]:
    """Falling losses; validation every `every` epochs from `first_val`, ending on a known last epoch.

    As `adatad.engine.fit` records it (integer counts; `best_average_mAP` on validated epochs only), or
    with `old_format` as earlier versions did (counts as floats, `best_average_mAP` / `val_score` -1 on
    every epoch before a validation, `val_score` everywhere)."""
    history = []
    best = -1.0
    for e in range(epochs):
        cls, reg = 1.0 / (e + 1) + 0.1, 0.5 / (e + 1) + 0.2
        row = {"epoch": e, "loss": cls + reg, "cls_loss": cls, "reg_loss": reg, "lr_base": 1e-4 * (e + 1) / epochs,
               "lr_adapter": 2e-4 * (e + 1) / epochs, "epoch_time_s": 10.0 + e, "clips_per_s": 2.0 + 0.1 * e,
               "data_wait_frac": 0.01 * e, "peak_memory_mb": 1000.0 + 10 * e, "steps": 25,
               "decode_failures": int(e == 4) * 2, "clips_lost": 0, "clips_repeated": 0}
        if e >= first_val and (e - first_val) % every == 0 or e == epochs - 1:
            base = 0.30 + 0.04 * e
            for k, off in zip(MAP_KEYS, (0.15, 0.11, 0.03, -0.07, -0.22, 0.0), strict=True):
                row[k] = base + off
            row["val_time_s"] = 3.0
        history.append(row)
    # A distinctive final validation so the formatting is checked on known numbers.
    history[-1].update({"mAP_0.3": 0.8350, "mAP_0.4": 0.7955, "mAP_0.5": 0.7342, "mAP_0.6": 0.6195,
                        "mAP_0.7": 0.4694, "average_mAP": 0.68672, "val_time_s": 3.0})
    for row in history:
        if "average_mAP" in row:
            best = max(best, row["average_mAP"])
            row["best_average_mAP"] = best
        if old_format:
            row.update({k: float(row[k]) for k in ("steps", "decode_failures", "clips_lost", "clips_repeated")},
                       best_average_mAP=best, val_score=row.get("average_mAP", -1.0))
    return history


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(CONFIG_DIR / "synthetic.yaml").to_dict()


STATS = {"checkpoint_size_mb": 12.5, "run_name": "unit-run", "storage": "/tmp/runs", "device": "cpu",
         "num_workers": 1, "wall_time_s": 321.0}


def section(md: str, heading: str) -> str:
    start = md.index(f"## {heading}")
    end = md.find("\n## ", start + 3)
    return md[start:] if end < 0 else md[start:end]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first markdown table in `text` (header and separator dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def written(tmp_path_factory, config):
    out = tmp_path_factory.mktemp("report")
    history = make_history()
    paths = summary.write_reports(history, config, STATS, out)
    return history, out, paths


def test_png_is_valid_and_sized(written):
    _, out, paths = written
    png = paths["curves"]
    assert png == out / FILES.curves.name
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(png)
    w, h = (round(v * curves.DPI) for v in curves.FIGSIZE)
    assert pixels.shape[:2] == (h, w)
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    assert sorted(p.name for p in out.iterdir()) == [FILES.summary.name, FILES.curves.name]  # no temp files


def test_final_map_table_in_percent(written):
    history, _, paths = written
    md = paths["summary"].read_text()
    last = history[-1]
    expected = " | ".join(f"{100 * last[k]:.2f}" for k in MAP_KEYS)
    assert expected == "83.50 | 79.55 | 73.42 | 61.95 | 46.94 | 68.67"
    assert expected in section(md, "Final mAP per tIoU")
    assert "average mAP **68.67%**" in md


def test_loss_table_one_row_per_epoch(written):
    history, _, paths = written
    rows = table_rows(section(paths["summary"].read_text(), "Loss per epoch"))
    assert [int(r[0]) for r in rows] == [h["epoch"] for h in history]
    assert [r[1] for r in rows] == [f"{h['loss']:.4f}" for h in history]


def test_map_table_one_row_per_validated_epoch(written):
    history, _, paths = written
    rows = table_rows(section(paths["summary"].read_text(), "Validation mAP per epoch"))
    validated = [h for h in history if "average_mAP" in h]
    assert [int(r[0]) for r in rows] == [3, 5, 7, 9] == [h["epoch"] for h in validated]
    assert [r[6] for r in rows] == [f"{100 * h['average_mAP']:.2f}" for h in validated]


def test_config_tables_grouped_with_values(written, config):
    md = section(written[2]["summary"].read_text(), "Configuration")
    headings = [ln[4:] for ln in md.splitlines() if ln.startswith("### ")]
    assert headings == ["data", "model", "train", "evaluation", "runtime (ray)", "tracking"]
    rows = {r[0]: r[1] for r in table_rows(section(md, "Configuration").split("### data")[1])}
    assert rows["crop_size"] == str(config["data"]["crop_size"]) == "64"
    assert rows["temporal_crop_ratio"] == "[0.9, 1.0]"
    assert "| backbone.embed_dim | 64 |" in md
    assert "| lr | 0.001 |" in md
    assert "| experiment_name | adatad-synthetic |" in md
    assert "name: `synthetic`" in md


def test_key_statistics_computed_from_history(written):
    history, _, paths = written
    rows = dict(tuple(r[:2]) for r in table_rows(section(paths["summary"].read_text(), "Key statistics")))
    assert rows["epochs run"] == "10 (epochs 0-9)"
    assert rows["optimiser steps"] == "250"
    mean_train = sum(h["epoch_time_s"] for h in history) / len(history)
    assert rows["mean training time per epoch"] == f"{mean_train:.1f} s"
    clips = sum(h["clips_per_s"] * h["epoch_time_s"] for h in history) / sum(h["epoch_time_s"] for h in history)
    assert rows["throughput"].startswith(f"{clips:.2f} clips/s")
    assert rows["peak memory (process RSS)"].startswith("1,090 MB")
    assert rows["decode failures"] == "2 in 1 of 10 epochs"
    assert rows["checkpoint size"] == "12.5 MB"
    assert rows["run name"] == "unit-run"
    assert rows["wall time"] == "321.0 s (5 min 21 s)"
    assert not [label for label in rows if "utilisation" in label]  # none recorded: no row, no "not measured"


def test_summary_leads_with_the_result_and_ends_with_the_config_collapsed(written):
    md = written[2]["summary"].read_text()
    headings = [ln[3:] for ln in md.splitlines() if ln.startswith("## ")]
    assert headings == ["Result", "Loss per epoch", "Validation mAP per epoch (%)", "Final mAP per tIoU (%)",
                        "Key statistics", "Configuration"]
    details = md.index("<details><summary>Configuration</summary>")
    assert details < md.index("## Configuration") and md.rstrip().endswith("</details>")


def test_summary_names_the_mlflow_run_and_its_utilisation(tmp_path, config):
    stats = {**STATS, "mlflow_run_id": "abc123", "mlflow_tracking_uri": "sqlite:////tmp/mlflow.db",
             "mlflow_ui": "http://127.0.0.1:5000/#/experiments/1/runs/abc123?workflowType=machine_learning",
             "mlflow_ui_command": ".venv/bin/python -m mlflow ui --backend-store-uri sqlite:////tmp/mlflow.db",
             "system_metrics": {"cpu_utilization_percentage": {"mean": 63.2, "max": 98.0, "samples": 12},
                                "gpu_0_utilization_percentage": {"mean": 91.4, "max": 100.0, "samples": 12}}}
    md = summary.write_summary(make_history(), config, stats, tmp_path / "s.md").read_text()
    result = section(md, "Result")
    assert "- MLflow run `abc123` in `sqlite:////tmp/mlflow.db`" in result
    assert (f"- browse: `{stats['mlflow_ui_command']}` then {stats['mlflow_ui']}") in result
    rows = dict(tuple(r[:2]) for r in table_rows(section(md, "Key statistics")))
    assert rows["CPU utilisation"] == "mean 63 %, max 98 % (12 samples, MLflow system metrics)"
    assert rows["GPU 0 utilisation"] == "mean 91 %, max 100 % (12 samples, MLflow system metrics)"
    assert not [k for k in rows if k.startswith(("mlflow", "system"))]  # shown once, where they belong


def test_an_old_history_file_reports_as_a_new_one(tmp_path, config):
    """Histories written before: float counts, -1 placeholders and `val_score`: the same summary."""
    new = summary.render_summary(make_history(), config, STATS)
    assert summary.render_summary(make_history(old_format=True), config, STATS) == new
    run_dir = make_run_dir(tmp_path / "old", history=make_history(old_format=True))
    assert report_command.main(["run", "--run-dir", str(run_dir)]) == 0


def test_curves_show_the_input_pace_per_epoch(written):
    history = written[0]
    fig = curves.build_figure(history)
    pace = [ax for ax in fig.axes if ax.get_title() == "Input pace"][0]
    assert list(pace.lines[0].get_ydata()) == [h["clips_per_s"] for h in history]
    wait = [ax for ax in fig.axes if ax.get_ylabel().startswith("waiting for data")][0]
    assert list(wait.lines[0].get_ydata()) == pytest.approx([100 * h["data_wait_frac"] for h in history])


def test_single_epoch_without_validation(tmp_path, config):
    history = make_history(epochs=1, first_val=5)
    for k in (*MAP_KEYS, "val_time_s", "best_average_mAP"):
        history[0].pop(k)
    fig = curves.build_figure(history)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no validation yet" in texts
    png = curves.plot_training_curves(history, tmp_path / "c.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    md = summary.write_summary(history, config, None, tmp_path / "s.md").read_text()
    assert "No epoch has been validated yet." in section(md, "Final mAP per tIoU")
    assert len(table_rows(section(md, "Loss per epoch"))) == 1


def test_diverged_nan_loss_still_reported(tmp_path, config):
    history = make_history(epochs=3, first_val=1)
    history[2].update(loss=float("nan"), cls_loss=float("nan"))
    paths = summary.write_reports(history, config, {}, tmp_path)
    rows = table_rows(section(paths["summary"].read_text(), "Loss per epoch"))
    assert rows[2][1] == "nan" and rows[1][1] == f"{history[1]['loss']:.4f}"
    assert paths["curves"].read_bytes()[:8] == PNG_SIGNATURE


def test_resumed_duplicate_epoch_keeps_latest_and_sorts():
    history = make_history(epochs=4, first_val=1)
    redo = dict(history[2], loss=9.0)
    rows = records.check_history([history[3], history[0], history[1], history[2], redo])
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[2]["loss"] == 9.0


@pytest.mark.parametrize("bad, message", [
    ([], "empty history"),
    ({"epoch": 0}, "expected a list"),
    ([{"epoch": 0}], "missing key 'loss'"),
    ("missing_map", "validated epoch lacks mAP_0.7"),
    ("other_thresholds", r"validated epoch has mAP_0.1 \(expected mAP_0.3"),
    ("nan_text", "expected a finite number"),
    ([dict(make_history(1, 5)[0], steps=float("nan"))], "steps: expected a finite number"),
    ([dict(make_history(1, 5)[0], epoch=1.5)], "epoch: expected a whole number"),
])
def test_check_history_rejects_bad_records(bad, message):
    thumos = [0.3, 0.4, 0.5, 0.6, 0.7]
    if bad == "missing_map":
        bad = make_history(epochs=2, first_val=1)
        del bad[1]["mAP_0.7"]
    elif bad == "other_thresholds":
        bad = make_history(epochs=2, first_val=1)
        bad[1]["mAP_0.1"] = 0.5
    elif bad == "nan_text":
        bad = make_history(epochs=2, first_val=5)
        bad[1]["loss"] = "nan"
    with pytest.raises(records.ReportError, match=message):
        records.check_history(bad, tiou_thresholds=thumos)


def test_validated_epochs_of_one_run_have_the_same_thresholds():
    history = make_history(epochs=6, first_val=1, every=2)  # validated epochs 1, 3, 5
    assert records.tious(records.check_history(history)) == ["0.3", "0.4", "0.5", "0.6", "0.7"]
    del history[3]["mAP_0.5"]
    with pytest.raises(records.ReportError, match=r"history\[3\] \(epoch 3\): validated epoch lacks mAP_0.5"):
        records.check_history(history)


def test_reports_follow_the_runs_thresholds(tmp_path, config):
    """Multi-THUMOS is scored at 0.1:0.1:0.9: the summary's tables have those columns."""
    history = make_history(epochs=4, first_val=1, every=2)
    tiou = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    for row in history:
        if "average_mAP" in row:
            for t in (0.3, 0.4, 0.5, 0.6, 0.7):
                del row[f"mAP_{t}"]
            row.update({f"mAP_{t}": 0.5 - t / 2 for t in tiou})
    cfg = dict(config, evaluation={"tiou_thresholds": tiou})
    paths = summary.write_reports(history, cfg, None, tmp_path)
    md = paths["summary"].read_text()
    assert "| tIoU | 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | 0.8 | 0.9 | average |" in md
    assert "mAP@0.9" in md and "mAP@0.7 |" in md
    with pytest.raises(records.ReportError, match=r"has mAP_0.1, mAP_0.2.*\(expected mAP_0.3, average_mAP\)"):
        summary.write_reports(history, dict(config, evaluation={"tiou_thresholds": [0.3]}), None, tmp_path)


# ---------------------------------------------------------------- command line


def make_run_dir(path: Path, history=None, stats=True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / FILES.history.name).write_text(json.dumps(make_history() if history is None else history, indent=1))
    write_config(load_config(CONFIG_DIR / "synthetic.yaml"), path / FILES.config.name)
    if stats:
        (path / FILES.stats.name).write_text(json.dumps(STATS))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT_PY), *args], capture_output=True, text=True, timeout=60)


def test_cli_run_writes_report(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    proc = run_cli("run", "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / FILES.curves.name).read_bytes()[:8] == PNG_SIGNATURE
    md = (run_dir / FILES.summary.name).read_text()
    assert "# Training summary: unit-run" in md
    assert "83.50 | 79.55 | 73.42 | 61.95 | 46.94 | 68.67" in md
    assert f"![training curves]({FILES.curves.name})" in md


def test_cli_bad_inputs_exit_2_one_line(tmp_path):
    """Each bad run directory gives exit 2 and a single stderr line naming the problem."""
    invalid = make_run_dir(tmp_path / "invalid")
    (invalid / FILES.history.name).write_text('[\n {"epoch": 0,\n  "loss": }\n]')
    no_history = make_run_dir(tmp_path / "no_history")
    (no_history / FILES.history.name).unlink()
    bad_yaml = make_run_dir(tmp_path / "bad_yaml")
    (bad_yaml / FILES.config.name).write_text("data: [1, 2\n")
    cases = {
        tmp_path / "does_not_exist": "does not exist",
        no_history: f"{FILES.history.name}: not found",
        invalid: "invalid JSON at line 3 column 11",
        make_run_dir(tmp_path / "empty", history=[]): "empty history",
        bad_yaml: "invalid YAML at line",
    }
    for run_dir, message in cases.items():
        # In-process for speed; one real subprocess below checks the process exit code.
        with pytest.raises(records.ReportError, match=message):
            records.load_run(run_dir)
    proc = run_cli("run", "--run-dir", str(invalid))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "line 3 column 11" in proc.stderr
    assert not (invalid / FILES.summary.name).exists()


def test_main_returns_2_with_one_line(tmp_path, capsys):
    assert report_command.main(["run", "--run-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope does not exist" in err


def test_finite_numbers_only_in_figures(written):
    """Every per-tIoU value in the mAP table is a finite percentage (catches a fraction/percent mix-up)."""
    rows = table_rows(section(written[2]["summary"].read_text(), "Validation mAP per epoch"))
    values = np.array([[float(c) for c in r[1:7]] for r in rows])
    assert np.isfinite(values).all() and values.min() > 1.0 and values.max() <= 100.0
    assert math.isclose(values[-1, 2], 73.42)
