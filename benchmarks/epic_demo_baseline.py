"""The prior baseline of the EPIC-shaped demo: what a detector must beat there.

The baseline knows the training set's statistics but no pixel: it tiles every test video with
segments of the training actions' median length, half a length apart, and labels each segment with
every class, scored by that class's share of the training actions. Scored like the demo's
validation (its test subset, tIoU 0.1:0.1:0.5).

    python pipelines/make_synthetic.py --out data/synthetic_epic --epic-demo
    python benchmarks/epic_demo_baseline.py [--config configs/synthetic_epic.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from adatad.config import load_config  # noqa: E402
from adatad.data.splits import load_splits  # noqa: E402
from adatad.engine.validation import metrics_of  # noqa: E402
from adatad.evaluation import format_map_table  # noqa: E402


def prior_results(train: list, test: list, class_names: list[str]) -> tuple[dict, float]:
    """{"results": ...} of the tiling baseline, and the tile length in seconds."""
    lengths = np.concatenate([r.segments[:, 1] - r.segments[:, 0] for r in train])
    labels = np.concatenate([r.labels for r in train])
    share = np.bincount(labels, minlength=len(class_names)) / len(labels)
    tile = float(np.median(lengths))
    results = {}
    for record in test:
        starts = np.arange(0.0, max(record.duration - tile, 0.0) + 1e-9, tile / 2)
        results[record.video_id] = [{"segment": [round(float(s), 2), round(float(min(s + tile, record.duration)), 2)],
                                     "label": name, "score": round(float(p), 4)}
                                    for s in starts for name, p in zip(class_names, share, strict=True) if p > 0]
    return {"results": results}, tile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/synthetic_epic.yaml")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    train, test, class_names = load_splits(cfg)
    results, tile = prior_results(train, test, class_names)
    metrics = metrics_of(results, test, class_names, cfg.evaluation.tiou_thresholds)
    actions = sum(len(r.evaluation_ground_truth[0]) for r in test)
    print(f"{len(test)} test videos, {actions} actions; tiles of {tile:.2f} s (the training actions' median), "
          f"every {tile / 2:.2f} s, each class scored by its share of the training actions:")
    print(format_map_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
