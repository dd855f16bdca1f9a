"""Detection on new videos (pipelines/detect.py): Ray Data inference -> results json -> timelines.

One detect run over the tiny test videos plus a corrupt file is shared by the first tests; its mAP
must equal the training-time validation of the same checkpoint, because both run the same decode,
model and merge code.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.data.annotations import VideoRecord
from adatad.data.video_files import VideoListError, list_videos
from adatad.engine.state import read_checkpoint
from adatad.run_folder import CHECKPOINT_FILE, PREDICTIONS_FILE
from adatad.visualize import render_timeline, timeline_size
from pipelines import detect, score
from pipelines.cli.args import EXIT_BAD_INPUT
from pipelines.ray_layer import detection
from tests.conftest import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _validated_checkpoint(trained_run: dict) -> Path:
    """The run's final checkpoint, or (if a later test replaced it) any validated one of the run."""
    final = Path(trained_run["summary"]["stats"]["checkpoint"])
    if (final / PREDICTIONS_FILE).is_file():
        return final
    found = sorted(p.parent for p in Path(trained_run["summary"]["run_dir"]).glob(f"checkpoint_*/{PREDICTIONS_FILE}"))
    assert found, "the trained run kept no validated checkpoint"
    return found[-1]


def _write_video(path: Path, frames: int, fps: int, width: int, height: int) -> None:
    import av

    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def detected(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One detect run: the 3 tiny test videos, a corrupt upload and a short clip of another fps and size.

    The short clip's id sorts after the test videos so the test videos' windows are batched as in
    training validation (the model's float results depend on batch size 1 vs >= 2 in the last bits).
    """
    data = trained_run["data"]
    work = tmp_path_factory.mktemp("detect")
    videos = work / "videos"
    videos.mkdir()
    for src in sorted((data / "videos").glob("video_test_*.mp4")):
        (videos / src.name).symlink_to(src)
    (videos / "broken_upload.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    # 21 frames at 25 fps = 0.84 s (a fraction of one 64x4-frame window), 100x40 px (below the crop size).
    _write_video(videos / "video_test_short.mkv", frames=21, fps=25, width=100, height=40)
    checkpoint = _validated_checkpoint(trained_run)
    out, plots = work / "detections.json", work / "plots"
    args = detect.build_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--videos", str(videos), "--out", str(out), "--plot-dir", str(plots),
         "--annotations", str(data / "annotations.json"), "--quiet"])
    result = detect.run(args)
    return {"result": result, "out": out, "plots": plots, "checkpoint": checkpoint, "data": data}


TEST_VIDEOS = [f"video_test_000000{i}" for i in (1, 2, 3)]


def test_detections_reproduce_the_training_validation_map(detected: dict) -> None:
    output = json.loads(detected["out"].read_text())
    assert output == {"results": detected["result"]["results"], "errors": detected["result"]["errors"]}
    assert sorted(output["results"]) == [*TEST_VIDEOS, "video_test_short"]
    assert all(len(output["results"][vid]) > 0 for vid in TEST_VIDEOS)
    assert detected["result"]["stats"]["windows"] == 2 * 3 + 1
    log = detected["out"].with_suffix(".log").read_text()  # everything Ray printed, the predict actors' too
    assert "MapBatches(Predict)" in log and "not writable" not in log  # Predict gets writable batches

    ann = str(detected["data"] / "annotations.json")
    ours = score.run(score.build_parser().parse_args(["--annotations", ann, "--predictions",
                                                            str(detected["out"])]))
    training = json.loads((detected["checkpoint"] / "history.json").read_text())[-1]
    assert ours["average_mAP"] == pytest.approx(training["average_mAP"], abs=1e-6)
    for tiou, value in ours["mAP"].items():
        assert value == pytest.approx(training[f"mAP_{tiou}"], abs=1e-6)


def test_a_corrupt_video_is_reported_and_the_others_complete(detected: dict) -> None:
    output = json.loads(detected["out"].read_text())
    assert list(output["errors"]) == ["broken_upload"]
    assert "broken_upload.mp4" in output["errors"]["broken_upload"]
    assert "broken_upload" not in output["results"]
    assert len(output["results"]) == 4


def test_one_timeline_png_per_video_of_the_expected_size(detected: dict) -> None:
    pngs = sorted(detected["plots"].glob("*.png"))
    assert [p.stem for p in pngs] == [*TEST_VIDEOS, "video_test_short"]
    for png in pngs:
        assert _png_size(png) == timeline_size(3)


def test_short_video_of_other_fps_and_size_uses_the_decoders_clock(detected: dict) -> None:
    entries = json.loads(detected["out"].read_text())["results"]["video_test_short"]
    assert len(entries) > 0
    assert all(0.0 <= e["segment"][0] <= e["segment"][1] <= round(21 / 25, 2) for e in entries)


# ---------------------------------------------------------------- pieces without Ray


def _record(vid: str, path: Path, frames: int = 40, fps: float = 10.0) -> VideoRecord:
    return VideoRecord(vid, str(path), "detect", frames / fps, frames, fps, np.zeros((0, 2)), np.zeros(0, np.int64))


def test_collect_merges_complete_videos_and_reports_decode_failures(tmp_path: Path) -> None:
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, tmp_path, tmp_path / "db")  # window 64 positions of stride 4
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0not a video" * 10)
    records = [_record("good", tmp_path / "good.mp4"), _record("bad", bad)]  # 40 frames / 4 -> 10 positions: 1 window
    k = 3
    batch = {
        "video_index": np.array([1, 0]), "window_start_frame": np.array([0, 0]), "fps": np.array([10.0, 10.0]),
        "duration": np.array([4.0, 4.0]), "frame_stride": np.array([4, 4]), "valid": np.array([False, True]),
        "segments": np.zeros((2, k, 2), np.float32), "scores": np.zeros((2, k), np.float32),
        "labels": np.full((2, k), -1, np.int64), "count": np.array([0, 2]),
    }
    batch["segments"][1, :2] = [[1.0, 5.0], [2.0, 3.0]]  # positions -> seconds: * 4 / 10
    batch["scores"][1, :2] = [0.9, 0.5]
    batch["labels"][1, :2] = [2, 0]
    results, errors, seen = detection.collect(iter([batch]), records, ["a", "b", "c"], cfg, cfg.model.inference)
    assert seen == 2
    assert results == {"good": [{"segment": [0.4, 2.0], "label": "c", "score": 0.9},
                                {"segment": [0.8, 1.2], "label": "a", "score": 0.5}]}
    assert list(errors) == ["bad"] and str(bad) in errors["bad"] and "1 of 1 windows" in errors["bad"]


def test_top_k_and_min_score_go_through_the_evaluation_merge(tmp_path: Path) -> None:
    from adatad.config import InferenceConfig
    from adatad.postprocess import Detections

    record = _record("v", tmp_path / "v.mp4")
    window = detection._Window(0, Detections(torch.tensor([[1.0, 5.0], [2.0, 3.0], [6.0, 8.0]]),
                                          torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0, 1, 1])),
                            {"video_index": 0, "window_start_frame": 0, "fps": 10.0, "duration": 4.0,
                             "frame_stride": 4, "valid": True})
    base = InferenceConfig(min_score=0.0, max_seg_num=2000)
    assert [e["score"] for e in detection.merge_one(0, [window], [record], ["a", "b"], base)] == [0.9, 0.7, 0.5]
    top2 = InferenceConfig(min_score=0.0, max_seg_num=2)
    assert [e["score"] for e in detection.merge_one(0, [window], [record], ["a", "b"], top2)] == [0.9, 0.7]
    above = InferenceConfig(min_score=0.6, max_seg_num=2000)
    assert [e["score"] for e in detection.merge_one(0, [window], [record], ["a", "b"], above)] == [0.9, 0.7]


def test_a_run_folder_resolves_to_its_latest_checkpoint(tmp_path: Path) -> None:
    from adatad.models.trained import resolve_trained_path
    from adatad.models.weights import WeightsError

    for name in ("checkpoint_2026-01-01_10-00-00.1", "checkpoint_2026-01-01_11-00-00.1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / CHECKPOINT_FILE).write_bytes(b"x")
    assert resolve_trained_path(tmp_path) == tmp_path / "checkpoint_2026-01-01_11-00-00.1" / CHECKPOINT_FILE
    assert resolve_trained_path(tmp_path / "checkpoint_2026-01-01_10-00-00.1" / CHECKPOINT_FILE).is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="neither checkpoint.pt nor checkpoint_"):
        resolve_trained_path(tmp_path / "empty")
    code = detect.main(["--checkpoint", str(tmp_path / "empty"), "--videos", str(tmp_path)])
    assert code == EXIT_BAD_INPUT


def test_inputs_are_checked_with_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for folder in ("a", "b", "empty"):
        (tmp_path / folder).mkdir()
    (tmp_path / "a" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "b" / "clip.avi").write_bytes(b"x")
    with pytest.raises(VideoListError, match="'clip'.*used by both"):
        list_videos([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(VideoListError, match="no such file"):
        list_videos([str(tmp_path / "missing.mp4")])
    with pytest.raises(VideoListError, match="holds no video files"):
        list_videos([str(tmp_path / "empty")])
    assert list_videos([str(tmp_path / "a")]) == [(tmp_path / "a" / "clip.mp4").absolute()]
    (tmp_path / "a" / "alias.mp4").symlink_to(tmp_path / "a" / "clip.mp4")  # a link keeps its own name as id
    assert [p.stem for p in list_videos([str(tmp_path / "a")])] == ["alias", "clip"]
    rc = detect.main(["--checkpoint", str(tmp_path / "nothing.pt"), "--videos", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_BAD_INPUT and len(err) == 1 and "nothing.pt" in err[0]


def test_timeline_size_and_label_check() -> None:
    names = ["Jump", "Run", "Swim", "Throw", "Walk"]
    dets = [{"segment": [1.0, 3.5], "label": "Run", "score": 0.8}, {"segment": [2.0, 2.5], "label": "Run", "score": 0.05}]
    png = render_timeline("v", 10.0, names, dets, [{"segment": [1.2, 3.0], "label": "Run"}], score_threshold=0.1)
    assert png[:8] == PNG_SIGNATURE and struct.unpack(">II", png[16:24]) == timeline_size(5)
    with pytest.raises(ValueError, match="'Dance' is not one of the classes"):
        render_timeline("v", 10.0, names, [{"segment": [0, 1], "label": "Dance", "score": 0.9}])


def test_predict_pads_to_fixed_shapes_and_skips_failed_windows(trained_run: dict) -> None:
    state = read_checkpoint(Path(_validated_checkpoint(trained_run)) / CHECKPOINT_FILE)
    cfg = state["config"]
    predict = detection.Predict(state, pre_nms_thresh=0.001, pre_nms_topk=50, amp=False, threads=1)
    t, size = cfg["data"]["window_size"], cfg["data"]["crop_size"]
    batch = {"frames": np.random.default_rng(0).integers(0, 255, (2, t, size, size, 3), dtype=np.uint8),
             "masks": np.ones((2, t), bool), "video_index": np.array([0, 1]), "window_start_frame": np.array([0, 0]),
             "fps": np.array([30.0, 30.0]), "duration": np.array([5.0, 5.0]), "frame_stride": np.array([4, 4]),
             "valid": np.array([True, False])}
    out = predict(batch)
    assert out["segments"].shape == (2, 50, 2) and out["scores"].shape == (2, 50) and out["labels"].shape == (2, 50)
    assert out["count"][0] == 50 and out["count"][1] == 0 and (out["labels"][1] == -1).all()
    direct = predict.model.predict(torch.from_numpy(batch["frames"][:1]), torch.from_numpy(batch["masks"][:1]),
                                   pre_nms_thresh=0.001, pre_nms_topk=50)[0]
    assert torch.equal(torch.from_numpy(out["scores"][0]), direct.scores)


def test_detect_runs_an_opentad_checkpoint(ray_session, tiny_data: Path, tmp_path: Path) -> None:
    """A published OpenTAD AdaTAD file (random weights in its exact key layout) with --config: every
    readable video gets detections, an unreadable one is listed under errors. The config is the
    THUMOS recipe at a 64-position, 64-px window so the full-width VideoMAE-S runs in seconds on a CPU."""
    from tests.test_opentad_checkpoint import (
        LOSS_NORM,
        POS_EMBED,
        opentad_weights,
        published,
        read_rows,
        save,
    )

    weights = opentad_weights(read_rows(), seed=1, compact=True)
    weights = {k: v if k in (POS_EMBED, LOSS_NORM) else v * 0.02 for k, v in weights.items()}  # finite activations
    checkpoint = save(published({f"module.{k}": v for k, v in weights.items()}), tmp_path / "adatad_s_thumos.pth")
    config = tmp_path / "thumos_small_window.yaml"
    config.write_text(f"_base_: {REPO / 'configs' / 'thumos_videomae_s_768x1_160_adapter.yaml'}\n"
                      "data: {window_size: 64, crop_size: 64, test_resize_short: 64, train_resize_short: 72}\n"
                      "runtime: {use_gpu: false, decode_actor_cpus: 0.5, val_decode_actors: 1}\n"
                      "train: {amp: false, val_batch_size: 1}\n")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("video_test_0000001", "video_test_0000002"):
        shutil.copy(tiny_data / "videos" / f"{name}.mp4", videos / f"{name}.mp4")
    (videos / "broken.mp4").write_text("not a video\n")
    out = tmp_path / "detections.json"
    code = detect.main(["--checkpoint", str(checkpoint), "--config", str(config), "--videos", str(videos),
                        "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert sorted(result["results"]) == ["video_test_0000001", "video_test_0000002"]
    assert all(result["results"].values()) and set(result["errors"]) == {"broken"}
    labels = {d["label"] for dets in result["results"].values() for d in dets}
    assert labels <= set((REPO / "configs" / "thumos14_classes.txt").read_text().split())
