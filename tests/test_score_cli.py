"""pipelines/score.py run as a subprocess: table, metrics file, unknown videos, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "score.py"

GT = {"database": {
    "video_test_1": {"subset": "validation", "duration": 100.0, "frame": 3000, "annotations": [
        {"segment": [10.0, 20.0], "label": "Diving"}, {"segment": [40.0, 50.0], "label": "Diving"},
        {"segment": [60.0, 61.0], "label": "Ambiguous"}]},
    "video_test_2": {"subset": "validation", "duration": 80.0, "frame": 2400, "annotations": [
        {"segment": [5.0, 15.0], "label": "Shotput"}]},
    "video_train_1": {"subset": "training", "duration": 50.0, "frame": 1500, "annotations": [
        {"segment": [1.0, 2.0], "label": "Shotput"}]},
}}
PRED = {"results": {
    "video_test_1": [{"segment": [10.0, 20.0], "label": "Diving", "score": 0.9},
                     {"segment": [70.0, 80.0], "label": "Diving", "score": 0.95}],
    "video_test_2": [{"segment": [5.0, 15.0], "label": "Shotput", "score": 0.8}],
    "video_train_1": [{"segment": [1.0, 2.0], "label": "Shotput", "score": 0.99}],
}}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


@pytest.fixture
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return gt, pred, tmp_path


def test_evaluates_and_writes_metrics(files):
    gt, pred, tmp = files
    out = tmp / "sub" / "metrics.json"
    proc = run_cli("--annotations", str(gt), "--predictions", str(pred), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    # Diving: FP (0.95) then TP -> precision 1/2 at recall 1/2 -> AP 0.25; Shotput: AP 1
    assert metrics["per_class"] == {"Diving": {k: 0.25 for k in ("0.3", "0.4", "0.5", "0.6", "0.7")},
                                    "Shotput": {k: 1.0 for k in ("0.3", "0.4", "0.5", "0.6", "0.7")}}
    assert metrics["mAP"]["0.5"] == pytest.approx(0.625)
    assert metrics["average_mAP"] == pytest.approx(0.625)
    assert set(metrics) == {"mAP", "average_mAP", "per_class"}
    assert "average     62.50" in proc.stdout and "   0.30     62.50" in proc.stdout
    assert "1 predicted video(s) are not in subset 'validation'" in proc.stderr
    assert "video_train_1" in proc.stderr
    assert not list(out.parent.glob(".*tmp"))  # atomic write left no temp file


def test_subset_and_thresholds_options(files):
    gt, pred, _ = files
    proc = run_cli("--annotations", str(gt), "--predictions", str(pred), "--subset", "training", "--tiou", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "   0.50    100.00" in proc.stdout
    assert "2 predicted video(s)" in proc.stderr


@pytest.mark.parametrize("mutate,pattern", [
    (lambda gt, pred: pred.write_text('{"results": {"v": [}'), "pred.json: invalid JSON at line 1 column 20"),
    (lambda gt, pred: pred.write_text('{"detections": {}}'), "pred.json: missing key 'results'"),
    (lambda gt, pred: pred.write_text('{"results": {"v": [{"segment": [1, 2], "label": "A"}]}}'),
     r"pred.json: results['v'][0]: expected an object with 'segment', 'label' and 'score'"),
    (lambda gt, pred: gt.unlink(), "gt.json: file not found"),
    (lambda gt, pred: gt.write_text('{"database": {"v": {"subset": "training"}}}'),
     "gt.json: no video has subset ['validation']"),
])
def test_bad_input_is_one_line_and_exit_2(files, mutate, pattern):
    gt, pred, _ = files
    mutate(gt, pred)
    proc = run_cli("--annotations", str(gt), "--predictions", str(pred))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_actionformer_layout_is_read_with_opentad_subset_names(tmp_path) -> None:
    """ActionFormer's thumos14.json: the default subset 'validation' (OpenTAD's test set) reads its 'Test'
    videos, never its 'Validation' ones (the training set)."""
    from adatad.evaluation import load_ground_truth

    database = {
        "video_validation_1": {"subset": "Validation", "duration": 10.0, "fps": 30.0,
                               "annotations": [{"label": "A", "segment": [1.0, 2.0], "label_id": 7}]},
        "video_test_1": {"subset": "Test", "duration": 10.0, "fps": 30.0,
                         "annotations": [{"label": "A", "segment": [3.0, 4.0], "segment(frames)": [90, 120],
                                          "label_id": 7}]},
    }
    path = tmp_path / "thumos14.json"
    path.write_text(json.dumps({"version": "Thumos14-30fps", "database": database}))
    assert load_ground_truth(path) == {"video_test_1": [{"segment": [3.0, 4.0], "label": "A"}]}
    assert set(load_ground_truth(path, "Validation")) == {"video_validation_1"}
