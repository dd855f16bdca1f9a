"""VideoMAE backbone: checkpoint layouts, errors, and token equality with a from-scratch reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adatad.models.videomae import (
    VIDEOMAE_VARIANTS,
    VideoMAEBackbone,
    build_videomae,
    load_videomae_checkpoint,
)
from adatad.models.videomae_keys import (
    convert_videomae_state_dict,
    describe_vit,
    unwrap_state_dict,
    videomae_layout,
)
from adatad.models.weights import WeightsError, shapes_of

DIM, DEPTH, HEADS, MLP = 64, 2, 2, 4


def tiny(**kw) -> VideoMAEBackbone:
    args = {"embed_dim": DIM, "depth": DEPTH, "num_heads": HEADS, "pretrain_img_size": 224, "drop_path_rate": 0.1}
    return VideoMAEBackbone(**{**args, **kw})


def original_shapes(dim: int = DIM, depth: int = DEPTH, patch: int = 16,
                    hidden: int | None = None) -> dict[str, tuple[int, ...]]:
    """The encoder's keys and shapes in the original layout (MCG-NJU VideoMAE, OpenGVLab VideoMAEv2),
    written out here, not taken from the module."""
    hidden = MLP * dim if hidden is None else hidden
    shapes = {"patch_embed.proj.weight": (dim, 3, 2, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        p = f"blocks.{i}."
        shapes |= {
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.q_bias": (dim,), p + "attn.v_bias": (dim,), p + "attn.qkv.weight": (3 * dim, dim),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
            p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,),
        }
    return shapes


def official_state(dim: int = DIM, depth: int = DEPTH, seed: int = 0, patch: int = 16,
                   hidden: int | None = None, compact: bool = False) -> dict[str, torch.Tensor]:
    """Random encoder weights under the original key names (`original_shapes`).

    compact: each tensor is one random row expanded to its shape (small on disk at full width,
    still distinct per tensor).
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in original_shapes(dim, depth, patch, hidden).items():
        scale = 0.1 if len(shape) == 2 else 0.05
        if compact:
            value = (torch.randn(shape[-1], generator=g) * scale).expand(shape)
        else:
            value = torch.randn(shape, generator=g) * scale
        sd[key] = 1 + value if key.endswith(("norm1.weight", "norm2.weight")) else value
    return sd


def to_mmaction(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under mmaction2 names (backbone. prefix, projection, FFN layers)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("patch_embed.proj.", "patch_embed.projection.")
        k = k.replace(".mlp.fc1.", ".mlp.layers.0.0.").replace(".mlp.fc2.", ".mlp.layers.1.")
        out["backbone." + k] = v
    return out


@pytest.mark.parametrize("layout", ["mcg", "mmaction"])
def test_checkpoint_round_trip(tmp_path, layout):
    sd = official_state()
    extras_mcg = {"fc_norm.weight": torch.ones(DIM), "fc_norm.bias": torch.zeros(DIM),
                  "head.weight": torch.zeros(400, DIM), "head.bias": torch.zeros(400),
                  "pos_embed": torch.zeros(1, 1568, DIM)}
    if layout == "mcg":
        payload = {"module": {**sd, **extras_mcg}}
    else:
        mm = to_mmaction(sd)
        assert "backbone.blocks.1.mlp.layers.0.0.weight" in mm and "backbone.patch_embed.projection.bias" in mm
        mm |= {"cls_head.fc_cls.weight": torch.zeros(400, DIM), "cls_head.fc_cls.bias": torch.zeros(400),
               "backbone.pos_embed": torch.zeros(1, 1568, DIM), "backbone.fc_norm.weight": torch.ones(DIM)}
        payload = {"meta": {"epoch": 1}, "state_dict": mm}
    path = tmp_path / f"{layout}.pth"
    torch.save(payload, path)

    model = tiny()
    report = load_videomae_checkpoint(model, path)
    own = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(own[k], v), k
    assert report.unexpected == []
    assert report.missing and all("adapter" in k for k in report.missing)
    assert any(k.endswith("pos_embed") for k in report.dropped)
    assert any("head" in k for k in report.dropped) and any("fc_norm" in k for k in report.dropped)
    # Adapters keep their identity init.
    assert torch.count_nonzero(model.blocks[0].adapter.up_proj.weight) == 0


def test_convert_pretraining_layout_drops_decoder():
    sd = {"encoder.patch_embed.proj.weight": torch.zeros(1), "encoder.blocks.0.mlp.fc1.bias": torch.zeros(1),
          "encoder.norm.weight": torch.zeros(1), "decoder.blocks.0.mlp.fc1.weight": torch.zeros(1),
          "encoder_to_decoder.weight": torch.zeros(1), "mask_token": torch.zeros(1),
          "module.backbone.blocks.3.mlp.layers.1.weight": torch.zeros(1),
          "backbone.blocks.3.norm1.weight": torch.zeros(1)}
    converted, dropped = convert_videomae_state_dict(sd)
    assert sorted(converted) == ["blocks.0.mlp.fc1.bias", "blocks.3.mlp.fc2.weight", "blocks.3.norm1.weight",
                                 "patch_embed.proj.weight"]
    assert sorted(dropped) == ["decoder.blocks.0.mlp.fc1.weight", "encoder.norm.weight",
                               "encoder_to_decoder.weight", "mask_token"]


# -- reference encoder from raw tensors --------------------------------------------------------


def reference_table(n: int, dim: int) -> torch.Tensor:
    table = np.array([[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(n)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def reference_encoder(sd, x, heads, depth, patch=16):
    """The ViT written out from raw tensors; pixels past the last whole patch are cut explicitly."""
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    x = x[..., :h * patch, :w * patch]
    y = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(2, patch, patch))
    n, c, t, _, _ = y.shape
    tokens = y.flatten(2).transpose(1, 2)
    side = 224 // patch  # the pretraining grid: 14 x 14 at patch 16, 16 x 16 at patch 14
    table = reference_table(8 * side * side, c)
    slices = []
    for ti in range(t):
        s = table[ti * side * side:(ti + 1) * side * side].reshape(side, side, c).permute(2, 0, 1)[None]
        if (h, w) != (side, side):
            s = F.interpolate(s, size=(h, w), mode="bicubic", align_corners=False)
        slices.append(s[0].permute(1, 2, 0).reshape(h * w, c))
    tokens = tokens + torch.cat(slices)[None]
    d = c // heads
    for i in range(depth):
        p = f"blocks.{i}."
        a = F.layer_norm(tokens, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(c), sd[p + "attn.v_bias"]])
        qkv = a @ sd[p + "attn.qkv.weight"].T + bias
        q, k, v = (qkv[..., j * c:(j + 1) * c].reshape(n, -1, heads, d).transpose(1, 2) for j in range(3))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(n, -1, c)
        tokens = tokens + o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        m = F.layer_norm(tokens, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        m = F.gelu(m @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        tokens = tokens + m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return tokens


@pytest.mark.parametrize("size", [64, 160, 224])
def test_tokens_match_reference_encoder(tmp_path, size):
    sd = official_state(seed=1)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, path)
    model = tiny()
    load_videomae_checkpoint(model, path)
    model.eval()
    x = torch.randn(2, 3, 16, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.forward_tokens(x)
        ref = reference_encoder(sd, x, HEADS, DEPTH)
    assert ours.shape == (2, 8 * (size // 16) ** 2, DIM)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_position_table_is_buffer_not_parameter():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert not any("pos" in n for n in names)
    assert "pos_table" not in model.state_dict()
    grid = model.grid_for(160, 160)
    assert grid == (8, 10, 10)
    assert model.pos_embed(grid).shape == (1, 800, DIM)
    assert model.pos_embed(grid) is model.pos_embed(grid)  # cached per size


def test_variants_and_parameter_count():
    assert VIDEOMAE_VARIANTS["S"] == {"embed_dim": 384, "depth": 12, "num_heads": 6}
    assert VIDEOMAE_VARIANTS["H"] == {"embed_dim": 1280, "depth": 32, "num_heads": 16}
    model = build_videomae("S")
    vit = sum(p.numel() for n, p in model.named_parameters() if "adapter" not in n)
    adapters = sum(p.numel() for n, p in model.named_parameters() if "adapter" in n)
    assert vit == 21_879_168  # VideoMAE-S encoder without head
    assert adapters == 12 * 83_905
    with pytest.raises(ValueError, match="unknown VideoMAE variant 'X'"):
        build_videomae("X")


def test_missing_path_names_it(tmp_path):
    path = tmp_path / "nowhere" / "vit-s.pth"
    with pytest.raises(WeightsError, match=r"VideoMAE checkpoint not found: .*vit-s\.pth"):
        load_videomae_checkpoint(tiny(), path)


def test_not_a_checkpoint_names_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"notes\.pth is not a loadable PyTorch checkpoint: not a zip archive"):
        load_videomae_checkpoint(tiny(), path)
    refused = tmp_path / "numpy.pth"
    torch.save({"patch_embed.proj.bias": np.zeros(DIM)}, refused)  # needs unpickling beyond weights_only
    with pytest.raises(WeightsError) as info:
        load_videomae_checkpoint(tiny(), refused)
    assert str(info.value).startswith(f"{refused} is not a loadable PyTorch checkpoint: weights_only refused it: "
                                      "Unsupported global"), str(info.value)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    other = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, other)
    with pytest.raises(WeightsError, match=r"numbers\.pth holds no state dict of tensors"):
        load_videomae_checkpoint(tiny(), other)


def test_wrong_architecture_lists_keys_and_shapes(tmp_path):
    wide = tmp_path / "wide.pth"
    torch.save(official_state(dim=128), wide)
    with pytest.raises(WeightsError, match=r"wide\.pth does not fit this VideoMAE architecture: 28 of another shape "
                                           r"\[patch_embed\.proj\.weight: file \[128, 3, 2, 16, 16\] vs model "
                                           r"\[64, 3, 2, 16, 16\]"):
        load_videomae_checkpoint(tiny(), wide)

    shallow = tmp_path / "shallow.pth"
    torch.save(official_state(depth=1), shallow)
    with pytest.raises(WeightsError, match=r"architecture: 13 missing \[blocks\.1\.norm1\.weight"):
        load_videomae_checkpoint(tiny(), shallow)
    # Non-strict loading reports what it could not fill instead of raising.
    report = load_videomae_checkpoint(tiny(), shallow, strict_backbone=False)
    assert "blocks.1.attn.qkv.weight" in report.missing

    deep = tmp_path / "deep.pth"
    torch.save(official_state(depth=3), deep)
    with pytest.raises(WeightsError, match=r"architecture: 13 unexpected \[blocks\.2\."):
        load_videomae_checkpoint(tiny(), deep)

    unrelated = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}, unrelated)
    with pytest.raises(WeightsError, match=r"resnet\.pth contains no VideoMAE backbone weights"):
        load_videomae_checkpoint(tiny(), unrelated, strict_backbone=False)


def test_adapters_are_optional_but_must_fit_when_present(tmp_path):
    """A VideoMAE file has no adapters (they keep their init); a file that has them must match."""
    source = tiny()
    with torch.no_grad():
        source.blocks[0].adapter.down_proj.weight.fill_(0.5)
    with_adapters = tmp_path / "adapted.pth"
    torch.save(source.state_dict(), with_adapters)
    model = tiny()
    report = load_videomae_checkpoint(model, with_adapters)
    assert report.missing == [] and torch.all(model.blocks[0].adapter.down_proj.weight == 0.5)

    narrow = tiny(adapter_mlp_ratio=0.5).state_dict()  # adapters of another width, backbone the same
    torch.save(narrow, tmp_path / "narrow.pth")
    with pytest.raises(WeightsError, match=r"narrow\.pth does not fit this VideoMAE architecture: \d+ of another "
                                           r"shape \[blocks\.0\.adapter\."):
        load_videomae_checkpoint(tiny(), tmp_path / "narrow.pth", strict_backbone=False)


def test_bad_input_shape_is_reported():
    with pytest.raises(ValueError, match=r"expected chunks \(N, 3, 16, H, W\), got \(1, 3, 8, 32, 32\)"):
        tiny().forward_tokens(torch.zeros(1, 3, 8, 32, 32))


def test_residual_stream_stays_float32_under_autocast():
    """OpenTAD adds its float32 position table to the fp16 patch embedding without a cast, so under
    AMP the token stream between the blocks is float32 (only the blocks' matmuls run in half)."""
    torch.manual_seed(0)
    model = VideoMAEBackbone(embed_dim=32, depth=2, num_heads=2, adapter_type=None).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = model.forward_tokens(x)
        embedded = model.patch_embed(x)
    assert embedded.dtype == torch.bfloat16  # the conv itself runs in half precision
    assert tokens.dtype == torch.float32


# -- VideoMAEv2-g geometry: patch 14, a crop that is not a multiple of it, an MLP of 48/11 x width ------


@pytest.mark.parametrize("size, side", [(160, 11), (224, 16), (170, 12)])
def test_patch_14_floors_the_crop_and_resizes_the_16x16_table(tmp_path, size, side):
    """160 px at patch 14: 11 x 11 tokens from the first 154 px, the 16 x 16 table resized bicubically
    (OpenTAD's unpadded PatchEmbed and its pos_embed interpolation); 224 px: the table as it is."""
    hidden = 3 * DIM - 5  # an MLP width that is no round multiple of the width, like the g's 6144
    sd = official_state(seed=3, patch=14, hidden=hidden)
    torch.save({"module": sd}, tmp_path / "g.pth")
    model = tiny(patch_size=14, mlp_hidden_dim=hidden)
    load_videomae_checkpoint(model, tmp_path / "g.pth")
    model.eval()
    x = torch.randn(1, 3, 16, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model.forward_tokens(x)
        ref = reference_encoder(sd, x, HEADS, DEPTH, patch=14)
    assert model.pretrain_grid == (8, 16, 16) and model.grid_for(size, size) == (8, side, side)
    assert model.blocks[0].mlp.fc1.out_features == hidden
    assert ours.shape == (1, 8 * side * side, DIM)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_frames_smaller_than_a_patch_are_refused():
    with pytest.raises(ValueError, match="frames of 12x160 px are smaller than one 14-px patch"):
        tiny(patch_size=14).forward_tokens(torch.zeros(1, 3, 16, 12, 160))


# -- every layout of every size: the full key set, built on the meta device --------------------

# width, depth, heads, patch, MLP width of the five backbones (OpenTAD's configs), written out here
SIZES = {"S": (384, 12, 6, 16, 1536), "B": (768, 12, 12, 16, 3072), "L": (1024, 24, 16, 16, 4096),
         "H": (1280, 32, 16, 16, 5120), "g": (1408, 40, 16, 14, 6144)}
CLASSES = {"S": 400, "B": 400, "L": 400, "H": 400, "g": 710}  # K400 heads; the g is fine-tuned on K710


def mmaction_layout(sd: dict[str, torch.Tensor], dim: int, patch: int, classes: int) -> dict[str, torch.Tensor]:
    """What mmaction2's Recognizer3D saves: its ViT names under backbone., the fixed table as a
    buffer, the unused fc_norm and the classifier (OpenTAD's converters save exactly this)."""
    side = 224 // patch
    return {**to_mmaction(sd), "backbone.pos_embed": torch.zeros(dim).expand(1, 8 * side * side, dim),
            "backbone.fc_norm.weight": torch.ones(dim), "backbone.fc_norm.bias": torch.zeros(dim),
            "cls_head.fc_cls.weight": torch.zeros(classes).expand(dim, classes).T, "cls_head.fc_cls.bias":
            torch.zeros(classes)}


def original_layout(sd: dict[str, torch.Tensor], dim: int, classes: int) -> dict[str, torch.Tensor]:
    """What the MCG-NJU / OpenGVLab fine-tuning code saves: no position table, fc_norm and head."""
    return {**sd, "fc_norm.weight": torch.ones(dim), "fc_norm.bias": torch.zeros(dim),
            "head.weight": torch.zeros(classes).expand(dim, classes).T, "head.bias": torch.zeros(classes)}


LAYOUTS = {  # name -> (payload builder, what videomae_layout calls it)
    "original": (lambda sd, dim, patch, classes: {"module": original_layout(sd, dim, classes)},
                 "original VideoMAE/VideoMAEv2 keys under 'module'"),
    "mmaction2_release": (lambda sd, dim, patch, classes: {"meta": {"epoch": 1},
                                                           "state_dict": mmaction_layout(sd, dim, patch, classes)},
                          "mmaction2 keys under 'state_dict'"),
    "opentad_converted": (lambda sd, dim, patch, classes: mmaction_layout(sd, dim, patch, classes),
                          "mmaction2 keys at the top level"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("variant", sorted(SIZES))
def test_every_layout_of_every_size_maps_onto_the_model_key_for_key(variant, layout):
    dim, depth, heads, patch, hidden = SIZES[variant]
    with torch.device("meta"):
        model = build_videomae(variant)
        sd = {k: torch.empty(shape) for k, shape in original_shapes(dim, depth, patch, hidden).items()}
        build, name = LAYOUTS[layout]
        payload = build(sd, dim, patch, CLASSES[variant])
    own = {k: v for k, v in shapes_of(model).items() if ".adapter." not in k}
    converted, dropped = convert_videomae_state_dict(unwrap_state_dict(payload))
    assert list(converted) == list(own)  # every ViT tensor, in the model's order
    assert all(tuple(converted[k].shape) == own[k][0] for k in own)
    assert sorted(dropped) == (
        ["backbone.fc_norm.bias", "backbone.fc_norm.weight", "backbone.pos_embed", "cls_head.fc_cls.bias",
         "cls_head.fc_cls.weight"] if layout != "original"
        else ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"])
    assert videomae_layout(payload) == name
    assert describe_vit(converted) == model.describe() == (
        f"{dim}-d, {depth} blocks, patch {patch}, tubelet 2, MLP {hidden}")
    assert VIDEOMAE_VARIANTS[variant]["num_heads"] == heads


# -- VideoMAEv2-g files, depth-reduced at the full width -------------------------------------------

GW, GHIDDEN = 1408, 6144


@pytest.fixture(scope="module")
def g2() -> VideoMAEBackbone:
    """The g's first two blocks at full width (50 M parameters instead of 1.1 B)."""
    torch.manual_seed(0)
    return build_videomae("g", depth=2, drop_path_rate=0.0)


@pytest.mark.parametrize("layout, file_name", [
    ("original", "vit_g_hybrid_pt_1200e_k710_ft.pth"),
    ("opentad_converted", "vit-giant-p14_videomaev2-hybrid_pt_1200e_k710_ft_my.pth"),
])
def test_videomaev2_g_files_load_in_both_layouts(tmp_path, g2, layout, file_name):
    """OpenGVLab's release ({"module": ...}, original names) and OpenTAD's convert_videomaev2.py output
    (flat mmaction2 state dict) fill every ViT tensor with the file's own value."""
    sd = official_state(dim=GW, depth=2, seed=5, patch=14, hidden=GHIDDEN, compact=True)
    build, name = LAYOUTS[layout]
    path = tmp_path / file_name
    torch.save(build(sd, GW, 14, 710), path)
    report = load_videomae_checkpoint(g2, path)
    own = g2.state_dict()
    for key, value in sd.items():
        assert torch.equal(own[key], value), key
    assert report.layout == name and report.unexpected == []
    assert len(report.missing) == 2 * 9 and all(".adapter." in k for k in report.missing)
    assert len(report.dropped) == (4 if layout == "original" else 5)


def test_a_file_of_another_size_names_both_architectures(tmp_path, g2):
    """VideoMAE-H's mmaction2-layout file given to the g: one line saying which ViT each one is."""
    h_file = official_state(dim=1280, depth=2, seed=6, patch=16, hidden=5120, compact=True)
    path = tmp_path / "vit-huge-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"
    torch.save({"meta": {}, "state_dict": mmaction_layout(h_file, 1280, 16, 400)}, path)
    with pytest.raises(WeightsError) as info:
        load_videomae_checkpoint(g2, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} does not fit this VideoMAE architecture: 28 of another shape "
                              "[patch_embed.proj.weight: file [1280, 3, 2, 16, 16] vs model [1408, 3, 2, 14, 14]")
    assert message.endswith("(file: 1280-d, 2 blocks, patch 16, tubelet 2, MLP 5120, mmaction2 keys under "
                            "'state_dict'; model: 1408-d, 2 blocks, patch 14, tubelet 2, MLP 6144)")


def test_a_pretraining_file_is_named_as_such():
    payload = {"model": {"encoder.patch_embed.proj.weight": torch.zeros(1), "decoder.norm.weight": torch.zeros(1)}}
    assert videomae_layout(payload) == "VideoMAE pre-training keys (encoder + decoder) under 'model'"
    assert videomae_layout({"conv1.weight": torch.zeros(1)}) == "no VideoMAE keys at the top level"
