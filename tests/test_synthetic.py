"""Synthetic THUMOS-like data set: real decodable mp4s whose pixels match the annotations."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from adatad.data.annotations import load_annotations, load_class_names
from adatad.data.video import decord
from adatad.datasets import synthetic, synthetic_plan
from adatad.datasets.synthetic import dataset_is_complete, generate_dataset, generate_from_spec
from adatad.datasets.synthetic_plan import ACTION_CLASSES, DEMO_SPEC, SyntheticSpec

TINY = dict(num_train=2, num_test=1, num_classes=3, duration_s=(4.0, 5.0), fps=15, width=64, height=48,
            action_duration_s=(1.0, 1.6), gap_s=(0.8, 1.2), seed=7)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, **TINY)
    return out


def decode_all(path: Path) -> np.ndarray:
    vr = decord.VideoReader(str(path), num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def color_fraction(frames: np.ndarray, color: tuple[int, int, int], tol: int = 60) -> np.ndarray:
    """Per-frame fraction of pixels within ``tol`` (max channel difference) of ``color``."""
    diff = np.abs(frames.astype(np.int16) - np.array(color, dtype=np.int16)).max(axis=-1)
    return (diff <= tol).mean(axis=(1, 2))


def test_layout_and_loader_roundtrip(tiny):
    db = json.loads((tiny / "annotations.json").read_text())["database"]
    assert sorted(db) == ["video_test_0000001", "video_validation_0000001", "video_validation_0000002"]
    assert db["video_validation_0000001"]["subset"] == "training"
    assert db["video_test_0000001"]["subset"] == "validation"
    names = (tiny / "category_idx.txt").read_text().split()
    assert names == [c.name for c in ACTION_CLASSES[:3]]
    assert load_class_names(tiny / "annotations.json") == names  # derived map equals the written one
    train, _ = load_annotations(tiny / "annotations.json", tiny / "videos", "training", class_names=names)
    test, _ = load_annotations(tiny / "annotations.json", tiny / "videos", "validation", class_names=names)
    assert len(train) == 2 and len(test) == 1
    for rec in train + test:
        assert rec.fps == pytest.approx(15.0)
        assert len(rec.segments) >= 1
        assert (np.diff(rec.segments.ravel()) >= 0).all()  # sorted, non-overlapping
    assert dataset_is_complete(tiny, SyntheticSpec(**TINY))
    assert not dataset_is_complete(tiny, dataclasses.replace(SyntheticSpec(**TINY), seed=8))


def test_videos_decode_to_stated_frame_count_and_size(tiny):
    db = json.loads((tiny / "annotations.json").read_text())["database"]
    for name in ["annotations.json", "category_idx.txt", "videos/video_test_0000001.mp4"]:
        assert (tiny / name).stat().st_mode & 0o777 == 0o644  # readable by others, not mkstemp's 0600
    for vid, info in db.items():
        vr = decord.VideoReader(str(tiny / "videos" / f"{vid}.mp4"), num_threads=1)
        assert len(vr) == info["frame"]
        assert info["duration"] == pytest.approx(info["frame"] / 15)
        assert 4.0 * 15 - 1 <= info["frame"] <= 5.0 * 15 + 1
        assert vr[0].shape == (48, 64, 3)
        assert vr.get_avg_fps() == pytest.approx(15.0)


def test_pixels_match_annotations(tiny):
    db = json.loads((tiny / "annotations.json").read_text())["database"]
    names = [c.name for c in ACTION_CLASSES[:3]]
    for vid, info in db.items():
        frames = decode_all(tiny / "videos" / f"{vid}.mp4")
        fps = info["frame"] / info["duration"]
        t = np.arange(len(frames)) / fps
        inside_any = np.zeros(len(frames), dtype=bool)
        far_from_all = np.ones(len(frames), dtype=bool)
        for anno in info["annotations"]:
            (s, e), k = anno["segment"], names.index(anno["label"])
            inside = (t >= s + 0.15) & (t < e - 0.15)  # a few frames off the edges (codec blur)
            inside_any |= inside
            far_from_all &= (t < s - 0.3) | (t > e + 0.3)
            assert inside.any()
            own = color_fraction(frames[inside], ACTION_CLASSES[k].color)
            assert own.min() > 0.02, (vid, anno, own.min())  # the class's object is visible throughout
            for j in range(3):
                if j != k:  # and no other class's object is
                    assert color_fraction(frames[inside], ACTION_CLASSES[j].color).max() < 0.002
        assert far_from_all.any()
        for k in range(3):  # well outside every segment no action colour is present
            assert color_fraction(frames[far_from_all], ACTION_CLASSES[k].color).max() < 0.002


def test_deterministic_given_seed(tiny, tmp_path):
    again = generate_dataset(tmp_path / "again", **TINY, workers=2)  # the process-pool path too
    assert again.read_text() == (tiny / "annotations.json").read_text()
    for vid in ["video_validation_0000001", "video_test_0000001"]:
        a = decode_all(tiny / "videos" / f"{vid}.mp4")
        b = decode_all(tmp_path / "again" / "videos" / f"{vid}.mp4")
        np.testing.assert_array_equal(a, b)
    other = synthetic_plan.plan_dataset(SyntheticSpec(**{**TINY, "seed": 8}))
    assert other != synthetic_plan.plan_dataset(SyntheticSpec(**TINY))


def test_interrupted_generation_does_not_look_complete(tmp_path, monkeypatch):
    spec = SyntheticSpec(**{**TINY, "num_train": 3, "num_test": 0, "duration_s": (3.0, 3.0)})
    generate_from_spec(tmp_path, spec)
    assert dataset_is_complete(tmp_path, spec)
    real_write = synthetic.write_video
    calls = []

    def failing(spec_, layout, path):
        calls.append(layout.video_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(spec_, layout, path)

    monkeypatch.setattr(synthetic, "write_video", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_from_spec(tmp_path, dataclasses.replace(spec, seed=99))
    assert not (tmp_path / "annotations.json").exists()
    assert not dataset_is_complete(tmp_path) and not dataset_is_complete(tmp_path, spec)
    assert not [p for p in (tmp_path / "videos").iterdir() if p.name.startswith(".")]  # no temp left


def test_write_video_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    spec = SyntheticSpec(**TINY)
    layout = synthetic_plan.plan_video(spec, "train", 0)

    def broken(*args, **kwargs):
        yield np.zeros((2, 48, 64, 3), dtype=np.uint8)
        raise RuntimeError("render failed")

    monkeypatch.setattr(synthetic, "render_frames", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        synthetic.write_video(spec, layout, tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_spec_validation_and_demo_spec():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticSpec(num_classes=9).validate()
    with pytest.raises(ValueError, match="even"):
        SyntheticSpec(width=63).validate()
    DEMO_SPEC.validate()
    assert synthetic_plan.demo_spec() is DEMO_SPEC
    assert SyntheticSpec().width == 320 and SyntheticSpec().height == 180 and SyntheticSpec().fps == 30
    layout = synthetic_plan.plan_video(DEMO_SPEC, "train", 0)
    durations = [(i.end_frame - i.start_frame) / DEMO_SPEC.fps for i in layout.instances]
    assert len(durations) >= 2 and all(1.4 <= d <= 6.1 for d in durations)


def load_cli():
    from pipelines import make_synthetic

    return make_synthetic


def test_cli_skips_complete_and_refuses_other_params(tmp_path, capsys):
    cli = load_cli()
    args = ["--out", str(tmp_path), "--num-train", "1", "--num-test", "1", "--num-classes", "2",
            "--duration", "2.5", "--fps", "10", "--width", "32", "--height", "32", "--quiet"]
    assert cli.main(args) == 0
    assert "wrote 2 videos" in capsys.readouterr().out
    mtime = (tmp_path / "annotations.json").stat().st_mtime_ns
    assert cli.main(args) == 0
    assert "skipping" in capsys.readouterr().out
    assert (tmp_path / "annotations.json").stat().st_mtime_ns == mtime
    assert cli.main(args + ["--seed", "3"]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(args + ["--seed", "3", "--force"]) == 0
    assert json.loads((tmp_path / "synthetic_spec.json").read_text())["seed"] == 3
    assert cli.main(["--out", str(tmp_path), "--width", "33"]) == 2


def test_fps_cycle_gives_per_video_rates_and_keeps_old_specs(tmp_path):
    base = SyntheticSpec(**TINY)
    assert "fps_cycle" not in base.to_json() and "fps_cycle" not in DEMO_SPEC.to_json()  # saved specs still match
    assert synthetic_plan.plan_dataset(dataclasses.replace(base, fps_cycle=(15,))) == synthetic_plan.plan_dataset(base)
    with pytest.raises(ValueError, match="fps_cycle"):
        dataclasses.replace(base, fps_cycle=(15, 0)).validate()

    mixed = dataclasses.replace(base, num_train=2, num_test=1, fps_cycle=(15, 10))
    assert [layout.fps for layout in synthetic_plan.plan_dataset(mixed)] == [15, 10, 15]
    generate_from_spec(tmp_path, mixed)
    db = json.loads((tmp_path / "annotations.json").read_text())["database"]
    for vid, fps in [("video_validation_0000001", 15), ("video_validation_0000002", 10), ("video_test_0000001", 15)]:
        vr = decord.VideoReader(str(tmp_path / "videos" / f"{vid}.mp4"), num_threads=1)
        assert vr.get_avg_fps() == pytest.approx(fps) and len(vr) == db[vid]["frame"]
        assert db[vid]["frame"] / db[vid]["duration"] == pytest.approx(fps)
        assert all(a["segment"][1] <= db[vid]["duration"] for a in db[vid]["annotations"])
    assert json.loads((tmp_path / "synthetic_spec.json").read_text())["fps_cycle"] == [15, 10]
    assert dataset_is_complete(tmp_path, mixed) and not dataset_is_complete(tmp_path, dataclasses.replace(mixed,
                                                                                                         fps_cycle=()))
    rows = synthetic.segment_rows(tmp_path)
    assert {r["video"] for r in rows} == {f"{v}.mp4" for v in db}
    assert sorted(float(r["start"]) for r in rows) == sorted(a["segment"][0] for v in db.values()
                                                            for a in v["annotations"])


def test_activitynet_layout(tmp_path):
    """layout="anet": v_<id> files, a json without frame counts, a block list naming the two videos that
    have no file, a zero-length segment, one class per video, and a CUHK-layout video classifier."""
    from adatad.data.block_list import read_block_list
    from adatad.data.check import check_videos, fill_frame_counts
    from adatad.datasets import synthetic_anet
    from adatad.video_classifier import load_video_classifier

    spec = SyntheticSpec(num_train=2, num_test=1, num_classes=3, duration_s=(6.0, 8.0), fps=10, width=64, height=48,
                         action_duration_s=(2.0, 4.0), gap_s=(0.5, 1.0), seed=3, layout="anet", single_class=True)
    generate_from_spec(tmp_path, spec)
    db = json.loads((tmp_path / "annotations.json").read_text())["database"]
    assert sorted(db) == ["anet_train_00001", "anet_train_00002", "anet_train_missing", "anet_val_00001",
                          "anet_val_missing"]
    assert sorted(p.name for p in (tmp_path / "videos").glob("*.mp4")) == [
        "v_anet_train_00001.mp4", "v_anet_train_00002.mp4", "v_anet_val_00001.mp4"]
    blocked = read_block_list(tmp_path / "videos" / synthetic_anet.BLOCK_LIST_FILE)
    assert blocked == {"anet_train_missing", "anet_val_missing"}
    assert all("frame" not in info and "fps" not in info for info in db.values())
    segments = [a["segment"] for a in db["anet_val_00001"]["annotations"]]
    assert segments[-1][0] == segments[-1][1] and segments[0][0] == segments[-1][0]  # the zero-length one
    names = load_class_names(tmp_path / "annotations.json", tmp_path / "category_idx.txt")
    records = []
    for subset in ("training", "validation"):
        records += load_annotations(tmp_path / "annotations.json", tmp_path / "videos", subset, names,
                                    video_prefix="v_", blocked=blocked)[0]
    assert len(records) == 3 and check_videos(records) == []
    for rec in fill_frame_counts(records):
        assert rec.fps == pytest.approx(10.0) and len(set(rec.labels.tolist())) == 1
        assert (np.diff(rec.segments, axis=1) > 0).all()  # the zero-length segment is not trained on
    classifier = load_video_classifier(str(tmp_path / synthetic_anet.CLASSIFIER_FILE), "cuhk")
    assert classifier.class_names == names
    for rec in records:
        assert classifier.of_video(rec.video_id).sum() == pytest.approx(1.0, abs=1e-5)
    assert dataset_is_complete(tmp_path, spec)
    assert spec.to_json()["layout"] == "anet" and "layout" not in SyntheticSpec().to_json()
    (tmp_path / synthetic_anet.CLASSIFIER_FILE).unlink()
    assert not dataset_is_complete(tmp_path, spec)
    with pytest.raises(ValueError, match="layout must be one of thumos, anet, epic"):
        SyntheticSpec(layout="hacs").validate()


def test_epic_layout(tmp_path):
    """layout="epic": EPIC's ids and subsets (train / val, and a test entry without annotations or file),
    durations only (every other one a frame longer than its file), segments to 2 decimals labelled
    id_NNN with a label_name; read at a fixed 30 fps as the EPIC configs do."""
    from adatad.data.check import check_videos
    from adatad.datasets import synthetic_epic

    spec = SyntheticSpec(num_train=2, num_test=1, num_classes=3, duration_s=(6.0, 8.0), fps=30, width=64, height=48,
                         action_duration_s=(0.6, 1.5), gap_s=(0.3, 0.8), seed=5, layout="epic")
    generate_from_spec(tmp_path, spec)
    db = json.loads((tmp_path / "annotations.json").read_text())["database"]
    assert sorted(db) == ["P01_01", "P01_02", "P30_01", "P40_01"]
    assert [db[v]["subset"] for v in sorted(db)] == ["train", "train", "val", "test"]
    assert "annotations" not in db["P40_01"] and not (tmp_path / "videos" / "P40_01.mp4").exists()
    assert all("frame" not in info and "fps" not in info for info in db.values())
    names = (tmp_path / "category_idx.txt").read_text().split()
    assert names == ["id_000", "id_001", "id_002"] == load_class_names(tmp_path / "annotations.json")
    for vid in ("P01_01", "P01_02"):
        for a in db[vid]["annotations"]:
            assert a["segment"] == [round(x, 2) for x in a["segment"]] and a["label"] in names
            assert a["label_name"] == ACTION_CLASSES[names.index(a["label"])].name
    assert len(db["P01_01"]["annotations"]) >= 3  # dense short actions
    records = [r for subset in ("train", "val") for r in load_annotations(
        tmp_path / "annotations.json", tmp_path / "videos", subset, names, fixed_fps=30.0)[0]]
    assert check_videos(records) == []
    frames = {r.video_id: len(decord.VideoReader(r.path, num_threads=1)) for r in records}
    stated = {r.video_id: r.num_frames for r in records}  # int(duration x 30)
    assert [stated[v] - frames[v] for v in ("P01_01", "P01_02", "P30_01")] == [0, 1, 0]
    assert dataset_is_complete(tmp_path, spec) and spec.to_json()["layout"] == "epic"
    assert synthetic_epic.class_names(spec) == names


def test_the_epic_demo_composes_at_epics_shape(tmp_path):
    """configs/synthetic_epic.yaml: EPIC's sampling and head at a CPU size (64 positions x 8 frames), on
    the data the --epic-demo spec describes (its plan, not its videos)."""
    from adatad.config import load_config
    from adatad.data.annotations import VideoRecord
    from adatad.data.clips import plan_test_windows

    cfg = load_config(REPO / "configs" / "synthetic_epic.yaml")
    d, h, i = cfg.data, cfg.model.head, cfg.model.inference
    assert (d.window_size, d.frames_per_position, d.frame_stride, d.fixed_fps) == (64, 8, 16, 30.0)
    assert (d.train_subset, d.test_subset, d.trunc_thresh) == ("train", "val", 0.3)
    assert (h.mha_win_size, h.regression_ranges[1], h.label_smoothing, h.init_loss_norm, h.loss_weight) == (
        9, (2, 8), 0.1, 250.0, 0.5)
    assert (i.pre_nms_topk, i.nms_sigma, i.min_score) == (5000, 0.4, 0.001)
    assert cfg.evaluation.tiou_thresholds == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    spec = synthetic_plan.EPIC_DEMO_SPEC
    assert (spec.layout, spec.fps, spec.num_classes) == ("epic", 30, h.num_classes)
    layouts = synthetic_plan.plan_dataset(spec)
    lengths = [(x.end_frame - x.start_frame) / v.fps for v in layouts for x in v.instances]
    assert len(lengths) / len(layouts) > 15 and max(lengths) <= 3.0  # many short actions per video
    positions = [s * 30 / d.frame_stride for s in lengths]  # 1 to 6 positions of 16 frames
    assert 1 <= min(positions) and max(positions) <= 6
    video = layouts[-1]
    record = VideoRecord(video.video_id, "/nowhere.mp4", video.subset, video.num_frames / 30, video.num_frames, 30.0,
                         np.zeros((0, 2)), np.zeros(0, np.int64))
    plans = plan_test_windows(record, d)
    assert len(plans) >= 3 and all(len(p.frame_indices) == 512 and p.mask.shape == (64,) for p in plans)
    assert plans[0].frame_indices[1] - plans[0].frame_indices[0] == 2


def test_cli_anet_demo_refuses_a_csv(tmp_path, capsys):
    assert load_cli().main(["--out", str(tmp_path), "--anet-demo", "--csv", str(tmp_path / "s.csv")]) == 2
    assert "--csv lists THUMOS-layout files" in capsys.readouterr().err
    assert not (tmp_path / "annotations.json").exists()
    assert load_cli().main(["--out", str(tmp_path), "--epic-demo", "--csv", str(tmp_path / "s.csv")]) == 2
    assert "the --epic-demo set is read through its own json" in capsys.readouterr().err


def test_cli_as_a_script_with_spawned_workers(tmp_path):
    """`python pipelines/make_synthetic.py` with worker processes: each spawned worker re-runs the
    script as `__mp_main__`, which must not need the bootstrap (make data does exactly this)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "pipelines/make_synthetic.py", "--out", str(tmp_path / "s"), "--num-train",
                           "2", "--num-test", "1", "--num-classes", "2", "--duration", "3", "--width", "112",
                           "--height", "64", "--workers", "2", "--quiet"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "s" / "videos").glob("*.mp4"))) == 3
