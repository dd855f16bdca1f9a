"""The files of a run folder (adatad/run_folder.py): one place names them and finds checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from adatad.run_folder import CHECKPOINT_FILE, RunFolder, checkpoint_dir_name, latest_run


def _checkpoint(run: Path, name: str) -> Path:
    (run / name).mkdir(parents=True)
    (run / name / CHECKPOINT_FILE).write_bytes(b"x")
    return run / name / CHECKPOINT_FILE


def test_latest_checkpoint_is_the_newest_that_ray_registered(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _checkpoint(run, "checkpoint_2026-01-01_10-00-00.1")
    second = _checkpoint(run, "checkpoint_2026-01-01_11-00-00.1")
    _checkpoint(run, "checkpoint_2026-01-01_12-00-00.1")  # being copied when the process died
    (run / "checkpoint_2026-01-01_13-00-00.1").mkdir()  # no checkpoint file at all
    folder = RunFolder(run)
    assert folder.latest_checkpoint() == run / "checkpoint_2026-01-01_12-00-00.1" / CHECKPOINT_FILE  # no record yet
    folder.ray_snapshot.write_text(json.dumps({"checkpoint_results": [
        {"checkpoint_dir_name": first.parent.name, "metrics": {}},
        {"checkpoint_dir_name": second.parent.name, "metrics": {}}]}))
    assert folder.latest_checkpoint() == second
    assert [p.name for p in folder.checkpoint_dirs()] == [first.parent.name, second.parent.name]
    folder.ray_snapshot.write_text("{broken")  # an unreadable record: every complete folder counts
    assert folder.latest_checkpoint().parent.name == "checkpoint_2026-01-01_12-00-00.1"


def test_checkpoint_folders_are_named_by_epoch_and_sort_after_older_runs_folders(tmp_path: Path) -> None:
    """A run resumed across the change keeps its Ray-named (time) folders; the epoch-named ones follow."""
    run = tmp_path / "run"
    _checkpoint(run, "checkpoint_2026-01-01_10-00-00.1")  # epoch 0, written before checkpoints had epoch names
    for epoch in (1, 2, 10):
        _checkpoint(run, checkpoint_dir_name(epoch))
    assert [p.name for p in RunFolder(run).checkpoint_dirs()] == [
        "checkpoint_2026-01-01_10-00-00.1", "checkpoint_epoch_0001", "checkpoint_epoch_0002", "checkpoint_epoch_0010"]
    assert RunFolder(run).latest_checkpoint().parent.name == "checkpoint_epoch_0010"


def test_the_latest_run_is_the_one_whose_config_was_written_last(tmp_path: Path) -> None:
    import os

    assert latest_run(tmp_path) is None
    for i, name in enumerate(("b", "a")):
        config = RunFolder(tmp_path / name).config
        config.parent.mkdir()
        config.write_text("name: x\n")
        os.utime(config, (1000 + i, 1000 + i))
    assert latest_run(tmp_path).name == "a"
