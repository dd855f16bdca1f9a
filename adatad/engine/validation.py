"""Sliding-window predictions -> one detection list per video -> mAP (docs/recipe.md §8-9)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adatad.config import InferenceConfig
from adatad.data.annotations import VideoRecord
from adatad.evaluation import DEFAULT_TIOU_THRESHOLDS, evaluate_map
from adatad.postprocess import Detections, merge_video, to_results_json, window_to_seconds
from adatad.video_classifier import load_video_classifier


class WindowCollector:
    """Accumulates per-window detections (already in seconds, not yet clipped to the video) under
    their video index."""

    def __init__(self) -> None:
        self.by_video: dict[int, list[Detections]] = defaultdict(list)

    def add_batch(self, detections: list[Detections], batch: dict[str, torch.Tensor]) -> None:
        """Convert a batch's window detections (positions) to seconds and keep them."""
        for i, dets in enumerate(detections):
            if "valid" in batch and not bool(batch["valid"][i]):
                continue
            self.by_video[int(batch["video_index"][i])].append(
                window_to_seconds(
                    dets,
                    window_start_frame=int(batch["window_start_frame"][i]),
                    frame_stride=int(batch["frame_stride"][i]),
                    fps=float(batch["fps"][i]),
                    duration=float(batch["duration"][i]),
                )
            )

    def merge(self, other: dict[int, list[Detections]]) -> None:
        for key, dets in other.items():
            self.by_video[key].extend(dets)

    def results(self, records: list[VideoRecord], class_names: list[str], inference: InferenceConfig) -> dict:
        """{"results": {video_id: [...]}} after merging windows per video: soft-NMS (per class, or
        class-agnostic with segment voting), clipping to the video, and, with an external video
        classifier, its classes and fused scores (labels are then the classifier's class names)."""
        classifier = (load_video_classifier(inference.external_classifier, inference.external_classifier_type)
                      if inference.external_classifier else None)
        merged = {}
        for index, windows in sorted(self.by_video.items()):
            record = records[index]
            dets = merge_video(
                windows, sigma=inference.nms_sigma, max_seg_num=inference.max_seg_num,
                min_score=inference.min_score, multiclass=inference.multiclass_nms,
                voting_thresh=inference.voting_thresh, duration=record.duration,
                clip_before_nms=inference.clip_before_nms,
            )
            if classifier is not None:
                dets = classifier.fuse(dets, record.video_id, inference.external_classifier_topk)
            merged[record.video_id] = dets
        return to_results_json(merged, classifier.class_names if classifier is not None else class_names)


def ground_truth_of(records: list[VideoRecord], class_names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Evaluation ground truth in the json-like layout `evaluate_map` takes: each record's
    `evaluation_ground_truth`, the segments as the file has them (not training's clipped ones), so
    validation scores what `pipelines/score.py` scores from the json (docs/recipe.md section 1)."""
    truth = {}
    for r in records:
        segments, labels = r.evaluation_ground_truth
        truth[r.video_id] = [{"segment": [float(s), float(e)], "label": class_names[int(c)]}
                             for (s, e), c in zip(np.asarray(segments).reshape(-1, 2), labels, strict=True)]
    return truth


def metrics_of(results: dict, records: list[VideoRecord], class_names: list[str],
               tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS) -> dict[str, Any]:
    return evaluate_map(ground_truth_of(records, class_names), results["results"], class_names, tiou_thresholds)
