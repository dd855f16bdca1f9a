"""EPIC-KITCHENS-100's conventions for the synthetic data set (``SyntheticSpec(layout="epic")``).

Why: the EPIC rows' shape (many short actions, windows of 8 frames per position 2 frames apart, a
fixed 30 fps, OpenTAD's EPIC json) must run end to end on this machine, so that each rule is exercised
and not only unit-tested (configs/synthetic_epic.yaml; docs/recipe.md, "OpenTAD model zoo
(EPIC-Kitchens-100, Ego4D-MQ, side-tuning)"):

- video files are ``videos/<id>.mp4``, ids in EPIC's ``P01_01`` form; subsets ``train`` / ``val``, plus
  one ``test`` entry without annotations and without a file, as OpenTAD's json lists the test videos;
- the json has ``duration`` and ``annotations`` only (no ``frame`` or ``fps``: the config's
  ``data.fixed_fps`` gives int(duration x 30) frames); segments are rounded to 2 decimals and labelled
  ``id_NNN`` with a ``label_name`` beside, as OpenTAD's ``convert_epic_kitchens_anno.py`` writes them;
- every other video states a duration one frame longer than its file, as EPIC's durations come from
  the original recordings: the fixed-fps frame count then exceeds the decoder's by one (clamped);
- ``category_idx.txt`` lists ``id_000``, ``id_001``, ...: index order is sorted order, the class map
  OpenTAD generates from the json.
"""

from __future__ import annotations

from adatad.datasets.synthetic_plan import ACTION_CLASSES, SyntheticSpec, VideoLayout

TEST_ENTRY = "P40_01"  # the json's test-subset video: no annotations, no file


def is_epic(spec: SyntheticSpec) -> bool:
    return spec.layout == "epic"


def label(index: int) -> str:
    """EPIC's class label of class ``index`` (OpenTAD: f"id_{class:03d}")."""
    return f"id_{index:03d}"


def class_names(spec: SyntheticSpec) -> list[str]:
    """The class map's names in index order."""
    return [label(i) for i in range(spec.num_classes)]


def json_entry(layout: VideoLayout, frames: int, index: int) -> dict:
    """The json entry of one written video; ``index``: its place in its split (odd ones: one frame longer)."""
    annotations = [{"segment": [round(inst.start_frame / layout.fps, 2), round(inst.end_frame / layout.fps, 2)],
                    "label": label(inst.label), "label_name": ACTION_CLASSES[inst.label].name}
                   for inst in layout.instances]
    stated = frames + (index % 2)
    return {"subset": layout.subset, "duration": stated / layout.fps, "annotations": annotations}


def extra_entries(spec: SyntheticSpec) -> dict[str, dict]:
    """Json entries of videos that are listed but not written: the test video."""
    return {TEST_ENTRY: {"subset": "test", "duration": 60.0}} if is_epic(spec) else {}
