"""Write the synthetic THUMOS-like data set (real H.264 mp4 + THUMOS-layout json).

    python pipelines/make_synthetic.py --out-dir data/synthetic --demo
    python pipelines/make_synthetic.py --out-dir data/synthetic_anet --anet-demo
    python pipelines/make_synthetic.py --out-dir data/synthetic_epic --epic-demo
    python pipelines/make_synthetic.py --out-dir data/synth320 --num-train 20 --num-test 10 --seed 1
    python pipelines/make_synthetic.py --out-dir data/mixed --fps 25 30 --csv data/mixed/segments.csv

--anet-demo writes the ActivityNet-like set of configs/synthetic_anet.yaml (videos of 20-90 s with
few long actions of one class, v_<id>.mp4 files, a json without frame counts, a block list and a
video classifier file; adatad/datasets/synthetic_anet.py). --epic-demo writes the EPIC-shaped set of
configs/synthetic_epic.yaml (videos of 45-75 s at 30 fps dense with short actions, OpenTAD's EPIC
json: subsets train / val, durations only, id_NNN labels; adatad/datasets/synthetic_epic.py). --fps
with several values gives the videos alternating frame rates. --csv also writes the
segments as the CSV that pipelines/prepare_dataset.py reads (video,start,end,label,split), so the
"own videos" path can be tried on a fresh machine.

Skips when ``--out-dir`` already holds a complete data set generated with the same parameters;
refuses (exit 2) when it holds one made with other parameters, unless ``--force``. An
incomplete one (interrupted run: no annotations.json) is regenerated.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.datasets.segments_csv import write_segments_csv
from adatad.datasets.synthetic import (
    CLASS_MAP_FILE,
    VIDEO_DIR,
    dataset_is_complete,
    generate_from_spec,
    saved_spec,
    segment_rows,
)
from adatad.datasets.synthetic_plan import ANET_DEMO_SPEC, DEMO_SPEC, EPIC_DEMO_SPEC, SyntheticSpec
from pipelines.cli.args import CommandParser
from pipelines.cli.hints import command_script, python_command


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__, aliases={"--out": "--out-dir"})
    p.add_argument("--out-dir", required=True, type=Path, help="output folder (was --out)")
    demo = p.add_mutually_exclusive_group()
    demo.add_argument("--demo", action="store_true",
                      help=f"built-in demo set ({DEMO_SPEC.num_train}+{DEMO_SPEC.num_test} videos, "
                           f"{DEMO_SPEC.num_classes} classes, {DEMO_SPEC.width}x{DEMO_SPEC.height}); options below "
                           "override it")
    demo.add_argument("--anet-demo", action="store_true",
                      help=f"ActivityNet-like demo set of configs/synthetic_anet.yaml ({ANET_DEMO_SPEC.num_train}+"
                           f"{ANET_DEMO_SPEC.num_test} videos of 20-90 s, {ANET_DEMO_SPEC.num_classes} classes); "
                           "options below override it")
    demo.add_argument("--epic-demo", action="store_true",
                      help=f"EPIC-shaped demo set of configs/synthetic_epic.yaml ({EPIC_DEMO_SPEC.num_train}+"
                           f"{EPIC_DEMO_SPEC.num_test} videos of 45-75 s at 30 fps, many short actions, "
                           f"{EPIC_DEMO_SPEC.num_classes} classes); options below override it")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-test", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--duration", type=float, nargs="+", metavar="S", help="video length in s: fixed or MIN MAX")
    p.add_argument("--fps", type=int, nargs="+", metavar="FPS",
                   help="frame rate; several values: video i of each split gets the (i mod n)-th")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--crf", type=int)
    p.add_argument("--bitrate-kbps", type=int)
    p.add_argument("--noise", type=int, help="per-pixel noise amplitude (grey levels)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="videos encoded in parallel (default: min(2, CPUs))")
    p.add_argument("--force", action="store_true", help="regenerate even if a data set is there")
    p.add_argument("--quiet", action="store_true", help="no per-video lines")
    p.add_argument("--csv", type=Path, default=None,
                   help="also write the segments as a prepare_dataset.py CSV (video,start,end,label,split)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_spec(args: argparse.Namespace) -> SyntheticSpec:
    spec = (ANET_DEMO_SPEC if args.anet_demo else EPIC_DEMO_SPEC if args.epic_demo else DEMO_SPEC if args.demo
            else SyntheticSpec())
    if (args.anet_demo or args.epic_demo) and args.csv is not None:
        flag = "--anet-demo" if args.anet_demo else "--epic-demo"
        raise ValueError(f"--csv lists THUMOS-layout files; the {flag} set is read through its own json")
    changes = {
        name: getattr(args, name)
        for name in ("num_train", "num_test", "num_classes", "width", "height", "seed", "crf",
                     "bitrate_kbps", "noise")
        if getattr(args, name) is not None
    }
    if args.fps is not None:
        changes["fps"] = args.fps[0]
        changes["fps_cycle"] = tuple(args.fps) if len(args.fps) > 1 else ()
    if args.duration is not None:
        if len(args.duration) not in (1, 2):
            raise ValueError(f"--duration takes 1 or 2 values, got {args.duration}")
        changes["duration_s"] = (args.duration[0], args.duration[-1])
    spec = dataclasses.replace(spec, **changes)
    spec.validate()
    return spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = build_spec(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out_dir.resolve()
    if not args.force:
        if dataset_is_complete(out, spec):
            print(f"{out}: complete data set with these parameters already there; skipping (--force regenerates)")
            write_csv(args.out_dir, args.csv)
            return 0
        old = saved_spec(out)
        if dataset_is_complete(out) and old is not None:
            diff = {k: (old.get(k), v) for k, v in spec.to_json().items() if old.get(k) != v}
            print(f"error: {out} holds a data set made with other parameters {diff} (old, new); "
                  "pass --force to replace it", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    ann = generate_from_spec(out, spec, progress=None if args.quiet else print, workers=args.workers)
    elapsed = time.perf_counter() - t0
    videos = sorted((out / VIDEO_DIR).glob("*.mp4"))
    size_mb = sum(p.stat().st_size for p in videos) / 1e6
    rates = "/".join(str(f) for f in spec.fps_cycle) if spec.fps_cycle else str(spec.fps)
    print(f"wrote {len(videos)} videos ({size_mb:.1f} MB, {spec.width}x{spec.height} @ {rates} fps, "
          f"{spec.num_classes} classes) + {ann.name} + {CLASS_MAP_FILE} to {out} in {elapsed:.1f} s "
          f"({args.workers} worker{'s' if args.workers > 1 else ''})")
    write_csv(args.out_dir, args.csv)
    return 0


def write_csv(out: Path, csv_path: Path | None) -> None:
    """The data set's segments as a prepare_dataset.py CSV (atomic), and the command that reads it."""
    if csv_path is None:
        return
    rows = segment_rows(out)
    write_segments_csv(csv_path, rows)
    print(f"wrote {len(rows)} segments to {csv_path}; next: {python_command()} {command_script('prepare_dataset')} "
          f"--videos {out / VIDEO_DIR} --segments {csv_path} --out-dir data/NAME")


if __name__ == "__main__":
    sys.exit(main())
