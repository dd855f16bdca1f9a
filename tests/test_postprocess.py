"""Window decoding, conversion to seconds, soft-NMS (vs a plain-Python reference) and results json."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from adatad.postprocess import (
    Detections,
    decode_window,
    detections_to_entries,
    merge_video,
    soft_nms,
    to_results_json,
    window_to_seconds,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ decoding

def test_decode_window_hand_built():
    strides = [1, 2]
    cls = [torch.full((2, 4, 2), -20.0), torch.full((2, 2, 2), -20.0)]
    reg = [torch.zeros(2, 4, 2), torch.zeros(2, 2, 2)]
    masks = [torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)]
    cls[0][0, 2, 1] = 2.0  # level 0, t=2 (position 2), class 1
    reg[0][0, 2] = torch.tensor([1.5, 0.5])
    cls[1][0, 1, 0] = 0.0  # level 1, t=1 (position 2), class 0, score 0.5
    reg[1][0, 1] = torch.tensor([1.0, 3.0])
    cls[0][0, 3, 0] = 5.0  # high score but padded: must vanish
    masks[0][0, 3] = False
    cls[1][1, 0, 1] = 1.0  # video 1: level 1, t=0
    reg[1][1, 0] = torch.tensor([0.0, 2.0])

    out = decode_window(cls, reg, masks, strides)
    assert len(out) == 2
    d0, d1 = out
    assert d0.labels.tolist() == [1, 0]
    torch.testing.assert_close(d0.scores, torch.sigmoid(torch.tensor([2.0, 0.0])))
    torch.testing.assert_close(d0.segments, torch.tensor([[0.5, 2.5], [0.0, 8.0]]))
    assert d1.labels.tolist() == [1] and d1.segments.tolist() == [[0.0, 4.0]]
    assert d0.segments.device.type == "cpu" and d0.labels.dtype == torch.int64


def test_decode_window_threshold_and_topk():
    torch.manual_seed(0)
    strides = [1, 2, 4]
    cls = [torch.randn(1, t, 5) * 3 for t in (32, 16, 8)]
    reg = [torch.rand(1, t, 2) for t in (32, 16, 8)]
    masks = [torch.ones(1, t, dtype=torch.bool) for t in (32, 16, 8)]
    all_scores = torch.cat(cls, 1).sigmoid().flatten()
    d = decode_window(cls, reg, masks, strides, pre_nms_thresh=0.3, pre_nms_topk=10_000)[0]
    assert len(d) == int((all_scores > 0.3).sum())
    d = decode_window(cls, reg, masks, strides, pre_nms_thresh=0.001, pre_nms_topk=20)[0]
    assert len(d) == 20
    torch.testing.assert_close(d.scores, all_scores.sort(descending=True).values[:20])


def test_window_to_seconds():
    d = Detections(torch.tensor([[-3.0, 10.0], [100.0, 900.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 1]))
    s = window_to_seconds(d, window_start_frame=60, frame_stride=4, fps=30.0, duration=50.0)
    torch.testing.assert_close(s.segments, torch.tensor([[(-12 + 60) / 30, (40 + 60) / 30], [(400 + 60) / 30, 50.0]]))
    s = window_to_seconds(d, window_start_frame=0, frame_stride=4, fps=30.0, duration=50.0)
    assert s.segments[0, 0] == 0.0  # clamped at 0
    assert s.scores.tolist() == d.scores.tolist() and s.labels.tolist() == [0, 1]


# ------------------------------------------------------------------------------------------ soft-NMS

def reference_soft_nms(segs, scores, labels, sigma=0.7, max_seg_num=2000, min_score=0.0):
    """Plain-Python port of the reference: per class, repeatedly pick the max and decay the rest by
    exp(-IoU^2 / sigma), dropping boxes below min_score; keep max_seg_num per class, then overall."""
    out = []
    for c in sorted(set(labels)):
        boxes = [[s, e, sc] for (s, e), sc, lab in zip(segs, scores, labels, strict=True) if lab == c]
        picked = []
        while boxes:
            i = max(range(len(boxes)), key=lambda k: boxes[k][2])
            s, e, sc = boxes.pop(i)
            if sc < min_score:
                break
            picked.append((s, e, sc, c))
            for b in boxes:
                inter = max(0.0, min(e, b[1]) - max(s, b[0]))
                union = (e - s) + (b[1] - b[0]) - inter
                iou = inter / max(union, 1e-8)
                b[2] *= math.exp(-iou * iou / sigma)
            boxes = [b for b in boxes if b[2] >= min_score]
        out.extend(picked[:max_seg_num])
    out.sort(key=lambda r: -r[2])
    return out[:max_seg_num]


def random_dets(n, num_classes, seed):
    rng = random.Random(seed)
    segs, scores, labels = [], [], []
    for _ in range(n):
        s = rng.uniform(0, 100)
        segs.append([s, s + rng.uniform(0.5, 20)])
        scores.append(rng.uniform(0.001, 1.0))
        labels.append(rng.randrange(num_classes))
    return Detections(torch.tensor(segs, dtype=torch.float64).float(), torch.tensor(scores).float(),
                      torch.tensor(labels))


@pytest.mark.parametrize("n,num_classes,max_seg_num,min_score", [
    (300, 5, 2000, 0.0), (300, 5, 50, 0.0), (200, 1, 100, 0.0), (250, 3, 2000, 0.2), (1, 1, 10, 0.0)])
def test_soft_nms_matches_plain_python_reference(n, num_classes, max_seg_num, min_score):
    dets = random_dets(n, num_classes, seed=n + num_classes + max_seg_num)
    got = soft_nms(dets, sigma=0.7, max_seg_num=max_seg_num, min_score=min_score)
    ref = reference_soft_nms(dets.segments.double().tolist(), dets.scores.double().tolist(), dets.labels.tolist(),
                             sigma=0.7, max_seg_num=max_seg_num, min_score=min_score)
    assert len(got) == len(ref)
    torch.testing.assert_close(got.scores.double(), torch.tensor([r[2] for r in ref], dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.segments.double(), torch.tensor([r[:2] for r in ref], dtype=torch.float64))
    assert got.labels.tolist() == [r[3] for r in ref]


def test_soft_nms_invariants():
    dets = random_dets(400, 4, seed=1)
    out = soft_nms(dets)
    assert len(out) == 400  # min_score 0 drops nothing
    assert torch.all(out.scores[:-1] >= out.scores[1:])  # sorted, descending
    original = {(tuple(s), int(lab)): float(sc)
                for s, sc, lab in zip(dets.segments.tolist(), dets.scores, dets.labels, strict=True)}
    for s, sc, lab in zip(out.segments.tolist(), out.scores, out.labels, strict=True):
        assert float(sc) <= original[(tuple(s), int(lab))] + 1e-7  # scores never rise
    assert soft_nms(dets, max_seg_num=25).scores.tolist() == out.scores[:25].tolist()


def test_identical_boxes_decay_and_classes_do_not_interact():
    segs = torch.tensor([[10.0, 20.0], [10.0, 20.0], [10.0, 20.0]])
    dets = Detections(segs, torch.tensor([0.9, 0.9, 0.5]), torch.tensor([0, 0, 1]))
    out = soft_nms(dets, sigma=0.7)
    assert out.labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.5, 0.9 * math.exp(-1 / 0.7)]))
    # disjoint boxes of one class keep their scores
    far = Detections(torch.tensor([[0.0, 1.0], [5.0, 6.0]]), torch.tensor([0.4, 0.6]), torch.tensor([2, 2]))
    assert soft_nms(far).scores.tolist() == pytest.approx([0.6, 0.4])


def test_soft_nms_empty_and_bad_sigma():
    assert len(soft_nms(Detections.empty())) == 0
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(random_dets(3, 1, 0), sigma=0.0)


def test_merge_video_concatenates_windows():
    a, b = random_dets(50, 3, seed=5), random_dets(60, 3, seed=6)
    merged = merge_video([a, b], max_seg_num=2000)
    direct = soft_nms(Detections.cat([a, b]))
    assert len(merged) == 110
    torch.testing.assert_close(merged.scores, direct.scores)
    assert len(merge_video([])) == 0


# ------------------------------------------------------------------------------------------ results json

def test_results_json_layout_and_rounding():
    d = Detections(torch.tensor([[1.23456, 7.891011]]), torch.tensor([0.876543]), torch.tensor([1]))
    res = to_results_json({"video_test_0000004": d, "video_test_0000006": Detections.empty()}, ["A", "B"])
    assert res == {"results": {"video_test_0000004": [{"segment": [1.23, 7.89], "label": "B", "score": 0.8765}],
                               "video_test_0000006": []}}
    json.dumps(res)  # plain Python types only
    with pytest.raises(ValueError, match="label 5"):
        detections_to_entries(Detections(torch.zeros(1, 2), torch.ones(1), torch.tensor([5])), ["A"])


def test_detections_shape_check():
    with pytest.raises(ValueError, match="inconsistent"):
        Detections(torch.zeros(3, 2), torch.zeros(2), torch.zeros(3, dtype=torch.long))
