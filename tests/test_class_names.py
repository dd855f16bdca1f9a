"""Class names in the model's index order, resolved in one place (adatad/data/class_names.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adatad.data.class_names import ClassNamesError, resolve_class_names
from tests.conftest import tiny_config


def test_class_names_come_from_the_first_source_that_exists_and_fit_the_model(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tmp_path, tmp_path / "db")  # model.head.num_classes=3; data paths do not exist
    two = tmp_path / "two.txt"
    two.write_text("x\ny\n")
    with pytest.raises(ClassNamesError, match="2 classes.*num_classes=3"):
        resolve_class_names(cfg, class_map=str(two))
    with pytest.raises(ClassNamesError, match="no class names.*; pass --class-map or --annotations"):
        resolve_class_names(cfg, hint="pass --class-map or --annotations")
    with pytest.raises(ClassNamesError, match="--class-map .*missing.txt: file not found"):
        resolve_class_names(cfg, class_map=str(tmp_path / "missing.txt"))
    three = tmp_path / "three.txt"
    three.write_text("x\ny\nz\n")
    assert resolve_class_names(cfg, class_map=str(three)).names == ["x", "y", "z"]
    # The labels of the config's own annotations (sorted), when it has no class map.
    (tmp_path / "annotations.json").write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": [
        {"segment": [0, 1], "label": n} for n in "qrp"]}}}))
    found = resolve_class_names(cfg)
    assert found.names == ["p", "q", "r"] and "the labels of" in found.source
    # The config's class map (the index order the model learnt) comes before the labels of --annotations.
    (tmp_path / "category_idx.txt").write_text("c\nb\na\n")
    (tmp_path / "gt.json").write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": [
        {"segment": [0, 1], "label": n} for n in "abc"]}}}))
    found = resolve_class_names(cfg, annotations=str(tmp_path / "gt.json"))
    assert found.names == ["c", "b", "a"] and "the config's class map" in found.source
    assert resolve_class_names(cfg, class_map=str(three), annotations=str(tmp_path / "gt.json")).names == \
        ["x", "y", "z"]


def test_a_checkpoints_own_names_decide_and_a_class_map_at_hand_must_agree(tmp_path: Path) -> None:
    """test.py and detect.py follow one rule for a trained file that stores its class names."""
    cfg = tiny_config(tmp_path, tmp_path, tmp_path / "db")
    stored = ["c", "b", "a"]
    # No class map at hand (the config's file is absent here): the stored names, whatever annotations say.
    (tmp_path / "gt.json").write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": [
        {"segment": [0, 1], "label": "a"}]}}}))
    found = resolve_class_names(cfg, annotations=str(tmp_path / "gt.json"), stored=stored)
    assert found.names == stored and found.source == "the checkpoint"
    (tmp_path / "category_idx.txt").write_text("c\nb\na\n")  # the config's class map, in the same order
    assert resolve_class_names(cfg, stored=stored).names == stored
    (tmp_path / "category_idx.txt").write_text("a\nb\nc\n")  # another order: the indices would mean other classes
    with pytest.raises(ClassNamesError, match=r"the config's class map .*category_idx.txt: 3 classes \['a', 'b', "
                                              r"'c'\]\.\.\. differ from the 3 the checkpoint was trained with"):
        resolve_class_names(cfg, stored=stored)
    mine = tmp_path / "mine.txt"
    mine.write_text("c\nb\nd\n")
    with pytest.raises(ClassNamesError, match=r"--class-map .*mine.txt: 3 classes"):
        resolve_class_names(cfg, class_map=str(mine), stored=stored)
