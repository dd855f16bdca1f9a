"""Write the synthetic THUMOS-like data set (real H.264 mp4 + THUMOS-layout json).

    python pipelines/make_synthetic.py --out data/synthetic --demo
    python pipelines/make_synthetic.py --out data/synth320 --num-train 20 --num-test 10 --seed 1

Skips when ``--out`` already holds a complete data set generated with the same parameters;
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

try:
    import adatad  # noqa: F401
except ImportError:  # run as a script without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adatad.data.synthetic import (
    CLASS_MAP_FILE,
    DEMO_SPEC,
    VIDEO_DIR,
    SyntheticSpec,
    dataset_is_complete,
    generate_from_spec,
    saved_spec,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--demo", action="store_true",
                   help=f"built-in demo set ({DEMO_SPEC.num_train}+{DEMO_SPEC.num_test} videos, "
                        f"{DEMO_SPEC.num_classes} classes, {DEMO_SPEC.width}x{DEMO_SPEC.height}); options below override it")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-test", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--duration", type=float, nargs="+", metavar="S", help="video length in s: fixed or MIN MAX")
    p.add_argument("--fps", type=int)
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
    return p.parse_args(argv)


def build_spec(args: argparse.Namespace) -> SyntheticSpec:
    spec = DEMO_SPEC if args.demo else SyntheticSpec()
    changes = {
        name: getattr(args, name)
        for name in ("num_train", "num_test", "num_classes", "fps", "width", "height", "seed", "crf",
                     "bitrate_kbps", "noise")
        if getattr(args, name) is not None
    }
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
    out = args.out.resolve()
    if not args.force:
        if dataset_is_complete(out, spec):
            print(f"{out}: complete data set with these parameters already there; skipping (--force regenerates)")
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
    print(f"wrote {len(videos)} videos ({size_mb:.1f} MB, {spec.width}x{spec.height} @ {spec.fps} fps, "
          f"{spec.num_classes} classes) + {ann.name} + {CLASS_MAP_FILE} to {out} in {elapsed:.1f} s "
          f"({args.workers} worker{'s' if args.workers > 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
