"""`pipelines/test.py` (training's validation on a checkpoint) and the decode-once test windows.
Training and validation with two Ray Train workers: tests/test_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.data.clips import ClipLoader, window_rows
from adatad.data.splits import load_test_split
from adatad.engine.validation import WindowCollector
from adatad.models.build import model_from_checkpoint
from adatad.models.trained import read_trained
from adatad.run_folder import EvalFolder
from pipelines import score, test
from tests.test_detect import _validated_checkpoint

TWO_WORKERS = ["runtime.num_workers=2", "runtime.cpus_per_worker=0.5", "runtime.decode_actor_cpus=0.25"]
# One window per forward everywhere here: a batch of two gives float differences of ~1e-7 against
# one window alone, and the results json rounds scores to 4 decimals, which such a difference can
# flip. With equal batches the computations are the same and the outputs equal.
ONE_WINDOW = "train.val_batch_size=1"


def _test(checkpoint: Path, out: Path, *sets: str) -> dict:
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--skip-data-check", "--set", ONE_WINDOW]
    assert test.main([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    folder = EvalFolder(out)
    return {path.name: json.loads(path.read_text()) for path in (folder.predictions, folder.metrics)}


def _same_detections(a: dict, b: dict, tol: float = 1e-6) -> None:
    assert sorted(a["results"]) == sorted(b["results"])
    for vid, dets in a["results"].items():
        other = b["results"][vid]
        assert [d["label"] for d in dets] == [d["label"] for d in other], vid
        assert np.allclose([d["segment"] for d in dets], [d["segment"] for d in other], atol=tol, rtol=0), vid
        assert np.allclose([d["score"] for d in dets], [d["score"] for d in other], atol=tol, rtol=0), vid


@pytest.fixture(scope="module")
def tested(ray_session, trained_run: dict, tmp_path_factory) -> dict:
    checkpoint = _validated_checkpoint(trained_run)
    out = tmp_path_factory.mktemp("test_cmd")
    return {"checkpoint": checkpoint, "one": _test(checkpoint, out / "one"), "out": out, "run": trained_run}


def test_test_command_equals_detect_plus_evaluate(tested: dict, capsys) -> None:
    """detect.py + score.py on the test videos give test.py's mAP (1e-6), and the training's own
    validation of this checkpoint (two windows per forward) agrees to rounding."""
    from pipelines import detect

    one = tested["one"]
    validation = json.loads((tested["checkpoint"] / "history.json").read_text())[-1]
    assert abs(one["metrics.json"]["average_mAP"] - validation["average_mAP"]) < 1e-3
    data = tested["run"]["data"]
    videos = sorted(str(p) for p in (data / "videos").glob("video_test_*.mp4"))
    out = tested["out"] / "detect.json"
    assert detect.main(["--checkpoint", str(tested["checkpoint"]), "--videos", *videos, "--out", str(out),
                        "--quiet", "--set", ONE_WINDOW]) == 0
    metrics_file = tested["out"] / "detect_metrics.json"
    assert score.main(["--annotations", str(data / "annotations.json"), "--predictions", str(out),
                          "--class-map", str(data / "category_idx.txt"), "--out", str(metrics_file)]) == 0
    from_detect = json.loads(metrics_file.read_text())
    assert abs(one["metrics.json"]["average_mAP"] - from_detect["average_mAP"]) <= 1e-6
    for t, value in one["metrics.json"]["mAP"].items():
        assert abs(value - from_detect["mAP"][t]) <= 1e-6, t
    assert set(one["metrics.json"]) == set(from_detect)  # score.py's format: mAP, average_mAP, per_class
    summary = EvalFolder(tested["out"] / "one").summary.read_text()
    assert f"**{100 * one['metrics.json']['average_mAP']:.2f}**" in summary
    assert "average" in capsys.readouterr().out


def _per_window_predictions(checkpoint: Path) -> dict:
    """The reference: every window of every test video decoded on its own (`read_frames`), in this
    process, one window per forward, merged with the validation code (call with one torch thread)."""
    model, cfg = model_from_checkpoint(read_trained(checkpoint).state)
    records, class_names = load_test_split(cfg)
    loader, rng = ClipLoader(cfg.data, train=False), np.random.default_rng(0)
    collector = WindowCollector()
    rows = window_rows(records, cfg.data)
    assert len(rows) > len(records)  # the videos have overlapping windows
    with torch.no_grad():
        for row in rows:
            example = loader.load(row, rng)
            batch = {k: torch.as_tensor(np.asarray(v))[None] for k, v in example.items()}
            collector.add_batch(model.predict(batch["frames"], batch["masks"]), batch)
    return collector.results(records, class_names, cfg.model.inference)


def test_decode_once_windows_give_the_per_window_predictions(tested: dict, one_torch_thread) -> None:
    """The Ray Data path decodes each test video once; decoding each window on its own, in-process,
    gives the same detections (to 1e-6)."""
    _same_detections(tested["one"]["predictions.json"], _per_window_predictions(tested["checkpoint"]))
