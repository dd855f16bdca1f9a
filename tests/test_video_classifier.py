"""External video classifiers (CUHK, InternVideo / InternVideo2 "standard") and the per-video merge of
a one-class detector in `WindowCollector.results`: tiny hand-made files, hand-computed outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.config import InferenceConfig
from adatad.data.annotations import VideoRecord
from adatad.engine.validation import WindowCollector
from adatad.postprocess import Detections
from adatad.video_classifier import (
    VideoClassifierError,
    fuse_detections,
    load_video_classifier,
)

CLASSES = ["Archery", "Bathing dog", "Cricket"]


def write_classifier(path: Path, results: dict, key: str = "class") -> Path:
    path.write_text(json.dumps({"results": results, key: CLASSES, "version": "test"}))
    return path


def two_detections() -> Detections:
    return Detections(torch.tensor([[0.0, 10.0], [20.0, 30.0]]), torch.tensor([0.9, 0.5]), torch.tensor([0, 0]))


def test_cuhk_fusion_repeats_the_list_per_top_class_without_resorting():
    fused = fuse_detections(two_detections(), np.array([0.1, 0.7, 0.2]), "cuhk", topk=2)
    assert fused.labels.tolist() == [1, 1, 2, 2]
    assert fused.segments.tolist() == [[0.0, 10.0], [20.0, 30.0]] * 2
    assert fused.scores.tolist() == pytest.approx([0.63, 0.35, 0.18, 0.10])  # 0.35 before 0.18: no re-sort


def test_standard_fusion_takes_the_square_root():
    fused = fuse_detections(two_detections(), np.array([0.1, 0.7, 0.2]), "standard", topk=2)
    assert fused.labels.tolist() == [1, 1, 2, 2]
    assert fused.scores.tolist() == pytest.approx([math.sqrt(0.63), math.sqrt(0.35), math.sqrt(0.18), math.sqrt(0.1)])


def test_ties_follow_opentads_sorts():
    probs = np.array([0.4, 0.4, 0.2])
    assert fuse_detections(two_detections(), probs, "cuhk", 1).labels.tolist() == [0, 0]  # argsort(-p)
    assert fuse_detections(two_detections(), probs, "standard", 1).labels.tolist() == [1, 1]  # argsort(p)[::-1]


def test_results_merge_vote_clip_and_fuse_a_one_class_video(tmp_path: Path):
    """The ActivityNet path end to end: class-agnostic soft-NMS, voting over every proposal,
    clipping to the video after voting, then the CUHK classes (labels are the classifier's names)."""
    path = write_classifier(tmp_path / "cuhk.json", {"vid1": [0.1, 0.7, 0.2], "other": [1.0, 0.0, 0.0]})
    record = VideoRecord(video_id="vid1", path="vid1.mp4", subset="validation", duration=25.0, num_frames=750,
                         fps=30.0, segments=np.zeros((0, 2)), labels=np.zeros(0, dtype=np.int64))
    collector = WindowCollector()
    collector.by_video[0].append(Detections(torch.tensor([[0.0, 10.0], [0.0, 10.5], [20.0, 31.0]]),
                                            torch.tensor([0.9, 0.6, 0.5]), torch.zeros(3, dtype=torch.long)))
    inference = InferenceConfig(pre_nms_thresh=None, pre_nms_topk=None, nms_sigma=0.7, max_seg_num=100,
                                min_score=0.001, multiclass_nms=False, voting_thresh=0.9, clip_before_nms=False,
                                external_classifier=str(path), external_classifier_type="cuhk")
    got = collector.results([record], ["action"], inference)["results"]["vid1"]
    end = round((0.9 * 10.0 + 0.6 * 10.5) / 1.5, 2)  # 10.2
    decayed = 0.6 * math.exp(-((10 / 10.5) ** 2) / 0.7)
    picks = [([0.0, end], 0.9), ([20.0, 25.0], 0.5), ([0.0, end], decayed)]  # C clipped after voting
    expected = [{"segment": seg, "label": name, "score": round(score * p, 4)}
                for name, p in (("Bathing dog", 0.7), ("Cricket", 0.2)) for seg, score in picks]
    assert got == expected
    # the same windows without a classifier: one class named by the caller's list
    plain = InferenceConfig(pre_nms_thresh=None, pre_nms_topk=None, multiclass_nms=False, voting_thresh=0.9,
                            clip_before_nms=False, max_seg_num=100, min_score=0.001)
    assert [e["label"] for e in collector.results([record], ["action"], plain)["results"]["vid1"]] == ["action"] * 3


def test_files_and_videos_are_found_with_the_v_prefix_or_without(tmp_path: Path):
    classifier = load_video_classifier(str(write_classifier(tmp_path / "c.json", {"abc": [0.2, 0.3, 0.5]},
                                                            key="classes")), "standard")
    assert classifier.class_names == CLASSES
    assert classifier.of_video("v_abc").tolist() == [0.2, 0.3, 0.5]
    with pytest.raises(VideoClassifierError, match=r"c.json: no classification for video 'xyz' \(1 videos"):
        classifier.of_video("xyz")


@pytest.mark.parametrize("content, message", [
    ("{", "not a readable json file"),
    (json.dumps({"results": {"a": [0.1, 0.2, 0.7]}}), "expected 'class' \\(or 'classes'\\)"),
    (json.dumps({"results": {}, "class": CLASSES}), "expected 'results'"),
    (json.dumps({"results": {"a": [0.1, 0.2]}, "class": CLASSES}), r"results\['a'\]: expected 3 finite numbers"),
    (json.dumps({"results": {"a": [0.1, "x", 0.2]}, "class": CLASSES}), r"results\['a'\]: expected 3"),
])
def test_bad_classifier_files_are_one_line(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VideoClassifierError, match=message) as info:
        load_video_classifier(str(path), "cuhk")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_negative_scores_for_sqrt(tmp_path: Path):
    with pytest.raises(VideoClassifierError, match="does not exist"):
        load_video_classifier(str(tmp_path / "none.json"), "cuhk")
    path = write_classifier(tmp_path / "logits.json", {"a": [-1.0, 2.0, 0.5]})
    assert load_video_classifier(str(path), "cuhk").of_video("a").tolist() == [-1.0, 2.0, 0.5]
    with pytest.raises(VideoClassifierError, match="negative scores"):
        load_video_classifier(str(path), "standard")


def test_a_changed_file_is_read_again(tmp_path: Path):
    path = write_classifier(tmp_path / "c.json", {"a": [0.2, 0.3, 0.5]})
    assert load_video_classifier(str(path), "cuhk").of_video("a")[2] == 0.5
    write_classifier(path, {"a": [0.2, 0.3, 0.25], "b": [0.0, 0.0, 1.0]})
    assert load_video_classifier(str(path), "cuhk").of_video("a")[2] == 0.25
