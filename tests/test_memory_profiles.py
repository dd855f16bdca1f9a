"""The big backbones' profiles (docs/recipe.md "Memory and checkpoints"): OpenTAD's 2-GPU layout
composes over any experiment, and every profile the memory table names exists."""

from __future__ import annotations

import re
from pathlib import Path

from adatad.config import CONFIG_DIR, PROFILE_DIR, load_config

RECIPE = Path(__file__).resolve().parent.parent / "docs" / "recipe.md"


def test_opentad_2gpu_is_opentads_batch_as_one_video_per_gpu() -> None:
    one = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", profile="opentad")
    two = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", profile="opentad_2gpu")
    assert (one.train.batch_size, one.runtime.num_workers) == (2, 1)
    assert (two.train.batch_size, two.runtime.num_workers) == (2, 2)  # 1 video per GPU
    assert two.runtime.use_gpu and two.runtime.decode_actors == 2 * one.runtime.decode_actors
    assert two.train.val_batch_size == 1  # per worker: OpenTAD's global 2 over 2 GPUs
    assert one.model == two.model and one.data == two.data  # only batch and loader settings differ


def test_every_profile_the_memory_table_names_exists() -> None:
    text = RECIPE.read_text()
    section = text[text.index("## Memory and checkpoints"):]
    table = section[section.index("| backbone | 32 GB |"):]
    table = table[:table.index("\n\n")]
    named = set(re.findall(r"`([a-z0-9_]+)`", table))
    assert {"opentad", "opentad_2gpu", "32gb", "64gb"} <= named
    assert all((PROFILE_DIR / f"{name}.yaml").is_file() for name in named), named
