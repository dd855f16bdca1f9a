"""Score a predictions json against THUMOS-style annotations: mAP per tIoU and on average.

    python pipelines/score.py --annotations GT.json --predictions PRED.json \\
        [--subset validation] [--class-map category_idx.txt] [--out metrics.json]

(To evaluate a trained model on videos, use `pipelines/test.py`; this only scores a json, e.g. the
output of `pipelines/detect.py` or of another code base.)

Prints a table in percent and writes {"mAP": {...}, "average_mAP": y, "per_class": {...}} (fractions).
Bad input: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.atomic import atomic_write_text
from adatad.data.annotations import AnnotationError, load_class_names
from adatad.evaluation import (
    DEFAULT_TIOU_THRESHOLDS,
    EvaluationInputError,
    evaluate_map,
    format_map_table,
    load_ground_truth,
    load_predictions,
)
from pipelines.cli.args import CommandParser

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__)
    p.add_argument("--annotations", required=True, help="THUMOS/OpenTAD annotation json")
    # A later `--checkpoint` (evaluate a trained model) joins --predictions in a mutually exclusive group.
    p.add_argument("--predictions", required=True, help='results json: {"results": {video_id: [...]}}')
    p.add_argument("--subset", default="validation", help="annotation subset to evaluate (default: validation)")
    p.add_argument("--class-map", default=None,
                   help="class names, one per line (default: all labels of the annotations except Ambiguous)")
    p.add_argument("--tiou", type=float, nargs="+", default=list(DEFAULT_TIOU_THRESHOLDS),
                   help="tIoU thresholds (default: 0.3 0.4 0.5 0.6 0.7)")
    p.add_argument("--out", default=None, help="write the metrics json here (atomically)")
    return p


def run(args: argparse.Namespace) -> dict:
    ground_truth = load_ground_truth(args.annotations, args.subset)
    predictions = load_predictions(args.predictions)
    class_names = load_class_names(args.annotations, args.class_map)
    unknown = [v for v in predictions if v not in ground_truth]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        print(f"note: {len(unknown)} predicted video(s) are not in subset '{args.subset}' of "
              f"{args.annotations} and are ignored: {shown}", file=sys.stderr)
    metrics = evaluate_map(ground_truth, predictions, class_names, args.tiou)
    n_pred = sum(len(v) for k, v in predictions.items() if k in ground_truth)
    print(f"{len(ground_truth)} videos, {len(metrics['per_class'])} classes with ground truth, "
          f"{n_pred} predictions")
    print(format_map_table(metrics))
    if args.out:
        atomic_write_text(args.out, json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.out}")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (EvaluationInputError, AnnotationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. --out in an unwritable place
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
