"""THUMOS-layout annotation loader: records, class map, and every error case."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from adatad.data.annotations import (
    OUTSIDE,
    PARTLY_OUTSIDE,
    UNKNOWN_FRAMES,
    ZERO_LENGTH,
    AnnotationError,
    SegmentNotice,
    VideoRecord,
    load_annotations,
    load_class_names,
    segment_note,
    segment_notices,
    subset_translation_note,
)
from adatad.data.clips import record_to_row, row_to_record

DB = {
    "database": {
        "video_validation_0000051": {
            "subset": "training",
            "duration": 100.0,
            "frame": 3000,
            "annotations": [
                {"segment": [10.5, 14.2], "label": "HighJump"},
                {"segment": [20.0, 25.0], "label": "Ambiguous"},
                {"segment": [10.5, 14.2], "label": "HighJump"},  # exact duplicate: dropped
                {"segment": [10.5, 14.2], "label": "CliffDiving"},  # same segment, other label: kept
                {"segment": [90.0, 100.0005], "label": "Diving"},  # tiny overshoot: clipped
            ],
        },
        "video_validation_0000052": {
            "subset": "training",
            "duration": 50.0,
            "frame": 1250,
            "annotations": [{"segment": [1.0, 2.0], "label": "BaseballPitch"}],
        },
        "video_test_0000004": {
            "subset": "validation",
            "duration": 40.0,
            "frame": 1200,
            "annotations": [{"segment": [3.0, 4.0], "label": "Diving"}],
        },
    }
}


def write(tmp_path: Path, data, name: str = "anno.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_loads_records_fps_path_and_cleaning(tmp_path):
    ann = write(tmp_path, DB)
    records, names = load_annotations(ann, "videos", "training")
    assert names == ["BaseballPitch", "CliffDiving", "Diving", "HighJump"]  # sorted, Ambiguous skipped
    assert [r.video_id for r in records] == ["video_validation_0000051", "video_validation_0000052"]
    r = records[0]
    assert isinstance(r, VideoRecord)
    assert r.path == os.path.abspath(os.path.join("videos", "video_validation_0000051.mp4"))
    assert r.subset == "training" and r.num_frames == 3000 and r.duration == 100.0
    assert r.fps == pytest.approx(30.0)
    assert r.segments.dtype == np.float64 and r.labels.dtype == np.int64
    np.testing.assert_allclose(r.segments, [[10.5, 14.2], [10.5, 14.2], [90.0, 100.0]])
    assert [names[i] for i in r.labels] == ["HighJump", "CliffDiving", "Diving"]
    eval_segments, eval_labels = r.evaluation_ground_truth  # the file's own ends, for evaluation
    np.testing.assert_array_equal(eval_segments, [[10.5, 14.2], [10.5, 14.2], [90.0, 100.0005]])
    np.testing.assert_array_equal(eval_labels, r.labels)
    assert records[1].fps == pytest.approx(25.0)


def test_subset_list_and_video_ext(tmp_path):
    ann = write(tmp_path, DB)
    records, _ = load_annotations(ann, tmp_path, ["training", "validation"], video_ext="mkv")
    assert len(records) == 3
    assert all(r.path.endswith(".mkv") and os.path.isabs(r.path) for r in records)
    test, _ = load_annotations(ann, tmp_path, "validation")
    assert [r.video_id for r in test] == ["video_test_0000004"]


def test_subset_is_exact_match(tmp_path):
    ann = write(tmp_path, DB)
    with pytest.raises(AnnotationError, match=r"no video in subset \['train'\].*'training', 'validation'"):
        load_annotations(ann, tmp_path, "train")


def test_class_map_file_order_and_given_names(tmp_path):
    ann = write(tmp_path, DB)
    cmap = tmp_path / "category_idx.txt"
    cmap.write_text("Diving\nHighJump\n\nCliffDiving\nBaseballPitch\n", encoding="utf-8")
    names = load_class_names(ann, cmap)
    assert names == ["Diving", "HighJump", "CliffDiving", "BaseballPitch"]
    records, out_names = load_annotations(ann, tmp_path, "training", class_names=names)
    assert out_names == names
    assert list(records[0].labels) == [1, 2, 0]
    assert load_class_names(ann) == ["BaseballPitch", "CliffDiving", "Diving", "HighJump"]


def test_class_map_errors(tmp_path):
    ann = write(tmp_path, DB)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="empty.txt: class map is empty"):
        load_class_names(ann, empty)
    dup = tmp_path / "dup.txt"
    dup.write_text("A\nB\nA\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="lists 'A' twice"):
        load_class_names(ann, dup)
    with pytest.raises(AnnotationError, match="cannot read class map"):
        load_class_names(ann, tmp_path / "missing.txt")


def test_unknown_label_with_class_map(tmp_path):
    ann = write(tmp_path, DB)
    with pytest.raises(AnnotationError, match=r"video_validation_0000051.*'label': 'CliffDiving' is not in the class map"):
        load_annotations(ann, tmp_path, "training", class_names=["BaseballPitch", "Diving", "HighJump"])


def test_invalid_json_reports_line_and_column(tmp_path):
    ann = write(tmp_path, '{\n  "database": {\n    "v1": {"subset": "training",, }\n}')
    with pytest.raises(AnnotationError, match=r"anno.json: invalid json at line 3 column 33") as info:
        load_annotations(ann, tmp_path, "training")
    assert "\n" not in str(info.value)


def test_missing_file_and_database(tmp_path):
    with pytest.raises(AnnotationError, match="cannot read annotation file"):
        load_annotations(tmp_path / "nope.json", tmp_path, "training")
    with pytest.raises(AnnotationError, match="missing top-level key 'database'"):
        load_annotations(write(tmp_path, {"results": {}}), tmp_path, "training")
    with pytest.raises(AnnotationError, match="'database' must be an object"):
        load_annotations(write(tmp_path, {"database": []}), tmp_path, "training")


def mutate(fn) -> dict:
    data = copy.deepcopy(DB)
    fn(data["database"]["video_validation_0000051"])
    return data


@pytest.mark.parametrize("field", ["subset", "duration", "annotations"])  # no `frame`: see the decoder tests
def test_missing_video_field(tmp_path, field):
    ann = write(tmp_path, mutate(lambda v: v.pop(field)))
    with pytest.raises(AnnotationError, match=rf"video 'video_validation_0000051': missing field '{field}'"):
        load_annotations(ann, tmp_path, "training")


@pytest.mark.parametrize("field", ["segment", "label"])
def test_missing_annotation_field(tmp_path, field):
    ann = write(tmp_path, mutate(lambda v: v["annotations"][0].pop(field)))
    with pytest.raises(AnnotationError, match=rf"video_validation_0000051'?: annotations\[0\]: missing field '{field}'"):
        load_annotations(ann, tmp_path, "training")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda v: v.update(duration=0), r"'duration': expected > 0"),
        (lambda v: v.update(duration="long"), r"'duration': expected a positive number"),
        (lambda v: v.update(frame=12.5), r"'frame': expected a positive integer, got 12.5"),
        (lambda v: v.update(frame=-3), r"'frame': expected a positive integer"),
        (lambda v: v.update(annotations={}), r"'annotations': expected a list"),
        (lambda v: v["annotations"][0].update(segment=[5.0]), r"'segment': expected \[start_s, end_s\]"),
        (lambda v: v["annotations"][0].update(segment=["a", 3]), r"'segment': expected numeric"),
        (lambda v: v["annotations"][0].update(label=3), r"'label': expected a class name string"),
    ],
)
def test_bad_field_values(tmp_path, change, pattern):
    ann = write(tmp_path, mutate(change))
    with pytest.raises(AnnotationError, match=r"anno.json: video 'video_validation_0000051'.*" + pattern):
        load_annotations(ann, tmp_path, "training")


def test_start_after_end_is_an_error(tmp_path):
    ann = write(tmp_path, mutate(lambda v: v["annotations"][0].update(segment=[15.0, 14.0])))
    with pytest.raises(AnnotationError, match=r"annotations\[0\]: field 'segment': start 15.0 >= end 14.0"):
        load_annotations(ann, tmp_path, "training")


def test_tiny_overshoots_are_clipped_without_a_notice(tmp_path):
    ann = write(tmp_path, mutate(lambda v: v["annotations"][0].update(segment=[-0.0005, 3.0])))
    records, _ = load_annotations(ann, tmp_path, "training")
    assert records[0].segments[0, 0] == 0.0 and records[0].evaluation_ground_truth[0][0, 0] == -0.0005
    ann = write(tmp_path, mutate(lambda v: v["annotations"][0].update(segment=[90.0, 100.4])))
    records, _ = load_annotations(ann, tmp_path, "training", segment_tolerance_s=0.5)
    assert records[0].segments[0, 1] == 100.0
    assert segment_notices(ann, "training", segment_tolerance_s=0.5) == []
    assert [n.kind for n in segment_notices(ann, "training")] == [PARTLY_OUTSIDE]


# Each layout's own fixture, with segments as released files have them: (partly) outside the video,
# zero length. Video "a" is 100 s long in both.
ODD_SEGMENTS = [
    ([10.0, 20.0], "HighJump"),  # inside
    ([113.6, 117.3], "HighJump"),  # starts after the end (ActionFormer's thumos14.json has 30 such)
    ([100.0, 101.0], "Diving"),  # starts at the end: no overlap
    ([-3.0, 0.0], "Diving"),  # ends at the start: no overlap
    ([95.0, 104.5], "Diving"),  # partly after the end
    ([-0.5, 3.0], "HighJump"),  # partly before the start
    ([50.0, 50.0], "HighJump"),  # zero length
    ([113.6, 117.3], "HighJump"),  # exact duplicate of [1]: dropped before anything else
]


def _odd_layout(layout: str) -> tuple[dict, str]:
    """(database, training subset name) in OpenTAD's or ActionFormer's layout, video "a" holding ODD_SEGMENTS."""
    annotations = [{"segment": seg, "label": label} for seg, label in ODD_SEGMENTS]
    if layout == "opentad":
        video = {"subset": "training", "duration": 100.0, "frame": 3000, "annotations": annotations}
        other = {"subset": "validation", "duration": 40.0, "frame": 1200,
                 "annotations": [{"segment": [3.0, 4.0], "label": "Diving"}]}
        return {"database": {"a": video, "b": other}}, "training"
    video = {"subset": "Validation", "duration": 100.0, "fps": 30.0,
             "annotations": [{**a, "segment(frames)": [0, 1], "label_id": 0} for a in annotations]}
    other = {"subset": "Test", "duration": 40.0, "fps": 30.0,
             "annotations": [{"label": "Diving", "segment": [3.0, 4.0], "segment(frames)": [90, 120], "label_id": 0}]}
    return {"version": "Thumos14-30fps", "database": {"a": video, "b": other}}, "Validation"


@pytest.mark.parametrize("layout", ["opentad", "actionformer"])
def test_segments_outside_the_video_load_as_opentad_treats_them(tmp_path, layout):
    data, subset = _odd_layout(layout)
    ann = write(tmp_path, data)
    for name in (subset, "training"):  # the layout's own name, and OpenTAD's (translated for ActionFormer's)
        records, names = load_annotations(ann, tmp_path, name)
        assert names == ["Diving", "HighJump"] and [r.video_id for r in records] == ["a"]
        r = records[0]
        # training: entirely outside dropped, partly outside clipped, zero length dropped
        np.testing.assert_array_equal(r.segments, [[10.0, 20.0], [95.0, 100.0], [0.0, 3.0]])
        assert [names[i] for i in r.labels] == ["HighJump", "Diving", "HighJump"]
        # evaluation: as the file has them, but zero length and the exact duplicate dropped
        eval_segments, eval_labels = r.evaluation_ground_truth
        np.testing.assert_array_equal(eval_segments, [[10.0, 20.0], [113.6, 117.3], [100.0, 101.0], [-3.0, 0.0],
                                                      [95.0, 104.5], [-0.5, 3.0]])
        assert [names[i] for i in eval_labels] == ["HighJump", "HighJump", "Diving", "Diving", "Diving", "HighJump"]

    notices = segment_notices(ann, "training")
    assert [(n.index, n.kind) for n in notices] == [(1, OUTSIDE), (2, OUTSIDE), (3, OUTSIDE), (4, PARTLY_OUTSIDE),
                                                   (5, PARTLY_OUTSIDE), (6, ZERO_LENGTH)]
    assert notices[0] == SegmentNotice("a", 1, "HighJump", (113.6, 117.3), 100.0, OUTSIDE)
    assert notices[0].describe() == "video 'a': annotations[1] (HighJump) [113.6, 117.3] lies outside the video [0, 100]"
    assert notices[3].describe().endswith("[95, 104.5] lies partly outside the video [0, 100]")
    assert notices[5].describe() == "video 'a': annotations[6] (HighJump) [50, 50] has zero length"
    assert segment_notices(ann, "validation") == []

    note = segment_note(ann, ["training", "validation"])
    assert note == (f"{ann}: 5 ground-truth segment(s) in 1 video(s) lie outside their video (3 entirely: not "
                    "trained on, 2 partly: clipped to the video for training) and are scored as the file has them, as "
                    "OpenTAD does; 1 zero-length segment(s) are dropped; pipelines/check_data.py lists them")
    assert segment_note(ann, ["training"], training=False) == (
        f"{ann}: 5 ground-truth segment(s) in 1 video(s) lie outside their video (3 entirely, 2 partly) and are "
        "scored as the file has them, as OpenTAD does; 1 zero-length segment(s) are dropped; "
        "pipelines/check_data.py lists them")
    assert segment_note(ann, ["validation"]) is None


def test_a_video_whose_segments_all_lie_outside_trains_as_background(tmp_path):
    ann = write(tmp_path, mutate(lambda v: v.update(annotations=[{"segment": [101.0, 102.0], "label": "Diving"}])))
    records, names = load_annotations(ann, tmp_path, "training")
    assert records[0].segments.shape == (0, 2) and records[0].labels.shape == (0,)
    eval_segments, eval_labels = records[0].evaluation_ground_truth
    np.testing.assert_array_equal(eval_segments, [[101.0, 102.0]])
    assert [names[i] for i in eval_labels] == ["Diving"]


def test_rows_carry_the_evaluation_ground_truth(tmp_path):
    data, subset = _odd_layout("opentad")
    records, _ = load_annotations(write(tmp_path, data), tmp_path, subset)
    back = row_to_record(record_to_row(records[0], 3))
    for field in ("segments", "labels", "eval_segments", "eval_labels"):
        np.testing.assert_array_equal(getattr(back, field), getattr(records[0], field))
    assert back.eval_segments.dtype == np.float64 and back.eval_labels.dtype == np.int64
    # a record made without evaluation ground truth (detect.py, hand-made) scores its `segments`
    plain = VideoRecord("v", "/v.mp4", "x", 10.0, 300, 30.0, np.array([[1.0, 2.0]]), np.array([0]))
    np.testing.assert_array_equal(row_to_record(record_to_row(plain, 0)).evaluation_ground_truth[0], [[1.0, 2.0]])
    row = record_to_row(plain, 0)
    del row["eval_segments"], row["eval_labels"]  # a row from before these fields: `segments` are scored
    assert row_to_record(row).eval_segments is None


def test_errors_in_other_subsets_do_not_block(tmp_path):
    data = copy.deepcopy(DB)
    data["database"]["video_test_0000004"]["annotations"][0]["segment"] = [5.0, 1.0]
    ann = write(tmp_path, data)
    records, _ = load_annotations(ann, tmp_path, "training")
    assert len(records) == 2
    with pytest.raises(AnnotationError, match="video_test_0000004"):
        load_annotations(ann, tmp_path, "validation")


def test_video_without_annotations_is_kept_empty(tmp_path):
    ann = write(tmp_path, mutate(lambda v: v.update(annotations=[{"segment": [1, 2], "label": "Ambiguous"}])))
    records, _ = load_annotations(ann, tmp_path, "training")
    assert records[0].segments.shape == (0, 2) and records[0].labels.shape == (0,)


# ---------------------------------------------------------------- ActionFormer's layout (thumos14.json)

AF_DB = {
    "version": "Thumos14-30fps",
    "database": {
        "video_validation_0000051": {
            "subset": "Validation",
            "duration": 100.0,
            "fps": 30.0,
            "annotations": [
                {"label": "HighJump", "segment": [10.5, 14.2], "segment(frames)": [315.0, 426.0], "label_id": 9},
                {"label": "Diving", "segment": [90.0, 99.9], "segment(frames)": [2700.0, 2997.0], "label_id": 5},
            ],
        },
        "video_validation_0000052": {
            "subset": "Validation",
            "duration": 50.02,
            "fps": 25.0,
            "annotations": [{"label": "BaseballPitch", "segment": [1.0, 2.0], "segment(frames)": [25, 50],
                             "label_id": 0}],
        },
        "video_test_0000004": {
            "subset": "Test",
            "duration": 40.0,
            "fps": 30.0,
            "annotations": [{"label": "Diving", "segment": [3.0, 4.0], "segment(frames)": [90, 120], "label_id": 5}],
        },
    },
}


def af_mutate(fn) -> dict:
    data = copy.deepcopy(AF_DB)
    fn(data["database"])
    return data


def test_actionformer_layout_frames_from_duration_times_fps(tmp_path):
    ann = write(tmp_path, AF_DB)
    records, names = load_annotations(ann, "videos", "Validation")
    assert names == ["BaseballPitch", "Diving", "HighJump"]  # label_id ignored: sorted labels, as OpenTAD
    assert [r.video_id for r in records] == ["video_validation_0000051", "video_validation_0000052"]
    assert records[0].num_frames == 3000 and records[0].fps == pytest.approx(30.0)
    assert records[1].num_frames == round(50.02 * 25.0) == 1250  # rounded
    assert records[1].fps == pytest.approx(1250 / 50.02) and records[1].duration == 50.02
    assert all(r.frames_known and r.subset == "Validation" for r in records)
    np.testing.assert_allclose(records[0].segments, [[10.5, 14.2], [90.0, 99.9]])
    assert [names[i] for i in records[0].labels] == ["HighJump", "Diving"]


def test_opentad_subset_names_read_actionformer_file_with_a_note(tmp_path):
    ann = write(tmp_path, AF_DB)
    train, _ = load_annotations(ann, tmp_path, "training")  # OpenTAD's name for the training set
    test, _ = load_annotations(ann, tmp_path, "validation")  # OpenTAD's name for the test set
    assert [r.video_id for r in train] == ["video_validation_0000051", "video_validation_0000052"]
    assert [r.video_id for r in test] == ["video_test_0000004"]
    assert {r.subset for r in train} == {"Validation"} and {r.subset for r in test} == {"Test"}
    explicit, _ = load_annotations(ann, tmp_path, "Validation")
    assert [r.video_id for r in explicit] == [r.video_id for r in train]

    note = subset_translation_note(ann, ["training", "validation"])
    assert note is not None and "\n" not in note
    assert note.startswith(f"{ann} uses ActionFormer's subset names")
    assert "'training' -> 'Validation', 'validation' -> 'Test'" in note
    assert subset_translation_note(ann, ["Validation", "Test"]) is None  # given names exist: used as given
    assert subset_translation_note(ann, ["training", "Test"]).count("->") == 1
    assert subset_translation_note(write(tmp_path, DB, "opentad.json"), ["training", "validation"]) is None


def test_subsets_never_match_case_insensitively(tmp_path):
    with pytest.raises(AnnotationError, match=r"no video in subset \['Training'\]; subsets present: "
                                              r"\['training', 'validation'\]"):
        load_annotations(write(tmp_path, DB), tmp_path, "Training")
    with pytest.raises(AnnotationError, match=r"no video in subset \['test'\]"):
        load_annotations(write(tmp_path, AF_DB), tmp_path, "test")
    # A third subset means the file is not exactly ActionFormer's layout: no translation.
    extra = af_mutate(lambda db: db["video_test_0000004"].update(subset="Background"))
    with pytest.raises(AnnotationError, match=r"no video in subset \['validation'\]; subsets present: "
                                              r"\['Background', 'Validation'\]"):
        load_annotations(write(tmp_path, extra), tmp_path, "validation")
    # OpenTAD's name present in the file: used as given, even beside ActionFormer's names.
    mixed = af_mutate(lambda db: db["video_test_0000004"].update(subset="validation"))
    records, _ = load_annotations(write(tmp_path, mixed), tmp_path, "validation")
    assert [r.video_id for r in records] == ["video_test_0000004"]
    assert subset_translation_note(tmp_path / "anno.json", ["validation"]) is None


def test_no_frame_and_no_fps_leaves_the_count_to_the_decoder(tmp_path):
    ann = write(tmp_path, af_mutate(lambda db: [v.pop("fps") for v in db.values()]))
    records, _ = load_annotations(ann, tmp_path, "training")
    assert [r.frames_known for r in records] == [False, False]
    assert all(r.num_frames == UNKNOWN_FRAMES and r.fps == 0.0 for r in records)
    assert records[0].duration == 100.0 and records[0].segments.shape == (2, 2)
    # segments are still fitted to the json's duration
    odd = af_mutate(lambda db: [v.pop("fps") for v in db.values()]
                    + [db["video_test_0000004"]["annotations"][0].update(segment=[3.0, 41.0])])
    ann = write(tmp_path, odd)
    records, _ = load_annotations(ann, tmp_path, "Test")
    np.testing.assert_array_equal(records[0].segments, [[3.0, 40.0]])
    assert [n.kind for n in segment_notices(ann, "Test")] == [PARTLY_OUTSIDE]


def test_frame_wins_over_fps_when_both_are_given(tmp_path):
    ann = write(tmp_path, af_mutate(lambda db: db["video_test_0000004"].update(frame=1000)))
    records, _ = load_annotations(ann, tmp_path, "Test")
    assert records[0].num_frames == 1000 and records[0].fps == pytest.approx(25.0)


@pytest.mark.parametrize("fps", [0, -30.0, "30", None, float("nan"), 1e-9])
def test_bad_fps_is_one_line(tmp_path, fps):
    ann = write(tmp_path, af_mutate(lambda db: db["video_test_0000004"].update(fps=fps)))
    with pytest.raises(AnnotationError, match=r"anno.json: video 'video_test_0000004': field 'fps': expected a "
                                              r"positive frame rate") as info:
        load_annotations(ann, tmp_path, "Test")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- ActivityNet and Charades conventions

ANET = {
    "version": "VERSION 1.3",
    "taxonomy": [],
    "database": {
        "--1DO2V4K74": {"subset": "training", "duration": 211.53, "resolution": "1920x1080", "url": "u",
                        "annotations": [{"segment": [30.0, 200.0], "label": "Rock climbing"},
                                        {"segment": [205.0, 205.0], "label": "Rock climbing"},  # zero length
                                        {"segment": [209.0, 211.6], "label": "Rock climbing"},  # short, past the end
                                        {"segment": [212.0, 213.0], "label": "Rock climbing"}]},  # outside
        "--6bJUbfpnQ": {"subset": "validation", "duration": 26.75, "resolution": "640x360", "url": "u",
                        "annotations": [{"segment": [2.0, 27.1], "label": "Drinking beer"}]},
        "-0RfMuKUKJc": {"subset": "validation", "duration": 50.0, "resolution": "640x360", "url": "u",
                        "annotations": [{"segment": [5.0, 6.0], "label": "Drinking beer"}]},
        "00Dk03Jr70M": {"subset": "testing", "duration": 100.0, "resolution": "640x360", "url": "u",
                        "annotations": []},
    },
}


def test_activitynet_json_loads_with_prefix_and_decoder_frames(tmp_path):
    ann = write(tmp_path, ANET)
    train, names = load_annotations(ann, tmp_path, "training", video_prefix="v_")
    (rec,) = train
    assert names == ["Drinking beer", "Rock climbing"]
    assert rec.path == os.path.join(tmp_path, "v_--1DO2V4K74.mp4")
    assert rec.num_frames == UNKNOWN_FRAMES and not rec.frames_known  # no frame / fps: the decoder's
    # training: zero-length and outside dropped, past the end clipped to the json duration
    np.testing.assert_allclose(rec.segments, [[30.0, 200.0], [209.0, 211.53]])
    # evaluation: the file's segments, zero-length dropped (OpenTAD's evaluator: e - s <= 0)
    np.testing.assert_allclose(rec.evaluation_ground_truth[0], [[30.0, 200.0], [209.0, 211.6], [212.0, 213.0]])
    (test,) = [r for r in load_annotations(ann, tmp_path, "testing")[0]]
    assert len(test.segments) == 0


def test_min_segment_fraction_drops_short_training_segments_only(tmp_path):
    ann = write(tmp_path, ANET)
    (rec,), _ = load_annotations(ann, tmp_path, "training", min_segment_fraction=0.01)
    # (211.6 - 209) / 211.53 = 0.0123 > 0.01 kept; a 0.01 share or less is dropped
    np.testing.assert_allclose(rec.segments, [[30.0, 200.0], [209.0, 211.53]])
    (rec,), _ = load_annotations(ann, tmp_path, "training", min_segment_fraction=0.0123)
    np.testing.assert_allclose(rec.segments, [[30.0, 200.0]])
    assert len(rec.evaluation_ground_truth[0]) == 3  # evaluation scores every segment


def test_block_list_leaves_videos_out_of_every_subset(tmp_path):
    ann = write(tmp_path, ANET)
    test, _ = load_annotations(ann, tmp_path, "validation", blocked={"--6bJUbfpnQ", "not-in-the-file"})
    assert [r.video_id for r in test] == ["-0RfMuKUKJc"]
    with pytest.raises(AnnotationError, match=r"every video of subset 'training' \(1\) is in the block list"):
        load_annotations(ann, tmp_path, "training", blocked={"--1DO2V4K74"})


def test_block_list_files_text_and_json(tmp_path):
    from adatad.data.block_list import read_block_list

    text = write(tmp_path, "a\n\n b \nv_c\n", "missing_files.txt")
    assert read_block_list(text) == {"a", "b", "v_c"}
    assert read_block_list(write(tmp_path, '["x", "y"]', "blocked.json")) == {"x", "y"}
    assert read_block_list(write(tmp_path, "", "empty.txt")) == frozenset()
    with pytest.raises(AnnotationError, match=r"bad.json: expected a json list of video id strings .* found 3"):
        read_block_list(write(tmp_path, '["x", 3]', "bad.json"))
    with pytest.raises(AnnotationError, match=r"broken.json: invalid json at line 1"):
        read_block_list(write(tmp_path, '["x",', "broken.json"))
    with pytest.raises(AnnotationError, match=r"nope.txt: cannot read the block list \(data.block_list\)"):
        read_block_list(tmp_path / "nope.txt")


def test_block_list_and_prefix_through_the_config(tmp_path):
    from adatad.config import CONFIG_DIR, load_config
    from adatad.data.splits import load_splits

    ann = write(tmp_path, ANET)
    write(tmp_path, "--6bJUbfpnQ\n", "missing_files.txt")
    cfg = load_config(CONFIG_DIR / "synthetic.yaml", [
        f"data.annotation_file={ann}", f"data.video_dir={tmp_path}", "data.class_map_file=null",
        f"data.block_list={tmp_path / 'missing_files.txt'}", "data.video_prefix=v_", "model.head.num_classes=2"])
    train, test, names = load_splits(cfg)
    assert [r.video_id for r in test] == ["-0RfMuKUKJc"] and test[0].path.endswith("/v_-0RfMuKUKJc.mp4")
    assert len(train) == 1 and names == ["Drinking beer", "Rock climbing"]
    # class-agnostic: a 1-class head with the data set's class names
    agnostic = load_config(CONFIG_DIR / "synthetic.yaml", [
        f"data.annotation_file={ann}", f"data.video_dir={tmp_path}", "data.class_map_file=null",
        "data.class_agnostic=true", "model.head.num_classes=1"])
    assert load_splits(agnostic)[2] == ["Drinking beer", "Rock climbing"]


def test_fixed_fps_sizes_videos_from_the_duration(tmp_path):
    """Charades: int(duration x 30) frames at 30 fps, whatever `frame` / `fps` the json has."""
    data = copy.deepcopy(DB)
    data["database"]["video_test_0000004"]["duration"] = 30.99
    data["database"]["video_test_0000004"]["frame"] = 745  # 24 fps file: ignored
    (rec,), _ = load_annotations(write(tmp_path, data), tmp_path, "validation", fixed_fps=30)
    assert rec.num_frames == 929 and rec.fps == 30.0 and rec.frames_known  # int(929.7)
    (own,), _ = load_annotations(write(tmp_path, data, "b.json"), tmp_path, "validation")
    assert own.num_frames == 745 and own.fps == pytest.approx(745 / 30.99)
    data["database"]["video_test_0000004"]["duration"] = 0.02
    with pytest.raises(AnnotationError, match=r"video 'video_test_0000004': field 'duration': 0.02 s gives no "
                                              r"frame at data.fixed_fps=30"):
        load_annotations(write(tmp_path, data, "c.json"), tmp_path, "validation", fixed_fps=30)
