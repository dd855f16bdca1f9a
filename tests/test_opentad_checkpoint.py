"""OpenTAD's AdaTAD checkpoints load into this project's model, tensor for tensor, and every bad
file gets one line naming the file and the key(s).

The files are built here from tests/fixtures/opentad_adatad_s_thumos_keys.tsv (OpenTAD's AdaTAD
VideoMAE-S THUMOS detector: key, dtype, shape, kind of all 499 entries) in both layouts OpenTAD
writes: published {epoch, state_dict_ema} and training {epoch, state_dict, optimizer, scheduler,
state_dict_ema}, with and without DDP's `module.` prefix. The expected name of each tensor in this
project is written out below independently of adatad/models/opentad_keys.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.engine.state import build_training_state
from adatad.models.build import build_model, model_from_checkpoint
from adatad.models.opentad_keys import convert_opentad_state_dict
from adatad.models.trained import read_trained
from adatad.models.weights import WeightsError
from tests.opentad_listing import expected_name, read_listing_file, videomae_table

FIXTURE = Path(__file__).parent / "fixtures" / "opentad_adatad_s_thumos_keys.tsv"
THUMOS = CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"
RANDOM_BACKBONE = ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"]
OPENTAD_PARAMS = 49_582_504  # all parameters of OpenTAD's detector, fc_norm included (its layout note)
FC_NORM = ("backbone.model.backbone.fc_norm.weight", "backbone.model.backbone.fc_norm.bias")
POS_EMBED = "backbone.model.backbone.pos_embed"
LOSS_NORM = "rpn_head.loss_normalizer"
# (OpenTAD key without `module.`, index, value, our key): known values planted in the files.
PLANTED = [
    ("backbone.model.backbone.blocks.7.adapter.up_proj.weight", (3, 5), 1234.5,
     "encoder.backbone.blocks.7.adapter.up_proj.weight"),
    ("rpn_head.cls_convs.1.conv.weight", (10, 20, 2), -777.25, "head.heads.cls_convs.1.conv.weight"),
    ("rpn_head.scale.3.scale", (), 2.5, "head.heads.scales.3.scale"),
]


@dataclass(frozen=True)
class Row:
    key: str  # without `module.`
    dtype: torch.dtype
    shape: tuple[int, ...]
    kind: str


def read_rows() -> list[Row]:
    return [Row(*entry) for entry in read_listing_file(FIXTURE)]


def opentad_weights(rows: list[Row], seed: int, compact: bool, ema: bool = True) -> dict[str, torch.Tensor]:
    """A detector state dict with the fixture's keys, dtypes and shapes (no `module.`), values random.

    compact: each tensor is one random row expanded to its shape (kilobytes on disk, still distinct
    per tensor). The EMA copy's loss_normalizer is int64, as OpenTAD writes it.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for row in rows:
        if row.key == POS_EMBED:
            value = videomae_table(*row.shape[-2:]).reshape(row.shape)
        elif row.key == LOSS_NORM:
            value = torch.tensor(100) if ema else torch.tensor(93.5)
        elif compact:
            value = torch.randn(row.shape[-1:], generator=gen).expand(row.shape)
        else:
            value = torch.randn(row.shape, generator=gen)
        out[row.key] = value
    for key, index, planted, _ in PLANTED:
        out[key] = out[key].clone()
        out[key][index] = planted if ema else -planted
    return out


def with_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in weights.items()}


def published(weights: dict[str, torch.Tensor]) -> dict:
    return {"epoch": 59, "state_dict_ema": weights}


def training(weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor]) -> dict:
    return {"epoch": 3, "state_dict": weights, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {"last_epoch": 3}, "state_dict_ema": ema}


def save(obj: dict, path: Path) -> Path:
    torch.save(obj, path)
    return path


def one_line_error(path: Path, config=None, use_ema: bool = True) -> str:
    with pytest.raises(WeightsError) as info:
        read_trained(path, config, use_ema=use_ema)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# ---------------------------------------------------------------- fixtures (built once per module)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: faster on one thread (conftest)


@pytest.fixture(scope="module")
def cfg():
    return load_config(THUMOS, RANDOM_BACKBONE)


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return read_rows()


@pytest.fixture(scope="module")
def project(cfg) -> dict:
    """Names, shapes, dtypes and parameter count of the project's model for the THUMOS config."""
    model = build_model(cfg)
    return {"shapes": {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()},
            "params": sum(p.numel() for p in model.parameters()),
            "buffers": [k for k, _ in model.named_buffers() if k in model.state_dict()]}


@pytest.fixture(scope="module")
def zoo_file(rows, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A full-size published file (real random values, module. prefix) and its tensors."""
    weights = opentad_weights(rows, seed=1, compact=False)
    path = save(published(with_prefix(weights)), tmp_path_factory.mktemp("zoo") / "adatad_s_thumos.pth")
    return path, weights


@pytest.fixture(scope="module")
def compact(rows) -> dict[str, torch.Tensor]:
    return opentad_weights(rows, seed=2, compact=True)


# ---------------------------------------------------------------- the mapping


def test_the_key_list_maps_onto_the_project_model_one_to_one(rows, project) -> None:
    assert len(rows) == 499
    assert [r.kind for r in rows].count("param") == 497 and [r.kind for r in rows].count("buffer") == 2
    assert sum(int(np.prod(r.shape)) for r in rows if r.kind == "param") == OPENTAD_PARAMS
    shapes = {r.key: torch.zeros((), dtype=r.dtype).expand(r.shape) for r in rows}
    conversion = convert_opentad_state_dict(with_prefix(shapes))
    assert conversion.unmapped == []
    assert conversion.dropped == [f"module.{k}" for k in FC_NORM]
    assert conversion.pos_embed is not None and tuple(conversion.pos_embed.shape) == (1, 1568, 384)
    assert len(conversion.weights) + len(conversion.dropped) + 1 == 499  # 496 mapped, 2 dropped, 1 checked
    assert set(conversion.weights) == set(project["shapes"])
    for row in rows:
        if row.key in FC_NORM or row.key == POS_EMBED:
            continue
        name = expected_name(row.key)
        assert conversion.sources[name] == f"module.{row.key}"
        assert project["shapes"][name][0] == row.shape, name
    # parameters: OpenTAD's minus the unused fc_norm; buffers: the loss normaliser only (the
    # sinusoid table is rebuilt, not saved)
    fc_norm = sum(int(np.prod(r.shape)) for r in rows if r.key in FC_NORM)
    assert fc_norm == 768 and project["params"] == OPENTAD_PARAMS - fc_norm == 49_581_736
    assert project["buffers"] == ["criterion.loss_normalizer"]


def test_a_published_file_fills_every_tensor_with_its_own_value(zoo_file, project, cfg) -> None:
    path, weights = zoo_file
    trained = read_trained(path, cfg)
    assert (trained.path, trained.kind, trained.weights) == (path, "opentad", "ema")
    state = trained.state
    assert list(state["model"]) == list(project["shapes"])  # every model tensor, in the model's order
    assert state["ema"] is None and state["config"] == cfg.to_dict()
    for key, value in weights.items():
        if key in FC_NORM or key == POS_EMBED:
            continue
        got = state["model"][expected_name(key)]
        assert got.dtype == torch.float32 and torch.equal(got, value.float()), key
    assert state["model"]["criterion.loss_normalizer"].item() == 100.0  # int64 in the EMA copy
    for _, index, planted, ours in PLANTED:
        assert state["model"][ours][index].item() == planted
    assert state["class_names"] == []  # OpenTAD files carry none: the config's class map gives them
    model, rebuilt = model_from_checkpoint(state)  # the lead's path: build + load from this dict
    assert rebuilt.model.head.num_classes == 20
    assert model.encoder.backbone.blocks[7].adapter.up_proj.weight[3, 5].item() == 1234.5
    assert model.head.heads.scales[3].scale.item() == 2.5


def test_training_layout_takes_the_ema_by_default_and_state_dict_on_request(rows, compact, cfg, tmp_path) -> None:
    plain = opentad_weights(rows, seed=2, compact=True, ema=False)
    path = save(training(with_prefix(plain), with_prefix(compact)), tmp_path / "epoch_3.pth")
    ema = read_trained(path, cfg)
    model = read_trained(path, cfg, use_ema=False)
    assert (ema.weights, model.weights) == ("ema", "model")
    for _, index, planted, ours in PLANTED:
        assert ema.state["model"][ours][index].item() == planted
        assert model.state["model"][ours][index].item() == -planted
    assert ema.state["model"]["criterion.loss_normalizer"].item() == 100.0
    assert model.state["model"]["criterion.loss_normalizer"].item() == 93.5


def test_use_ema_false_on_a_published_file_is_one_line(zoo_file, cfg) -> None:
    message = one_line_error(zoo_file[0], cfg, use_ema=False)
    assert "use_ema=False needs 'state_dict'" in message and "['epoch', 'state_dict_ema']" in message


def test_files_without_the_module_prefix_load(rows, compact, cfg, tmp_path) -> None:
    plain = opentad_weights(rows, seed=2, compact=True, ema=False)
    for name, obj in (("published", published(compact)), ("training", training(plain, compact))):
        trained = read_trained(save(obj, tmp_path / f"{name}.pth"), cfg)
        assert trained.weights == "ema"
        for _, index, planted, ours in PLANTED:
            assert trained.state["model"][ours][index].item() == planted


def test_class_names_come_from_the_class_map_of_the_config(compact, cfg, tmp_path) -> None:
    from adatad.config import config_from_dict
    from adatad.data.class_names import ClassNamesError, resolve_class_names

    names = (CONFIG_DIR / "thumos14_classes.txt").read_text().split()
    trained = read_trained(save(published(with_prefix(compact)), tmp_path / "zoo.pth"), cfg)
    found = resolve_class_names(config_from_dict(trained.state["config"]))
    assert found.names == names and len(names) == 20 and "thumos14_classes.txt" in found.source
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    short = load_config(THUMOS, RANDOM_BACKBONE + [f"data.class_map_file={three}"])
    with pytest.raises(ClassNamesError, match=f"{three}: 3 classes, but the model has model.head.num_classes=20"):
        resolve_class_names(short)


# ---------------------------------------------------------------- bad files


def _renamed(w):
    w["module.rpn_head.reg_head.b"] = w.pop("module.rpn_head.reg_head.bias")


def _missing(w):
    del w["module.projection.stem.1.attn.key.weight"]


def _extra(w):
    w["module.rpn_head.extra.weight"] = torch.zeros(3)


def _final_norm(w):  # a ViT key our encoder has no place for (VideoMAE's converter would drop it)
    w["module.backbone.model.backbone.norm.weight"] = torch.zeros(384)


def _shape(w):
    w["module.rpn_head.cls_head.weight"] = torch.zeros(21, 512, 3)
    w["module.rpn_head.cls_head.bias"] = torch.zeros(21)


def _no_adapters(w):
    for key in [k for k in w if ".adapter." in k]:
        del w[key]


def _other_table(w):
    w[f"module.{POS_EMBED}"] = w[f"module.{POS_EMBED}"] + 0.01 * torch.randn(1, 1568, 384)


def _no_table(w):
    del w[f"module.{POS_EMBED}"]


def _bool_weight(w):
    w["module.neck.fpn_norms.2.bias"] = torch.zeros(512, dtype=torch.bool)


@pytest.mark.parametrize("break_it, expected", [
    (_renamed, "1 missing [head.heads.reg_head.bias]; 1 unexpected [module.rpn_head.reg_head.b]"),
    (_missing, "1 missing [head.projection.stem.1.attn.key.weight]"),
    (_extra, "1 unexpected [module.rpn_head.extra.weight]"),
    (_final_norm, "1 unexpected [module.backbone.model.backbone.norm.weight]"),
    (_shape, "2 of another shape [module.rpn_head.cls_head.weight: file [21, 512, 3] vs model [20, 512, 3], "
             "module.rpn_head.cls_head.bias: file [21] vs model [20]]"),
    (_no_adapters, "108 missing [encoder.backbone.blocks.0.adapter.gamma, encoder.backbone.blocks.0.adapter."
                   "down_proj.weight, encoder.backbone.blocks.0.adapter.down_proj.bias, "
                   "encoder.backbone.blocks.0.adapter.dwconv.weight] (+104 more)"),
    (_other_table, "backbone.model.backbone.pos_embed: differs from VideoMAE's fixed sinusoid table by up to"),
    (_no_table, "missing backbone.model.backbone.pos_embed"),
    (_bool_weight, "1 of another dtype [module.neck.fpn_norms.2.bias: file torch.bool vs model torch.float32]"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_a_file_that_does_not_fit_is_one_line_naming_the_keys(break_it, expected, compact, cfg, tmp_path) -> None:
    weights = with_prefix(compact)
    break_it(weights)
    message = one_line_error(save(published(weights), tmp_path / "broken.pth"), cfg)
    assert expected in message, message


def test_a_config_of_another_architecture_is_refused(compact, tmp_path) -> None:
    other = load_config(THUMOS, RANDOM_BACKBONE + ["model.head.num_classes=21"])
    message = one_line_error(save(published(with_prefix(compact)), tmp_path / "zoo.pth"), other)
    assert "of another shape [module.rpn_head.cls_head.weight: file [20, 512, 3] vs model [21, 512, 3]" in message


def test_unreadable_files_are_one_line(compact, cfg, tmp_path) -> None:
    good = save(published(with_prefix(compact)), tmp_path / "good.pth")
    data = good.read_bytes()
    for name, content in (("cut_end.pth", data[:-100]), ("cut_half.pth", data[: len(data) // 2]),
                          ("text.pth", b"not a checkpoint\n")):
        (tmp_path / name).write_bytes(content)
        assert "not a torch.save file" in one_line_error(tmp_path / name, cfg)
    corrupt = bytearray(data)
    start = data.index(b"data.pkl")  # damage the pickle, keep the zip directory
    corrupt[start + 200:start + 300] = b"\xff" * 100
    (tmp_path / "corrupt.pth").write_bytes(bytes(corrupt))
    assert "cannot be read as a weights-only torch file" in one_line_error(tmp_path / "corrupt.pth", cfg)
    torch.save({"epoch": 1, "state_dict_ema": {"x": np.zeros(2)}}, tmp_path / "numpy.pth")  # not weights-only
    message = one_line_error(tmp_path / "numpy.pth", cfg)
    assert "cannot be read as a weights-only torch file (weights_only refused it: Unsupported global" in message
    assert "\x1b" not in message and "trust" not in message
    torch.save({"weights": {"x": torch.zeros(1)}}, tmp_path / "other.pth")
    assert "neither an adatad checkpoint" in one_line_error(tmp_path / "other.pth", cfg)
    assert "carries no config" in one_line_error(good, None)
    assert "does not exist" in one_line_error(tmp_path / "missing.pth", cfg)
    (tmp_path / "empty_run").mkdir()
    assert "neither checkpoint.pt nor checkpoint_* folders" in one_line_error(tmp_path / "empty_run", cfg)


# ---------------------------------------------------------------- training from an OpenTAD file


def test_init_from_an_opentad_file_starts_model_and_ema_from_its_weights(zoo_file) -> None:
    path, weights = zoo_file
    # the file holds the ViT weights: no VideoMAE file and no allow_random_init needed
    cfg = load_config(THUMOS, ["model.backbone.checkpoint=null", f"model.init_from={path}", "train.amp=false"])
    state = build_training_state(cfg, steps_per_epoch=1, device=torch.device("cpu"))
    ema = state.ema.module
    for module in (state.model, ema):
        own = module.state_dict()
        for key, index, planted, ours in PLANTED:
            assert own[ours][index].item() == planted
            assert torch.equal(own[ours], weights[key])
        assert torch.equal(own["encoder.backbone.patch_embed.proj.weight"],
                           weights["backbone.model.backbone.patch_embed.projection.weight"])
        assert torch.equal(own["head.projection.stem.1.mlp.3.weight"], weights["projection.stem.1.mlp.3.weight"])
