"""Ray Tune sweeps: every trial is the training run of `train.py`, an MLflow run nested in the sweep's run.

    python pipelines/tune.py --sweep configs/sweeps/adapter_lr.yaml                 # local Ray, ASHA
    python pipelines/tune.py --sweep configs/sweeps/batch_workers.yaml --cluster auto
    python pipelines/tune.py --sweep configs/sweeps/adapter_lr.yaml --num-samples 2 --max-concurrent 1 \
        --set train.epochs=4

A trial is a small Tune function (0.1 CPU) that builds the trial's config (base config + sweep
values as `--set` overrides) and calls `pipelines.train.run_training` with a `TuneReportCallback`:
the same TorchTrainer, Ray Data pipeline and MLflow logging as a plain training run. ASHA decides
at validated epochs (the only ones that report average mAP). At the end the trials table and the
best setting are printed and written to `<sweep folder>/SWEEP_RESULTS.md`, which is also attached to
the sweep's parent MLflow run (params: the sweep file; metrics: the best trial's score).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `pipelines` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ray.tune import Callback

from adatad.atomic import atomic_write_text
from adatad.config import PROJECT_ROOT, Config, ConfigError, load_config
from pipelines.console import Console, RunLog
from pipelines.sweep import (
    SETTING_KEY,
    SweepError,
    SweepSpec,
    check_sweep,
    load_sweep,
    num_trials,
    trial_overrides,
)

TRIAL_DRIVER_CPUS = 0.1  # the Tune trial only waits on its TorchTrainer; 0 CPU is refused by Tune
RESULTS_FILE = "SWEEP_RESULTS.md"
LOG_FILE = "tune.log"  # everything Ray, Tune and the trials printed
RUNS_DIR = "runs"  # <sweep folder>/runs/<trial run>: the Ray Train run folders (checkpoints, reports)


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its sampled values (shipped to the trial by Tune)."""

    spec: SweepSpec
    config_path: str
    profile: str | None
    extra_overrides: tuple[str, ...]
    sweep_dir: str
    sweep_run: str
    parent_run_id: str | None = None  # the sweep's MLflow run: every trial's run is nested under it

    def run_name(self, trial_id: str) -> str:
        return f"{self.spec.name}_{trial_id}"

    def run_dir(self, trial_id: str) -> Path:
        return Path(self.sweep_dir) / RUNS_DIR / self.run_name(trial_id)


@dataclass
class TrialRow:
    """One line of the trials table."""

    trial_id: str
    params: dict[str, Any]
    status: str
    epochs: int
    final: float | None
    best: float | None
    clips_per_s: float | None
    mlflow_run_id: str | None
    error: str | None = None


def swept_values(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The trial's values under their config keys (a settings bundle expanded), plus its name."""
    out: dict[str, Any] = {}
    if SETTING_KEY in params:
        out["sweep.setting"] = params[SETTING_KEY]
        out.update(spec.settings[params[SETTING_KEY]])
    out.update({k: v for k, v in params.items() if k != SETTING_KEY})
    return out


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: one training run, reporting each epoch to Tune and MLflow."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train import CONFIG_FILE, RunPlan, run_training

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = load_config(setup.config_path, trial_overrides(setup.spec, params, list(setup.extra_overrides)),
                      setup.profile)
    run_dir = setup.run_dir(trial_id)
    # A trial restarted by Tune finds its run folder and resumes from the last checkpoint.
    plan = RunPlan(cfg=cfg, run_name=run_dir.name, storage=run_dir.parent,
                   resumed=(run_dir / CONFIG_FILE).is_file())
    values = swept_values(setup.spec, params)
    tags = {"adatad.sweep": setup.spec.name, "adatad.sweep_run": setup.sweep_run, "adatad.trial_id": trial_id,
            "adatad.swept_keys": ",".join(setup.spec.swept_keys())}
    if setup.parent_run_id:
        from pipelines.tracking import PARENT_RUN_TAG

        tags[PARENT_RUN_TAG] = setup.parent_run_id
    run_training(plan, extra_callbacks=[TuneReportCallback()], mlflow_params=values, mlflow_tags=tags, quiet=True)


def finishing_asha(last_iteration: int, grace_period: int, reduction_factor: float):
    """ASHA that never stops a trial at its last epoch.

    Plain ASHA stops every trial when it reaches `max_t`; Tune then kills the trial before
    `run_training` writes its reports and closes its MLflow run (and, without the State API,
    the Train placement group leaks). Letting the last epoch through ends every surviving trial
    the normal way; early stops still happen at the rungs before it.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class FinishingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if result.get("training_iteration", 0) >= last_iteration:
                return TrialScheduler.CONTINUE
            return action

    # metric and mode come from TuneConfig (Tune refuses them in both places).
    return FinishingASHA(time_attr="training_iteration", max_t=max(last_iteration, grace_period + 1),
                         grace_period=grace_period, reduction_factor=reduction_factor)


# ---------------------------------------------------------------- sizing


def trial_cpus(cfg: Config) -> float:
    """CPUs one trial can hold at once: its driver, the train workers and both decode actor pools."""
    r = cfg.runtime
    return (TRIAL_DRIVER_CPUS + r.num_workers * r.cpus_per_worker
            + (r.decode_actors + r.val_decode_actors) * r.decode_actor_cpus)


def concurrent_trials(cfg: Config, resources: dict[str, float]) -> int:
    """How many trials fit the cluster side by side (at least 1), by CPUs and, if used, GPUs."""
    fit = math.floor(resources.get("CPU", 0) / trial_cpus(cfg) + 1e-9)
    if cfg.runtime.use_gpu and resources.get("GPU", 0) >= 1:
        fit = min(fit, int(resources["GPU"] // cfg.runtime.num_workers))
    return max(1, fit)


# ---------------------------------------------------------------- results


def _mlflow_run_id(run_dir: Path) -> str | None:
    from pipelines.tracking import RUN_ID_FILE

    path = run_dir / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


def _trial_id(result) -> str:
    trial_id = result.metrics.get("trial_id") if result.metrics else None
    return str(trial_id) if trial_id else Path(result.path).name


def collect_rows(results, setup: TrialSetup, max_epochs: int) -> list[TrialRow]:
    """The trials table from Tune's results (per-epoch dataframes) and the trials' run folders."""
    spec = setup.spec
    rows = []
    for result in results:
        trial_id = _trial_id(result)
        df = result.metrics_dataframe
        epochs = 0 if df is None or "epoch" not in df else int(df["epoch"].notna().sum())
        values = df[spec.metric].dropna().tolist() if df is not None and spec.metric in df else []
        speed = df["clips_per_s"].dropna().tolist() if df is not None and "clips_per_s" in df else []
        if result.error is not None:
            status = "error"
        elif epochs < max_epochs:
            status = "stopped early"
        else:
            status = "finished"
        best = (max(values) if spec.mode == "max" else min(values)) if values else None
        rows.append(TrialRow(
            trial_id=trial_id, params=swept_values(spec, result.config), status=status, epochs=epochs,
            final=values[-1] if values else None, best=best,
            clips_per_s=sum(speed) / len(speed) if speed else None,
            mlflow_run_id=_mlflow_run_id(setup.run_dir(trial_id)),
            error=str(result.error).strip().splitlines()[-1][:200] if result.error is not None else None,
        ))
    return rows


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.best is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: r.best) if mode == "max" else min(scored, key=lambda r: r.best)


def close_stopped_runs(rows: list[TrialRow], uri: str) -> None:
    """Trials stopped by ASHA are killed mid-run: mark their MLflow runs KILLED instead of RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for row in rows:
        if row.mlflow_run_id and client.get_run(row.mlflow_run_id).info.status == "RUNNING":
            client.set_tag(row.mlflow_run_id, "adatad.stopped", row.status)
            client.set_terminated(row.mlflow_run_id, status="FAILED" if row.status == "error" else "KILLED")


def open_sweep_run(uri: str, cfg: Config, setup: TrialSetup, params: dict[str, Any]) -> str:
    """A new parent MLflow run for this sweep (id kept in the sweep folder); trials nest under it."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from pipelines.tracking import new_run

    spec = setup.spec
    tags = {"adatad.sweep": spec.name, "adatad.sweep_run": setup.sweep_run,
            "adatad.swept_keys": ",".join(spec.swept_keys()),
            **({MLFLOW_RUN_NOTE: spec.description} if spec.description else {})}
    return new_run(uri, cfg.tracking.experiment_name, Path(setup.sweep_dir), setup.sweep_run, params, tags)


def close_sweep_run(uri: str, run_id: str, rows: list[TrialRow], spec: SweepSpec, results_file: Path) -> str:
    """Best trial (metric, values, run), trial counts and the results table on the parent run; its
    status is FAILED when no trial succeeded. Returns the status."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import finish_run, log_params

    client = MlflowClient(uri)
    best = best_row(rows, spec.mode)
    now = int(time.time() * 1000)
    counts = {f"trials_{s.replace(' ', '_')}": float(sum(r.status == s for r in rows))
              for s in ("finished", "stopped early", "error")}
    metrics = [Metric(k, v, now, 0) for k, v in counts.items()]
    if best is not None:
        metrics.append(Metric(f"best_{spec.metric}", float(best.best), now, 0))
        log_params(client, run_id, {"best.trial_id": best.trial_id,
                                    **{f"best.{k}": v for k, v in best.params.items()}})
        if best.mlflow_run_id:
            client.set_tag(run_id, "adatad.best_run_id", best.mlflow_run_id)
    client.log_batch(run_id, metrics=metrics)
    status = "FAILED" if all(r.status == "error" for r in rows) else "FINISHED"
    finish_run(uri, run_id, [results_file], status=status)
    return status


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def render_results(rows: list[TrialRow], spec: SweepSpec, sweep_dir: str, uri: str,
                   parent_run_id: str | None = None) -> str:
    """Markdown: what was swept, the trials table (best first) and the best setting."""
    keys = list(dict.fromkeys(k for r in rows for k in r.params))
    best = best_row(rows, spec.mode)
    order = sorted(rows, key=lambda r: (r.best is None, -(r.best or 0) if spec.mode == "max" else (r.best or 0)))
    header = ["trial", *keys, "status", "epochs", f"best {spec.metric}", f"final {spec.metric}",
              "clips/s", "MLflow run"]
    lines = [f"# Sweep `{spec.name}`", "",
             *([spec.description, ""] if spec.description else []),
             f"- sweep file: `{spec.source}`",
             f"- folder: `{sweep_dir}`",
             f"- MLflow: `{uri}`" + (f", sweep run `{parent_run_id}` (one nested run per trial)"
                                     if parent_run_id else ""),
             f"- metric: {spec.metric} ({spec.mode}), scheduler: {spec.scheduler}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in order:
        cells = [r.trial_id, *(_fmt(r.params.get(k)) for k in keys), r.status, str(r.epochs), _fmt(r.best),
                 _fmt(r.final), _fmt(r.clips_per_s), r.mlflow_run_id or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is None:
        lines.append(f"No trial reported {spec.metric}.")
    else:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        lines.append(f"**Best setting**: {shown} -> {spec.metric} {best.best:.4f} "
                     f"(trial {best.trial_id}, MLflow run {best.mlflow_run_id or '-'})")
    errors = [r for r in rows if r.error]
    if errors:
        lines += ["", "Errors:", *(f"- {r.trial_id}: {r.error}" for r in errors)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- driver


def sweep_folder(spec: SweepSpec, cfg: Config, storage: str | None, sweep_run: str | None) -> Path:
    """<storage>/<sweep run name>: the trials' run folders, Tune's state, the results and tune.log."""
    base_storage = Path(storage or cfg.resolve_path(cfg.runtime.storage_path))
    if not base_storage.is_absolute():
        raise SweepError(f"--storage {storage}: expected an absolute path (Ray workers change directory)")
    return base_storage / (sweep_run or f"sweep-{spec.name}-{datetime.now():%Y%m%d-%H%M%S}")


class TrialLines(Callback):
    """A Tune callback (on the Tune driver): one console line per trial epoch, and per trial end."""

    def __init__(self, console: Console, spec: SweepSpec, max_epochs: int) -> None:
        self.console: Console | None = console
        self.spec, self.last_epoch = spec, max_epochs - 1

    def __getstate__(self) -> dict:  # Tune saves its run config; the console (a stream) stays here
        return {**self.__dict__, "console": None}

    def _name(self, trial) -> str:
        values = swept_values(self.spec, trial.config)
        return f"trial {trial.trial_id} (" + ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}"
                                                       for k, v in values.items()) + ")"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from pipelines.progress import epoch_summary

        if self.console is not None and {"epoch", "loss", "clips_per_s", "epoch_time_s"} <= set(result):
            self.console.say(f"{self._name(trial)}  {epoch_summary(result, self.last_epoch)}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if self.console is not None:
            self.console.say(f"{self._name(trial)} finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self.console is not None:
            where = self.console.log.path if self.console.log else "Ray's logs"
            self.console.warn(f"{self._name(trial)} failed; its error is in {where}")


def run_sweep(spec: SweepSpec, config_path: str, profile: str | None = None,
              extra_overrides: list[str] | None = None, num_samples: int | None = None,
              max_concurrent: int | None = None, scheduler: str | None = None, storage: str | None = None,
              sweep_run: str | None = None, out: str | None = None, console: Console | None = None
              ) -> dict[str, Any]:
    """Run the sweep on the connected Ray cluster; returns rows, best row and the markdown path."""
    import ray
    from ray import tune

    from pipelines.sweep import param_space, spec_params
    from pipelines.tracking import finish_run, tracking_uri

    console = console or Console()
    extra = list(extra_overrides or [])
    cfg = check_sweep(spec, config_path, profile, extra)  # every value, before anything starts
    sweep_dir = sweep_folder(spec, cfg, storage, sweep_run)
    sweep_run = sweep_dir.name
    setup = TrialSetup(spec, str(Path(config_path).resolve()), profile, tuple(extra), str(sweep_dir), sweep_run)
    max_epochs = max(load_config(config_path, trial_overrides(spec, {}, extra), profile).train.epochs,
                     cfg.train.epochs)
    fit = concurrent_trials(cfg, ray.cluster_resources())
    concurrent = max_concurrent or spec.max_concurrent or fit
    kind = (scheduler or spec.scheduler).lower()
    console.say(f"sweep '{spec.name}': {num_trials(spec, num_samples)} trial(s), {concurrent} at a time; one trial "
                f"holds up to {trial_cpus(cfg):g} CPU (driver {TRIAL_DRIVER_CPUS} + train {cfg.runtime.num_workers} x "
                f"{cfg.runtime.cpus_per_worker:g} + decode actors {cfg.runtime.decode_actors}+"
                f"{cfg.runtime.val_decode_actors} x {cfg.runtime.decode_actor_cpus:g}); scheduler {kind}")
    if concurrent > fit:
        console.warn(f"{concurrent} concurrent trials need more CPUs than the cluster has; Ray Data actors "
                     "of some trials will wait")
    # Only validated epochs report the metric; ASHA skips the others, Tune must not reject them.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    asha = (finishing_asha(max_epochs, spec.grace_period, spec.reduction_factor)
            if kind == "asha" else None)
    uri = tracking_uri(cfg)
    effective = {"sweep.config": setup.config_path, "sweep.scheduler": kind,
                 "sweep.num_samples": str(num_samples or spec.num_samples),
                 "sweep.trials": str(num_trials(spec, num_samples)), "sweep.max_concurrent": str(concurrent),
                 **({"sweep.profile": profile} if profile else {}),
                 **({"sweep.extra_set": json.dumps(extra)} if extra else {})}
    parent = open_sweep_run(uri, cfg, setup, {**spec_params(spec), **effective})
    setup = dataclasses.replace(setup, parent_run_id=parent)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"cpu": TRIAL_DRIVER_CPUS}),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=asha,
                                    num_samples=num_samples or spec.num_samples, max_concurrent_trials=concurrent),
        # verbose=0: no status tables; one line per trial epoch instead (TrialLines)
        run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                  callbacks=[TrialLines(console, spec, max_epochs)]),
    )
    try:
        results = tuner.fit()
        rows = collect_rows(results, setup, max_epochs)
        close_stopped_runs(rows, uri)
        markdown = render_results(rows, spec, str(sweep_dir), uri, parent)
        console.say("\n" + markdown.rstrip())
        paths = [atomic_write_text(sweep_dir / RESULTS_FILE, markdown)]
        if out:
            paths.append(atomic_write_text(out, markdown))
        close_sweep_run(uri, parent, rows, spec, paths[0])
    except BaseException as exc:  # the parent run must not stay RUNNING
        finish_run(uri, parent, [], status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return {"rows": rows, "best": best_row(rows, spec.mode), "sweep_dir": str(sweep_dir),
            "results_file": str(paths[-1]), "markdown": markdown, "tracking_uri": uri, "mlflow_run_id": parent}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, help="sweep file, e.g. configs/sweeps/adapter_lr.yaml")
    p.add_argument("--config", default=None, help="base experiment YAML (default: the sweep's `config`)")
    p.add_argument("--profile", default=None, help="GPU-memory profile applied to every trial (e.g. 64gb)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every trial (swept keys keep the trial's value)")
    p.add_argument("--cluster", default="local",
                   help="local (start Ray here), auto (attach to a running cluster) or an address")
    p.add_argument("--num-samples", type=int, default=None, help="repeat the grid / draw this many samples")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at a time (default: as many as the cluster's CPUs/GPUs fit)")
    p.add_argument("--scheduler", choices=("asha", "none"), default=None,
                   help="override the sweep's scheduler (none = no early stopping)")
    p.add_argument("--storage", default=None, help="absolute folder for sweeps (default: runtime.storage_path)")
    p.add_argument("--name", default=None, help="sweep folder name (default: sweep-<name>-<time>)")
    p.add_argument("--out", default=None, help="also write the results markdown here")
    p.add_argument("--verbose", action="store_true", help="also show Ray's and Tune's own output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: RunLog | None = None
    for flag, value in (("--num-samples", args.num_samples), ("--max-concurrent", args.max_concurrent)):
        if value is not None and value < 1:
            print(f"error: {flag} {value}: expected an integer >= 1", file=sys.stderr)
            return 2
    try:
        spec = load_sweep(args.sweep)
        config_path = args.config or (str(PROJECT_ROOT / spec.config) if spec.config else None)
        if config_path is None:
            raise SweepError(f"{spec.source}: no `config` in the sweep file; pass --config")
        profile = args.profile or spec.profile
        cfg = check_sweep(spec, config_path, profile, args.overrides)
        sweep_dir = sweep_folder(spec, cfg, args.storage, args.name)
        log = RunLog(sweep_dir / LOG_FILE, verbose=args.verbose).attach()
        console = Console(log)
        console.say(f"sweep folder: {sweep_dir}; full log: {log.path}")
        from pipelines.cluster import ClusterError, connect_for_run
        from pipelines.train import quiet_ray_data

        try:
            connect_for_run(args.cluster, cfg.runtime, console.say)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log.attach_ray()
        quiet_ray_data(args.verbose)
        summary = run_sweep(spec, config_path, profile, args.overrides, args.num_samples, args.max_concurrent,
                            args.scheduler, args.storage, sweep_dir.name, args.out, console)
    except (SweepError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if log is not None:
            log.close()
    console.say(f"results: {summary['results_file']}")
    failed = [r for r in summary["rows"] if r.status == "error"]
    return 1 if failed and len(failed) == len(summary["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
