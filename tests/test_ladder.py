"""Side-tuning (OpenTAD's VisionTransformerLadder, AdaTAD†): the ladder's sum, written out here from
OpenTAD's `vit_ladder.py` (`output = feat_list[-1]; output += adapters[i](feat_list[i], h, w)`, the
adapter `up(z + conv(dwconv(z))) * gamma` without a residual), the ViT outside autograd, and what
trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import adatad.models.ladder as ladder_module
from adatad.engine.param_groups import build_param_groups
from adatad.models.chunked import ChunkedEncoder
from adatad.models.ladder import LadderAdapter, LadderNetwork
from adatad.models.videomae import VideoMAEBackbone

DIM, HEADS = 32, 2


def ladder_backbone(layers: list[int], depth: int = 4, seed: int = 0) -> VideoMAEBackbone:
    torch.manual_seed(seed)
    return VideoMAEBackbone(embed_dim=DIM, depth=depth, num_heads=HEADS, adapter_type="ladder",
                            adapter_layers=layers, adapter_mlp_ratio=0.25, drop_path_rate=0.0)


def activate(module: torch.nn.Module, seed: int = 1) -> None:
    """Trained-looking up-projections and gammas (a fresh ladder adds exactly nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in module.modules():
            if isinstance(adapter, LadderAdapter):
                adapter.up_proj.weight.copy_(0.2 * torch.randn(adapter.up_proj.weight.shape, generator=g))
                adapter.up_proj.bias.copy_(0.2 * torch.randn(adapter.up_proj.bias.shape, generator=g))
                adapter.gamma.fill_(0.8)


def reference_adapter(adapter: LadderAdapter, x: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    """OpenTAD's ladder Adapter.forward on (chunks, t*h*w, C), one video: the time axis spans every chunk."""
    z = F.gelu(F.linear(x, adapter.down_proj.weight, adapter.down_proj.bias))
    n, length, c = z.shape
    seq = z.reshape(1, n * t, h, w, c).permute(0, 2, 3, 4, 1).flatten(0, 2)  # (h*w, c, time)
    seq = F.conv1d(seq, adapter.dwconv.weight, adapter.dwconv.bias, padding=1, groups=c)
    seq = F.conv1d(seq, adapter.conv.weight, adapter.conv.bias)
    d = seq.unflatten(0, (1, h, w)).permute(0, 4, 1, 2, 3).reshape(n, length, c)
    return F.linear(z + d, adapter.up_proj.weight, adapter.up_proj.bias) * adapter.gamma


def test_the_ladder_sums_its_adapters_onto_the_last_listed_block():
    backbone = ladder_backbone([1, 3])
    activate(backbone)
    backbone.eval()
    x = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(2))  # 2 chunks of one video
    grid = backbone.grid_for(32, 32)
    with torch.no_grad():
        out = backbone.forward_tokens(x, chunks_per_video=2)
        tokens = backbone.patch_embed(x) + backbone.pos_embed(grid)
        outputs = []
        for block in backbone.blocks:
            tokens = block(tokens, grid, 2)
            outputs.append(tokens)
    adapters = backbone.ladders.adapters
    expected = outputs[3] + reference_adapter(adapters[0], outputs[1], *grid) + reference_adapter(
        adapters[1], outputs[3], *grid)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert [b.adapter for b in backbone.blocks] == [None] * 4 and backbone.ladder_layers == [1, 3]
    assert backbone.adapter_layers == []


def test_a_fresh_ladder_returns_the_last_listed_blocks_output_and_later_blocks_do_not_count():
    """Zero up-projections: the features are block 1's output exactly; block 2 and 3 (after the last
    listed block) change nothing, so they need not run."""
    backbone = ladder_backbone([0, 1]).eval()
    x = torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(3))
    grid = backbone.grid_for(32, 32)
    calls = []
    backbone.blocks[2].register_forward_hook(lambda *args: calls.append(2))
    with torch.no_grad():
        out = backbone.forward_tokens(x)
        tokens = backbone.patch_embed(x) + backbone.pos_embed(grid)
        for block in backbone.blocks[:2]:
            tokens = block(tokens, grid, 1)
    assert torch.equal(out, tokens) and calls == []


def test_only_the_ladder_trains_and_checkpointing_gives_the_same_gradients(monkeypatch):
    calls = []
    real = ladder_module.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(ladder_module, "checkpoint", counting)
    x = torch.randn(2, 3, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    grads = []
    for use_checkpoint in (False, True):
        backbone = ladder_backbone([1, 2, 3], seed=5)
        activate(backbone)
        encoder = ChunkedEncoder(backbone, use_checkpoint=use_checkpoint).train()
        encoder(x).square().mean().backward()
        assert all(p.grad is None for n, p in backbone.named_parameters() if not n.startswith("ladders."))
        grads.append({n: p.grad.clone() for n, p in backbone.ladders.named_parameters()})
    assert calls == list(backbone.ladders.adapters)  # one checkpoint per adapter, only in the second run
    assert set(grads[0]) == set(grads[1]) and len(grads[0]) == 3 * 9
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6)
    groups = build_param_groups(encoder, base_lr=1e-4, adapter_lr=2e-4)
    adapter_group = next(g for g in groups if g["name"] == "adapter")
    assert len(adapter_group["params"]) == 3 * 9 and adapter_group["lr"] == 2e-4


def test_whole_blocks_of_a_ladder_stay_in_eval_mode():
    """OpenTAD's ladder puts every child of every block in eval mode, drop path included; the
    in-block adapters' backbone keeps drop path in train mode (tests/test_chunked.py)."""
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(embed_dim=DIM, depth=2, num_heads=HEADS, adapter_type="ladder",
                                adapter_layers=[0, 1], drop_path_rate=0.5)
    encoder = ChunkedEncoder(backbone).train()
    assert not any(m.training for b in backbone.blocks for child in b.children() for m in child.modules())
    assert all(m.training for m in backbone.ladders.modules())
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))  # no random drop path


def test_the_state_dict_names_are_opentads():
    backbone = ladder_backbone([2, 3])
    names = {k for k in backbone.state_dict() if k.startswith("ladders.")}
    assert names == {f"ladders.adapters.{i}.{p}" for i in range(2)
                     for p in ("down_proj.weight", "down_proj.bias", "dwconv.weight", "dwconv.bias", "conv.weight",
                               "conv.bias", "up_proj.weight", "up_proj.bias", "gamma")}
    assert list(backbone.state_dict())[-1].startswith("ladders.")  # after the blocks, as in OpenTAD's listing
    assert backbone.ladders.adapters[0].down_proj.out_features == DIM // 4


def test_bad_ladders_are_refused():
    with pytest.raises(ValueError, match=r"name a block twice"):
        ladder_backbone([1, 1])
    with pytest.raises(ValueError, match="at least one adapter"):
        LadderNetwork(DIM, 0)
    net = LadderNetwork(DIM, 2)
    with pytest.raises(ValueError, match="2 adapters but got 1 block outputs"):
        net([torch.zeros(1, 8 * 2 * 2, DIM)], (8, 2, 2), 1)
