"""ActionFormer projection + neck + heads: defaults from docs/recipe.md §6, shapes, masking, EMA-friendliness,
and that head + losses can overfit one synthetic sequence."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from adatad.models.actionformer import DEFAULT_REGRESSION_RANGES, ActionFormerHead
from adatad.models.layers_1d import AffineDropPath, ChannelLayerNorm, MaskedMHCA, Scale, TransformerBlock
from adatad.models.losses import DetectionLoss
from adatad.postprocess import decode_window

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_head(**kw) -> ActionFormerHead:
    args = dict(in_channels=16, num_classes=3, embed_dim=32, feat_channels=32, n_head=4, path_pdrop=0.0)
    args.update(kw)
    return ActionFormerHead(**args)


def test_defaults_match_spec():
    torch.manual_seed(0)
    m = ActionFormerHead(in_channels=384, num_classes=20)
    assert m.strides == [1, 2, 4, 8, 16, 32]
    assert m.regression_ranges == [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]
    assert list(DEFAULT_REGRESSION_RANGES) == m.regression_ranges
    proj = m.projection
    assert (len(proj.embed), len(proj.stem), len(proj.branch)) == (2, 2, 5)
    assert proj.embed[0].conv.in_channels == 384 and proj.embed[0].conv.out_channels == 512
    assert proj.embed[0].conv.bias is None and proj.embed[0].norm.eps == 1e-6
    for block in list(proj.stem) + list(proj.branch):
        assert block.attn.n_head == 4 and block.attn.window_size == -1
        assert block.mlp[0].out_channels == 2048 and block.mlp[3].out_channels == 512
        assert block.attn.query_conv.conv.groups == 512 and block.attn.query_conv.conv.bias is None
    assert [b.attn.key_conv.conv.stride[0] for b in proj.branch] == [2] * 5
    assert all(isinstance(b.pool_skip, nn.MaxPool1d) for b in proj.branch)
    assert all(isinstance(b.pool_skip, nn.Identity) for b in proj.stem)
    drop_paths = [mod for mod in m.modules() if isinstance(mod, AffineDropPath)]
    assert len(drop_paths) == 14
    assert all(torch.all(d.scale == 1e-4) and d.drop_path.drop_prob == 0.1 for d in drop_paths)
    assert len(m.neck.norms) == 6 and all(n.eps == 1e-6 for n in m.neck.norms)
    heads = m.heads
    assert len(heads.cls_convs) == 2 and len(heads.reg_convs) == 2
    assert heads.cls_head.out_channels == 20 and heads.reg_head.out_channels == 2
    assert torch.allclose(heads.cls_head.bias, torch.full((20,), -math.log(99.0)))
    assert torch.all(heads.reg_head.bias == 0)
    assert [s.scale.item() for s in heads.scales] == [1.0] * 6
    # every 1x1 / k3 conv with a bias starts at zero bias, except the classification prior
    for mod in m.modules():
        if isinstance(mod, nn.Conv1d) and mod.bias is not None and mod is not heads.cls_head:
            assert torch.all(mod.bias == 0)


def test_output_shapes_every_level_with_padding():
    torch.manual_seed(0)
    # default arch and window length; narrower channels keep the CPU test fast
    m = ActionFormerHead(in_channels=384, num_classes=20, embed_dim=128, feat_channels=128).eval()
    feats = torch.randn(2, 384, 768)
    masks = torch.ones(2, 768, dtype=torch.bool)
    masks[1, 500:] = False
    with torch.no_grad():
        cls, reg, lm = m(feats, masks)
    assert len(cls) == len(reg) == len(lm) == 6
    valid = 500
    for level, t in enumerate([768, 384, 192, 96, 48, 24]):
        assert cls[level].shape == (2, t, 20)
        assert reg[level].shape == (2, t, 2)
        assert lm[level].shape == (2, t) and lm[level].dtype == torch.bool
        assert lm[level][0].all()
        assert int(lm[level][1].sum()) == valid and not lm[level][1, valid:].any()
        assert (reg[level] >= 0).all()
        valid = math.ceil(valid / 2)


def _unit_residuals(head: ActionFormerHead) -> ActionFormerHead:
    """Residual scales at 1 instead of 1e-4, so attention visibly moves every output."""
    for mod in head.modules():
        if isinstance(mod, AffineDropPath):
            nn.init.ones_(mod.scale)
    return head


def _embed(head: ActionFormerHead, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Output of the projection's embedding convs (before any attention)."""
    for layer in head.projection.embed:
        x, mask = layer(x, mask)
    return x


def test_padding_reaches_only_the_last_valid_positions_through_the_embedding_convs():
    """As OpenTAD: the padded input is not zeroed first; each k=3 conv masks only its output, so
    the padding reaches the valid positions within 2 of the boundary (2 convs) and no others."""
    torch.manual_seed(0)
    m = _unit_residuals(small_head()).eval()
    valid = 40
    feats = torch.randn(1, 16, 64)
    masks = torch.zeros(1, 64, dtype=torch.bool)
    masks[0, :valid] = True
    other = feats.clone()
    other[0, :, valid:] = 100 * torch.randn(16, 64 - valid)  # other padding content (e.g. another edge frame)
    with torch.no_grad():
        a, b = _embed(m, feats, masks), _embed(m, other, masks)
        a_cls, _, _ = m(feats, masks)
        b_cls, _, _ = m(other, masks)
    changed = ((a - b).abs().amax(dim=1)[0] > 1e-3).nonzero().flatten().tolist()
    assert changed == [valid - 2, valid - 1]
    torch.testing.assert_close(a[..., : valid - 2], b[..., : valid - 2], rtol=0, atol=1e-6)
    assert torch.all(a[..., valid:] == 0) and torch.all(b[..., valid:] == 0)
    # global attention then spreads the two changed positions over the whole window (OpenTAD too)
    assert not torch.allclose(a_cls[0][0, 0], b_cls[0][0, 0], rtol=1e-4, atol=1e-4)


def test_padding_beyond_the_conv_reach_does_not_leak_through_attention():
    """Only the first padded input position is read by a valid output of the first conv. Any other
    padding -- other values, or 32 more padded positions -- leaves every valid output unchanged at
    every level: padded positions never act as attention keys. A neighbour in the batch does not
    matter either."""
    torch.manual_seed(0)
    m = _unit_residuals(small_head(mha_win_size=-1)).eval()
    valid = 90
    short = torch.randn(1, 16, 96)
    short_mask = torch.zeros(1, 96, dtype=torch.bool)
    short_mask[0, :valid] = True
    long = torch.cat([short, 100 * torch.randn(1, 16, 32)], dim=2)  # 32 more padded positions
    long_mask = torch.cat([short_mask, torch.zeros(1, 32, dtype=torch.bool)], dim=1)
    repadded = long.clone()
    repadded[0, :, valid + 1:] = 100 * torch.randn(16, 128 - valid - 1)  # keep only position `valid`
    batch = torch.cat([long, torch.randn(1, 16, 128)])  # a different, unpadded neighbour
    batch_mask = torch.cat([long_mask, torch.ones(1, 128, dtype=torch.bool)])
    with torch.no_grad():
        ref_cls, ref_reg, ref_masks = m(short, short_mask)
        runs = [m(long, long_mask), m(repadded, long_mask), m(batch, batch_mask)]
        all_valid_cls, _, _ = m(long, torch.ones(1, 128, dtype=torch.bool))
    for level, ref_mask in enumerate(ref_masks):
        v = ref_mask[0]
        assert v.any()
        for cls, reg, level_masks in runs:
            n = v.shape[0]
            assert torch.equal(level_masks[level][0, :n], v) and not level_masks[level][0, n:].any()
            torch.testing.assert_close(cls[level][0, :n][v], ref_cls[level][0, v], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(reg[level][0, :n][v], ref_reg[level][0, v], rtol=1e-5, atol=1e-5)
    # the invariance comes from the mask: the same positions marked valid do change the outputs
    assert not torch.allclose(all_valid_cls[0][0, 0], ref_cls[0][0, 0], rtol=1e-4, atol=1e-4)


def test_projection_features_are_zero_at_padding():
    torch.manual_seed(0)
    m = small_head().eval()
    feats = torch.randn(1, 16, 64)
    masks = torch.zeros(1, 64, dtype=torch.bool)
    masks[0, :40] = True
    with torch.no_grad():
        level_feats, level_masks = m.projection(feats, masks)
    for x, mk in zip(level_feats, level_masks, strict=True):
        assert torch.all(x[0][:, ~mk[0]] == 0)
        assert x[0][:, mk[0]].abs().sum() > 0


@pytest.mark.parametrize("stride", [1, 2])
def test_local_window_attention_is_banded(stride):
    torch.manual_seed(0)
    attn = MaskedMHCA(16, 2, stride=stride, window_size=5).eval()
    x = torch.randn(1, 16, 64)
    mask = torch.ones(1, 64, dtype=torch.bool)
    with torch.no_grad():
        base, _ = attn(x, mask)
        far = x.clone()
        far[0, :, 60] += 10.0  # far from output position 5 (input 5*stride)
        out_far, _ = attn(far, mask)
        near = x.clone()
        near[0, :, 7 * stride] += 10.0  # within the window of output position 5
        out_near, _ = attn(near, mask)
        glob = MaskedMHCA(16, 2, stride=stride, window_size=-1).eval()
        glob.load_state_dict(attn.state_dict())
        g_base, _ = glob(x, mask)
        g_far, _ = glob(far, mask)
    torch.testing.assert_close(base[0, :, 5], out_far[0, :, 5])
    assert not torch.allclose(base[0, :, 5], out_near[0, :, 5])
    assert not torch.allclose(g_base[0, :, 5], g_far[0, :, 5])  # global attention does see it


def test_attention_matches_manual_softmax():
    """SDPA with a key mask == explicit masked softmax(q k^T / sqrt(d)) v."""
    torch.manual_seed(0)
    attn = MaskedMHCA(8, 2).eval()
    x = torch.randn(1, 8, 10)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 7:] = False
    with torch.no_grad():
        out, _ = attn(x, mask)
        q, _ = attn.query_conv(x, mask)
        k, _ = attn.key_conv(x, mask)
        v, _ = attn.value_conv(x, mask)
        q, k, v = attn.query(attn.query_norm(q)), attn.key(attn.key_norm(k)), attn.value(attn.value_norm(v))
        q, k, v = (t.view(1, 2, 4, 10).transpose(2, 3) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(4)
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        ref = (logits.softmax(-1) @ v).transpose(2, 3).reshape(1, 8, 10)
        ref = attn.proj(ref) * mask[:, None]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_transformer_block_downsamples_mask_by_nearest():
    block = TransformerBlock(8, 2, stride=2).eval()
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[0, :7] = True
    out, out_mask = block(torch.randn(1, 8, 11), mask)
    assert out.shape == (1, 8, 6)
    assert out_mask.tolist() == [[True, True, True, True, False, False]]
    assert torch.all(out[0, :, 4:] == 0)


def test_state_is_complete_in_state_dict():
    """EMA copies and checkpoints only see parameters and buffers: nothing else may carry state."""
    torch.manual_seed(0)
    a = small_head().eval()
    torch.manual_seed(1)
    b = small_head().eval()
    for mod in a.modules():
        if isinstance(mod, (Scale, AffineDropPath)):
            with torch.no_grad():
                mod.scale.mul_(3.0)  # make sure non-default values travel too
    b.load_state_dict(a.state_dict())
    feats, masks = torch.randn(1, 16, 32), torch.ones(1, 32, dtype=torch.bool)
    with torch.no_grad():
        out_a, out_b, out_c = a(feats, masks), b(feats, masks), copy.deepcopy(a)(feats, masks)
    for xa, xb, xc in zip(out_a[0] + out_a[1], out_b[0] + out_b[1], out_c[0] + out_c[1], strict=True):
        torch.testing.assert_close(xa, xb)
        torch.testing.assert_close(xa, xc)
    assert isinstance(a.neck.norms[0], ChannelLayerNorm)


def test_drop_path_is_stochastic_only_in_training():
    torch.manual_seed(0)
    m = small_head(path_pdrop=0.5)
    for mod in m.modules():
        if isinstance(mod, AffineDropPath):
            nn.init.ones_(mod.scale)  # make the residual branches matter
    feats, masks = torch.randn(4, 16, 32), torch.ones(4, 32, dtype=torch.bool)
    with torch.no_grad():
        m.train()
        r1, r2 = m(feats, masks)[0][0], m(feats, masks)[0][0]
        m.eval()
        e1, e2 = m(feats, masks)[0][0], m(feats, masks)[0][0]
    assert not torch.allclose(r1, r2)
    torch.testing.assert_close(e1, e2)


def test_bad_input_shapes_raise():
    m = small_head()
    with pytest.raises(ValueError, match="feats"):
        m(torch.randn(16, 32), torch.ones(1, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="regression_ranges"):
        small_head(regression_ranges=[(0, 4)])


def test_head_and_losses_overfit_one_sequence():
    """Small head (embed 64) + DetectionLoss learn one synthetic sequence on CPU in 100 steps."""
    torch.manual_seed(0)
    T, C, K = 64, 8, 3
    segments = torch.tensor([[5.0, 17.0], [24.0, 46.0], [50.0, 55.0]])
    labels = torch.tensor([0, 1, 2])
    feats = 0.3 * torch.randn(1, C, T)
    for (s, e), c in zip(segments.long().tolist(), labels.tolist(), strict=True):
        feats[0, c, s:e] += 1.0  # a class-specific "action" signal
    masks = torch.ones(1, T, dtype=torch.bool)
    masks[0, 60:] = False
    head = ActionFormerHead(C, K, embed_dim=64, feat_channels=64, n_head=4, path_pdrop=0.0)
    loss_fn = DetectionLoss(K, head.strides, head.regression_ranges)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.0)

    def eval_loss() -> float:
        head.eval()
        loss_fn.eval()
        with torch.no_grad():
            value = float(loss_fn(*head(feats, masks), [segments], [labels])["loss"])
        head.train()
        loss_fn.train()
        return value

    start = eval_loss()
    for _ in range(100):
        out = loss_fn(*head(feats, masks), [segments], [labels])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    end = eval_loss()
    assert start > 1.0 and end < 0.1, (start, end)

    head.eval()
    with torch.no_grad():
        dets = decode_window(*head(feats, masks), head.strides)[0]
    for (s, e), c in zip(segments.tolist(), labels.tolist(), strict=True):
        best = int(torch.nonzero(dets.labels == c)[0])  # highest-scoring detection of that class
        ps, pe = dets.segments[best].tolist()
        iou = max(0.0, min(e, pe) - max(s, ps)) / (max(e, pe) - min(s, ps))
        assert iou > 0.8 and dets.scores[best] > 0.5, (c, (ps, pe), float(dets.scores[best]))


def test_windows_per_level_reach_every_block():
    """Ego4D's `n_mha_win_size=[17] * 7 + [-1] * 3`: the stem and the first branch blocks attend locally,
    the last three levels globally; EPIC's single 9 reaches all six levels."""
    head = small_head(arch=(2, 2, 9), mha_win_size=[17] * 7 + [-1] * 3,
                      regression_ranges=[(0, 4)] * 9 + [(4, 10000)])
    proj = head.projection
    assert [b.attn.window_size for b in proj.stem] == [17, 17]
    assert [b.attn.window_size for b in proj.branch] == [17] * 6 + [-1] * 3
    epic = small_head(mha_win_size=9).projection
    assert {b.attn.window_size for b in list(epic.stem) + list(epic.branch)} == {9}
    with pytest.raises(ValueError, match="mha_win_size needs 6 entries"):
        small_head(mha_win_size=[9, 9])


def test_pad_to_zero_pads_features_and_masks_before_the_projection():
    """OpenTAD's `ActionFormer.pad_data` (Ego4D: 1,800 -> 2,048): zeros after the window's last
    position, masked; the levels then have whole positions of the padded length."""
    torch.manual_seed(0)
    head = small_head(pad_to=64, max_seq_len=64, use_abs_pe=True).eval()
    plain = small_head(max_seq_len=64, use_abs_pe=True).eval()
    plain.load_state_dict(head.state_dict())
    feats = torch.randn(2, 16, 56)
    masks = torch.ones(2, 56, dtype=torch.bool)
    masks[1, 40:] = False
    with torch.no_grad():
        cls, reg, level_masks = head(feats, masks)
        by_hand = plain(torch.cat([feats, torch.zeros(2, 16, 8)], dim=-1),
                        torch.cat([masks, torch.zeros(2, 8, dtype=torch.bool)], dim=-1))
    assert [m.shape[1] for m in level_masks] == [64, 32, 16, 8, 4, 2]
    assert level_masks[0][0].tolist() == [True] * 56 + [False] * 8
    assert level_masks[0][1].sum() == 40
    for ours, theirs in zip(cls + reg + level_masks, by_hand[0] + by_hand[1] + by_hand[2], strict=True):
        assert torch.equal(ours, theirs)
    with torch.no_grad():  # no padding without pad_to, or when the input is as long
        assert plain(feats, masks)[2][0].shape[1] == 56
        assert head(torch.randn(1, 16, 64), torch.ones(1, 64, dtype=torch.bool))[2][0].shape[1] == 64
