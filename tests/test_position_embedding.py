"""The projection's absolute position embedding (OpenTAD's `use_abs_pe`) and input dropout.

The table against its formula (float64, cast to float32, / sqrt(C)); when it is resized (test inputs
at least as long as the table) or cut (shorter ones); that it is added after the embedding convs and
zero at padding; and that it never reaches a state dict.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adatad.models.actionformer import ActionFormerHead, Conv1DTransformerProj
from adatad.models.position_embedding import position_table_for, sinusoid_position_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def formula(length: int, channels: int, dtype=torch.float64) -> torch.Tensor:
    """Plain-Python sinusoid table (1, C, T) in `dtype`, cast to float32, then / sqrt(C)."""
    rows = [[t / math.pow(10000.0, 2 * (j // 2) / channels) for j in range(channels)] for t in range(length)]
    table = torch.tensor([[math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(r)] for r in rows],
                         dtype=dtype)
    return table.float().T[None] / (channels**0.5)


@pytest.mark.parametrize("length, channels", [(192, 256), (512, 512), (7, 6)])
def test_table_equals_the_float64_formula_exactly(length, channels):
    assert torch.equal(sinusoid_position_table(length, channels), formula(length, channels))


def test_a_float32_formula_is_measurably_different():
    """Why the float64 detail matters: at 512 positions the float32 formula is off by ~1.4e-6."""
    j = torch.arange(512)
    angle = torch.arange(512)[:, None].float() / torch.pow(10000.0, (2 * (j // 2) / 512).float())[None]
    float32_table = torch.where(j % 2 == 0, angle.sin(), angle.cos()).T[None] / (512**0.5)
    diff = (float32_table - sinusoid_position_table(512, 512)).abs().max().item()
    assert 5e-7 < diff < 5e-6


def test_table_use_by_length_and_mode():
    table = sinusoid_position_table(8, 4)
    assert torch.equal(position_table_for(table, 5, training=True), table[:, :, :5])
    assert torch.equal(position_table_for(table, 5, training=False), table[:, :, :5])
    assert torch.equal(position_table_for(table, 8, training=False), table)  # resized to itself: identity
    longer = position_table_for(table, 12, training=False)
    torch.testing.assert_close(longer, F.interpolate(table, size=12, mode="linear", align_corners=False))
    # align_corners=False: output 1 of 12 samples input (1 + 0.5) * 8 / 12 - 0.5 = 0.5
    torch.testing.assert_close(longer[0, :, 1], 0.5 * (table[0, :, 0] + table[0, :, 1]))
    with pytest.raises(ValueError, match="model.head.max_seq_len=8: a training input may not be longer"):
        position_table_for(table, 9, training=True)


def small_projection(**kw) -> Conv1DTransformerProj:
    torch.manual_seed(0)
    args = dict(in_channels=6, out_channels=16, arch=(2, 1, 1), n_head=2, path_pdrop=0.0, use_abs_pe=True,
                max_seq_len=16)
    args.update(kw)
    return Conv1DTransformerProj(**args)


def test_table_is_added_after_the_embedding_convs_and_masked():
    proj = small_projection().eval()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 11:] = False
    seen = {}
    proj.stem[0].register_forward_pre_hook(lambda m, args: seen.update(stem_input=args[0].clone()))
    with torch.no_grad():
        feats, _ = proj(x, mask)
        h, m = x, mask
        for layer in proj.embed:
            h, m = layer(h, m)
        expected = h + sinusoid_position_table(16, 16) * m[:, None].float()
    torch.testing.assert_close(seen["stem_input"], expected)
    assert seen["stem_input"][1, :, 11:].abs().max() == 0  # padding stays zero
    without = small_projection(use_abs_pe=False).eval()
    without.load_state_dict(proj.state_dict())  # same weights: the table is the only difference
    with torch.no_grad():
        plain, _ = without(x, mask)
    assert not torch.allclose(plain[0], feats[0])


def test_test_inputs_longer_than_the_table_get_it_resized():
    proj = small_projection(max_seq_len=8).eval()
    seen = {}
    proj.stem[0].register_forward_pre_hook(lambda m, args: seen.update(stem_input=args[0].clone()))
    x, mask = torch.randn(1, 6, 16), torch.ones(1, 16, dtype=torch.bool)
    with torch.no_grad():
        proj(x, mask)
        h, m = x, mask
        for layer in proj.embed:
            h, m = layer(h, m)
    resized = F.interpolate(sinusoid_position_table(8, 16), size=16, mode="linear", align_corners=False)
    torch.testing.assert_close(seen["stem_input"], h + resized)
    with pytest.raises(ValueError, match="max_seq_len=8"):
        proj.train()(x, mask)


def test_the_table_is_a_buffer_outside_the_state_dict():
    with_table = ActionFormerHead(in_channels=6, num_classes=1, embed_dim=16, feat_channels=16, n_head=2,
                                  max_seq_len=32, use_abs_pe=True)
    without = ActionFormerHead(in_channels=6, num_classes=1, embed_dim=16, feat_channels=16, n_head=2)
    assert set(with_table.state_dict()) == set(without.state_dict())
    assert "projection.pos_embed" in dict(with_table.named_buffers())
    assert not hasattr(without.projection, "pos_embed")
    with torch.device("meta"):
        on_meta = ActionFormerHead(in_channels=6, num_classes=1, embed_dim=16, feat_channels=16, n_head=2,
                                   max_seq_len=32, use_abs_pe=True)
    assert on_meta.projection.pos_embed.device.type == "meta"  # built where the model is built


def test_input_dropout_drops_whole_channels_only_while_training():
    proj = small_projection(use_abs_pe=False, input_pdrop=0.5)
    seen = {}
    proj.embed[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()))
    x, mask = torch.ones(4, 6, 16), torch.ones(4, 16, dtype=torch.bool)
    proj.train()(x, mask)
    per_channel = seen["x"].amax(dim=-1)  # (B, C): 0 or 1 / (1 - p) = 2, the same along the whole channel
    assert torch.equal(seen["x"].amin(dim=-1), per_channel)
    assert set(per_channel.unique().tolist()) == {0.0, 2.0}
    proj.eval()(x, mask)
    assert torch.equal(seen["x"], x)
