"""DetectionLoss against direct formulas: focal loss, DIoU, loss normaliser, label smoothing, empty GT."""

from __future__ import annotations

import math

import pytest
import torch

from adatad.models.losses import DetectionLoss, decode_offsets, diou_loss_1d


def focal(logit: float, target: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """RetinaNet focal loss in the fvcore/torchvision form (also defined for soft targets)."""
    p = 1 / (1 + math.exp(-logit))
    bce = -(target * math.log(p) + (1 - target) * math.log(1 - p))
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return alpha_t * bce * (1 - p_t) ** gamma


def diou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    enclosing = max(a[1], b[1]) - min(a[0], b[0])
    centre = (a[0] + a[1]) / 2 - (b[0] + b[1]) / 2
    return 1 - inter / union + centre**2 / enclosing**2


def test_diou_hand_values():
    pred = torch.tensor([[0.0, 10.0], [0.0, 2.0], [3.0, 7.0]])
    target = torch.tensor([[5.0, 15.0], [4.0, 6.0], [3.0, 7.0]])
    expected = [1 - 1 / 3 + 25 / 225, 1 + 16 / 36, 0.0]
    torch.testing.assert_close(diou_loss_1d(pred, target), torch.tensor(expected))


def test_decode_offsets():
    points = torch.tensor([[8.0, 0, 0, 4.0]])
    assert decode_offsets(points, torch.tensor([[0.5, 2.0]])).tolist() == [[6.0, 16.0]]


def single_level_case():
    """One level (stride 1, T=8, K=2); GT [2, 6] label 1 -> positives at 3, 4, 5 (centre 4 +- 1.5)."""
    torch.manual_seed(0)
    loss = DetectionLoss(num_classes=2, strides=[1], regression_ranges=[(0, 10000)])
    logits = torch.randn(1, 8, 2)
    offsets = torch.rand(1, 8, 2) * 3
    mask = torch.ones(1, 8, dtype=torch.bool)
    mask[0, 7] = False
    return loss, logits, offsets, mask


def test_loss_matches_direct_formulas_and_normaliser():
    loss, logits, offsets, mask = single_level_case()
    out = loss([logits], [offsets], [mask], [torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    normaliser = 0.9 * 100 + 0.1 * 3
    cls_sum = sum(focal(float(logits[0, t, k]), 1.0 if (k == 1 and t in (3, 4, 5)) else 0.0)
                  for t in range(7) for k in range(2))
    reg_sum = sum(diou((t - float(offsets[0, t, 0]), t + float(offsets[0, t, 1])), (2.0, 6.0)) for t in (3, 4, 5))
    assert set(out) == {"loss", "cls_loss", "reg_loss"}
    assert math.isclose(float(loss.loss_normalizer), normaliser, rel_tol=1e-6)
    assert math.isclose(float(out["cls_loss"]), cls_sum / normaliser, rel_tol=1e-5)
    assert math.isclose(float(out["reg_loss"]), reg_sum / normaliser, rel_tol=1e-5)
    assert math.isclose(float(out["loss"]), (cls_sum + reg_sum) / normaliser, rel_tol=1e-5)
    # the buffer keeps moving on every training forward ...
    loss([logits], [offsets], [mask], [torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    assert math.isclose(float(loss.loss_normalizer), 0.9 * normaliser + 0.3, rel_tol=1e-6)
    # ... but not in eval mode, which normalises by this batch's max(#pos, 1)
    loss.eval()
    before = float(loss.loss_normalizer)
    out = loss([logits], [offsets], [mask], [torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    assert float(loss.loss_normalizer) == before
    assert math.isclose(float(out["cls_loss"]), cls_sum / 3, rel_tol=1e-5)
    assert "loss_normalizer" in loss.state_dict()


def test_padded_points_do_not_count():
    loss, logits, offsets, mask = single_level_case()
    loss.eval()
    gt = ([torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    a = loss([logits], [offsets], [mask], *gt)
    logits2 = logits.clone()
    logits2[0, 7] = 50.0
    b = loss([logits2], [offsets], [mask], *gt)
    torch.testing.assert_close(a["loss"], b["loss"])


def test_label_smoothing():
    loss, logits, offsets, mask = single_level_case()
    loss.label_smoothing = 0.1
    loss.eval()
    out = loss([logits], [offsets], [mask], [torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    cls_sum = sum(focal(float(logits[0, t, k]),
                        (1.0 if (k == 1 and t in (3, 4, 5)) else 0.0) * 0.9 + 0.1 / 3)
                  for t in range(7) for k in range(2))
    assert math.isclose(float(out["cls_loss"]), cls_sum / 3, rel_tol=1e-5)


def test_batch_with_a_video_without_gt():
    torch.manual_seed(0)
    strides, ranges = [1, 2], [(0, 4), (4, 10000)]
    loss = DetectionLoss(3, strides, ranges)
    logits = [torch.randn(2, 16, 3, requires_grad=True), torch.randn(2, 8, 3, requires_grad=True)]
    offsets = [torch.rand(2, 16, 2, requires_grad=True), torch.rand(2, 8, 2, requires_grad=True)]
    masks = [torch.ones(2, 16, dtype=torch.bool), torch.ones(2, 8, dtype=torch.bool)]
    empty = (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))

    out = loss(logits, offsets, masks, [empty[0], empty[0]], [empty[1], empty[1]])  # all negatives
    assert out["reg_loss"].item() == 0.0 and out["cls_loss"].item() > 0
    assert math.isclose(float(loss.loss_normalizer), 90.1, rel_tol=1e-6)  # max(#pos, 1) = 1
    out["loss"].backward()
    assert all(torch.isfinite(t.grad).all() for t in logits)
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in offsets)

    out = loss(logits, offsets, masks, [torch.tensor([[3.0, 9.0]]), empty[0]], [torch.tensor([2]), empty[1]])
    assert out["reg_loss"].item() > 0 and torch.isfinite(out["loss"])


def test_batch_size_mismatch_raises():
    loss, logits, offsets, mask = single_level_case()
    with pytest.raises(ValueError, match="batch of 1"):
        loss([logits], [offsets], [mask], [], [])


def test_loss_weight_scales_the_regression_loss_only():
    loss, logits, offsets, mask = single_level_case()
    loss.eval()
    args = ([logits], [offsets], [mask], [torch.tensor([[2.0, 6.0]])], [torch.tensor([1])])
    plain = loss(*args)
    loss.loss_weight = 2.0  # OpenTAD's ActivityNet rows
    weighted = loss(*args)
    torch.testing.assert_close(weighted["cls_loss"], plain["cls_loss"])
    torch.testing.assert_close(weighted["reg_loss"], 2.0 * plain["reg_loss"])
    torch.testing.assert_close(weighted["loss"], plain["cls_loss"] + 2.0 * plain["reg_loss"])
    loss.loss_weight = 0.0  # OpenTAD's adaptive weight: the regression loss rescaled to the cls loss
    adaptive = loss(*args)
    torch.testing.assert_close(adaptive["reg_loss"], plain["cls_loss"])
    # the adaptive weight itself carries no gradient: d(reg_loss)/d(offsets) = weight x d(plain reg)/d(offsets)
    grad_offsets = offsets.clone().requires_grad_(True)
    loss([logits], [grad_offsets], *args[2:])["reg_loss"].backward()
    plain_offsets = offsets.clone().requires_grad_(True)
    loss.loss_weight = 1.0
    loss([logits], [plain_offsets], *args[2:])["reg_loss"].backward()
    weight = float(plain["cls_loss"] / plain["reg_loss"])
    torch.testing.assert_close(grad_offsets.grad, weight * plain_offsets.grad)
