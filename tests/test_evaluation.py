"""mAP: hand-computed cases, an independent brute-force AP on random data, GT cleaning, file loading."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from adatad.evaluation import (
    EvaluationInputError,
    clean_ground_truth,
    evaluate_map,
    interpolated_ap,
    load_ground_truth,
    load_predictions,
)

T5 = ("0.3", "0.4", "0.5", "0.6", "0.7")


def gt_ev(s, e, label="A"):
    return {"segment": [s, e], "label": label}


def det(s, e, score, label="A"):
    return {"segment": [s, e], "label": label, "score": score}


def ap_a(gt, preds, **kw):
    return evaluate_map(gt, preds, **kw)["per_class"]["A"]


# ------------------------------------------------------------------------------------------ hand cases

def test_perfect_predictions_score_one():
    gt = {"v1": [gt_ev(1, 5), gt_ev(10, 20, "B")], "v2": [gt_ev(3, 4), gt_ev(30, 31, "B")]}
    preds = {v: [dict(e, score=0.9) for e in evs] for v, evs in gt.items()}
    m = evaluate_map(gt, preds)
    assert m["mAP"] == {k: 1.0 for k in T5}
    assert m["average_mAP"] == 1.0
    assert set(m["per_class"]) == {"A", "B"}


def test_false_positive_ranked_first():
    gt = {"v1": [gt_ev(0, 10)]}
    preds = {"v1": [det(50, 60, 0.9), det(0, 10, 0.8)]}
    # precision [0, 1/2] at recall [0, 1] -> envelope 1/2 over the whole recall step
    assert ap_a(gt, preds) == {k: 0.5 for k in T5}


def test_duplicates_are_false_positives():
    gt = {"v1": [gt_ev(0, 10)]}
    assert ap_a(gt, {"v1": [det(0, 10, 0.9), det(0, 10, 0.8)]}) == {k: 1.0 for k in T5}
    gt = {"v1": [gt_ev(0, 10), gt_ev(20, 30)]}
    preds = {"v1": [det(0, 10, 0.9), det(0, 10, 0.8), det(20, 30, 0.7)]}
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 0.5 * 1 + 0.5 * 2/3
    for v in ap_a(gt, preds).values():
        assert v == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_threshold_dependence():
    gt = {"v1": [gt_ev(0, 10)]}
    preds = {"v1": [det(5, 15, 0.9)]}  # tIoU 5 / 15 = 1/3
    assert ap_a(gt, preds) == {"0.3": 1.0, "0.4": 0.0, "0.5": 0.0, "0.6": 0.0, "0.7": 0.0}
    preds = {"v1": [det(0, 5, 0.9)]}  # tIoU exactly 0.5 counts at 0.5
    assert ap_a(gt, preds)["0.5"] == 1.0 and ap_a(gt, preds)["0.6"] == 0.0


def test_class_without_detections_and_empty_predictions():
    gt = {"v1": [gt_ev(0, 10), gt_ev(20, 30, "B")]}
    m = evaluate_map(gt, {"v1": [det(0, 10, 0.9)]})
    assert m["per_class"]["B"] == {k: 0.0 for k in T5}
    assert m["mAP"] == {k: 0.5 for k in T5} and m["average_mAP"] == 0.5
    m = evaluate_map(gt, {})
    assert m["mAP"] == {k: 0.0 for k in T5} and m["average_mAP"] == 0.0


def test_best_unmatched_gt_is_taken():
    gt = {"v1": [gt_ev(0, 10), gt_ev(4, 14)]}
    # first detection overlaps both; it takes the higher tIoU (the second GT), the next one the first GT
    preds = {"v1": [det(4, 13, 0.9), det(1, 10, 0.8)]}
    assert ap_a(gt, preds, tiou_thresholds=(0.5,)) == {"0.5": 1.0}
    # greedy, not optimal: [2, 12] ties (2/3, 2/3) and takes the first GT; [0, 9] then finds its only
    # reachable GT (tIoU 0.9; 0.36 to the other) taken -> a false positive, AP = 1/2
    preds = {"v1": [det(2, 12, 0.9), det(0, 9, 0.8)]}
    assert ap_a(gt, preds, tiou_thresholds=(0.6,)) == {"0.6": 0.5}


def test_gt_cleaning_and_ignored_inputs():
    events = [gt_ev(0, 10), gt_ev(0.0005, 10.0009), gt_ev(0, 10, "B"), gt_ev(5, 5), gt_ev(7, 6)]
    assert clean_ground_truth(events) == [gt_ev(0.0, 10.0), gt_ev(0.0, 10.0, "B")]
    gt = {"v1": [gt_ev(0, 10), gt_ev(0, 10), gt_ev(3, 3), gt_ev(0, 4, "Ambiguous")]}
    preds = {"v1": [det(0, 10, 0.9), det(40, 50, 0.95, "NotAClass")], "v_unknown": [det(0, 10, 0.99)]}
    m = evaluate_map(gt, preds, class_names=["A", "B"])  # B has no GT: left out; Ambiguous not a class
    assert set(m["per_class"]) == {"A"}
    assert m["average_mAP"] == 1.0  # duplicate GT removed, unknown label / unknown video ignored
    with pytest.raises(EvaluationInputError, match="no event"):
        evaluate_map(gt, preds, class_names=["B"])


def test_detection_in_video_without_gt_of_that_class_is_false_positive():
    gt = {"v1": [gt_ev(0, 10)], "v2": []}
    preds = {"v2": [det(0, 10, 0.95)], "v1": [det(0, 10, 0.9)]}
    assert ap_a(gt, preds)["0.5"] == 0.5


def test_interpolated_ap_envelope():
    prec = np.array([[1.0, 0.5, 2 / 3, 0.5]])
    rec = np.array([[0.25, 0.25, 0.5, 0.5]])
    assert interpolated_ap(prec, rec)[0] == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)


# --------------------------------------------------------------------------- brute force on random data

def brute_force_ap(gt: dict, preds: dict, label: str, thresholds) -> list[float]:
    """Straight restatement of the ActivityNet procedure with plain loops (no NumPy)."""
    gts = [(v, ev["segment"]) for v, evs in gt.items() for ev in clean_ground_truth(evs) if ev["label"] == label]
    dets = [(v, d["segment"], d["score"]) for v, ds in preds.items() if v in gt for d in ds if d["label"] == label]
    dets.sort(key=lambda d: -d[2])  # stable: ties keep input order

    def tiou(a, b):
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        union = (a[1] - a[0]) + (b[1] - b[0]) - inter
        return inter / max(union, 1e-8)

    aps = []
    for thr in thresholds:
        used = [False] * len(gts)
        tp = []
        for v, seg, _ in dets:
            cands = [(tiou(seg, g), j) for j, (gv, g) in enumerate(gts) if gv == v]
            cands.sort(key=lambda c: -c[0])  # highest tIoU first; ties keep GT order
            hit = False
            for iou, j in cands:
                if iou < thr:
                    break
                if used[j]:
                    continue
                used[j] = hit = True
                break
            tp.append(hit)
        prec, rec, n_tp = [], [], 0
        for i, t in enumerate(tp):
            n_tp += t
            prec.append(n_tp / (i + 1))
            rec.append(n_tp / len(gts))
        mprec, mrec = [0.0] + prec + [0.0], [0.0] + rec + [1.0]
        for i in range(len(mprec) - 2, -1, -1):
            mprec[i] = max(mprec[i], mprec[i + 1])
        aps.append(sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
    return aps


def random_case(seed: int):
    rng = random.Random(seed)
    labels = ["A", "B", "C"]
    gt, preds = {}, {}
    for v in range(8):
        vid = f"video_{v}"
        evs = []
        for _ in range(rng.randrange(0, 6)):
            s = rng.uniform(0, 100)
            evs.append(gt_ev(s, s + rng.uniform(1, 15), rng.choice(labels)))
        if evs and rng.random() < 0.3:
            evs.append(dict(evs[0]))  # exact duplicate GT
        gt[vid] = evs
        ds = []
        for _ in range(rng.randrange(0, 25)):
            if evs and rng.random() < 0.6:  # near a GT, sometimes with the wrong label
                g = rng.choice(evs)
                s, e = g["segment"]
                j = (e - s) * 0.4
                lab = g["label"] if rng.random() < 0.8 else rng.choice(labels)
                ds.append(det(s + rng.uniform(-j, j), e + rng.uniform(-j, j), rng.random(), lab))
            else:
                s = rng.uniform(0, 100)
                ds.append(det(s, s + rng.uniform(1, 15), rng.random(), rng.choice(labels)))
        if ds and rng.random() < 0.3:
            ds.append(dict(ds[0]))  # duplicate detection (tied score)
        preds[vid] = ds
    preds["video_not_in_gt"] = [det(0, 10, 0.99, "A")]
    return gt, preds


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_on_random_data(seed):
    gt, preds = random_case(seed)
    thresholds = (0.1, 0.3, 0.5, 0.7, 0.9)
    m = evaluate_map(gt, preds, tiou_thresholds=thresholds)
    for label, got in m["per_class"].items():
        expected = brute_force_ap(gt, preds, label, thresholds)
        assert list(got.values()) == pytest.approx(expected, abs=1e-12), label
    assert len(m["per_class"]) >= 2


# ------------------------------------------------------------------------------------------ loading

def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_load_ground_truth_subset(tmp_path):
    db = {"database": {
        "v_val": {"subset": "validation", "duration": 10, "annotations": [gt_ev(1, 2, "X")]},
        "v_val_empty": {"subset": "validation", "annotations": []},
        "v_train": {"subset": "training", "annotations": [gt_ev(1, 2, "Y")]},
    }}
    path = write(tmp_path, "gt.json", db)
    assert load_ground_truth(path, "validation") == {"v_val": [gt_ev(1.0, 2.0, "X")], "v_val_empty": []}
    assert set(load_ground_truth(path, ["training", "validation"])) == {"v_val", "v_val_empty", "v_train"}
    with pytest.raises(EvaluationInputError, match=r"gt.json: no video has subset \['test'\].*training"):
        load_ground_truth(path, "test")


@pytest.mark.parametrize("content,pattern", [
    ('{"database": {', r"gt.json: invalid JSON at line 1 column 15"),
    ({"videos": {}}, r"gt.json: missing object 'database'"),
    ({"database": {"v": {"annotations": []}}}, r"gt.json: database\['v'\]: expected an object with key 'subset'"),
    ({"database": {"v": {"subset": "validation", "annotations": [{"segment": [1, "x"], "label": "A"}]}}},
     r"gt.json: database\['v'\].annotations\[0\]: 'segment' must hold two numbers"),
])
def test_load_ground_truth_errors(tmp_path, content, pattern):
    path = write(tmp_path, "gt.json", content)
    with pytest.raises(EvaluationInputError, match=pattern):
        load_ground_truth(path, "validation")


@pytest.mark.parametrize("layout", ["opentad", "actionformer"])
def test_validation_scores_the_files_segments_as_score_py_does(tmp_path, layout):
    """Segments outside their video: training drops or clips them, but validation (records ->
    ground_truth_of) and pipelines/score.py (the json) both score the file's own segments."""
    from adatad.data.annotations import load_annotations
    from adatad.engine.validation import ground_truth_of, metrics_of

    video = {"duration": 20.0, "annotations": [
        gt_ev(2, 5, "A"), gt_ev(21, 24, "A"),  # the second starts after the video ends
        gt_ev(18, 23, "B"), gt_ev(-1, 3, "B"),  # partly outside
        gt_ev(8, 8, "A"),  # zero length: scored by neither
        gt_ev(2, 5, "A"),  # exact duplicate
    ]}
    if layout == "opentad":
        db = {"database": {"v": {**video, "subset": "validation", "frame": 600}}}
    else:
        db = {"version": "Thumos14-30fps", "database": {"v": {**video, "subset": "Test", "fps": 30.0},
                                                        "w": {"subset": "Validation", "duration": 5.0, "fps": 30.0,
                                                              "annotations": []}}}
    path = write(tmp_path, "gt.json", db)
    records, names = load_annotations(path, tmp_path, "validation", ["A", "B"])
    from_records = ground_truth_of(records, names)
    assert from_records == {"v": [gt_ev(2.0, 5.0, "A"), gt_ev(21.0, 24.0, "A"), gt_ev(18.0, 23.0, "B"),
                                  gt_ev(-1.0, 3.0, "B")]}
    np.testing.assert_array_equal(records[0].segments, [[2, 5], [18, 20], [0, 3]])  # what training uses

    # detections clipped to the video: the GT after the end can never be found, as in OpenTAD
    preds = {"results": {"v": [det(2, 5, 0.9, "A"), det(18, 20, 0.8, "B"), det(0, 3, 0.7, "B")]}}
    by_validation = metrics_of(preds, records, names, (0.3, 0.5, 0.7))
    by_score = evaluate_map(load_ground_truth(path, "validation"), preds["results"], names, (0.3, 0.5, 0.7))
    assert by_validation == by_score
    assert by_score["per_class"]["A"]["0.3"] == pytest.approx(0.5)  # 1 of 2 GTs found: recall 0.5
    # [18, 20] vs the file's [18, 23]: tIoU 0.4 (1.0 against training's clipped [18, 20]); [0, 3] vs [-1, 3]: 0.75
    assert by_score["per_class"]["B"] == pytest.approx({"0.3": 1.0, "0.5": 0.25, "0.7": 0.25})


def test_load_ground_truth_missing_file(tmp_path):
    with pytest.raises(EvaluationInputError, match="nope.json: file not found"):
        load_ground_truth(tmp_path / "nope.json")


def test_load_predictions(tmp_path):
    res = {"results": {"v": [det(1, 2, 0.5)]}}
    assert load_predictions(write(tmp_path, "p.json", res)) == res["results"]


@pytest.mark.parametrize("content,pattern", [
    ('{"results": [1,\n 2', r"p.json: invalid JSON at line 2"),
    ({"res": {}}, r"p.json: missing key 'results'"),
    ({"results": []}, r"p.json: 'results' must be an object"),
    ({"results": {"v": {}}}, r"p.json: results\['v'\] must be a list"),
    ({"results": {"v": [det(1, 2, 0.5), {"segment": [1, 2], "label": "A"}]}},
     r"p.json: results\['v'\]\[1\]: expected an object with 'segment', 'label' and 'score'"),
    ({"results": {"v": [det(1, 2, None)]}}, r"results\['v'\]\[0\]: 'score' must be a finite number"),
    ({"results": {"v": [det(1, 2, 0.5, 3)]}}, r"results\['v'\]\[0\]: 'label' must be a string"),
    ({"results": {"v": [{"segment": [1], "label": "A", "score": 1}]}}, r"'segment' must be \[start, end\]"),
])
def test_load_predictions_errors(tmp_path, content, pattern):
    path = write(tmp_path, "p.json", content)
    with pytest.raises(EvaluationInputError, match=pattern) as info:
        load_predictions(path)
    assert "\n" not in str(info.value)


def test_bad_thresholds():
    with pytest.raises(EvaluationInputError, match="thresholds"):
        evaluate_map({"v": [gt_ev(0, 1)]}, {}, tiou_thresholds=(0.0,))
