"""Chunked encoder (48 x 16 frames), freezing, activation checkpointing, AdaTAD wiring, param groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adatad.models.videomae as videomae_module
from adatad.engine.param_groups import build_param_groups
from adatad.models.actionformer import ActionFormerHead
from adatad.models.chunked import ChunkedEncoder
from adatad.models.detector import AdaTAD
from adatad.models.layers_1d import AffineDropPath, Scale
from adatad.models.losses import DetectionLoss
from adatad.models.videomae import VideoMAEBackbone
from adatad.postprocess import Detections

SIZE = 32  # 2 x 2 tokens per temporal slice


def encoder(dim: int = 16, depth: int = 2, drop_path: float = 0.0, use_checkpoint: bool = True,
            seed: int = 0, frames_per_position: int = 1) -> ChunkedEncoder:
    torch.manual_seed(seed)
    backbone = VideoMAEBackbone(embed_dim=dim, depth=depth, num_heads=2, drop_path_rate=drop_path)
    return ChunkedEncoder(backbone, use_checkpoint=use_checkpoint, frames_per_position=frames_per_position)


def activate_adapters(enc: ChunkedEncoder, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in enc.backbone.blocks:
            w = block.adapter.up_proj.weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.2)


def frames(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, t, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_768_frames_give_full_length_sequence_and_videos_stay_apart():
    enc = encoder(dim=16, depth=1)
    activate_adapters(enc)
    enc.eval()
    x = frames(2, 768)
    with torch.no_grad():
        feats = enc(x)
        alone = enc(x[1:])
    assert feats.shape == (2, 16, 768) and feats.dtype == torch.float32
    torch.testing.assert_close(feats[1:], alone, rtol=1e-5, atol=1e-5)


def test_pooling_and_upsampling_match_manual_computation():
    enc = encoder()
    activate_adapters(enc)
    enc.eval()
    x = frames(2, 48)
    with torch.no_grad():
        feats = enc(x)
        chunks = torch.stack([x[b, :, k * 16:(k + 1) * 16] for b in range(2) for k in range(3)])
        tokens = enc.backbone.forward_tokens(chunks, chunks_per_video=3)  # (6, 8*2*2, C)
        pooled = tokens.reshape(6, 8, 4, -1).mean(2)  # spatial mean per temporal token
        seq = torch.cat([pooled[b * 3:(b + 1) * 3].reshape(24, -1) for b in range(2)]).reshape(2, 24, -1)
        expected = F.interpolate(seq.transpose(1, 2), size=48, mode="linear", align_corners=False)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-5)


def tubelet_features(enc: ChunkedEncoder, x: torch.Tensor) -> torch.Tensor:
    """(1, 3, T, H, W) -> (C, T/2): the spatial mean of every tubelet, all chunks of one video."""
    n = x.shape[2] // 16
    chunks = x[0].reshape(3, n, 16, SIZE, SIZE).transpose(0, 1)
    tokens = enc.backbone.forward_tokens(chunks, chunks_per_video=n)  # (n, 8*2*2, C)
    return tokens.reshape(n * 8, 4, -1).mean(1).T


@pytest.mark.parametrize("s", [1, 2, 4, 8])
def test_frames_per_position_resize_tubelets_as_the_reference(s):
    """docs/recipe.md §2: N positions from N*s frames = N*s/2 tubelets t(k), linear, align_corners=False."""
    enc = encoder(depth=1, frames_per_position=s)
    activate_adapters(enc)
    enc.eval()
    x = frames(1, 64)
    with torch.no_grad():
        feats = enc(x)[0]
        t = tubelet_features(enc, x)
    n = 64 // s
    assert feats.shape == (16, n)
    if s == 1:  # upsampling: 2k+1 = 0.75 t(k) + 0.25 t(k+1), 2k = 0.25 t(k-1) + 0.75 t(k), ends repeat
        torch.testing.assert_close(feats[:, 1:-1:2], 0.75 * t[:, :-1] + 0.25 * t[:, 1:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(feats[:, 2::2], 0.25 * t[:, :-1] + 0.75 * t[:, 1:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(feats[:, [0, -1]], t[:, [0, -1]], rtol=1e-5, atol=1e-6)
    elif s == 2:  # identity
        torch.testing.assert_close(feats, t, rtol=1e-5, atol=1e-6)
    elif s == 4:  # the mean of tubelets 2p and 2p+1
        torch.testing.assert_close(feats, 0.5 * (t[:, 0::2] + t[:, 1::2]), rtol=1e-5, atol=1e-6)
    else:  # s = 8: 0.5 t(4p+1) + 0.5 t(4p+2); tubelets 4p and 4p+3 are ignored
        torch.testing.assert_close(feats, 0.5 * (t[:, 1::4] + t[:, 2::4]), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(feats, t.reshape(16, n, 4).mean(2), rtol=1e-3, atol=1e-3)


def test_frames_per_position_needs_whole_positions():
    enc = ChunkedEncoder(VideoMAEBackbone(embed_dim=16, depth=1, num_heads=2), frames_per_position=32)
    with pytest.raises(ValueError, match=r"T a multiple of 32, got \(1, 3, 16, 32, 32\)"):
        enc(torch.zeros(1, 3, 16, SIZE, SIZE))
    with pytest.raises(ValueError, match="frames_per_position must be >= 1, got 0"):
        ChunkedEncoder(VideoMAEBackbone(embed_dim=16, depth=1, num_heads=2), frames_per_position=0)


def test_adapters_carry_information_across_chunks():
    enc = encoder()
    enc.eval()
    x = frames(1, 64)
    bumped = x.clone()
    bumped[:, :, :16] += 1.0  # chunk 0 only
    with torch.no_grad():
        # Fresh adapters: chunk-local processing, later chunks untouched (positions 17+ interpolate
        # only tokens of chunks >= 1).
        assert torch.equal(enc(x)[..., 17:], enc(bumped)[..., 17:])
        activate_adapters(enc)
        assert not torch.allclose(enc(x)[..., 17:32], enc(bumped)[..., 17:32])
        # The same weights with one chunk per "video" do not mix chunks.
        chunks, chunks_b = (v.reshape(1, 3, 4, 16, SIZE, SIZE).transpose(1, 2).reshape(4, 3, 16, SIZE, SIZE)
                            for v in (x, bumped))
        assert torch.equal(enc.backbone.forward_tokens(chunks, 1)[1:], enc.backbone.forward_tokens(chunks_b, 1)[1:])
        assert not torch.equal(enc.backbone.forward_tokens(chunks, 4)[1], enc.backbone.forward_tokens(chunks_b, 4)[1])


def test_freezing_keeps_drop_path_active_and_frozen_parts_in_eval():
    enc = encoder(drop_path=0.5)
    wrapper = nn.Sequential(enc).train()  # parents' train() must reach the override
    block = enc.backbone.blocks[1]
    assert not enc.backbone.patch_embed.training
    assert not any(m.training for m in (block.norm1, block.attn, block.norm2, block.mlp))
    assert block.drop_path1.training and block.drop_path2.training and block.adapter.training
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("adapter" in n for n in trainable)
    x = frames(1, 128)  # 8 chunks = 8 drop-path samples per branch
    torch.manual_seed(0)
    with torch.no_grad():
        assert not torch.equal(enc(x), enc(x))  # stochastic depth per chunk still applies
        wrapper.eval()
        assert not block.drop_path1.training and not block.adapter.training
        assert torch.equal(enc(x), enc(x))


def test_gradients_reach_adapters_through_frozen_blocks():
    enc = encoder(depth=3)
    activate_adapters(enc)
    feats = enc(frames(1, 32))
    feats.square().mean().backward()
    for name, p in enc.named_parameters():
        if "adapter" in name:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # Block 0's adapter is reached only through blocks 1 and 2 (frozen).
    assert enc.backbone.blocks[0].adapter.down_proj.weight.grad.abs().sum() > 0
    assert enc.backbone.blocks[0].adapter.dwconv.weight.grad.abs().sum() > 0


def test_activation_checkpointing_gives_same_gradients(monkeypatch):
    calls = []
    real = videomae_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(videomae_module, "checkpoint", counting)
    grads = {}
    for use_cp in (False, True):
        enc = encoder(depth=3, drop_path=0.3, use_checkpoint=use_cp)
        activate_adapters(enc)
        enc.train()
        torch.manual_seed(123)  # same drop-path draws; checkpoint replays the RNG state
        enc(frames(1, 32)).square().mean().backward()
        grads[use_cp] = {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}
    assert len(calls) == 2  # blocks 1 and 2; block 0's input has no grad (frozen patch embedding)
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        enc(frames(1, 16))
    assert len(calls) == 2  # nothing to recompute without grads


def test_bad_frame_count_is_reported():
    with pytest.raises(ValueError, match=r"T a multiple of 16, got \(1, 3, 20, 32, 32\)"):
        encoder()(torch.zeros(1, 3, 20, SIZE, SIZE))


# -- AdaTAD ------------------------------------------------------------------------------------


def tiny_adatad(num_classes: int = 3) -> AdaTAD:
    enc = encoder()
    head = ActionFormerHead(enc.out_channels, num_classes, embed_dim=16, n_head=2, feat_channels=16, max_seq_len=64)
    loss = DetectionLoss(num_classes, head.strides, head.regression_ranges)
    return AdaTAD(enc, head, loss)


def batch(t: int = 64):
    g = torch.Generator().manual_seed(5)
    video = torch.randint(0, 256, (2, t, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
    masks = torch.ones(2, t, dtype=torch.bool)
    masks[1, 50:] = False
    segments = torch.tensor([[[4.0, 20.0], [30.0, 40.0], [0.0, 0.0]], [[10.0, 30.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 2, -1], [1, -1, -1]])
    return video, masks, segments, labels, torch.tensor([2, 1])


def test_adatad_normalises_trains_and_predicts():
    model = tiny_adatad()
    video, masks, segments, labels, num = batch()
    x = model.normalize(video)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(x, (video.permute(0, 4, 1, 2, 3).float() - mean) / std)

    model.train()
    losses = model(video, masks, segments, labels, num)
    assert set(losses) >= {"loss", "cls_loss", "reg_loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder.") and "adapter" not in name:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name

    model.eval()
    dets = model.predict(video, masks, pre_nms_thresh=0.0, pre_nms_topk=50)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    assert dets[0].segments.shape == (50, 2) and dets[0].scores.shape == (50,)

    bad = labels.clone()
    bad[0, 1] = 7
    with pytest.raises(ValueError, match=r"video 0: labels \[0, 7\] outside \[0, 3\)"):
        model(video, masks, segments, bad, num)


def test_param_groups():
    model = tiny_adatad()
    groups = build_param_groups(model, base_lr=1e-4, adapter_lr=2e-4, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["adapter", "decay", "no_decay"]
    assert (by_name["adapter"]["lr"], by_name["adapter"]["weight_decay"]) == (2e-4, 0.05)
    assert (by_name["decay"]["lr"], by_name["decay"]["weight_decay"]) == (1e-4, 0.05)
    assert (by_name["no_decay"]["lr"], by_name["no_decay"]["weight_decay"]) == (1e-4, 0.0)

    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    params = dict(model.named_parameters())
    adapters = {id(p) for n, p in params.items() if "adapter" in n}
    assert ids["adapter"] == adapters  # gamma and biases included, with decay
    assert any(n.endswith("adapter.gamma") for n in params)
    backbone = {id(p) for n, p in params.items() if n.startswith("encoder.") and "adapter" not in n}
    assert not backbone & (ids["decay"] | ids["no_decay"] | ids["adapter"])
    head = {id(p) for n, p in params.items() if n.startswith("head.")}
    assert ids["decay"] | ids["no_decay"] == head and not ids["decay"] & ids["no_decay"]

    decay_expected = {id(m.weight) for m in model.head.modules() if isinstance(m, (nn.Linear, nn.Conv1d))}
    assert ids["decay"] == decay_expected
    special = [m.scale for m in model.head.modules() if isinstance(m, (Scale, AffineDropPath))]
    special += [m.weight for m in model.head.modules() if isinstance(m, nn.LayerNorm)]
    assert special and all(id(p) in ids["no_decay"] for p in special)
    assert all(id(m.bias) in ids["no_decay"] for m in model.head.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d)) and m.bias is not None)
    torch.optim.AdamW(groups)  # accepted as is
