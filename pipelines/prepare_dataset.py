"""Your own videos + a segment table -> a data set and a config the THUMOS recipe trains on.

    python pipelines/prepare_dataset.py --videos DIR --segments segments.csv --out-dir data/NAME
    python pipelines/prepare_dataset.py --videos DIR --segments segments.csv --out-dir data/NAME --split-column split
    python pipelines/prepare_dataset.py --videos DIR --segments thumos14.json --out-dir data/NAME --subset Validation

The CSV has one labelled segment per row, `video,start,end,label` (seconds; `video` is a file
name inside --videos, with or without its extension); a row with empty start, end and label lists
a video without actions (kept as background with --keep-unlabelled). A THUMOS json (OpenTAD's or
ActionFormer's layout) is read instead when --segments ends in .json.

Every video is probed with the real decoder (in worker processes); every problem (missing
column, bad number, unknown video, unreadable file, segment outside its video, ...) is listed at
once, one line each naming the row and the value, and then nothing is written (exit 2).
Otherwise --out-dir gets annotations.json, category_idx.txt and split.csv, and configs/NAME.yaml
(--config-out) is composed from --base; the commands to train and detect are printed last.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import PROJECT_ROOT, ConfigError, load_config
from adatad.datasets.prepare import (
    DEFAULT_BASE,
    PreparedDataset,
    PrepareError,
    PrepareRequest,
    prepare_dataset,
)
from adatad.datasets.segments_csv import parse_columns
from pipelines.cli.args import CommandParser
from pipelines.cli.hints import fetch_weights_command, missing_backbone, python_command

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__, aliases={"--out": "--out-dir", "--name": "--dataset-name"})
    p.add_argument("--videos", required=True, type=Path, help="folder holding the video files")
    p.add_argument("--segments", required=True, type=Path, help="segment table (.csv) or THUMOS annotation (.json)")
    p.add_argument("--out-dir", required=True, type=Path, help="data set folder to write, e.g. data/NAME (was --out)")
    p.add_argument("--dataset-name", default=None,
                   help="data set / config name (default: the name of --out-dir; was --name)")
    p.add_argument("--config-out", type=Path, default=None, help="config file to write (default: configs/NAME.yaml)")
    p.add_argument("--base", type=Path, default=None,
                   help=f"recipe the config builds on via _base_ (default: {DEFAULT_BASE})")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--test-fraction", type=float, default=0.2,
                       help="share of videos for testing, stratified by class (default: 0.2)")
    split.add_argument("--split-column", default=None, metavar="COL",
                       help="take each video's split from this CSV column (values train / test); 'subset' for a json")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified split (default: 0)")
    p.add_argument("--keep-unlabelled", action="store_true",
                   help="keep videos listed without segments, as background videos")
    p.add_argument("--subset", dest="subsets", action="append", default=[], metavar="NAME",
                   help="json input: only videos of this subset (exact name; repeatable)")
    p.add_argument("--columns", nargs="+", default=[], metavar="NAME=HEADER",
                   help="CSV header names, e.g. --columns video=clip label=action")
    p.add_argument("--workers", type=int, default=None, help="videos probed at once (default: min(8, CPUs))")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    return p


def resolve_base(base: Path | None) -> Path:
    """--base as given, else relative to the project (so `configs/x.yaml` works from any folder)."""
    if base is None:
        return PROJECT_ROOT / DEFAULT_BASE
    return base if base.is_absolute() or base.exists() else PROJECT_ROOT / base


def next_commands(result: PreparedDataset, videos: Path) -> list[str]:
    """The commands to run next, copy-paste ready: relative paths when run from the project folder."""
    here = Path.cwd().resolve() == PROJECT_ROOT

    def show(path: Path) -> str:
        path = Path(os.path.abspath(path))  # not resolve(): .venv/bin/python is a link to the base interpreter
        return str(path.relative_to(PROJECT_ROOT)) if here and path.is_relative_to(PROJECT_ROOT) else str(path)

    py = python_command()
    runs = f"{show(result.runs_dir)}/{result.name}-*/"
    fetch = [fetch_weights_command(show(result.config_file))] if weights_missing(result) else []
    return [*fetch, f"{py} {show(PROJECT_ROOT / 'pipelines/train.py')} --config {show(result.config_file)}",
            f'{py} {show(PROJECT_ROOT / "pipelines/detect.py")} --checkpoint "$(ls -td {runs} | head -1)" '
            f"--videos {show(videos)} --out detections.json --plot-dir plots --annotations "
            f"{show(result.annotation_file)}"]


def weights_missing(result: PreparedDataset) -> str | None:
    """The written config's VideoMAE file, when it is not there yet (the default base trains from
    VideoMAE-S): `train.py` would stop on it, so the note and the next commands say so first."""
    try:
        cfg = load_config(result.config_file)
    except ConfigError:
        return None  # the config was checked before it was written; nothing more to say here
    return missing_backbone(cfg, str(result.config_file))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        columns = parse_columns(args.columns)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    request = PrepareRequest(videos=args.videos, segments=args.segments, out=args.out_dir, name=args.dataset_name,
                             config_out=args.config_out, base=resolve_base(args.base),
                             test_fraction=args.test_fraction, split_column=args.split_column, seed=args.seed,
                             keep_unlabelled=args.keep_unlabelled, subsets=tuple(args.subsets), columns=columns,
                             workers=args.workers, force=args.force, python=python_command())
    try:
        result = prepare_dataset(request, say=lambda line: print(line, flush=True))
    except PrepareError as exc:
        print(f"prepare_dataset: {len(exc.problems)} problem(s); nothing written:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"data set '{result.name}': {len(result.train) + len(result.test)} videos ({len(result.train)} train, "
          f"{len(result.test)} test, {result.background} background), {len(result.classes)} classes "
          f"({', '.join(result.classes)}), {result.segments} segments")
    for note in result.notes:
        print(f"note: {note}")
    weights = weights_missing(result)
    if weights:
        print(f"note: model.backbone.checkpoint: {weights}")
    print(f"wrote {result.annotation_file}, {result.class_map_file.name}, {result.split_file.name}; "
          f"config {result.config_file}")
    print("next:")
    for command in next_commands(result, args.videos):
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
