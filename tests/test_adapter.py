"""Temporal-informative adapter: identity init, initial distributions, conv along the whole video."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adatad.models.adapter import PlainAdapter, TemporalAdapter, build_adapter
from adatad.models.videomae import VideoMAEBackbone

GRID = (8, 2, 3)  # (t, h, w) tokens per chunk


def tokens(chunks: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(chunks, GRID[0] * GRID[1] * GRID[2], dim, generator=g)


def activate(adapter: torch.nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised up-projection (and gamma) trained-looking values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        adapter.up_proj.weight.copy_(torch.randn(adapter.up_proj.weight.shape, generator=g) * 0.1)
        adapter.up_proj.bias.copy_(torch.randn(adapter.up_proj.bias.shape, generator=g) * 0.1)
        adapter.gamma.fill_(0.7)


@pytest.mark.parametrize("kind", ["tia", "plain"])
def test_adapter_is_exact_identity_at_init(kind):
    adapter = build_adapter(kind, 32)
    x = tokens(4, 32)
    assert torch.equal(adapter(x, GRID, 2), x)


def test_initialisation_follows_spec():
    torch.manual_seed(0)
    a = TemporalAdapter(384)
    assert a.hidden_dim == 96
    assert sum(p.numel() for p in a.parameters()) == 83_905
    assert torch.count_nonzero(a.up_proj.weight) == 0 and torch.count_nonzero(a.up_proj.bias) == 0
    assert a.gamma.item() == 1.0
    for bias in (a.down_proj.bias, a.dwconv.bias, a.conv.bias):
        assert torch.count_nonzero(bias) == 0
    assert a.down_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert a.down_proj.weight.abs().max().item() <= 2.0
    assert a.dwconv.weight.shape == (96, 1, 3)
    assert a.dwconv.weight.std().item() == pytest.approx(math.sqrt(2 / 3), rel=0.15)
    assert a.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 96), rel=0.05)
    with pytest.raises(ValueError, match="unknown adapter_type 'lora'"):
        build_adapter("lora", 8)


def test_temporal_conv_matches_manual_per_location_computation():
    dim, per_video = 16, 3
    adapter = TemporalAdapter(dim)
    activate(adapter)
    x = tokens(2 * per_video, dim)
    with torch.no_grad():
        out = adapter(x, GRID, per_video)
        z = F.gelu(x @ adapter.down_proj.weight.T + adapter.down_proj.bias)
        t, h, w = GRID
        expected = torch.empty_like(x)
        for video in range(2):
            for i in range(h):
                for j in range(w):
                    idx = [(video * per_video + k, ti * h * w + i * w + j) for k in range(per_video) for ti in range(t)]
                    seq = torch.stack([z[c, tok] for c, tok in idx]).T[None]  # (1, C/4, T_total)
                    d = F.conv1d(seq, adapter.dwconv.weight, adapter.dwconv.bias, padding=1, groups=seq.shape[1])
                    d = F.conv1d(d, adapter.conv.weight, adapter.conv.bias)[0].T
                    for n, (c, tok) in enumerate(idx):
                        up = (z[c, tok] + d[n]) @ adapter.up_proj.weight.T + adapter.up_proj.bias
                        expected[c, tok] = x[c, tok] + adapter.gamma * up
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_temporal_conv_crosses_chunk_boundary():
    dim = 16
    adapter = TemporalAdapter(dim)
    x = tokens(2, dim)
    bumped = x.clone()
    bumped[0, -GRID[1] * GRID[2]:] += 1.0  # last temporal slice of chunk 0 only
    with torch.no_grad():
        # Zero up-projection: nothing leaks anywhere.
        assert torch.equal(adapter(x, GRID, 2)[1], adapter(bumped, GRID, 2)[1])
        activate(adapter)
        same_video = adapter(x, GRID, 2)[1], adapter(bumped, GRID, 2)[1]
        separate = adapter(x, GRID, 1)[1], adapter(bumped, GRID, 1)[1]
    assert not torch.allclose(*same_video)  # chunk 1 sees chunk 0 through the temporal conv
    # Only chunk 1's first temporal slice is within kernel reach (k=3) of chunk 0's last slice.
    hw = GRID[1] * GRID[2]
    assert torch.equal(same_video[0][hw:], same_video[1][hw:])
    assert torch.equal(*separate)  # one chunk per video: no cross-chunk mixing


def test_plain_adapter_has_no_temporal_mixing():
    adapter = PlainAdapter(16)
    activate(adapter)
    x = tokens(2, 16)
    bumped = x.clone()
    bumped[0] += 1.0
    with torch.no_grad():
        assert torch.equal(adapter(x, GRID, 2)[1], adapter(bumped, GRID, 2)[1])
        assert not torch.equal(adapter(x, GRID, 2)[0], x[0])


def test_backbone_with_fresh_adapters_equals_plain_backbone():
    kw = {"embed_dim": 32, "depth": 3, "num_heads": 2, "drop_path_rate": 0.1}
    plain = VideoMAEBackbone(adapter_type=None, **kw).eval()
    adapted = VideoMAEBackbone(adapter_type="tia", **kw).eval()
    result = adapted.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all("adapter" in k for k in result.missing_keys)
    x = torch.randn(4, 3, 16, 32, 48)
    with torch.no_grad():
        assert torch.equal(adapted.forward_tokens(x, chunks_per_video=2), plain.forward_tokens(x))
        for block in adapted.blocks:
            activate(block.adapter)
        assert not torch.allclose(adapted.forward_tokens(x, chunks_per_video=2), plain.forward_tokens(x))


def test_adapter_layers_selects_blocks():
    model = VideoMAEBackbone(embed_dim=32, depth=4, num_heads=2, adapter_layers=[1, 3])
    assert [b.adapter is not None for b in model.blocks] == [False, True, False, True]
    with pytest.raises(ValueError, match=r"adapter_layers \[4\] out of range for depth 4"):
        VideoMAEBackbone(embed_dim=32, depth=4, num_heads=2, adapter_layers=[0, 4])


def test_wrong_grid_is_reported():
    with pytest.raises(ValueError, match="does not match grid"):
        TemporalAdapter(16)(torch.zeros(3, 48, 16), GRID, 2)
