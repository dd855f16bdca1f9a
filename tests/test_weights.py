"""adatad/models/weights.py: the project's one torch.load, its one error type, the EMA unwrap and the
misfit report (unit level; the readers built on it are tested in test_videomae, test_engine and
test_opentad_checkpoint)."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from adatad.engine.state import read_checkpoint
from adatad.models.weights import (
    MISSING,
    NOT_A_ZIP,
    WeightsError,
    describe_misfit,
    load_weights,
    read_torch_file,
    shapes_of,
    unwrap_ema,
)

REPO = Path(__file__).resolve().parent.parent


def _torch_load_calls(source: str) -> int:
    """Calls of torch.load (as `torch.load(...)`, or `load(...)` imported from torch) in a module."""
    tree = ast.parse(source)
    from_torch = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and node.module in ("torch", "torch.serialization") for alias in node.names if alias.name == "load"}
    count = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "load" and ast.unparse(func.value) in (
                "torch", "torch.serialization"):
            count += 1
        elif isinstance(func, ast.Name) and func.id in from_torch:
            count += 1
    return count


def test_the_project_has_one_torch_load_and_it_is_in_weights_py() -> None:
    calls = {}
    for folder in ("adatad", "pipelines"):
        for path in sorted((REPO / folder).rglob("*.py")):
            n = _torch_load_calls(path.read_text(encoding="utf-8"))
            if n:
                calls[str(path.relative_to(REPO))] = n
    assert calls == {"adatad/models/weights.py": 1}, calls


def test_the_torch_load_scan_sees_both_spellings() -> None:
    assert _torch_load_calls("import torch\nx = torch.load(p, weights_only=True)\n") == 1
    assert _torch_load_calls("from torch import load as ld\nx = ld(p)\n") == 1
    assert _torch_load_calls('"""torch.load(p) in a docstring"""\nimport json\njson.load(f)\n') == 0


def test_read_torch_file_returns_what_torch_save_wrote(tmp_path) -> None:
    saved = {"w": torch.arange(3.0), "n": 4}
    torch.save(saved, tmp_path / "ok.pt")
    got = read_torch_file(tmp_path / "ok.pt")
    assert torch.equal(got["w"], saved["w"]) and got["n"] == 4


def test_a_missing_file_is_a_weights_error(tmp_path) -> None:
    with pytest.raises(WeightsError) as info:
        read_torch_file(tmp_path / "gone.pt")
    assert str(info.value) == f"{tmp_path / 'gone.pt'}: {MISSING}" and info.value.reason == MISSING
    assert isinstance(info.value, ValueError)
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(WeightsError, match="file does not exist"):
        read_torch_file(tmp_path / "folder.pt")


def test_a_file_that_is_not_a_zip_is_refused_before_unpickling(tmp_path) -> None:
    """A plain pickle would run code on load; it must never reach the unpickler."""
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(WeightsError) as info:
        read_torch_file(path)
    assert str(info.value) == f"{path}: not a torch.save file ({NOT_A_ZIP})"
    assert info.value.reason == NOT_A_ZIP
    copy = pickle.loads(pickle.dumps(info.value))  # as Ray hands it from a worker to the driver
    assert (type(copy), str(copy), copy.reason) == (WeightsError, str(info.value), NOT_A_ZIP)


def test_a_zip_that_weights_only_refuses_is_one_line(tmp_path) -> None:
    path = tmp_path / "numpy.pt"
    torch.save({"w": np.zeros(2)}, path)  # a numpy array needs globals weights_only does not allow
    with pytest.raises(WeightsError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read as a weights-only torch file (weights_only refused it: "
                              "Unsupported global"), message
    assert "\n" not in message and "\x1b" not in message and "trust" not in message
    assert info.value.reason.startswith("weights_only refused it: ") and message.endswith(f"({info.value.reason})")


def test_a_damaged_zip_is_one_line(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    data = bytearray(good.read_bytes())
    start = data.index(b"data.pkl")
    data[start + 60:start + 90] = b"\xff" * 30  # damage the pickle, keep the zip directory
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        read_torch_file(bad)
    assert str(info.value).startswith(f"{bad}: cannot be read as a weights-only torch file (")
    assert "\n" not in str(info.value)


def test_unwrap_ema_gives_the_model_keys_of_an_averaged_model() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = AveragedModel(model)
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    ema.update_parameters(model)
    state = ema.state_dict()
    assert "n_averaged" in state and all(k.startswith("module.") for k in state if k != "n_averaged")
    plain = unwrap_ema(state)
    assert list(plain) == list(model.state_dict())  # n_averaged gone, order kept
    assert torch.equal(plain["0.weight"], torch.full((2, 3), 2.0))
    fresh = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    load_weights(fresh, plain, "ema")  # strict: every key, nothing extra
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_misfit_report_is_one_line_naming_keys() -> None:
    model = nn.Linear(3, 2)
    reference = shapes_of(model)
    assert describe_misfit(reference, model.state_dict()) == ""
    weights = {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}
    assert describe_misfit(reference, weights) == ("1 missing [bias]; 1 unexpected [extra]; "
                                                   "1 of another shape [weight: file [2, 4] vs model [2, 3]]")
    with pytest.raises(WeightsError, match=r"^x\.pt: does not fit this model: 1 missing \[bias\]"):
        load_weights(model, weights, "x.pt")
    as_int = {"weight": torch.ones(2, 3, dtype=torch.int64), "bias": torch.zeros(2)}
    load_weights(model, as_int, "x.pt")  # integers cast into float weights
    assert model.weight.dtype == torch.float32 and torch.all(model.weight == 1.0)


def test_read_checkpoint_keeps_its_messages_and_refuses_other_files(tmp_path) -> None:
    with pytest.raises(WeightsError, match=f"^checkpoint {tmp_path / 'none.pt'} does not exist$"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"text\.pt: not an adatad training checkpoint \(not a zip archive"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {}}, tmp_path / "narrow.pt")
    with pytest.raises(WeightsError, match=r"narrow\.pt: not an adatad training checkpoint \(expected keys 'model' "
                                           r"and 'config'\)$"):
        read_checkpoint(tmp_path / "narrow.pt")
    torch.save({"model": {}, "config": {"name": "x"}}, tmp_path / "checkpoint.pt")
    assert read_checkpoint(tmp_path)["config"] == {"name": "x"}  # a folder holding checkpoint.pt


def test_a_legacy_torch_save_file_is_read(tmp_path) -> None:
    """Files of torch < 1.6 (no zip) are torch's own legacy format, not an arbitrary pickle: accepted."""
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_torch_file(path)["w"], torch.arange(3.0))
