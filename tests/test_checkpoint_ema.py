"""The frozen backbone is held once: the EMA shares it with the model in memory, a checkpoint stores it
once (under 'model'), and every reader gets complete weights from new and old checkpoints alike."""

from __future__ import annotations

import zipfile

import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.engine.ema import build_ema, frozen_parameter_names
from adatad.engine.state import TrainingState, build_training_state, read_checkpoint, save_checkpoint
from adatad.models.build import model_from_checkpoint
from adatad.models.checkpoint_ema import EMA_FROM_MODEL, complete_ema, leave_out_shared
from adatad.models.trained import read_trained
from adatad.models.weights import EMA_PREFIX, WeightsError, read_torch_file, unwrap_ema
from adatad.run_folder import CHECKPOINT_FILE

CPU = torch.device("cpu")


def _cfg():
    return load_config(CONFIG_DIR / "synthetic.yaml", ["train.ema_decay=0.5"])


def _trained_state() -> TrainingState:
    """A synthetic-config state after two fake steps: EMA != model on the trained part."""
    torch.manual_seed(0)
    state = build_training_state(_cfg(), steps_per_epoch=1, device=CPU)
    for value in (3.0, 5.0):
        with torch.no_grad():
            for p in state.model.parameters():
                if p.requires_grad:
                    p.add_(value)
        state.ema.update_parameters(state.model)
    return state


def _old_layout(state: TrainingState) -> dict:
    """What save_checkpoint wrote before the frozen entries were shared: the whole EMA, no list."""
    saved = state.state_dict(_cfg())
    del saved[EMA_FROM_MODEL]
    saved["ema"] = {k: v.clone() for k, v in state.ema.state_dict().items()}
    return saved


def _tensor_bytes(path) -> int:
    """Bytes of tensor data in a torch.save file (its zip's data records; a storage is written once)."""
    with zipfile.ZipFile(path) as z:
        return sum(i.file_size for i in z.infolist() if "/data/" in i.filename)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_ema_shares_frozen_parameters_and_never_writes_them(one_torch_thread) -> None:
    torch.manual_seed(0)
    model = build_training_state(_cfg(), steps_per_epoch=1, device=CPU).model
    ema = build_ema(model, decay=0.5)
    frozen = frozen_parameter_names(model)
    assert frozen and all(".adapter." not in k for k in frozen)
    assert all(k.startswith("encoder.backbone.") for k in frozen)
    own, copy = dict(model.named_parameters()), dict(ema.module.named_parameters())
    assert own.keys() == copy.keys()  # same names, same order
    assert list(own) == list(copy)
    for name in own:
        assert (copy[name] is own[name]) == (name in frozen), name
    before = {k: v.clone() for k, v in own.items()}
    versions: dict[str, int] = {}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.mul_(1.5).add_(0.25)
        ema.update_parameters(model)  # the first: AveragedModel's copy (onto itself here, a no-op)
        versions = versions or {k: own[k]._version for k in frozen}
    assert {k: own[k]._version for k in frozen} == versions  # the EMA rule never wrote into the model
    assert all(torch.equal(own[k], before[k]) for k in frozen)
    trained = [k for k in own if k not in frozen]
    # first update a copy, then ema = 0.5 ema + 0.5 w: the trained part follows its own EMA
    w1 = {k: before[k] * 1.5 + 0.25 for k in trained}
    w2 = {k: w1[k] * 1.5 + 0.25 for k in trained}
    w3 = {k: w2[k] * 1.5 + 0.25 for k in trained}
    for k in trained:
        torch.testing.assert_close(copy[k], 0.25 * w1[k] + 0.25 * w2[k] + 0.5 * w3[k])


def test_a_checkpoint_stores_the_frozen_backbone_once(tmp_path, one_torch_thread) -> None:
    state = _trained_state()
    path = save_checkpoint(state, _cfg(), tmp_path / "new")
    raw = read_torch_file(path)
    frozen = frozen_parameter_names(state.model)
    assert raw[EMA_FROM_MODEL] == frozen
    assert not any(EMA_PREFIX + k in raw["ema"] for k in frozen)
    assert raw["model"].keys() == state.model.state_dict().keys()  # the model's state dict stays whole
    old = tmp_path / "old.pt"
    torch.save(_old_layout(state), old)
    frozen_bytes = sum(raw["model"][k].numel() * raw["model"][k].element_size() for k in frozen)
    assert _tensor_bytes(old) - _tensor_bytes(path) == frozen_bytes  # exactly the frozen ViT once less
    saved = old.stat().st_size - path.stat().st_size  # plus zip headers and 64-byte alignment
    assert abs(saved - frozen_bytes) < 0.05 * frozen_bytes, (saved, frozen_bytes)

    # Every reader gets the whole EMA back, equal to the live one.
    live = state.ema.state_dict()
    assert _same(read_checkpoint(path)["ema"], live)
    assert EMA_FROM_MODEL not in read_checkpoint(path)
    trained = read_trained(path)
    assert trained.weights == "ema" and _same(trained.state["model"], unwrap_ema(live))
    for given in (read_torch_file(path), read_checkpoint(path), trained.state):
        model, _ = model_from_checkpoint(given)
        assert _same(model.state_dict(), unwrap_ema(live))
    model, _ = model_from_checkpoint(raw, use_ema=False)
    assert _same(model.state_dict(), state.model.state_dict())
    assert _same(read_trained(path, use_ema=False).state["model"], state.model.state_dict())

    # Resuming restores the EMA exactly, the frozen part shared again.
    torch.manual_seed(7)
    fresh = build_training_state(_cfg(), steps_per_epoch=1, device=CPU)
    fresh.load_state_dict(read_checkpoint(path))
    assert _same(fresh.ema.state_dict(), live) and _same(fresh.model.state_dict(), state.model.state_dict())
    name = frozen[0]
    assert dict(fresh.ema.module.named_parameters())[name] is dict(fresh.model.named_parameters())[name]


def test_checkpoints_with_a_whole_ema_still_read(tmp_path, one_torch_thread) -> None:
    state = _trained_state()
    (tmp_path / "run").mkdir()
    old = tmp_path / "run" / CHECKPOINT_FILE
    torch.save(_old_layout(state), old)
    live = state.ema.state_dict()
    assert _same(read_checkpoint(old)["ema"], live)
    assert _same(read_trained(tmp_path / "run").state["model"], unwrap_ema(live))
    assert _same(model_from_checkpoint(read_checkpoint(old))[0].state_dict(), unwrap_ema(live))
    torch.manual_seed(7)
    fresh = build_training_state(_cfg(), steps_per_epoch=1, device=CPU)
    fresh.load_state_dict(read_checkpoint(old))
    assert _same(fresh.ema.state_dict(), live)
    # Saved again, it is in the new layout.
    again = read_torch_file(save_checkpoint(fresh, _cfg(), tmp_path / "again"))
    assert again[EMA_FROM_MODEL] == frozen_parameter_names(fresh.model)


def test_a_list_naming_keys_the_model_lacks_is_one_line(tmp_path) -> None:
    state = _trained_state()
    saved = state.state_dict(_cfg())
    saved[EMA_FROM_MODEL] = saved[EMA_FROM_MODEL] + ["encoder.backbone.nowhere.weight"]
    path = tmp_path / CHECKPOINT_FILE
    torch.save(saved, path)
    expected = (f"^{path}: 'ema_from_model' lists 1 keys that 'model' does not hold "
                r"\[encoder\.backbone\.nowhere\.weight\]$")
    for read in (read_checkpoint, read_trained):
        with pytest.raises(WeightsError, match=expected):
            read(path)
    assert read_trained(path, use_ema=False).weights == "model"  # the plain weights need no EMA
    with pytest.raises(WeightsError, match="^checkpoint: 'ema_from_model' lists 1 keys"):
        model_from_checkpoint(read_torch_file(path))


def test_leave_out_shared_keeps_what_differs() -> None:
    model = {"a": torch.ones(2), "b": torch.zeros(2), "c": torch.full((2,), -0.0)}
    ema = {"module.a": torch.ones(2), "module.b": torch.ones(2), "module.c": torch.zeros(2),
           "n_averaged": torch.tensor(3)}
    kept, shared = leave_out_shared(ema, model, ["a", "b", "c", "missing"])
    assert shared == ["a", "c"]  # b differs; -0.0 == +0.0 as numbers
    assert list(kept) == ["module.b", "n_averaged"]
    whole = complete_ema({"model": model, "ema": kept, EMA_FROM_MODEL: shared}, "x")
    assert whole.keys() == ema.keys() and whole["module.a"] is model["a"]
    assert complete_ema({"model": model, "ema": None}, "x") is None
    assert complete_ema({"model": model, "ema": ema}, "x") == ema  # the old layout, as it is
