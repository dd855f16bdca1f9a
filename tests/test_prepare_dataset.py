"""Own videos -> trained detector: make_synthetic --csv -> prepare_dataset -> prepare_frames -> train -> detect.

The videos are real H.264 files at 25 and 30 fps (one listed without segments, as background);
every other test here probes in-process (--workers 1) and stays within a second or two.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from adatad.config import CONFIG_DIR, load_config
from adatad.data.annotations import load_annotations, load_class_names
from adatad.datasets.split import stratified_split
from adatad.datasets.stride_advice import advise_frame_stride
from pipelines import detect, make_synthetic, prepare_dataset, prepare_frames
from pipelines.cli.hints import python_command
from tests.conftest import REPO, fresh_mlflow_db

BASE = str(CONFIG_DIR / "synthetic.yaml")
BACKGROUND = "video_validation_0000006"  # listed without segments in the user's CSV


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 videos alternating 25 / 30 fps and the user's CSV: make_synthetic's, with one video unlabelled
    and some names written without their extension."""
    root = tmp_path_factory.mktemp("own_videos")
    assert make_synthetic.main(["--out", str(root / "syn"), "--num-train", "6", "--num-test", "2", "--num-classes", "3",
                                "--duration", "8", "10", "--fps", "25", "30", "--width", "112", "--height", "64",
                                "--seed", "5", "--csv", str(root / "generated.csv"), "--workers", "2",
                                "--quiet"]) == 0
    truth = json.loads((root / "syn" / "annotations.json").read_text())["database"]
    with open(root / "generated.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(v["annotations"]) for v in truth.values())  # --csv lists every segment
    user = [r for r in rows if not r["video"].startswith(BACKGROUND)]
    for r in user[::3]:
        r["video"] = r["video"].removesuffix(".mp4")  # a name without extension finds the file too
    user.append({"video": f"{BACKGROUND}.mp4", "start": "", "end": "", "label": "", "split": "train"})
    with open(root / "segments.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "start", "end", "label", "split"])
        writer.writeheader()
        writer.writerows(user)
    return {"root": root, "videos": root / "syn" / "videos", "csv": root / "segments.csv", "truth": truth}


def _prepare(own_videos: dict, out: Path, *extra: str, segments: Path | None = None) -> int:
    return prepare_dataset.main(["--videos", str(own_videos["videos"]), "--segments", str(segments or own_videos["csv"]),
                                 "--out", str(out), "--config-out", str(out.parent / "configs" / f"{out.name}.yaml"),
                                 "--base", BASE, *extra])


def _split_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "split.csv", newline="") as f:
        return {r["video"]: r for r in csv.DictReader(f)}


def test_csv_to_trained_detector_with_mixed_fps(own_videos: dict, ray_session, tmp_path: Path, capsys) -> None:
    from pipelines.ray_layer.training import run_training
    from pipelines.runs.plan import RunPlan

    out = tmp_path / "data" / "own"
    assert _prepare(own_videos, out, "--keep-unlabelled", "--test-fraction", "0.25", "--seed", "1",
                    "--workers", "2") == 0
    printed = capsys.readouterr().out
    config_file = tmp_path / "data" / "configs" / "own.yaml"
    assert f"--config {config_file}" in printed and "pipelines/detect.py --checkpoint" in printed

    # annotations.json: OpenTAD layout, decoder frame counts and each video's own fps
    truth = own_videos["truth"]
    database = json.loads((out / "annotations.json").read_text())["database"]
    assert sorted(database) == sorted(truth)
    for vid, info in database.items():
        assert info["frame"] == truth[vid]["frame"]
        assert info["fps"] == pytest.approx(25.0 if int(vid[-1]) % 2 else 30.0, abs=1e-3)  # video i: (25, 30)[i % 2]
        assert info["duration"] == pytest.approx(truth[vid]["duration"], abs=1e-6)
        assert info["subset"] in ("training", "validation")
        want = [] if vid == BACKGROUND else [a["segment"] for a in truth[vid]["annotations"]]
        assert [a["segment"] for a in info["annotations"]] == want  # repr floats: exact round trip
    classes = (out / "category_idx.txt").read_text().split()
    assert classes == sorted({a["label"] for v in truth.values() for a in v["annotations"]})

    # split.csv: videos (not segments), disjoint, stratified, the background video kept
    split = _split_rows(out)
    train = {v for v, r in split.items() if r["split"] == "train"}
    test = {v for v, r in split.items() if r["split"] == "test"}
    assert train | test == set(truth) and not train & test and len(test) == 2
    assert {v: r["subset"] for v, r in split.items()} == {v: info["subset"] for v, info in database.items()}
    assert split[BACKGROUND]["segments"] == "0" and split[BACKGROUND]["labels"] == ""
    for c in classes:
        assert any(c in split[v]["labels"].split(";") for v in train), c
        assert any(c in split[v]["labels"].split(";") for v in test), c

    # reproducible from the seed, different with another one
    assert _prepare(own_videos, tmp_path / "again" / "own", "--keep-unlabelled", "--test-fraction", "0.25",
                    "--seed", "1", "--workers", "1") == 0
    assert (tmp_path / "again" / "own" / "split.csv").read_text() == (out / "split.csv").read_text()
    assert (tmp_path / "again" / "own" / "annotations.json").read_text() == (out / "annotations.json").read_text()
    # 7 labelled videos, 3 classes, 2 test videos: only two stratified splits exist; seed 0 draws the other one
    assert _prepare(own_videos, tmp_path / "other" / "own", "--keep-unlabelled", "--test-fraction", "0.25",
                    "--seed", "0", "--workers", "1") == 0
    other = _split_rows(tmp_path / "other" / "own")
    assert {v for v, r in other.items() if r["split"] == "test"} != test

    # a frame store of the data set (Ray Data), then train from it and detect through it
    store = tmp_path / "frames"
    assert prepare_frames.main(["--config", str(config_file), "--store", str(store)]) == 0
    printed = capsys.readouterr().out
    assert f"frame store {store}: every 4. frame, short side <= 72 px, yuv420-zstd; 8 videos, 8 to store" in printed
    assert "done: 8 of 8 videos stored" in printed and "--set data.frame_store=" in printed
    assert sorted(p.stem for p in (store / "videos").glob("*.parquet")) == sorted(truth)
    assert prepare_frames.main(["--config", str(config_file), "--store", str(store)]) == 0  # resumed: all current
    assert "8 videos, 0 to store; 8 already stored" in capsys.readouterr().out

    # train on the written config (shrunk like tests/conftest.py's tiny runs) from the store, then detect
    storage = tmp_path / "runs"
    cfg = load_config(config_file, [f"data.frame_store={store}", "data.window_size=64", "train.epochs=1",
                                    "train.schedule_epochs=2",
                                    "train.warmup_epochs=1", "train.batch_size=2", "train.val_interval=1",
                                    "train.val_start_epoch=0", f"runtime.storage_path={storage}",
                                    f"tracking.tracking_uri=sqlite:///{fresh_mlflow_db(tmp_path / 'mlflow.db')}"])
    assert cfg.model.head.num_classes == 3 and cfg.name == "own" and cfg.tracking.experiment_name == "adatad-own"
    summary = run_training(RunPlan(cfg=cfg, run_name="own", storage=storage, resumed=False), quiet=True)
    history = json.loads(Path(summary["run_dir"], "history.json").read_text())
    assert [h["epoch"] for h in history] == [0] and 0.0 <= history[-1]["average_mAP"] <= 1.0

    detections = tmp_path / "detections.json"
    assert history[-1]["clips_lost"] == history[-1]["decode_failures"] == 0
    assert detect.main(["--checkpoint", summary["run_dir"], "--videos", str(own_videos["videos"]),
                        "--out", str(detections), "--quiet", "--set", f"data.frame_store={store}"]) == 0
    results = json.loads(detections.read_text())
    assert results["errors"] == {} and sorted(results["results"]) == sorted(truth)
    for vid, entries in results["results"].items():
        duration = float(split[vid]["duration_s"])
        assert entries, vid
        assert all(0.0 <= e["segment"][0] <= e["segment"][1] <= duration + 0.01 for e in entries), vid
        assert {e["label"] for e in entries} <= set(classes)


BAD_CSVS = {
    "missing column": ("video,start,finish,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n",
                       ["row 1: missing column(s) 'end'", "['video', 'start', 'finish', 'label']"]),
    "bad number": ("video,start,end,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n"
                   "video_test_0000002.mp4,1.5s,3.0,RotateBar\n",
                   ["row 3: column 'start': expected a number of seconds, got '1.5s'"]),
    "unknown video": ("video,start,end,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n"
                      "video_test_0000099,1.0,3.0,RotateBar\n",
                      ["row 3: video 'video_test_0000099': no video file 'video_test_0000099.<ext>' in"]),
    "start >= end": ("video,start,end,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n"
                     "video_test_0000002.mp4,4.25,4.25,RotateBar\n",
                     ["row 3: start 4.25 >= end 4.25 (expected start < end)"]),
    "segment past the end": ("video,start,end,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n"
                             "video_test_0000002.mp4,1.0,12.5,RotateBar\n",
                             ["row 3: segment [1, 12.5] of video 'video_test_0000002' ends after the video ("]),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csv_is_one_line_naming_row_and_value_and_nothing_is_written(own_videos: dict, tmp_path: Path, capsys,
                                                                         case: str) -> None:
    text, expected = BAD_CSVS[case]
    (tmp_path / "segments.csv").write_text(text)
    out = tmp_path / "data" / "bad"
    assert _prepare(own_videos, out, "--workers", "1", segments=tmp_path / "segments.csv") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "prepare_dataset: 1 problem(s); nothing written:" and len(err) == 2, err
    assert err[1].startswith(f"  {tmp_path / 'segments.csv'}: row ")
    assert all(e in err[1] for e in expected), err[1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["segments.csv"]  # no folder, no config, no temp file


def test_every_problem_is_listed_at_once_in_file_order(own_videos: dict, tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(own_videos["videos"], videos)
    (videos / "notes.xyz").write_text("not a video")
    (videos / "broken.mp4").write_bytes(b"\x00" * 4096)
    (tmp_path / "s.csv").write_text(
        "video,start,end,label\n"
        "video_test_0000001.mp4,1.0,2.0,RotateBar\n"  # fine
        "video_test_0000002.mp4,abc,3.0,RotateBar\n"  # 3
        "missing.mp4,1.0,2.0,RotateBar\n"  # 4
        "notes.xyz,1.0,2.0,RotateBar\n"  # 5
        "broken,1.0,2.0,RotateBar\n"  # 6
        "video_validation_0000001,,,\n"  # 7: no segments, no --keep-unlabelled
        "video_validation_0000002,1.0,,RotateBar\n"  # 8
        ",1.0,2.0,RotateBar\n"  # 9
        "video_validation_0000003.mp4,-1,2.0,RotateBar\n"  # 10
        "video_validation_0000004.mp4,2.0,1.0,RotateBar\n")  # 11
    assert prepare_dataset.main(["--videos", str(videos), "--segments", str(tmp_path / "s.csv"), "--out",
                                 str(tmp_path / "out"), "--config-out", str(tmp_path / "c.yaml"), "--base", BASE,
                                 "--workers", "1"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "prepare_dataset: 9 problem(s); nothing written:"
    rows = [int(line.split(": row ")[1].split(":")[0]) for line in lines[1:]]
    assert rows == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    for needle, line in zip(["got 'abc'", f"file not found: {videos / 'missing.mp4'}", "unknown extension '.xyz'",
                             f"{videos / 'broken.mp4'}: cannot open as a video", "has no segments; pass --keep-unlabelled",
                             "column(s) 'end' empty", "column 'video' is empty", "expected seconds >= 0, got '-1'",
                             "start 2.0 >= end 1.0"], lines[1:], strict=True):
        assert needle in line, (needle, line)
    assert not (tmp_path / "out").exists() and not (tmp_path / "c.yaml").exists()


def test_outputs_are_not_replaced_without_force(own_videos: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "data" / "own"
    args = ("--keep-unlabelled", "--split-column", "split", "--workers", "1")
    assert _prepare(own_videos, out, *args) == 0
    assert _prepare(own_videos, out, *args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1:] == [f"  {p}: exists (pass --force to replace it)" for p in
                       (out / "annotations.json", out / "category_idx.txt", out / "split.csv",
                        tmp_path / "data" / "configs" / "own.yaml")]
    assert _prepare(own_videos, out, *args, "--force") == 0


def test_split_column_mixed_extensions_and_the_loader(own_videos: dict, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for src in own_videos["videos"].glob("*.mp4"):  # one file named .mkv (ffmpeg reads it by content)
        (videos / (src.stem + (".mkv" if src.stem == "video_test_0000001" else ".mp4"))).symlink_to(src)
    text = own_videos["csv"].read_text().replace("video_test_0000001.mp4", "video_test_0000001.mkv")
    (tmp_path / "s.csv").write_text(text)
    out = tmp_path / "data" / "mixed"
    assert prepare_dataset.main(["--videos", str(videos), "--segments", str(tmp_path / "s.csv"), "--out", str(out),
                                 "--config-out", str(tmp_path / "mixed.yaml"), "--base", BASE, "--keep-unlabelled",
                                 "--split-column", "split", "--workers", "1"]) == 0
    cfg = load_config(tmp_path / "mixed.yaml")
    assert cfg.data.video_dir == str(out / "video_links") and cfg.data.video_ext == "mp4"
    names = load_class_names(cfg.data.annotation_file, cfg.data.class_map_file)
    train, _ = load_annotations(cfg.data.annotation_file, cfg.data.video_dir, cfg.data.train_subset, names)
    test, _ = load_annotations(cfg.data.annotation_file, cfg.data.video_dir, cfg.data.test_subset, names)
    truth = own_videos["truth"]
    assert sorted(r.video_id for r in test) == sorted(v for v, i in truth.items() if i["subset"] == "validation")
    assert len(train) + len(test) == len(truth)
    links = {p.name: p.resolve() for p in (out / "video_links").iterdir()}
    assert links["video_test_0000001.mp4"] == (videos / "video_test_0000001.mkv").resolve()
    from adatad.data.check import check_videos

    assert check_videos(train + test) == []  # every record's path decodes, through the links


def _actionformer(database: dict) -> dict:
    subset = {"training": "Validation", "validation": "Test"}
    return {"version": "Thumos14-30fps", "database": {
        vid: {"subset": subset[i["subset"]], "duration": i["duration"], "fps": i["frame"] / i["duration"],
              "annotations": [{**a, "segment(frames)": [0, 1], "label_id": 0} for a in i["annotations"]]}
        for vid, i in database.items()}}


def test_thumos_json_inputs_keep_or_redo_the_split(own_videos: dict, tmp_path: Path, capsys) -> None:
    truth = own_videos["truth"]
    opentad = own_videos["root"] / "syn" / "annotations.json"
    assert _prepare(own_videos, tmp_path / "a" / "kept", "--split-column", "subset", "--workers", "1",
                    segments=opentad) == 0
    kept = json.loads((tmp_path / "a" / "kept" / "annotations.json").read_text())["database"]
    assert {v: i["subset"] for v, i in kept.items()} == {v: i["subset"] for v, i in truth.items()}

    af = tmp_path / "thumos14.json"
    af.write_text(json.dumps(_actionformer(truth)))
    assert _prepare(own_videos, tmp_path / "b" / "resplit", "--subset", "Validation", "--test-fraction", "0.35",
                    "--workers", "1", segments=af) == 0  # ActionFormer's "Validation" = the training videos
    split = _split_rows(tmp_path / "b" / "resplit")
    assert sorted(split) == sorted(v for v, i in truth.items() if i["subset"] == "training")
    assert sorted(r["split"] for r in split.values()) == ["test"] * 2 + ["train"] * 4

    assert _prepare(own_videos, tmp_path / "c" / "x", "--subset", "validation", "--workers", "1", segments=af) == 2
    assert "--subset 'validation': no video has it (subsets present: ['Test', 'Validation']; names match exactly)" \
        in capsys.readouterr().err


def _activitynet(truth: dict, with_frames: bool) -> dict:
    """The own videos' json in ActivityNet-1.3's layout: ids without the files' `v_`, no frame / fps (or
    both), a `testing` subset, a zero-length segment and a segment past the video's end."""
    database = {}
    for vid, info in truth.items():
        entry = {"subset": info["subset"], "duration": info["duration"], "resolution": "112x64", "url": "u",
                 "annotations": [dict(a) for a in info["annotations"]]}
        if with_frames:
            entry.update(frame=info["frame"], fps=info["frame"] / info["duration"])
        database[vid] = entry
    first = sorted(v for v, i in truth.items() if i["annotations"])[0]
    start = database[first]["annotations"][0]["segment"][0]
    database[first]["annotations"].append({"segment": [start, start], "label": truth[first]["annotations"][0]["label"]})
    last = database[first]["annotations"][-2]
    last["segment"] = [last["segment"][0], truth[first]["duration"] + 2.0]
    database["unlisted_test_video"] = {"subset": "testing", "duration": 10.0, "annotations": []}
    return {"version": "VERSION 1.3", "taxonomy": [], "database": database}, first


@pytest.mark.parametrize("with_frames", [False, True])
def test_activitynet_json_with_v_prefixed_files(own_videos: dict, tmp_path: Path, capsys, with_frames: bool) -> None:
    truth = own_videos["truth"]
    videos = tmp_path / "anet_videos"
    videos.mkdir()
    for path in own_videos["videos"].glob("*.mp4"):
        (videos / f"v_{path.name}").symlink_to(path)
    data, first = _activitynet(truth, with_frames)
    anet = tmp_path / "activity_net.v1-3.min.json"
    anet.write_text(json.dumps(data))
    out = tmp_path / "data" / "anet"
    assert prepare_dataset.main(["--videos", str(videos), "--segments", str(anet), "--out", str(out),
                                 "--config-out", str(tmp_path / "data" / "configs" / "anet.yaml"), "--base", BASE,
                                 "--split-column", "subset", "--subset", "training", "--subset", "validation",
                                 "--keep-unlabelled", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(truth)} video(s) of {anet} were found as v_<id> files" in printed
    assert "1 zero-length segment(s) dropped" in printed
    assert "1 segment(s) ending after their decoded video were clipped to its end" in printed
    database = json.loads((out / "annotations.json").read_text())["database"]
    assert sorted(database) == sorted(f"v_{v}" for v in truth)  # ids are the file names
    assert {v: i["subset"] for v, i in database.items()} == {f"v_{v}": i["subset"] for v, i in truth.items()}
    for vid, info in truth.items():
        got = [a["segment"] for a in database[f"v_{vid}"]["annotations"]]
        want = sorted(a["segment"] for a in info["annotations"])
        if vid == first:  # the zero-length one dropped, the one past the end clipped to the decoded video
            want[-1] = [want[-1][0], database[f"v_{vid}"]["duration"]]
        np.testing.assert_allclose(np.asarray(got).reshape(-1, 2), np.asarray(want).reshape(-1, 2), err_msg=vid)


def test_stratified_split_properties() -> None:
    labels = {f"v{i:02d}": {"ABC"[i % 3], "ABC"[(i + 1) % 3]} if i % 4 == 0 else {"ABC"[i % 3]} for i in range(12)}
    labels.update({"bg1": set(), "bg2": set(), "bg3": set(), "bg4": set()})
    split = stratified_split(labels, 0.25, seed=7)
    assert set(split.train) | set(split.test) == set(labels) and not set(split.train) & set(split.test)
    for c in "ABC":
        assert any(c in labels[v] for v in split.test) and any(c in labels[v] for v in split.train)
    assert len([v for v in split.test if labels[v]]) == 3 and len([v for v in split.test if not labels[v]]) == 1
    assert split == stratified_split(labels, 0.25, seed=7) and split.notes == ()
    assert {stratified_split(labels, 0.25, seed=s).test for s in range(5)} != {split.test}

    # a class in one video trains; two videos that each carry such a class cannot test the class they share
    lonely = {"a": {"X", "S1"}, "b": {"X", "S2"}, "c": {"Y"}, "d": {"Y"}}
    split = stratified_split(lonely, 0.5, seed=0)
    assert split.test == ("c",) or split.test == ("d",)
    assert split.notes == ("class 'S1' is in 1 video only, in the training set: its AP is never measured",
                           "class 'S2' is in 1 video only, in the training set: its AP is never measured",
                           "class 'X' (2 videos) is in the training set only, none in the test set; no split of "
                           "these videos found puts it in both")
    with pytest.raises(ValueError, match="1 video"):
        stratified_split({"a": {"X"}, "b": set()}, 0.5, 0)


def test_two_videos_of_one_class_each_still_get_a_test_video(own_videos: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "s.csv").write_text("video,start,end,label\nvideo_test_0000001.mp4,1.0,2.0,RotateBar\n"
                                    "video_test_0000002.mp4,1.0,2.5,Blink\n")
    out = tmp_path / "data" / "two"
    assert _prepare(own_videos, out, "--test-fraction", "0.5", "--workers", "1", segments=tmp_path / "s.csv") == 0
    captured = capsys.readouterr()
    split = _split_rows(out)
    assert sorted(r["split"] for r in split.values()) == ["test", "train"]
    moved = next(v for v, r in split.items() if r["split"] == "test")
    assert (f"note: no stratified split has a test video (every video carries a class found in no other video): "
            f"video '{moved}' (") in captured.out
    assert "in 1 video only, in the test set: the model never sees it in training" in captured.out


def test_stratified_split_falls_back_to_one_test_video() -> None:
    for seed in range(6):
        split = stratified_split({"a": {"X"}, "b": {"Y"}, "bg": set()}, 0.5, seed)
        assert len(split.test) >= 1 and len([v for v in split.test if v != "bg"]) == 1 and len(split.train) >= 1
        assert split.notes[0].startswith("no stratified split has a test video")
        assert split == stratified_split({"a": {"X"}, "b": {"Y"}, "bg": set()}, 0.5, seed)  # reproducible
    # the video to test is the one whose move costs the fewest classes their only training video
    split = stratified_split({"a": {"X", "S"}, "b": {"X", "T", "U"}, "c": {"Y", "Z"}}, 0.3, 0)
    assert split.test == ("a",)
    assert not stratified_split({"a": {"X"}, "b": {"X"}}, 0.5, 0).notes  # a class in 2 videos: stratified
    with pytest.raises(ValueError, match=r"1 video\(s\) with segments: a train/test split needs at least 2 \(add "
                                         r"labelled videos, or give each video its split with --split-column\)"):
        stratified_split({"a": {"X"}, "b": set()}, 0.5, 0)


def test_frame_stride_advice() -> None:
    thumos = advise_frame_stride([30.0] * 5, [2.0, 4.0, 5.0, 8.0, 20.0], base_stride=4, window_size=768)
    assert thumos.stride == 4 and thumos.reasons == ()
    fast = advise_frame_stride([60.0, 59.94, 60.0], [3.0, 5.0], base_stride=4, window_size=768)
    assert fast.stride == 8 and "60 fps" in fast.reasons[0]
    blink = advise_frame_stride([30.0], [0.4, 0.5, 0.6], base_stride=4, window_size=768)
    assert blink.stride == 1 and "0.50 s" in blink.reasons[0]  # 0.5 s x 30 fps / 1 = 15 positions
    long = advise_frame_stride([30.0], [60.0, 90.0, 200.0], base_stride=4, window_size=128)
    assert long.stride == math.ceil(2 * 178.0 * 30 / 128) and "90% of the actions" in long.reasons[0]


def test_make_synthetic_csv_and_mixed_fps(own_videos: dict) -> None:
    from adatad.data.video import probe_video

    with open(own_videos["root"] / "generated.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = own_videos["truth"]
    assert {(r["video"], float(r["start"]), float(r["end"]), r["label"], r["split"]) for r in rows} == {
        (f"{v}.mp4", a["segment"][0], a["segment"][1], a["label"], {"training": "train", "validation": "test"}[i["subset"]])
        for v, i in truth.items() for a in i["annotations"]}
    for vid, info in truth.items():
        probed = probe_video(own_videos["videos"] / f"{vid}.mp4")
        assert probed.fps == pytest.approx(25.0 if int(vid[-1]) % 2 else 30.0, abs=1e-3)
        assert probed.num_frames == info["frame"] and info["frame"] / info["duration"] == pytest.approx(probed.fps)


def test_the_default_base_names_the_weights_it_needs_first(own_videos: dict, tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    """The default base (THUMOS VideoMAE-S) trains from a VideoMAE file: when it is not there yet, a note
    and the first of the next commands fetch it, before train.py would stop on it."""
    monkeypatch.setenv("ADATAD_ROOT", str(tmp_path))  # relative paths (pretrained/...) resolve here
    out, config = tmp_path / "data" / "mine", tmp_path / "configs" / "mine.yaml"
    assert prepare_dataset.main(["--videos", str(own_videos["videos"]), "--segments", str(own_videos["csv"]),
                                 "--out-dir", str(out), "--config-out", str(config), "--dataset-name", "mine",
                                 "--workers", "1", "--keep-unlabelled"]) == 0
    printed = capsys.readouterr().out.splitlines()
    weights = tmp_path / "pretrained" / "vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"
    py = python_command()
    assert f"note: model.backbone.checkpoint: VideoMAE checkpoint not found: {weights}; fetch it with: {py} " \
           f"pipelines/fetch_weights.py --config {config}" in printed
    nexts = printed[printed.index("next:") + 1:]
    assert nexts[0].strip() == f"{py} pipelines/fetch_weights.py --config {config}"
    assert nexts[1].strip().startswith(f"{py} ") and "pipelines/train.py --config" in nexts[1]
    assert f"# Train: {py} pipelines/train.py --config" in config.read_text()  # the config's header too


def test_cli_help_runs_as_a_script() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "pipelines/prepare_dataset.py", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--keep-unlabelled" in done.stdout


def test_prepare_frames_lists_an_undecodable_video_and_stores_the_others(own_videos: dict, ray_session,
                                                                         tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    good = sorted(own_videos["videos"].glob("*.mp4"))[:2]
    for path in good:
        shutil.copy(path, videos)
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    store = tmp_path / "store"
    assert prepare_frames.main(["--config", BASE, "--store", str(store), "--videos", str(videos)]) == 1
    out, err = capsys.readouterr()
    assert f"failed: broken: {videos / 'broken.mp4'}: cannot open as a video" in err
    assert "done: 2 of 3 videos stored" in out
    assert sorted(p.name for p in (store / "videos").iterdir()) == sorted(f"{p.stem}.parquet" for p in good)
