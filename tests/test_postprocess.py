"""Window decoding, conversion to seconds, soft-NMS (vs a plain-Python reference) and results json."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from adatad.postprocess import (
    Detections,
    clip_to_duration,
    decode_window,
    detections_to_entries,
    merge_video,
    segment_voting,
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


def test_decode_window_without_threshold_or_topk_keeps_every_valid_position():
    """OpenTAD's one-class rows: no pre-NMS threshold or top-k; padded positions still never enter."""
    strides = [1, 2]
    cls = [torch.full((1, 8, 1), -30.0), torch.full((1, 4, 1), -30.0)]  # sigmoid ~1e-13: below 0.001
    cls[0][0, 3, 0] = 1.0
    reg = [torch.ones(1, 8, 2), torch.ones(1, 4, 2)]
    masks = [torch.ones(1, 8, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)]
    masks[0][0, 6:] = False
    masks[1][0, 3:] = False
    d = decode_window(cls, reg, masks, strides, pre_nms_thresh=None, pre_nms_topk=None)[0]
    assert len(d) == 6 + 3
    assert d.scores[0] == torch.sigmoid(torch.tensor(1.0)) and torch.all(d.scores[:-1] >= d.scores[1:])
    assert len(decode_window(cls, reg, masks, strides)[0]) == 1  # the defaults drop the near-zero ones
    assert len(decode_window(cls, reg, masks, strides, pre_nms_thresh=0.0, pre_nms_topk=None)[0]) == 9


def test_window_to_seconds():
    d = Detections(torch.tensor([[-3.0, 10.0], [100.0, 900.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 1]))
    s = window_to_seconds(d, window_start_frame=60, frame_stride=4, fps=30.0, duration=50.0, clip=True)
    torch.testing.assert_close(s.segments, torch.tensor([[(-12 + 60) / 30, (40 + 60) / 30], [(400 + 60) / 30, 50.0]]))
    s = window_to_seconds(d, window_start_frame=0, frame_stride=4, fps=30.0, duration=50.0, clip=True)
    assert s.segments[0, 0] == 0.0  # clamped at 0
    assert s.scores.tolist() == d.scores.tolist() and s.labels.tolist() == [0, 1]
    # unclipped by default: where the clipping happens is merge_video's choice
    raw = window_to_seconds(d, window_start_frame=0, frame_stride=4, fps=30.0, duration=50.0)
    torch.testing.assert_close(raw.segments, torch.tensor([[-12 / 30, 40 / 30], [400 / 30, 3600 / 30]]))
    torch.testing.assert_close(clip_to_duration(raw, 50.0).segments, s.segments)


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
            if picked and sc < min_score:  # the reference's C++ never tests a class's first pick
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
    (300, 5, 2000, 0.0), (300, 5, 50, 0.0), (200, 1, 100, 0.0), (250, 3, 2000, 0.2), (1, 1, 10, 0.0),
    (40, 6, 2000, 0.99)])
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


def test_first_pick_of_a_class_is_kept_below_min_score_as_in_the_reference():
    dets = Detections(torch.tensor([[0.0, 1.0], [5.0, 6.0], [0.0, 1.0]]), torch.tensor([0.0005, 0.0004, 0.5]),
                      torch.tensor([0, 0, 1]))
    out = soft_nms(dets, min_score=0.001)
    assert out.labels.tolist() == [1, 0] and out.scores.tolist() == pytest.approx([0.5, 0.0005])


# ------------------------------------------------------------------------------------------ class-agnostic

def voting_example() -> Detections:
    """A and B overlap (IoU 10 / 10.5), C stands alone; labels differ to show they are ignored."""
    return Detections(torch.tensor([[0.0, 10.0], [0.0, 10.5], [20.0, 30.0]]), torch.tensor([0.9, 0.6, 0.5]),
                      torch.tensor([0, 1, 0]))


def test_class_agnostic_soft_nms_decays_across_labels():
    out = soft_nms(voting_example(), sigma=0.7, class_agnostic=True)
    decayed = 0.6 * math.exp(-((10 / 10.5) ** 2) / 0.7)
    assert out.scores.tolist() == pytest.approx([0.9, 0.5, decayed])
    assert out.labels.tolist() == [0, 0, 1]  # labels kept
    assert soft_nms(voting_example(), sigma=0.7).scores.tolist() == pytest.approx([0.9, 0.6, 0.5])  # per class


def test_segment_voting_averages_neighbours_weighted_by_raw_scores():
    pool = voting_example()
    picked = soft_nms(pool, sigma=0.7, class_agnostic=True)
    voted = segment_voting(picked, pool, iou_thresh=0.9)
    end = (0.9 * 10.0 + 0.6 * 10.5) / 1.5  # A and B vote for both A and B; C votes alone
    torch.testing.assert_close(voted.segments, torch.tensor([[0.0, end], [20.0, 30.0], [0.0, end]]))
    assert voted.scores.tolist() == picked.scores.tolist() and voted.labels.tolist() == picked.labels.tolist()
    # above the pair's IoU nobody else votes
    torch.testing.assert_close(segment_voting(picked, pool, iou_thresh=0.96).segments, picked.segments)
    # a zero-length segment (IoU undefined) keeps its place
    lone = Detections(torch.tensor([[3.0, 3.0]]), torch.tensor([0.4]), torch.tensor([0]))
    assert segment_voting(lone, lone, 0.9).segments.tolist() == [[3.0, 3.0]]


def test_class_agnostic_merge_votes_over_every_proposal_then_clips():
    merged = merge_video([voting_example()], sigma=0.7, max_seg_num=1, min_score=0.001, multiclass=False,
                         voting_thresh=0.9, duration=8.0, clip_before_nms=False)
    # B is not kept (top 1) but still votes; the voted end 10.2 is clipped to the duration afterwards
    assert merged.segments.tolist() == [[0.0, 8.0]] and merged.scores.tolist() == pytest.approx([0.9])
    # multi-class merging never votes (OpenTAD ignores voting_thresh there)
    plain = merge_video([voting_example()], sigma=0.7, multiclass=True, voting_thresh=0.9)
    assert sorted(plain.segments.tolist()) == sorted(voting_example().segments.tolist())


def test_clipping_before_or_after_the_nms_changes_overlaps():
    dets = Detections(torch.tensor([[0.0, 10.0], [-2.0, 10.0]]), torch.tensor([0.9, 0.8]), torch.tensor([0, 0]))
    after = merge_video([dets], sigma=0.7, multiclass=False, duration=20.0, clip_before_nms=False)
    before = merge_video([dets], sigma=0.7, multiclass=False, duration=20.0, clip_before_nms=True)
    assert after.scores.tolist() == pytest.approx([0.9, 0.8 * math.exp(-((10 / 12) ** 2) / 0.7)])
    assert before.scores.tolist() == pytest.approx([0.9, 0.8 * math.exp(-1 / 0.7)])  # identical once clipped
    assert after.segments.tolist() == before.segments.tolist() == [[0.0, 10.0], [0.0, 10.0]]
    unclipped = merge_video([dets], sigma=0.7)
    assert unclipped.segments.tolist() == [[0.0, 10.0], [-2.0, 10.0]]


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


def test_sliding_windows_are_merged_on_rounded_numbers() -> None:
    """OpenTAD's cross-window soft-NMS sees seconds rounded to 2 decimals and scores to 4."""
    from adatad.postprocess import round_as_results

    window = Detections(torch.tensor([[1.004, 2.996], [0.123456, 0.5]]), torch.tensor([0.123456, 0.99999]),
                        torch.tensor([0, 1]))
    rounded = round_as_results(window)
    assert rounded.segments.tolist() == [[pytest.approx(1.0), pytest.approx(3.0)], [pytest.approx(0.12), 0.5]]
    assert rounded.scores.tolist() == [pytest.approx(0.1235), pytest.approx(1.0)]
    merged = merge_video([window], duration=10.0, clip_before_nms=True)
    assert sorted(merged.scores.tolist()) == [pytest.approx(0.1235), pytest.approx(1.0)]
    whole_video = merge_video([window], duration=10.0, clip_before_nms=False, multiclass=False)
    assert max(whole_video.scores.tolist()) == pytest.approx(0.99999)  # no rounding on the whole-video path
