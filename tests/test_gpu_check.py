"""tests/acceptance/gpu_check.py: the dry run covers every part on a machine without Ray, PyYAML or PyAV,
failures and the time budget become rows, and a run without CUDA stops with a clear message."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "acceptance" / "gpu_check.py"

# Imported at interpreter start-up (sitecustomize) in the script and in every process it spawns,
# so any import of these names fails as it would on the bare GPU machine.
BLOCKER = '''
import importlib.abc, sys
BLOCKED = {"ray", "mlflow", "av", "yaml"}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_gpu_check)", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''

EXPECTED_ROWS = [
    ("train", "batch 1, checkpointing on"), ("train", "batch 4, checkpointing on"),
    ("train", "batch 8, checkpointing on"), ("train", "batch 1, checkpointing off"),
    ("eval", "batch 1"), ("eval", "batch 4"),
    ("backbone", "S: 32x1 frames, 32 px, batch 1"), ("backbone", "B: 32x1 frames, 32 px, batch 1"),
    ("backbone", "L: 32x1 frames, 32 px, batch 1"), ("backbone", "H: 32x1 frames, 32 px, batch 1"),
    ("backbone", "g: 32x1 frames, 32 px, batch 1"), ("backbone", "g-224x2: 32x2 frames, 32 px, batch 1"),
    ("backbone", "L-epic-768x8: 32x8 frames, 32 px, batch 1"),
    ("backbone", "L-ego4d-1800x4: 32x4 frames, 32 px, batch 1"),
    ("backbone", "g-224x2-side: 32x2 frames, 32 px, batch 1"), ("backbone", "S-side: 32x1 frames, 32 px, batch 1"),
    ("decode", "1 process x 1 thread"), ("decode", "2 processes x 1 thread"),
    ("ratio", "1 decode processes vs GPU train batch 8, checkpointing on"),
    ("ratio", "2 decode processes vs GPU train batch 8, checkpointing on"),
]


def load_gpu_check():
    """The script as a module (benchmarks/ is no package); registered first, as its dataclasses need."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def table_rows(markdown: str) -> dict[tuple[str, str], list[str]]:
    """(part, setting) -> the row's cells, from the results table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("part", "---"):
            rows[(cells[0], cells[1])] = cells
    return rows


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adatad.datasets.synthetic import VIDEO_DIR, generate_dataset

    root = tmp_path_factory.mktemp("gpu_check_video")
    generate_dataset(root, num_train=1, num_test=0, num_classes=2, duration_s=8.0, fps=30, width=160, height=96,
                     seed=4)
    return next((root / VIDEO_DIR).glob("*.mp4"))


def test_dry_run_has_every_row_without_ray_yaml_or_pyav(tmp_path: Path, tiny_video: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "report" / "gpu_check.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--video", str(tiny_video)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    rows = table_rows(text)
    assert list(rows) == EXPECTED_ROWS, text
    for key, cells in rows.items():
        assert cells[5] == "ok", (key, cells)
    assert float(rows[("train", "batch 4, checkpointing on")][3].split()[0]) > 0  # clips/s
    assert float(rows[("eval", "batch 4")][3].split()[0]) > 0  # windows/s
    for part, setting in EXPECTED_ROWS:
        if part == "backbone":
            assert float(rows[(part, setting)][3].split()[0]) > 0, setting  # clips/s of its own step
    assert "backbone rows:" in text
    assert float(rows[("decode", "2 processes x 1 thread")][3].split()[0]) > 0  # clips/s
    assert "= " in rows[EXPECTED_ROWS[-1]][3]  # the CPU/GPU ratio
    # The blocker was active: the recipe came from the dataclass defaults, not the YAML file.
    assert "PyYAML is not installed" in text and "Config() defaults" in text
    assert "torch " in text and "wall time" in text


def test_without_cuda_it_exits_2_with_a_message(tmp_path: Path) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.md")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "x.md").exists()


def test_fallback_recipe_is_the_yaml_recipe() -> None:
    """Without PyYAML the script measures Config() defaults; they must state the same recipe."""
    gc = load_gpu_check()
    from_yaml, source = gc.recipe_config(have_yaml=True)
    from_defaults, _ = gc.recipe_config(have_yaml=False)
    assert source.endswith("thumos_videomae_s_768x1_160_adapter.yaml")
    a, b = from_yaml.to_dict(), from_defaults.to_dict()
    for section in ("model", "train"):
        assert a[section] == b[section], section
    a["data"].pop("class_map_file"), b["data"].pop("class_map_file")  # only names the classes
    assert a["data"] == b["data"]
    assert a["data"]["window_size"] == 768 and a["model"]["backbone"]["depth"] == 12
    assert a["model"]["backbone"]["activation_checkpointing"] and a["model"]["backbone"]["checkpoint"] is None


def test_a_failing_part_is_a_row_and_the_rest_runs(tmp_path: Path, monkeypatch, one_torch_thread) -> None:
    import torch

    gc = load_gpu_check()
    real = gc.measure_train

    def flaky(cfg, frames, batch, checkpointing, device, args, **steps):
        if batch == 4 or cfg.model.backbone.patch_size == 14:  # batch 4 of the recipe, and the g row
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(cfg, frames, batch, checkpointing, device, args, **steps)

    monkeypatch.setattr(gc, "measure_train", flaky)
    out = tmp_path / "t.md"
    rc = gc.main(["--dry-run", "--out", str(out), "--parts", "train", "eval", "backbone", "--train-batches", "4", "1",
                  "--no-checkpointing-batches", "--eval-batches", "1", "--backbones", "g", "S",
                  "--video", str(tmp_path / "none.mp4")])
    rows = table_rows(out.read_text())
    assert rc == 1
    assert rows[("train", "batch 4, checkpointing on")][5] == "FAILED: out of GPU memory"
    assert rows[("train", "batch 1, checkpointing on")][5] == "ok"
    assert rows[("eval", "batch 1")][5] == "ok"
    # The backbone rows step through measure_train too: the g's OOM stops neither S nor the table.
    assert list(rows)[-2:] == [("backbone", "g: 32x1 frames, 32 px, batch 1"),
                               ("backbone", "S: 32x1 frames, 32 px, batch 1")]
    assert rows[("backbone", "g: 32x1 frames, 32 px, batch 1")][5] == "FAILED: out of GPU memory"
    assert rows[("backbone", "S: 32x1 frames, 32 px, batch 1")][5] == "ok"
    assert not any(part == "decode" for part, _ in rows)  # not asked for


def test_budget_and_missing_video_are_reported_as_skips(tmp_path: Path, one_torch_thread) -> None:
    gc = load_gpu_check()
    out = tmp_path / "b.md"
    rc = gc.main(["--dry-run", "--out", str(out), "--budget-s", "0", "--procs", "3",
                  "--video", str(tmp_path / "missing.mp4")])
    text = out.read_text()
    rows = table_rows(text)
    assert rc == 0
    assert len(rows) == 17 and all(cells[5].startswith("skipped: time budget spent") for cells in rows.values())
    assert "budget spent" in text.split("Notes:")[1]

    out2 = tmp_path / "v.md"
    assert gc.main(["--dry-run", "--out", str(out2), "--parts", "decode", "--procs", "2",
                    "--video", str(tmp_path / "missing.mp4")]) == 0
    rows = table_rows(out2.read_text())
    assert rows[("decode", "2 processes x 1 thread")][5].startswith("skipped: --video")


def test_backbone_rows_build_opentads_zoo_at_full_size() -> None:
    """Without --dry-run the rows are the zoo's detectors (docs/recipe.md §4 counts), on the meta device."""
    from adatad.models.build import build_model

    gc = load_gpu_check()
    recipe, _ = gc.recipe_config(have_yaml=True)
    # the zoo rows' counts without OpenTAD's unused fc_norm (2 C); the side rows have none
    expected = {"S": 49_581_736, "B": 117_515_560, "L": 345_754_676, "H": 689_270_076, "g": 1_084_622_788,
                "g-224x2": 1_062_249_648, "L-epic-768x8": 346_176_325 - 2048,
                "L-ego4d-1800x4": 351_434_886 - 2048, "g-224x2-side": 1_050_457_648, "S-side": 49_078_306}
    assert list(gc.BACKBONES) == list(expected)
    for name, count in expected.items():
        cfg = gc.backbone_config(recipe, name, dry=False)
        model = build_model(cfg, device="meta")
        assert sum(p.numel() for p in model.parameters()) == count, name
        assert cfg.model.backbone.activation_checkpointing and cfg.train.batch_size == 1 and cfg.train.amp
    g224 = gc.backbone_config(recipe, "g-224x2", dry=False)
    assert gc.backbone_setting(g224, "g-224x2") == "g-224x2: 768x2 frames, 224 px, batch 1"
    assert g224.model.backbone.adapter_layers == list(range(20, 40))
    dry = gc.backbone_config(gc.shrink_for_dry_run(recipe), "g-224x2", dry=True)
    assert gc.synthetic_frames(dry, 1).shape == (1, 64, 32, 32, 3)  # 32 positions x 2 frames
    ego4d = gc.backbone_config(recipe, "L-ego4d-1800x4", dry=False)
    assert gc.backbone_setting(ego4d, "L-ego4d-1800x4") == "L-ego4d-1800x4: 1800x4 frames, 192 px, batch 1"
    assert (ego4d.model.head.max_seq_len, ego4d.model.backbone.adapter_layers) == (2048, list(range(12, 24)))
    epic = gc.backbone_config(recipe, "L-epic-768x8", dry=False)
    assert gc.backbone_setting(epic, "L-epic-768x8") == "L-epic-768x8: 768x8 frames, 160 px, batch 1"
    side = gc.backbone_config(recipe, "g-224x2-side", dry=False)
    assert (side.model.backbone.adapter_type, side.model.backbone.adapter_mlp_ratio) == ("ladder", 0.125)
