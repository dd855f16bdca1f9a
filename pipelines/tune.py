"""Ray Tune sweeps: every trial is the training run of `train.py`, an MLflow run nested in the sweep's run.

    python pipelines/tune.py --sweep configs/sweeps/adapter_lr.yaml                 # local Ray, ASHA
    python pipelines/tune.py --sweep configs/sweeps/batch_workers.yaml --cluster auto
    python pipelines/tune.py --sweep configs/sweeps/adapter_lr.yaml --num-samples 2 --max-concurrent 1 \\
        --set train.epochs=4

A sweep file (`configs/sweeps/*.yaml`, `pipelines/sweeps/spec.py`) names the base config,
what to vary and how to judge. Each trial runs `train.py`'s TorchTrainer (`ray_layer/sweeps.py`);
ASHA decides at validated epochs. The console shows one line per trial epoch; at the end the
trials table and the best setting are printed and written to `<sweep folder>/SWEEP_RESULTS.md`,
which is also attached to the sweep's parent MLflow run. Ray's and Tune's own output goes to
`<sweep folder>/tune.log`.
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import PROJECT_ROOT, ConfigError
from pipelines.cli.args import CommandParser, add_cluster_arguments, fail
from pipelines.cli.console import Console
from pipelines.ray_layer.cluster import ClusterError, connect_for_run
from pipelines.ray_layer.run_log import RunLog
from pipelines.ray_layer.sweeps import run_sweep, sweep_folder
from pipelines.runs.uploads import LogUploads, local_log_for
from pipelines.sweeps.spec import SweepError, check_sweep, load_sweep


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__, aliases={"--name": "--run-name"})
    p.add_argument("--sweep", required=True, help="sweep file, e.g. configs/sweeps/adapter_lr.yaml")
    p.add_argument("--config", default=None, help="base experiment YAML (default: the sweep's `config`)")
    p.add_argument("--profile", default=None, help="GPU-memory profile applied to every trial (e.g. 64gb)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every trial (swept keys keep the trial's value)")
    p.add_argument("--num-samples", type=int, default=None, help="repeat the grid / draw this many samples")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at a time (default: as many as the cluster's CPUs/GPUs fit)")
    p.add_argument("--scheduler", choices=("asha", "none"), default=None,
                   help="override the sweep's scheduler (none = no early stopping)")
    p.add_argument("--storage", default=None, help="absolute folder for sweeps (default: runtime.storage_path)")
    p.add_argument("--run-name", default=None, help="sweep folder name (default: sweep-<name>-<time>; was --name)")
    p.add_argument("--out", default=None, help="also write the results markdown here")
    add_cluster_arguments(p, "also show Ray's and Tune's own output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with LogUploads() as uploads:
        return run(args, uploads)


def run(args: argparse.Namespace, uploads: LogUploads) -> int:
    log: RunLog | None = None
    for flag, value in (("--num-samples", args.num_samples), ("--max-concurrent", args.max_concurrent)):
        if value is not None and value < 1:
            return fail(f"{flag} {value}: expected an integer >= 1")
    try:
        spec = load_sweep(args.sweep)
        config_path = args.config or (str(PROJECT_ROOT / spec.config) if spec.config else None)
        if config_path is None:
            raise SweepError(f"{spec.source}: no `config` in the sweep file; pass --config")
        profile = args.profile or spec.profile
        cfg = check_sweep(spec, config_path, profile, args.overrides)
        folder = sweep_folder(spec, cfg, args.storage, args.run_name)
        local_log, remote_log = local_log_for(str(folder.log))  # a sweep folder at a URI: the log uploaded
        if remote_log is not None:
            uploads.follow(local_log, remote_log)
        log = RunLog(local_log, verbose=args.verbose).attach()
        console = Console(log)
        console.say(f"sweep folder: {folder.path}; full log: {remote_log or log.path}")
        connect_for_run(args.cluster, cfg.runtime, console.say, args.verbose)
        log.attach_ray()
        summary = run_sweep(spec, config_path, profile, args.overrides, args.num_samples, args.max_concurrent,
                            args.scheduler, args.storage, folder.name, args.out, console)
    except (SweepError, ConfigError, ClusterError) as exc:
        return fail(exc)
    finally:
        if log is not None:
            log.close()
    console.say(f"results: {summary['results_file']}")
    failed = [r for r in summary["rows"] if r.status == "error"]
    return 1 if failed and len(failed) == len(summary["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
