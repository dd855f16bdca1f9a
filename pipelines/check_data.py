"""Check a config's annotations and every video before training (no Ray needed).

    python pipelines/check_data.py                                  # the synthetic demo config
    python pipelines/check_data.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml

Exit status: 0 all videos usable; 1 problems found (all listed at once, one line each);
2 the config, annotations or command line are wrong (one line). `pipelines/train.py` runs the
same check before it starts Ray unless given --skip-data-check.

Both THUMOS json layouts load (OpenTAD's and ActionFormer's); when the configured OpenTAD subset
names are read under ActionFormer's names, one `note:` line says so. Videos whose json has no
frame count are checked against their duration (the decoder supplies the count). Segments lying
(partly) outside their video or of zero length are `warning:` lines (counts and the first few),
never problems: training drops or clips them, evaluation scores them as the file has them.
A VideoMAE file the config trains from that is not there yet is a `warning:` line naming the
command that fetches it (it is not data, so the exit status does not change).
"""

from __future__ import annotations

import argparse
import sys
import time

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import PROJECT_ROOT, ConfigError, load_config
from adatad.data.annotations import AnnotationError, segment_notices, subset_translation_note
from adatad.data.check import check_videos, format_problems, segment_warnings
from adatad.data.frame_store.check import check_store
from adatad.data.splits import load_splits
from pipelines.cli.args import DEFAULT_CONFIG, CommandParser, add_config_arguments, fail
from pipelines.cli.frame_store_check import frame_store_fix
from pipelines.cli.hints import missing_backbone


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__, aliases={"--threads": "--workers"})
    add_config_arguments(p)
    p.add_argument("--split", choices=("train", "test", "all"), default="all", help="which videos to check")
    p.add_argument("--workers", type=int, default=None,
                   help="videos checked at once, in threads (default: min(8, CPUs); was --threads)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config or PROJECT_ROOT / DEFAULT_CONFIG, args.overrides, args.profile)
        train, test, classes = load_splits(cfg)
        annotation_file = cfg.resolve_path(cfg.data.annotation_file)
        note = subset_translation_note(annotation_file, [cfg.data.train_subset, cfg.data.test_subset])
        subsets = {"train": [cfg.data.train_subset], "test": [cfg.data.test_subset],
                   "all": [cfg.data.train_subset, cfg.data.test_subset]}[args.split]
        notices = segment_notices(annotation_file, list(dict.fromkeys(subsets)))
    except (ConfigError, AnnotationError) as exc:
        return fail(exc)
    if note:
        print(f"note: {note}", flush=True)
    weights = missing_backbone(cfg, args.config or DEFAULT_CONFIG, args.overrides)
    if weights:  # not data, but what stops train.py next: say it now
        print(f"warning: model.backbone.checkpoint: {weights}", flush=True)
    for line in segment_warnings(notices):
        print(line, flush=True)
    records = {"train": train, "test": test, "all": train + test}[args.split]
    start = time.perf_counter()
    if cfg.data.frame_store:  # training reads the store, not the videos: check what it will read
        root = cfg.resolve_path(cfg.data.frame_store)
        report = check_store(root, records, cfg.data)
        if not report.ok:
            for line in report.lines(frame_store_fix(cfg, report.mismatch, root, args.config, args.overrides)):
                print(f"error: {line}", file=sys.stderr)
            return 1
        print(f"data check: {report.summary()} ({len(train)} train, {len(test)} test, {len(classes)} classes; "
              f"{time.perf_counter() - start:.1f} s); the videos themselves are not read with a store")
        return 0
    problems = check_videos(records, num_threads=args.workers)
    elapsed = time.perf_counter() - start
    if problems:
        print(format_problems(problems, len(records)), file=sys.stderr)
        return 1
    unknown = sum(not r.frames_known for r in records)
    from_decoder = f"; {unknown} frame counts from the decoder" if unknown else ""
    print(f"data check: all {len(records)} videos usable ({len(train)} train, {len(test)} test, "
          f"{len(classes)} classes; {elapsed:.1f} s{from_decoder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
