"""The data check (adatad.data.check, pipelines/check_data.py) and decode-failure accounting in training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from adatad.data import video
from adatad.data.annotations import VideoRecord
from adatad.data.check import (
    DecodeFailureError,
    DecodeFailures,
    check_videos,
    format_problems,
)
from adatad.data.inspect import inspect_video
from pipelines.cli.hints import python_command
from tests.conftest import REPO, tiny_overrides


def _write_mp4(path: Path, num_frames: int, faststart: bool = False) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (num_frames, 64, 112, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 112, 64, "yuv420p"
        stream.options = {"g": "8"}
        for img in noise:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _record(path: Path, num_frames: int, video_id: str | None = None) -> VideoRecord:
    return VideoRecord(video_id=video_id or path.stem, path=str(path), subset="training", duration=num_frames / 25,
                       num_frames=num_frames, fps=25.0, segments=np.zeros((0, 2)), labels=np.zeros(0, np.int64))


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory) -> dict[str, tuple[VideoRecord, str]]:
    """name -> (record, the reason its check must report); "good" must report nothing."""
    root = tmp_path_factory.mktemp("bad_videos")
    good = _write_mp4(root / "good.mp4", 60)
    faststart = _write_mp4(root / "faststart.mp4", 60, faststart=True)
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom (at the end) cut away
    fs = faststart.read_bytes()
    (root / "truncated_faststart.mp4").write_bytes(fs[: len(fs) // 2])  # header kept, frames cut
    (root / "tail_cut.mp4").write_bytes(fs[: len(fs) * 99 // 100])  # frame count intact, last frame cut
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("this is a text file, not a video\n" * 40)
    with av.open(str(root / "no_frames.mp4"), "w") as container:  # a stream, but no frame in it
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 112, 64
        container.start_encoding()
        container.mux(stream.encode(None))
    (root / "a_directory.mp4").mkdir()
    shutil.copy(good, root / "locked.mp4")
    return {
        "good": (_record(good, 60), ""),
        "missing": (_record(root / "missing.mp4", 60), "file not found"),
        "empty": (_record(root / "empty.mp4", 60), "file is empty (0 bytes)"),
        "not_a_video": (_record(root / "notes.mp4", 60), "cannot open as a video"),
        "truncated": (_record(root / "truncated.mp4", 60), "cannot open as a video"),
        # decord counts the frames whose packets survived, or fails at the first frame after the cut
        "truncated_faststart": (_record(root / "truncated_faststart.mp4", 60), "decoder sees|probably truncated"),
        # opens with all 60 frames counted: only decoding the last frame shows the damage
        "tail_cut": (_record(root / "tail_cut.mp4", 60), "(frame 59 of 60: the file is probably truncated)"),
        "zero_frames": (_record(root / "no_frames.mp4", 60), "no video stream"),
        "fewer_frames": (_record(good, 120), "decoder sees 60 frames, the annotation of video 'good' says 120"),
        "directory": (_record(root / "a_directory.mp4", 60), "not a regular file"),
        "unreadable": (_record(root / "locked.mp4", 60), "not readable (permission denied)"),
    }


@pytest.fixture()
def locked(bad_videos, monkeypatch):
    """Tests run as root, for whom chmod 000 does not deny reading: make os.access say no for one file."""
    target = bad_videos["unreadable"][0].path
    real = os.access
    monkeypatch.setattr(video.os, "access", lambda p, mode: False if os.fspath(p) == target else real(p, mode))


def test_every_problem_is_listed_at_once_one_line_each(bad_videos, locked) -> None:
    names = list(bad_videos)
    problems = check_videos([bad_videos[n][0] for n in names], num_threads=4)
    assert len(problems) == len(names) - 1  # all but the good video, in record order
    for name, problem in zip(names[1:], problems, strict=True):
        record, reason = bad_videos[name]
        assert problem.startswith(record.path + ":"), problem
        assert any(r in problem for r in reason.split("|")), (name, problem)
        assert "\n" not in problem
    report = format_problems(problems, len(names))
    assert report.splitlines()[0] == f"data check: {len(names) - 1} problem(s) in {len(names)} video(s):"
    assert check_videos([bad_videos["good"][0]]) == [] and check_videos([]) == []


def test_inspection_names_the_reason_of_a_file(bad_videos) -> None:
    assert inspect_video(bad_videos["good"][0].path).problem is None
    assert "cannot open as a video" in inspect_video(bad_videos["truncated"][0].path).problem
    assert "probably truncated" in inspect_video(bad_videos["tail_cut"][0].path).problem


def test_decode_failures_count_and_stop_past_the_ceiling(bad_videos) -> None:
    paths = [bad_videos["good"][0].path, bad_videos["empty"][0].path, bad_videos["truncated"][0].path]
    failures = DecodeFailures(paths, ceiling=2)
    assert failures.add([1]) == [paths[1]] and failures.add([]) == [] and failures.add([2]) == [paths[2]]
    with pytest.raises(DecodeFailureError) as info:
        failures.add([1])
    message = str(info.value)
    assert message.startswith("3 training clips failed to decode this epoch, more than data.max_decode_failures=2")
    assert f"{paths[1]}: file is empty" in message and f"{paths[2]}: cannot open as a video" in message
    assert message.count(paths[1]) == 1 and "\n" not in message  # each file once, one line
    with pytest.raises(DecodeFailureError, match="<video index 7>: a sampled window failed"):
        DecodeFailures([], 0).add([7])


def _batch(valid: list[bool], video_index: list[int]) -> dict[str, torch.Tensor]:
    n = len(valid)
    return {"frames": torch.zeros(n, 2), "valid": torch.tensor(valid), "video_index": torch.tensor(video_index)}


def test_train_one_epoch_skips_failed_clips_then_stops_with_the_files(monkeypatch, bad_videos) -> None:
    from adatad.data.check import DecodeFailures
    from adatad.engine import epoch as epoch_module

    steps: list[int] = []

    def fake_step(model, batch, *args, **kwargs):
        steps.append(len(batch["frames"]))
        return SimpleNamespace(loss=1.0, cls_loss=0.5, reg_loss=0.5)

    monkeypatch.setattr(epoch_module, "train_step", fake_step)
    state = SimpleNamespace(model=None, optimizer=SimpleNamespace(param_groups=[{"lr": 1e-3, "name": "decay"}]),
                            scheduler=None, scaler=None, ema=None)
    paths = [bad_videos[name][0].path for name in ("good", "empty", "not_a_video")]
    warnings: list[str] = []

    def run(batches: list[dict[str, torch.Tensor]], epoch: int) -> dict[str, float]:
        return epoch_module.train_one_epoch(state, batches, torch.device("cpu"), clip_grad_norm=1.0, amp=False,
                                            failures=DecodeFailures(paths, ceiling=1), where=f"epoch {epoch} rank 0",
                                            on_warning=warnings.append)

    metrics = run([_batch([True, False], [0, 1]), _batch([True, True], [0, 0])], 0)
    assert steps == [1, 2] and metrics["decode_failures"] == 1.0 and metrics["steps"] == 2.0
    assert len(warnings) == 1
    assert warnings[0].startswith(f"epoch 0 rank 0: skipped 1 clip(s) that failed to decode: {paths[1]}")

    with pytest.raises(DecodeFailureError) as info:
        run([_batch([False, True], [1, 0]), _batch([True, False], [0, 2])], 1)
    assert f"{paths[1]}: file is empty" in str(info.value) and f"{paths[2]}: cannot open" in str(info.value)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_check_data_cli_lists_all_problems(tiny_data: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(tiny_data, tmp_path / "runs", tmp_path / "mlflow.db")
    sets = [a for o in overrides for a in ("--set", o)]
    ok = _run(["pipelines/check_data.py", *sets])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("data check: all 9 videos usable (6 train, 3 test, 3 classes")

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    videos = sorted((data / "videos").glob("*.mp4"))
    videos[0].unlink()
    videos[1].write_bytes(videos[1].read_bytes()[:5000])
    annotations = json.loads((data / "annotations.json").read_text())
    annotations["database"][videos[2].stem]["frame"] *= 3
    (data / "annotations.json").write_text(json.dumps(annotations))
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", tmp_path / "mlflow.db") for a in ("--set", o)]
    bad = _run(["pipelines/check_data.py", *sets])
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines[0] == "data check: 3 problem(s) in 9 video(s):", bad.stderr
    assert f"{videos[0]}: file not found" in lines[1]
    assert f"{videos[1]}: cannot open as a video" in lines[2]
    assert f"{videos[2]}: decoder sees" in lines[3]
    assert "Traceback" not in bad.stderr

    broken = _run(["pipelines/check_data.py", *sets, "--set", "data.video_dirr=/x"])
    assert broken.returncode == 2
    assert broken.stderr.strip() == "error: unknown key 'data.video_dirr' (did you mean 'data.video_dir'?)"


# ---------------------------------------------------------------- ActionFormer's layout and decoder frame counts


def _actionformer_copy(tiny_data: Path, dest: Path, with_fps: bool = True) -> Path:
    """tiny_data's annotations rewritten in ActionFormer's thumos14.json layout (no `frame`; capitalised
    subsets; extra fields), the videos linked one by one so a test can remove one."""
    database = json.loads((tiny_data / "annotations.json").read_text())["database"]
    names = (tiny_data / "category_idx.txt").read_text().split()
    out = {}
    for vid, info in database.items():
        fps = info["frame"] / info["duration"]
        entry = {"subset": {"training": "Validation", "validation": "Test"}[info["subset"]],
                 "duration": info["duration"],
                 "annotations": [{"label": a["label"], "segment": a["segment"],
                                  "segment(frames)": [a["segment"][0] * fps, a["segment"][1] * fps],
                                  "label_id": names.index(a["label"])} for a in info["annotations"]]}
        if with_fps:
            entry["fps"] = fps
        out[vid] = entry
    (dest / "videos").mkdir(parents=True)
    for mp4 in (tiny_data / "videos").glob("*.mp4"):
        (dest / "videos" / mp4.name).symlink_to(mp4)
    shutil.copy(tiny_data / "category_idx.txt", dest / "category_idx.txt")
    (dest / "annotations.json").write_text(json.dumps({"version": "Thumos14-30fps", "database": out}))
    return dest


def test_check_data_reads_actionformer_layout(tiny_data: Path, tmp_path: Path, capsys) -> None:
    from pipelines import check_data

    data = _actionformer_copy(tiny_data, tmp_path / "af")
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", tmp_path / "db") for a in ("--set", o)]
    assert check_data.main(sets) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"note: {data / 'annotations.json'} uses ActionFormer's subset names: reading configured "
                      "subset 'training' -> 'Validation', 'validation' -> 'Test' (ActionFormer's 'Validation' = "
                      "THUMOS'14 validation videos = training set, 'Test' = THUMOS'14 test videos = test set)")
    assert out[1].startswith("data check: all 9 videos usable (6 train, 3 test, 3 classes;")
    assert "from the decoder" not in out[1]  # frames = duration x fps

    explicit = sets + ["--set", "data.train_subset=Validation", "--set", "data.test_subset=Test"]
    assert check_data.main(explicit) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("data check: all 9 videos usable (6 train, 3 test")

    # A backbone file that is not there yet is not a data problem, but the line names the command that
    # fetches it (train.py would stop on it next). `--threads`: the old spelling of `--workers`.
    weights = tmp_path / "pretrained" / "vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"
    assert check_data.main([*explicit, "--set", f"model.backbone.checkpoint={weights}", "--threads", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"warning: model.backbone.checkpoint: VideoMAE checkpoint not found: {weights}; fetch it with: "
                      f"{python_command()} pipelines/fetch_weights.py --config configs/synthetic.yaml "
                      f"--set model.backbone.checkpoint={weights}")
    assert out[1].startswith("data check: all 9 videos usable")

    missing = sorted((data / "videos").iterdir())[4]
    missing.unlink()
    assert check_data.main(explicit) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["data check: 1 problem(s) in 9 video(s):",
                                                  f"  {missing}: file not found"]


def test_check_data_without_frame_or_fps_asks_the_decoder(tiny_data: Path, tmp_path: Path, capsys) -> None:
    from pipelines import check_data

    data = _actionformer_copy(tiny_data, tmp_path / "af", with_fps=False)
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", tmp_path / "db") for a in ("--set", o)]
    assert check_data.main(sets + ["--set", "data.train_subset=Validation", "--set", "data.test_subset=Test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("data check: all 9 videos usable (6 train, 3 test, 3 classes;")
    assert out.rstrip().endswith("; 9 frame counts from the decoder)")
    (data / "videos" / "video_test_0000002.mp4").unlink()
    assert check_data.main(sets) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["data check: 1 problem(s) in 9 video(s):",
                   f"  {data / 'videos' / 'video_test_0000002.mp4'}: file not found"]


def test_fill_frame_counts_reuses_the_checks_probe(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    from adatad.data import check
    from adatad.data.annotations import AnnotationError, load_annotations

    data = _actionformer_copy(tiny_data, tmp_path / "af", with_fps=False)
    truth = json.loads((tiny_data / "annotations.json").read_text())["database"]
    records, _ = load_annotations(data / "annotations.json", data / "videos", ["Validation", "Test"])
    assert not any(r.frames_known for r in records)
    assert check_videos(records) == []

    def no_second_probe(path):
        raise AssertionError(f"{path} probed twice")

    monkeypatch.setattr(check, "probe_video", no_second_probe)
    filled = check.fill_frame_counts(records)
    for before, after in zip(records, filled, strict=True):
        assert after.num_frames == truth[after.video_id]["frame"] and after.fps == pytest.approx(30.0)
        assert after.duration == before.duration and after.segments is before.segments
    assert check.fill_frame_counts(filled) == filled  # known counts: nothing to do
    monkeypatch.undo()

    gone = [records[1], records[4]]
    for record in gone:
        Path(record.path).unlink()
    with pytest.raises(AnnotationError) as info:
        check.fill_frame_counts(records)
    message = str(info.value)
    assert message.startswith("2 video(s) have no frame count in the annotation file ('frame' or 'fps') and the "
                              "decoder cannot open them: ")
    assert all(f"'{r.video_id}': {r.path}: file not found" in message for r in gone) and "\n" not in message


def test_unknown_frame_count_is_checked_against_the_duration(bad_videos) -> None:
    import dataclasses

    good = bad_videos["good"][0]  # 60 frames at 25 fps = 2.4 s
    unknown = dataclasses.replace(good, num_frames=0, fps=0.0)
    assert check_videos([unknown]) == []
    longer = dataclasses.replace(unknown, duration=7.2)
    assert check_videos([longer]) == [f"{good.path}: decoder sees 60 frames at 25 fps (2.40 s), the annotation of "
                                      f"video 'good' says 7.2 s (expected at least 90% of it)"]


# ---------------------------------------------------------------- segments outside their video: warnings, never errors


def _with_odd_segments(annotation_file: Path) -> dict[str, list[list[float]]]:
    """Add, to the first training and the first test video, segments as released files have them:
    one starting after the video ends, one partly outside, one of zero length. Returns what was added."""
    data = json.loads(annotation_file.read_text())
    names = (annotation_file.parent / "category_idx.txt").read_text().split()
    added = {}
    for subset in ("Validation", "training", "Test", "validation"):
        vid = next((v for v, info in sorted(data["database"].items()) if info["subset"] == subset), None)
        if vid is None:
            continue
        duration = data["database"][vid]["duration"]
        segments = [[duration + 1.0, duration + 4.7], [duration - 1.0, duration + 2.0], [2.0, 2.0]]
        data["database"][vid]["annotations"] += [{"segment": s, "label": names[0]} for s in segments]
        added[vid] = segments
    annotation_file.write_text(json.dumps(data))
    return added


@pytest.mark.parametrize("layout", ["opentad", "actionformer"])
def test_check_data_warns_about_segments_outside_their_video(tiny_data: Path, tmp_path: Path, capsys,
                                                            layout: str) -> None:
    from pipelines import check_data

    if layout == "actionformer":
        data = _actionformer_copy(tiny_data, tmp_path / "af")
    else:
        data = tmp_path / "opentad"
        shutil.copytree(tiny_data, data)
    added = _with_odd_segments(data / "annotations.json")
    assert len(added) == 2
    sets = [a for o in tiny_overrides(data, tmp_path / "runs", tmp_path / "db") for a in ("--set", o)]
    assert check_data.main(sets) == 0  # warnings only: every video usable
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("note: ")]
    first, second = sorted(added)
    assert out[0] == ("warning: 2 ground-truth segment(s) in 2 video(s) lie entirely outside their video: training "
                      "skips them, evaluation scores them as the file has them, as OpenTAD and ActionFormer do:")
    assert out[1].startswith(f"  video '{first}': annotations[") and "lies outside the video [0, " in out[1]
    assert out[2].startswith(f"  video '{second}': annotations[")
    assert out[3].startswith("warning: 2 ground-truth segment(s) in 2 video(s) lie partly outside their video: "
                             "training clips them to the video, evaluation scores them as the file has them")
    assert out[6] == ("warning: 2 ground-truth segment(s) in 2 video(s) have zero length: training and evaluation "
                      "drop them, as OpenTAD and ActionFormer do:")
    assert out[7].endswith("[2, 2] has zero length")
    assert out[9].startswith("data check: all 9 videos usable (6 train, 3 test") and len(out) == 10

    assert check_data.main([*sets, "--split", "train"]) == 0  # only the checked split's segments
    out = capsys.readouterr().out
    train_video = next(v for v in added if v.startswith("video_validation_"))  # THUMOS's names for training videos
    assert out.count("\n  video '") == 3 and out.count(f"\n  video '{train_video}'") == 3 and "in 1 video(s)" in out

    # With no video present: one "file not found" per video, and the same warnings, not errors.
    for mp4 in (data / "videos").iterdir():
        mp4.unlink()
    assert check_data.main(sets) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[0] == "data check: 9 problem(s) in 9 video(s):"
    assert all(line.endswith(": file not found") for line in err[1:]) and len(err) == 10
    assert captured.out.count("warning: ") == 3 and "segment" not in captured.err


def test_segment_warnings_show_counts_and_the_first_few() -> None:
    from adatad.data.annotations import OUTSIDE, ZERO_LENGTH, SegmentNotice
    from adatad.data.check import segment_warnings

    notices = [SegmentNotice(f"v{i}", i, "Diving", (10.0 + i, 11.0 + i), 9.5, OUTSIDE) for i in range(7)]
    notices.append(SegmentNotice("v9", 0, "Diving", (1.0, 1.0), 9.5, ZERO_LENGTH))
    lines = segment_warnings(notices, first=3)
    assert lines[0] == ("warning: 7 ground-truth segment(s) in 7 video(s) lie entirely outside their video: training "
                        "skips them, evaluation scores them as the file has them, as OpenTAD and ActionFormer do; the "
                        "first 3:")
    assert lines[1:4] == [f"  video 'v{i}': annotations[{i}] (Diving) [{10 + i}, {11 + i}] lies outside the video "
                          "[0, 9.5]" for i in range(3)]
    assert lines[4].startswith("warning: 1 ground-truth segment(s) in 1 video(s) have zero length") and len(lines) == 6
    assert segment_warnings([]) == []
