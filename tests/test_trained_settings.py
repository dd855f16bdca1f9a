"""The settings a trained file owns (adatad/trained_settings.py): test.py and detect.py never change them."""

from __future__ import annotations

from pathlib import Path

import pytest

from adatad.config import CONFIG_DIR, ConfigError
from adatad.trained_settings import config_for_trained_file, owned_by_trained_file
from tests.conftest import tiny_config


def test_owned_keys() -> None:
    assert owned_by_trained_file("data.window_size") and owned_by_trained_file("model.head.num_classes")
    assert owned_by_trained_file("model.backbone") and owned_by_trained_file("model.backbone.depth")
    assert not owned_by_trained_file("model.inference.nms_sigma") and not owned_by_trained_file("runtime.num_workers")
    assert not owned_by_trained_file("data.test_window_overlap") and not owned_by_trained_file("data.window_sizes")


def test_overrides_change_only_what_the_model_does_not_see(tmp_path: Path) -> None:
    own = tiny_config(tmp_path, tmp_path, tmp_path / "db").to_dict()
    changed = config_for_trained_file(own, None, ["runtime.val_decode_actors=3", "model.inference.nms_sigma=0.5"])
    assert changed.runtime.val_decode_actors == 3 and changed.model.inference.nms_sigma == 0.5
    assert changed.data.window_size == own["data"]["window_size"]
    assert changed.model.backbone.checkpoint is None and changed.model.init_from is None  # the file holds them
    with pytest.raises(ConfigError, match="--set data.window_size: cannot change"):
        config_for_trained_file(own, None, ["data.window_size=128"])
    with pytest.raises(ConfigError, match="--set model.head.num_classes: cannot change"):
        config_for_trained_file(own, str(CONFIG_DIR / "synthetic.yaml"), ["model.head.num_classes=7"])


def test_config_file_gives_everything_but_the_model_and_its_input(tmp_path: Path) -> None:
    own = tiny_config(tmp_path, tmp_path, tmp_path / "db").to_dict()
    other = tmp_path / "other.yaml"
    other.write_text(f"_base_: {CONFIG_DIR / 'synthetic.yaml'}\nruntime: {{val_decode_actors: 4}}\n"
                     "model: {inference: {nms_sigma: 0.3}, head: {num_classes: 7}}\n"
                     "data: {window_size: 32, test_subset: other, annotation_file: /elsewhere.json}\n")
    changed = config_for_trained_file(own, str(other), [])
    assert changed.runtime.val_decode_actors == 4 and changed.model.inference.nms_sigma == 0.3
    assert changed.data.test_subset == "other" and changed.data.annotation_file == "/elsewhere.json"
    assert changed.model.head.num_classes == 3 and changed.data.window_size == 64  # the file's


def test_an_opentad_file_needs_a_config() -> None:
    with pytest.raises(ConfigError, match="an OpenTAD checkpoint has no config; pass --config"):
        config_for_trained_file(None, None)
    cfg = config_for_trained_file(None, str(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"),
                                  ["model.head.num_classes=5"])  # the config describes the architecture
    assert cfg.model.head.num_classes == 5 and cfg.model.backbone.checkpoint is None
