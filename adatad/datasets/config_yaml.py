"""The experiment YAML that `pipelines/prepare_dataset.py` writes for a prepared data set.

It composes a base recipe through `_base_` and sets only what the data decides: paths, class
count, names, and what the videos force:

- `data.max_segments`: a training window can hold every segment of its video, and a window with
  more segments than `max_segments` is an error, so it is raised to the most segments in a video;
- `data.frame_stride` (the recipe's snippet stride), as :mod:`adatad.datasets.stride_advice` advises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from adatad.datasets.stride_advice import StrideAdvice


def _yaml(value: str | int) -> str:
    return json.dumps(value)  # a JSON scalar is a YAML scalar; quoting keeps paths with ':' or '#' intact


def config_text(*, name: str, base: str, header: Sequence[str], annotation_file: str, video_dir: str,
                class_map_file: str, video_ext: str, num_classes: int, train_subset: str, test_subset: str,
                experiment_name: str, frame_stride: StrideAdvice | None = None,
                max_segments: int | None = None) -> str:
    """The YAML text; `header` lines become comments at the top, None values keep the base's setting."""
    lines = [*(f"# {h}" if h else "#" for h in header), f"_base_: {_yaml(base)}", f"name: {_yaml(name)}", "",
             "data:",
             f"  annotation_file: {_yaml(annotation_file)}",
             f"  video_dir: {_yaml(video_dir)}",
             f"  class_map_file: {_yaml(class_map_file)}",
             f"  video_ext: {_yaml(video_ext)}",
             f"  train_subset: {_yaml(train_subset)}",
             f"  test_subset: {_yaml(test_subset)}"]
    if frame_stride is not None:
        lines += [f"  # {reason}" for reason in frame_stride.reasons]
        lines.append(f"  frame_stride: {frame_stride.stride}")
    if max_segments is not None:
        lines += ["  # a video has this many segments; a training window may hold them all",
                  f"  max_segments: {max_segments}"]
    lines += ["", "model:", "  head:", f"    num_classes: {num_classes}", "",
              "tracking:", f"  experiment_name: {_yaml(experiment_name)}", ""]
    return "\n".join(lines)
