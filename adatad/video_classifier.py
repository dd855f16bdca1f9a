"""External video-level classifiers: they name the classes of a one-class (class-agnostic) detector.

OpenTAD's ActivityNet rows detect "an action" and take the class from a video classifier's file
(docs/recipe.md, section "ActivityNet and Charades: model and post-processing"). Both formats OpenTAD
reads are one json layout:

    {"results": {video_id: [p_0, ..., p_{K-1}]}, "class": [name_0, ..., name_{K-1}]}

(`"classes"` instead of `"class"` in some files). The kind says how a detection's score s and the
class probability p combine:
- "cuhk" (OpenTAD `CUHKANETClassifier`, `cuhk_val_simp_7.json`): s x p;
- "standard" (OpenTAD `StandardClassifier`, the InternVideo / InternVideo2 files): sqrt(s x p).
Every detection is repeated once per top-k class of its video: the whole list for the best class,
then the whole list again for the second, and so on, without re-sorting.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from adatad.config import EXTERNAL_CLASSIFIER_TYPES, work_root
from adatad.postprocess import Detections


class VideoClassifierError(ValueError):
    """A classifier file that cannot be used: one line naming the file and what is wrong."""


@dataclass(frozen=True)
class VideoClassifier:
    path: str
    kind: str  # one of EXTERNAL_CLASSIFIER_TYPES
    class_names: list[str]
    probabilities: dict[str, np.ndarray] = field(repr=False)  # video id -> (K,) float64

    def of_video(self, video_id: str) -> np.ndarray:
        """The video's class probabilities; ids are also tried with and without ActivityNet's `v_`."""
        for key in (video_id, video_id.removeprefix("v_"), f"v_{video_id}"):
            if key in self.probabilities:
                return self.probabilities[key]
        example = next(iter(self.probabilities), None)
        raise VideoClassifierError(f"{self.path}: no classification for video {video_id!r} "
                                   f"({len(self.probabilities)} videos, e.g. {example!r})")

    def fuse(self, dets: Detections, video_id: str, topk: int) -> Detections:
        """`fuse_detections` with this video's probabilities."""
        return fuse_detections(dets, self.of_video(video_id), self.kind, topk)


def fuse_detections(dets: Detections, probabilities: np.ndarray, kind: str, topk: int) -> Detections:
    """A one-class video's detections -> per-class detections for the `topk` most probable classes.

    Labels become indices into the classifier's class list. Ties in probability: the lower index first
    for "cuhk" (OpenTAD sorts by -p), the higher first for "standard" (OpenTAD reverses an ascending sort).
    """
    if kind not in EXTERNAL_CLASSIFIER_TYPES:
        raise ValueError(f"classifier kind {kind!r}: expected one of {', '.join(EXTERNAL_CLASSIFIER_TYPES)}")
    probs = np.asarray(probabilities, dtype=np.float64)
    k = min(topk, probs.shape[0])
    if kind == "cuhk":
        classes = np.argsort(-probs, kind="stable")[:k]
    else:
        classes = np.argsort(probs, kind="stable")[::-1][:k]
    blocks = []
    for c in classes.tolist():
        p = float(probs[c])
        scores = dets.scores.double() * p
        if kind == "standard":
            scores = scores.sqrt()
        blocks.append(Detections(dets.segments.clone(), scores.to(torch.float32),
                                 torch.full((len(dets),), c, dtype=torch.long)))
    return Detections.cat(blocks)


def resolve_classifier_path(path: str) -> Path:
    """As `Config.resolve_path`: absolute as given, else under the work root ($ADATAD_ROOT)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (work_root() / p).resolve()


def load_video_classifier(path: str, kind: str) -> VideoClassifier:
    """Read and check a classifier file (cached while the file is unchanged: validation reads it each epoch)."""
    file = resolve_classifier_path(path)
    try:
        stat = file.stat()
    except OSError:
        raise VideoClassifierError(f"{file}: video classifier file (model.inference.external_classifier) "
                                   "does not exist") from None
    return _load(str(file), kind, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=2)
def _load(file: str, kind: str, _mtime_ns: int, _size: int) -> VideoClassifier:
    if kind not in EXTERNAL_CLASSIFIER_TYPES:
        raise VideoClassifierError(f"{file}: classifier kind {kind!r}, expected one of "
                                   f"{', '.join(EXTERNAL_CLASSIFIER_TYPES)}")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VideoClassifierError(f"{file}: not a readable json file ({exc})") from None
    if not isinstance(raw, dict):
        raise VideoClassifierError(f"{file}: expected an object with 'results' and 'class', got {type(raw).__name__}")
    names = raw.get("class", raw.get("classes"))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise VideoClassifierError(f"{file}: expected 'class' (or 'classes'): a non-empty list of class names")
    results = raw.get("results")
    if not isinstance(results, dict) or not results:
        raise VideoClassifierError(f"{file}: expected 'results': an object {{video_id: [one number per class]}}")
    probabilities = {}
    for video, values in results.items():
        if (not isinstance(values, list) or len(values) != len(names)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in values)):
            shown = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
            raise VideoClassifierError(f"{file}: results[{video!r}]: expected {len(names)} finite numbers "
                                       f"(one per class), got {shown}")
        if kind == "standard" and min(values) < 0:
            raise VideoClassifierError(f"{file}: results[{video!r}]: negative scores, but the 'standard' fusion "
                                       "takes sqrt(score x p): expected probabilities")
        probabilities[video] = np.asarray(values, dtype=np.float64)
    return VideoClassifier(file, kind, list(names), probabilities)
