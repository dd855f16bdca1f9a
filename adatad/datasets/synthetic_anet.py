"""ActivityNet's conventions for the synthetic data set (``SyntheticSpec(layout="anet")``).

Why: the whole-video path (resize sampling, class-agnostic head, voting, classifier fusion) must run
end to end on this machine with the same file conventions as ActivityNet-1.3 under OpenTAD, so that
each rule is exercised, not only unit-tested (configs/synthetic_anet.yaml, docs/recipe.md, section
"ActivityNet and Charades: data"):

- video files are ``videos/v_<id>.mp4`` while the json names ``<id>`` (``data.video_prefix``);
- the json has ``duration``, ``subset``, ``resolution`` and ``annotations``, no ``frame`` or ``fps``
  (the decoder's frame count is used, as OpenTAD does);
- two listed videos (one per split) have no file and are in ``videos/missing_files.txt``, OpenTAD's
  block list (``data.block_list``): without it the data check fails;
- the first video of each split also lists a zero-length segment, which training and evaluation drop;
- ``video_classifier.json`` is a video-level classifier in the CUHK layout OpenTAD reads
  (``{"class": [names], "results": {id: [p per class]}}``): noisy probabilities around each video's
  true class (softmax of ``CLASSIFIER_MARGIN`` x one-hot + standard normal noise), so the top class
  is sometimes wrong and the top-2 fusion has something to do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adatad.datasets.synthetic_plan import SyntheticSpec, VideoLayout

VIDEO_PREFIX = "v_"
BLOCK_LIST_FILE = "missing_files.txt"  # inside the video folder, as OpenTAD's ActivityNet layout has it
CLASSIFIER_FILE = "video_classifier.json"
CLASSIFIER_MARGIN = 3.0  # true-class logit over the others, before unit-variance noise


def is_anet(spec: SyntheticSpec) -> bool:
    return spec.layout == "anet"


def video_file_name(spec: SyntheticSpec, video_id: str) -> str:
    """The file of ``video_id`` inside the video folder."""
    return f"{VIDEO_PREFIX if is_anet(spec) else ''}{video_id}.mp4"


def missing_entries(spec: SyntheticSpec) -> dict[str, dict]:
    """Json entries of the videos that have no file (one per split with videos): the block list's ids."""
    if not is_anet(spec):
        return {}
    entries = {}
    for subset, count, name in (("training", spec.num_train, "anet_train_missing"),
                                ("validation", spec.num_test, "anet_val_missing")):
        if count:
            entries[name] = {"subset": subset, "duration": 30.0, "resolution": f"{spec.width}x{spec.height}",
                             "annotations": []}
    return entries


def json_entry(spec: SyntheticSpec, layout: VideoLayout, frames: int, names: Sequence[str]) -> dict:
    """The annotation json's entry of one written video (the THUMOS or the ActivityNet layout)."""
    segments = [{"segment": [inst.start_frame / layout.fps, inst.end_frame / layout.fps], "label": names[inst.label]}
                for inst in layout.instances]
    if not is_anet(spec):
        return {"subset": layout.subset, "duration": frames / layout.fps, "frame": frames, "annotations": segments}
    if layout.video_id.endswith("_00001") and segments:  # a zero-length segment, as ActivityNet-1.3 has some
        start = segments[0]["segment"][0]
        segments.append({"segment": [start, start], "label": segments[0]["label"]})
    return {"subset": layout.subset, "duration": frames / layout.fps, "resolution": f"{spec.width}x{spec.height}",
            "annotations": segments}


def classifier_results(spec: SyntheticSpec, layouts: Sequence[VideoLayout], names: Sequence[str]) -> dict:
    """The CUHK-layout classifier file's content for every written video (deterministic given the seed)."""
    results = {}
    for layout in layouts:
        label = layout.instances[0].label
        rng = np.random.default_rng([spec.seed, 7, int(layout.texture_seed)])
        logits = rng.normal(size=len(names))
        logits[label] += CLASSIFIER_MARGIN
        probs = np.exp(logits - logits.max())
        results[layout.video_id] = [round(float(p), 6) for p in probs / probs.sum()]
    return {"class": list(names), "results": results}
