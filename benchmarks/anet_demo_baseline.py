"""The whole-video baseline of the ActivityNet-like demo: what a detector must beat there.

The baseline predicts one segment per test video, [0, duration], labelled with the video
classifier's top class, score 1: all that the video-level classifier alone knows. Scored like the
demo's validation (its test videos minus the block list, tIoU 0.5:0.05:0.95). Also prints the
classifier's top-1 and top-2 accuracy on those videos.

    python pipelines/make_synthetic.py --out data/synthetic_anet --anet-demo
    python benchmarks/anet_demo_baseline.py [--config configs/synthetic_anet.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from adatad.config import load_config  # noqa: E402
from adatad.data.splits import load_test_split  # noqa: E402
from adatad.engine.validation import metrics_of  # noqa: E402
from adatad.evaluation import format_map_table  # noqa: E402
from adatad.video_classifier import load_video_classifier  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/synthetic_anet.yaml")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    inference = cfg.model.inference
    records, class_names = load_test_split(cfg)
    classifier = load_video_classifier(inference.external_classifier, inference.external_classifier_type)
    results, top1, top2 = {}, 0, 0
    for record in records:
        probs = classifier.of_video(record.video_id)
        order = np.argsort(-probs, kind="stable")
        truth = {class_names[int(c)] for c in record.evaluation_ground_truth[1]}
        top1 += classifier.class_names[order[0]] in truth
        top2 += bool(truth & {classifier.class_names[c] for c in order[:2]})
        results[record.video_id] = [{"segment": [0.0, record.duration], "label": classifier.class_names[order[0]],
                                     "score": 1.0}]
    metrics = metrics_of({"results": results}, records, class_names, cfg.evaluation.tiou_thresholds)
    print(f"{len(records)} test videos; classifier top-1 accuracy {top1 / len(records):.0%}, "
          f"top-2 {top2 / len(records):.0%}")
    print("whole-video baseline (one segment [0, duration] per video, the classifier's top class, score 1):")
    print(format_map_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
