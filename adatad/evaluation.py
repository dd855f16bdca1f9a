"""Temporal action detection mAP at tIoU thresholds (ActivityNet / THUMOS-14 protocol).

Recipe: docs/recipe.md §9 (deviation D9: predictions for videos absent from the GT are ignored). Per class, detections of all videos are sorted by score;
each is matched to the highest-tIoU unmatched GT of its video at every threshold (greedy), and AP is
the VOC-2011 interpolated AP (monotone precision envelope summed over recall steps).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adatad.data.annotations import resolve_subset

DEFAULT_TIOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


class EvaluationInputError(ValueError):
    """Bad ground-truth or prediction input; the message is one line naming the file/key and the problem."""


# ----------------------------------------------------------------------------------------------- loading

def _read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise EvaluationInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise EvaluationInputError(f"{path}: is a directory, expected a json file") from None
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise EvaluationInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise EvaluationInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _segment(value: Any, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise EvaluationInputError(f"{where}: 'segment' must be [start, end], got {value!r}")
    try:
        s, e = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise EvaluationInputError(f"{where}: 'segment' must hold two numbers, got {value!r}") from None
    if not (math.isfinite(s) and math.isfinite(e)):
        raise EvaluationInputError(f"{where}: 'segment' must be finite, got {value!r}")
    return [s, e]


def load_ground_truth(annotation_file: str | os.PathLike, subset: str | Sequence[str] = "validation") -> dict:
    """THUMOS json, OpenTAD's or ActionFormer's ({"database": {vid: {"subset", "annotations": [{"segment",
    "label"}]}}}) ->
    {video_id: [{"segment": [s, e], "label": name}, ...]} for the videos of `subset` (videos without
    annotations are kept with an empty list: their detections are false positives)."""
    data = _read_json(annotation_file)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise EvaluationInputError(f"{annotation_file}: missing object 'database' (expected THUMOS layout "
                                   '{"database": {video_id: {"subset": ..., "annotations": [...]}}})')
    # OpenTAD's subset names also select ActionFormer's (its "Test" for "validation"), as training reads them.
    present = {str(v.get("subset")) for v in data["database"].values() if isinstance(v, dict)}
    subsets = {resolve_subset(present, s) for s in ([subset] if isinstance(subset, str) else subset)}
    gt: dict[str, list[dict]] = {}
    seen_subsets: set[str] = set()
    for vid, video in data["database"].items():
        where = f"{annotation_file}: database[{vid!r}]"
        if not isinstance(video, dict) or "subset" not in video:
            raise EvaluationInputError(f"{where}: expected an object with key 'subset'")
        seen_subsets.add(str(video["subset"]))
        if video["subset"] not in subsets:
            continue
        anns = video.get("annotations", [])
        if not isinstance(anns, list):
            raise EvaluationInputError(f"{where}: 'annotations' must be a list, got {type(anns).__name__}")
        events = []
        for i, ann in enumerate(anns):
            w = f"{where}.annotations[{i}]"
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise EvaluationInputError(f"{w}: expected an object with 'segment' and 'label'")
            if not isinstance(ann["label"], str):
                raise EvaluationInputError(f"{w}: 'label' must be a string, got {ann['label']!r}")
            events.append({"segment": _segment(ann["segment"], w), "label": ann["label"]})
        gt[str(vid)] = events
    if not gt:
        raise EvaluationInputError(f"{annotation_file}: no video has subset {sorted(subsets)} "
                                   f"(subsets present: {sorted(seen_subsets)})")
    return gt


def load_ground_truth_of_all_subsets(annotation_file: str | os.PathLike) -> dict:
    """Every video of the annotation file, whatever its subset (e.g. for drawing timelines)."""
    data = _read_json(annotation_file)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise EvaluationInputError(f"{annotation_file}: missing object 'database' (expected the THUMOS layout)")
    subsets = {str(v.get("subset")) for v in database.values() if isinstance(v, dict)}
    return load_ground_truth(annotation_file, sorted(subsets))


def load_predictions(path: str | os.PathLike) -> dict:
    """Results json ({"results": {video_id: [{"segment", "label", "score"}]}}) -> the inner dict, validated."""
    data = _read_json(path)
    if not isinstance(data, dict) or "results" not in data:
        raise EvaluationInputError(f"{path}: missing key 'results' (expected "
                                   '{"results": {video_id: [{"segment": [s, e], "label": name, "score": x}]}})')
    results = data["results"]
    if not isinstance(results, dict):
        raise EvaluationInputError(f"{path}: 'results' must be an object of video_id -> list, "
                                   f"got {type(results).__name__}")
    _prediction_arrays(results, source=str(path))  # validate every entry now, with the file name
    return results


# ------------------------------------------------------------------------------------------- primitives

def clean_ground_truth(events: Sequence[Mapping], tol: float = 1e-3) -> list[dict]:
    """Drop events with duration <= 0 and duplicates (same label, both ends within `tol`), as OpenTAD does."""
    kept: list[dict] = []
    for ev in events:
        s, e = ev["segment"]
        if e - s <= 0:
            continue
        if any(k["label"] == ev["label"] and abs(k["segment"][0] - s) <= tol and abs(k["segment"][1] - e) <= tol
               for k in kept):
            continue
        kept.append({"segment": [float(s), float(e)], "label": ev["label"]})
    return kept


def segment_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of segments a (..., 2) and b (..., 2), broadcast over leading axes."""
    inter = np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter / np.maximum(union, 1e-8)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """VOC-2011 interpolated AP of each row of (T, N) precision / recall curves -> (T,)."""
    precision, recall = np.atleast_2d(precision), np.atleast_2d(recall)
    t = precision.shape[0]
    mprec = np.concatenate([np.zeros((t, 1)), precision, np.zeros((t, 1))], axis=1)
    mrec = np.concatenate([np.zeros((t, 1)), recall, np.ones((t, 1))], axis=1)
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
    return ((mrec[:, 1:] - mrec[:, :-1]) * mprec[:, 1:]).sum(axis=1)  # zero-width steps add nothing


def match_detections(gt_video: np.ndarray, gt_segments: np.ndarray, pred_video: np.ndarray,
                     pred_segments: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of one class. Predictions must already be in descending score order.

    Returns tp (T, P) bool. Videos are independent, so the greedy loop runs over the rank of a
    prediction within its video, vectorised over videos, GTs and thresholds. Predictions that reach no
    GT at the lowest threshold are false positives and skip the loop.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    num_t, num_p = len(thresholds), len(pred_video)
    tp = np.zeros((num_t, num_p), dtype=bool)
    if num_p == 0 or len(gt_video) == 0:
        return tp
    g_order = np.argsort(gt_video, kind="stable")
    videos, g_start, g_count = np.unique(gt_video[g_order], return_index=True, return_counts=True)
    num_v, g_max = len(videos), int(g_count.max())
    slot = np.arange(len(g_order)) - np.repeat(g_start, g_count)
    gt_pad = np.full((num_v, g_max, 2), np.nan)
    gt_pad[np.repeat(np.arange(num_v), g_count), slot] = gt_segments[g_order]

    row = np.minimum(np.searchsorted(videos, pred_video), num_v - 1)
    has_gt = videos[row] == pred_video
    iou = np.where(has_gt[:, None], segment_iou(pred_segments[:, None, :], gt_pad[row]), -1.0)
    iou = np.nan_to_num(iou, nan=-1.0)  # padded GT slots never match
    cand = np.flatnonzero(iou.max(axis=1) >= thresholds.min())
    if len(cand) == 0:
        return tp
    order = np.argsort(row[cand], kind="stable")  # group by video, keep score order inside
    cand, rows = cand[order], row[cand[order]]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(cand)) - first
    iou_pad = np.full((num_v, int(rank.max()) + 1, g_max), -1.0)
    iou_pad[rows, rank] = iou[cand]

    locked = np.zeros((num_t, num_v, g_max), dtype=bool)
    tp_pad = np.zeros((num_t, num_v, iou_pad.shape[1]), dtype=bool)
    thr = thresholds[:, None, None]
    for k in range(iou_pad.shape[1]):
        cur = iou_pad[None, :, k, :]  # (1, V, G)
        score = np.where((cur >= thr) & ~locked, cur, -1.0)  # (T, V, G)
        best = score.argmax(axis=2)  # (T, V): first of equal tIoUs
        hit = score.max(axis=2) >= 0
        tp_pad[:, :, k] = hit
        ti, vi = np.nonzero(hit)
        locked[ti, vi, best[ti, vi]] = True
    tp[:, cand] = tp_pad[:, rows, rank]
    return tp


def class_average_precision(gt_video: np.ndarray, gt_segments: np.ndarray, pred_video: np.ndarray,
                            pred_segments: np.ndarray, pred_scores: np.ndarray,
                            thresholds: Sequence[float]) -> np.ndarray:
    """AP (T,) of one class; videos are integer ids shared by GT and predictions."""
    num_t = len(thresholds)
    if len(pred_scores) == 0:
        return np.zeros(num_t)
    order = np.argsort(-pred_scores, kind="stable")
    tp = match_detections(gt_video, gt_segments, pred_video[order], pred_segments[order], np.asarray(thresholds))
    tp_cum = np.cumsum(tp, axis=1, dtype=np.float64)
    recall = tp_cum / max(len(gt_video), 1)
    precision = tp_cum / np.arange(1, tp.shape[1] + 1)
    return interpolated_ap(precision, recall)


# ------------------------------------------------------------------------------------------- evaluation

def _prediction_arrays(predictions: Mapping[str, Any], source: str = "predictions"):
    """Validate predictions and flatten them to (video ids, entries per video, segments (N, 2),
    scores (N,), labels list)."""
    vids, counts, segs, scores, labels = [], [], [], [], []
    for vid, entries in predictions.items():
        if not isinstance(entries, list):
            raise EvaluationInputError(f"{source}: results[{vid!r}] must be a list, got {type(entries).__name__}")
        try:  # fast path; on any problem fall through to the entry-by-entry check for a precise message
            s = np.asarray([e["segment"] for e in entries], dtype=np.float64).reshape(len(entries), 2)
            sc = np.asarray([e["score"] for e in entries], dtype=np.float64).reshape(len(entries))
            lab = [e["label"] for e in entries]
            ok = np.isfinite(s).all() and np.isfinite(sc).all() and all(isinstance(x, str) for x in lab)
        except (KeyError, TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            _check_entries(entries, f"{source}: results[{vid!r}]")
        vids.append(str(vid))
        counts.append(len(entries))
        segs.append(s)
        scores.append(sc)
        labels.extend(lab)
    segs_arr = np.concatenate(segs) if segs else np.zeros((0, 2))
    scores_arr = np.concatenate(scores) if scores else np.zeros(0)
    return vids, counts, segs_arr, scores_arr, labels


def _check_entries(entries: list, where: str) -> None:
    for i, e in enumerate(entries):
        w = f"{where}[{i}]"
        if not isinstance(e, dict) or not {"segment", "label", "score"} <= e.keys():
            raise EvaluationInputError(f"{w}: expected an object with 'segment', 'label' and 'score', got {e!r:.80}")
        _segment(e["segment"], w)
        if not isinstance(e["label"], str):
            raise EvaluationInputError(f"{w}: 'label' must be a string, got {e['label']!r}")
        if isinstance(e["score"], bool) or not isinstance(e["score"], (int, float)) or not math.isfinite(e["score"]):
            raise EvaluationInputError(f"{w}: 'score' must be a finite number, got {e['score']!r}")
    raise EvaluationInputError(f"{where}: malformed entries")  # unreachable unless a check above is missing


def evaluate_map(ground_truth: Mapping[str, Sequence[Mapping]], predictions: Mapping[str, Sequence[Mapping]],
                 class_names: Sequence[str] | None = None,
                 tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS) -> dict:
    """mAP per tIoU threshold, their average, and per-class AP (all fractions in [0, 1]).

    - classes: `class_names`, or every label in the GT when None; GT events with other labels
      (e.g. "Ambiguous") and predictions with labels outside the classes are ignored;
    - a class without any GT event is left out of the mean (its AP is undefined), as in OpenTAD;
    - predictions for videos absent from `ground_truth` are ignored; videos present in the GT with no
      event of a class turn that class's detections there into false positives.
    Returns {"mAP": {"0.3": x, ...}, "average_mAP": y, "per_class": {name: {"0.3": ap, ...}}}.
    """
    thresholds = [float(t) for t in tiou_thresholds]
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise EvaluationInputError(f"tIoU thresholds must be in (0, 1], got {list(tiou_thresholds)}")
    video_index = {str(v): i for i, v in enumerate(ground_truth)}
    clean = {str(v): clean_ground_truth(evs) for v, evs in ground_truth.items()}
    names = sorted({ev["label"] for evs in clean.values() for ev in evs}) if class_names is None else list(class_names)
    class_index = {n: i for i, n in enumerate(names)}

    gt_v, gt_c, gt_s = [], [], []
    for vid, evs in clean.items():
        for ev in evs:
            if ev["label"] in class_index:
                gt_v.append(video_index[vid])
                gt_c.append(class_index[ev["label"]])
                gt_s.append(ev["segment"])
    gt_v_arr, gt_c_arr = np.asarray(gt_v, dtype=np.int64), np.asarray(gt_c, dtype=np.int64)
    gt_s_arr = np.asarray(gt_s, dtype=np.float64).reshape(-1, 2)
    if len(gt_v) == 0:
        raise EvaluationInputError(f"ground truth has no event of any of the {len(names)} classes "
                                   f"(labels present: {sorted({ev['label'] for e in clean.values() for ev in e})})")

    p_vids, p_counts, p_segs, p_scores, p_labels = _prediction_arrays(predictions)
    p_v = np.repeat(np.asarray([video_index.get(v, -1) for v in p_vids], dtype=np.int64), p_counts)
    p_c = np.asarray([class_index.get(lab, -1) for lab in p_labels], dtype=np.int64)
    keep = (p_v >= 0) & (p_c >= 0)
    p_v, p_c, p_segs, p_scores = p_v[keep], p_c[keep], p_segs[keep], p_scores[keep]

    keys = [f"{t:g}" for t in thresholds]
    per_class: dict[str, dict[str, float]] = {}
    aps = []
    for c, name in enumerate(names):
        g, p = gt_c_arr == c, p_c == c
        if not g.any():
            continue
        ap = class_average_precision(gt_v_arr[g], gt_s_arr[g], p_v[p], p_segs[p], p_scores[p], thresholds)
        aps.append(ap)
        per_class[name] = {k: float(a) for k, a in zip(keys, ap, strict=True)}
    m_ap = np.mean(aps, axis=0)
    return {"mAP": {k: float(a) for k, a in zip(keys, m_ap, strict=True)}, "average_mAP": float(m_ap.mean()),
            "per_class": per_class}


def format_map_table(metrics: dict) -> str:
    """The mAP per tIoU and the average, in percent, as the commands print it."""
    rows = [f"{'tIoU':>7}  {'mAP (%)':>8}"]
    rows += [f"{float(t):>7.2f}  {100 * v:>8.2f}" for t, v in metrics["mAP"].items()]
    rows.append(f"{'average':>7}  {100 * metrics['average_mAP']:>8.2f}")
    return "\n".join(rows)
