"""Points and target assignment on hand-drawn segments, and against a point-by-point reference."""

from __future__ import annotations

import math

import torch

from adatad.models.actionformer import DEFAULT_REGRESSION_RANGES
from adatad.models.assigner import assign_targets, make_points

STRIDES = [1, 2, 4, 8, 16, 32]
LENGTHS = [64, 32, 16, 8, 4, 2]


def points64() -> torch.Tensor:
    return make_points(LENGTHS, STRIDES, DEFAULT_REGRESSION_RANGES)


def positives(cls: torch.Tensor, reg: torch.Tensor, points: torch.Tensor) -> dict:
    """{(stride, position): (class tuple, (left, right))} of positive points."""
    out = {}
    for i in torch.nonzero(cls.sum(1) > 0)[:, 0].tolist():
        key = (int(points[i, 3]), int(points[i, 0]))
        out[key] = (tuple(int(c) for c in torch.nonzero(cls[i])[:, 0].tolist()),
                    tuple(round(float(v), 6) for v in reg[i]))
    return out


def test_points_layout():
    p = points64()
    assert p.shape == (sum(LENGTHS), 4)
    assert p[:64, 0].tolist() == list(range(64))  # no half-cell offset
    assert p[64:96, 0].tolist() == [2.0 * t for t in range(32)]
    assert p[-2:, 0].tolist() == [0.0, 32.0]
    assert p[64:96, 1:].unique(dim=0).tolist() == [[4.0, 8.0, 2.0]]
    assert p[-1, 1:].tolist() == [64.0, 10000.0, 32.0]


def test_hand_drawn_segment():
    """GT [10, 20] (centre 15). Stride 1: centre +- 1.5 -> points 14..16 but max(l, r) >= 5 > 4: none.
    Stride 2: +- 3 -> (12, 18) strict -> 14, 16 with max 6 in [4, 8]. Stride 4: +- 6 clipped to the GT
    (10, 20) -> 12 (max 8 in [8, 16]) and 16 (max 6, out of range). Coarser levels: max < 16."""
    p = points64()
    cls, reg = assign_targets(p, torch.tensor([[10.0, 20.0]]), torch.tensor([1]), num_classes=3)
    assert cls.shape == (len(p), 3) and reg.shape == (len(p), 2)
    assert positives(cls, reg, p) == {
        (2, 14): ((1,), (2.0, 3.0)),
        (2, 16): ((1,), (3.0, 2.0)),
        (4, 12): ((1,), (0.5, 2.0)),
    }


def test_shortest_gt_wins_and_near_equal_lengths_are_multi_hot():
    p = points64()
    a = [10.0, 20.0]  # length 10, class 0
    b = [9.0, 21.0]  # length 12, class 1: also qualifies at stride 2, position 14
    c = [10.0002, 20.0007]  # length 10.0005, within 1e-3 of a: class 2 joins as multi-hot
    cls, reg = assign_targets(p, torch.tensor([b, a]), torch.tensor([1, 0]), num_classes=3)
    got = positives(cls, reg, p)
    assert got[(2, 14)] == ((0,), (2.0, 3.0))  # a, not b
    cls, reg = assign_targets(p, torch.tensor([b, c, a]), torch.tensor([1, 2, 0]), num_classes=3)
    got = positives(cls, reg, p)
    assert got[(2, 14)] == ((0, 2), (2.0, 3.0))  # both labels, regression from the shortest (a)
    # two GTs of the same class at the same place: still a 0/1 target
    cls, _ = assign_targets(p, torch.tensor([a, a]), torch.tensor([0, 0]), num_classes=3)
    assert cls.max() == 1.0


def test_long_segment_goes_to_coarse_level():
    """[0, 63]: stride 8 takes position 32 (max 32 <= 32); stride 16 takes 16, 32, 48 (max 47..48 in
    [32, 64]); stride 32 needs max >= 64, impossible for a 63-long segment."""
    p = points64()
    cls, reg = assign_targets(p, torch.tensor([[0.0, 63.0]]), torch.tensor([0]), num_classes=1)
    got = positives(cls, reg, p)
    assert set(got) == {(8, 32), (16, 16), (16, 32), (16, 48)}
    for (stride, pos), (_, (left, right)) in got.items():
        assert math.isclose(left * stride, pos) and math.isclose(right * stride, 63 - pos)


def test_no_gt_gives_all_negative():
    p = points64()
    cls, reg = assign_targets(p, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), num_classes=4)
    assert cls.shape == (len(p), 4) and not cls.any()
    assert reg.shape == (len(p), 2) and not reg.any()


def reference_assign(points, segments, labels, num_classes, radius=1.5, tol=1e-3):
    """Point-by-point, GT-by-GT restatement of the rules in plain Python."""
    cls = [[0.0] * num_classes for _ in points]
    reg = [(0.0, 0.0)] * len(points)
    for i, (pos, lo, hi, stride) in enumerate(points):
        ok = []
        for j, (s, e) in enumerate(segments):
            centre = (s + e) / 2
            left_b, right_b = max(centre - radius * stride, s), min(centre + radius * stride, e)
            inside = pos - left_b > 0 and right_b - pos > 0
            far = max(pos - s, e - pos)
            if inside and lo <= far <= hi:
                ok.append(j)
        if not ok:
            continue
        shortest = min(segments[j][1] - segments[j][0] for j in ok)
        best = next(j for j in ok if segments[j][1] - segments[j][0] == shortest)
        for j in ok:
            if segments[j][1] - segments[j][0] <= shortest + tol:
                cls[i][labels[j]] = 1.0
        s, e = segments[best]
        reg[i] = ((pos - s) / stride, (e - pos) / stride)
    return cls, reg


def test_matches_pointwise_reference_on_random_segments():
    gen = torch.Generator().manual_seed(0)
    p = points64()
    for _ in range(5):
        n = int(torch.randint(1, 8, (1,), generator=gen))
        starts = torch.rand(n, generator=gen, dtype=torch.float64) * 60
        lengths = torch.rand(n, generator=gen, dtype=torch.float64) * 40 + 0.5
        segs = torch.stack([starts, starts + lengths], 1)
        labels = torch.randint(0, 4, (n,), generator=gen)
        cls, reg = assign_targets(p.double(), segs, labels, num_classes=4)
        ref_cls, ref_reg = reference_assign(p.double().tolist(), segs.tolist(), labels.tolist(), 4)
        assert cls.tolist() == ref_cls
        pos = cls.sum(1) > 0
        assert pos.any()
        torch.testing.assert_close(reg[pos], torch.tensor(ref_reg, dtype=torch.float64)[pos])


def test_without_the_similar_length_filter_every_qualifying_gt_adds_its_class():
    """OpenTAD's `filter_similar_gt=False` (the Ego4D row): a point inside GTs of 10 and 12 positions
    takes both classes; the regression target stays the shortest GT's."""
    p = points64()
    a, b = [10.0, 20.0], [9.0, 21.0]
    cls, reg = assign_targets(p, torch.tensor([b, a]), torch.tensor([1, 0]), num_classes=3, similar_len_tol=None)
    got = positives(cls, reg, p)
    assert got[(2, 14)] == ((0, 1), (2.0, 3.0))
    filtered, _ = assign_targets(p, torch.tensor([b, a]), torch.tensor([1, 0]), num_classes=3)
    assert positives(filtered, reg, p)[(2, 14)][0] == (0,)
    assert (cls >= filtered).all() and cls.max() == 1.0
