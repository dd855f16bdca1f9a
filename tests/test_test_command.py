"""`pipelines/test.py` (training's validation on a checkpoint) and the decode-once test windows.
Training and validation with two Ray Train workers: tests/test_faults.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.data.clips import ClipLoader, window_rows
from adatad.data.frame_store.build import VideoToStore, build_entry
from adatad.data.frame_store.spec import spec_for_config, write_manifest
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
    """test.py on the trained run's checkpoint, its windows read from a lossless frame store of the test
    videos: the tests below compare it with detect.py and a per-window reference that decode the videos."""
    checkpoint = _validated_checkpoint(trained_run)
    out = tmp_path_factory.mktemp("test_cmd")
    cfg = model_from_checkpoint(read_trained(checkpoint).state)[1]
    records, _ = load_test_split(cfg)
    store = out / "frames"
    spec = spec_for_config(cfg.data, "rgb-zstd")
    write_manifest(store, spec)
    for r in records:
        assert build_entry(store, VideoToStore(r.video_id, r.path, r.num_frames), spec).error is None
    one = _test(checkpoint, out / "one", f"data.frame_store={store}")
    return {"checkpoint": checkpoint, "one": one, "out": out, "run": trained_run, "store": store}


def test_test_command_stops_on_a_store_without_the_test_videos(tested: dict, tmp_path: Path, capsys) -> None:
    store = tmp_path / "frames"
    shutil.copytree(tested["store"], store)
    removed = sorted((store / "videos").glob("*.parquet"))[0]
    removed.unlink()
    args = ["--checkpoint", str(tested["checkpoint"]), "--out", str(tmp_path / "out"), "--set",
            f"data.frame_store={store}"]
    assert test.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: frame store {store}: 1 of 3 videos not stored: "
                                               f"{removed.stem}; store them: "), err
    assert "pipelines/prepare_frames.py --config " in err[0] and "config.yaml" in err[0]
    assert not (tmp_path / "out").exists()


def test_test_command_equals_detect_plus_evaluate(tested: dict, capsys) -> None:
    """detect.py + score.py on the test videos give test.py's mAP from the lossless store (1e-6), and
    the training's own validation of this checkpoint (two windows per forward) agrees to rounding."""
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
    """test.py's Ray Data path read the windows from the lossless store; decoding each window of the
    videos on its own, in-process, gives the same detections (to 1e-6)."""
    _same_detections(tested["one"]["predictions.json"], _per_window_predictions(tested["checkpoint"]))
