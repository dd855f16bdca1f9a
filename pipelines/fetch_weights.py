"""Download the pretrained backbone file a config trains from, to the path the config names.

    python pipelines/fetch_weights.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml
    python pipelines/fetch_weights.py --config configs/opentad/e2e_thumos_videomae_l_768x1_160_adapter.yaml
    python pipelines/fetch_weights.py --list                                   # every known file and its source
    python pipelines/fetch_weights.py --config CONFIG --source-url URL --sha256 HEX   # a mirror of your own

The file is `model.backbone.checkpoint` of the config (after --set / --profile); its published
source is looked up by its file name (`pipelines/weights/sources.py`: VideoMAE-S/-H and the EPIC
and Ego4D files from OpenTAD's Google Drive, VideoMAE-B/-L from mmaction2's release; VideoMAEv2-g
may not be redistributed, so the command says how to request it). A progress bar on a terminal;
an interrupted download resumes where it stopped (run the same command again); the file is checked
by sha256 before it takes its name: against the published digest or, for mmaction2's files, the
first 8 hex digits their names carry; where none is published, the digest of the download is
recorded in `<file>.sha256` and every later run checks the file against it. A file already in
place is checked, not downloaded again. Exit status: 0 the file is there and checks out; 1 the
download failed, was refused (wrong sha256) or cannot be automated; 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import ConfigError, load_config
from pipelines.cli.args import EXIT_BAD_INPUT, EXIT_FAILED, CommandParser, add_config_arguments, fail
from pipelines.weights.fetch import FetchError, fetch, file_sha256, matches, recorded_sha256, write_record
from pipelines.weights.sources import SOURCES, WeightSource, source_for


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__)
    add_config_arguments(p, config_help="experiment YAML whose model.backbone.checkpoint to fetch")
    p.add_argument("--list", action="store_true", help="list the known backbone files and their sources")
    p.add_argument("--source-url", default=None, metavar="URL",
                   help="download from this URL instead of the published source (a mirror)")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="expected sha256 (or its first digits) instead of the published one")
    p.add_argument("--out", default=None, type=Path,
                   help="write the file here instead of the config's model.backbone.checkpoint")
    return p


def list_sources() -> list[str]:
    lines = []
    for s in SOURCES:
        lines += [f"{s.file}", f"    {s.model}", f"    source: {s.url or 'request form: ' + s.published_at}",
                  f"    sha256: {s.hash_note}"]
    return lines


def target(args: argparse.Namespace) -> Path:
    """The file to fetch: --out, else the config's `model.backbone.checkpoint` (resolved as training does)."""
    if args.out is not None:
        return args.out.resolve()
    cfg = load_config(args.config, args.overrides, args.profile)
    checkpoint = cfg.model.backbone.checkpoint
    if not checkpoint:
        what = "model.init_from (a trained file)" if cfg.model.init_from else "random weights"
        raise ConfigError(f"{args.config}: model.backbone.checkpoint is null; this config starts from {what}, "
                          "so there is nothing to fetch")
    return Path(cfg.resolve_path(checkpoint))


def check_present(dest: Path, expected: str | None, say=print) -> int:
    """A file already in place: checked against the expected or recorded digest, never re-downloaded."""
    reference, what = (expected, "published") if expected else (recorded_sha256(dest), "recorded")
    digest = file_sha256(dest).hexdigest()
    if reference is None:
        write_record(dest, digest)
        say(f"{dest}: already there; no sha256 is published for it, so this one ({digest}) is now recorded in "
            f"{dest.name}.sha256 and later runs check the file against it")
        return 0
    if not matches(digest, reference):
        return fail(f"{dest}: sha256 {digest} does not match the {what} {reference}; the file changed or is "
                    "another one: move it away and run this command again to download it", EXIT_FAILED)
    say(f"{dest}: already there, sha256 matches the {what} {reference}")
    return 0


def how_to_get(source: WeightSource, dest: Path) -> int:
    print(f"{source.model}: {source.file}")
    for line in source.how:
        print(line.format(dest=dest))
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(list_sources()))
        return 0
    if args.config is None and args.out is None:
        p.error("give --config (the file its model.backbone.checkpoint names), --out FILE with --source-url, "
                "or --list")
    try:
        dest = target(args)
    except ConfigError as exc:
        return fail(exc)
    source = source_for(dest)
    url = args.source_url or (source.url if source else None)
    expected = args.sha256 or (source.sha256 if source else None)  # a mirror serves the same file
    if url is None:
        if source is not None and not dest.exists():
            return how_to_get(source, dest)
        if source is None:
            return fail(f"{dest.name}: no published source is known for this file name ({len(SOURCES)} are: "
                        "--list); pass --source-url URL (and --sha256 HEX if you know it)", EXIT_BAD_INPUT)
    if dest.exists():
        return check_present(dest, expected)
    try:
        fetched = fetch(url, dest, expected)
    except FetchError as exc:
        return fail(exc, EXIT_FAILED)
    if expected:
        print(f"{dest}: sha256 {fetched.sha256} matches the published {expected}")
    else:
        write_record(dest, fetched.sha256)
        print(f"{dest}: sha256 {fetched.sha256} (none is published; recorded in {dest.name}.sha256, which later "
              "runs check the file against)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
