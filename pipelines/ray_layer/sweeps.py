"""Ray Tune sweeps: every trial is the training run of `train.py`, an MLflow run nested in the sweep's run.

A trial is a small Tune function (0.1 CPU) that builds the trial's config (base config + sweep
values as `--set` overrides) and calls `training.run_training` with a `TuneReportCallback`: the
same TorchTrainer, Ray Data pipeline and MLflow logging as a plain training run. ASHA decides at
validated epochs (the only ones that report average mAP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from adatad.atomic import atomic_write_text
from adatad.config import Config, load_config
from adatad.run_folder import SweepFolder, timestamped
from pipelines.cli.console import Console
from pipelines.ray_layer.trainer import storage_arguments, uses_gpu
from pipelines.sweeps.results import best_row, collect_rows, fmt, render_results, swept_values
from pipelines.sweeps.spec import SETTING_KEY, SweepError, SweepSpec, check_sweep, num_trials, trial_overrides
from pipelines.tracking.sweep_runs import close_stopped_runs, close_sweep_run, open_sweep_run

TRIAL_DRIVER_CPUS = 0.1  # the Tune trial only waits on its TorchTrainer; 0 CPU is refused by Tune


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its sampled values (shipped to the trial by Tune)."""

    spec: SweepSpec
    config_path: str
    profile: str | None
    extra_overrides: tuple[str, ...]
    sweep_dir: str
    parent_run_id: str | None = None  # the sweep's MLflow run: every trial's run is nested under it

    @property
    def folder(self) -> SweepFolder:
        return SweepFolder(self.sweep_dir)  # a URI too (adatad.locations)


def run_trial(params: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: one training run, reporting each epoch to Tune and MLflow."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.ray_layer.training import run_training
    from pipelines.runs.plan import RunPlan
    from pipelines.tracking.runs import PARENT_RUN_TAG

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = load_config(setup.config_path, trial_overrides(setup.spec, params, list(setup.extra_overrides)),
                      setup.profile)
    run = setup.folder.trial_run(setup.spec.trial_run_name(trial_id))
    # A trial restarted by Tune finds its run folder and resumes from the last checkpoint.
    plan = RunPlan(cfg=cfg, run_name=run.name, storage=run.path.parent, resumed=run.config.is_file())
    tags = {"adatad.sweep": setup.spec.name, "adatad.sweep_run": setup.folder.name, "adatad.trial_id": trial_id,
            "adatad.swept_keys": ",".join(setup.spec.swept_keys())}
    if setup.parent_run_id:
        tags[PARENT_RUN_TAG] = setup.parent_run_id
    run_training(plan, extra_callbacks=[TuneReportCallback()], mlflow_params=swept_values(setup.spec, params),
                 mlflow_tags=tags, quiet=True)


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


def trial_cpus(cfg: Config) -> float:
    """CPUs one trial can hold at once: its driver, the train workers and both decode actor pools."""
    r = cfg.runtime
    return (TRIAL_DRIVER_CPUS + r.num_workers * r.cpus_per_worker
            + (r.decode_actors + r.val_decode_actors) * r.decode_actor_cpus)


def concurrent_trials(cfg: Config, resources: dict[str, float]) -> int:
    """How many trials fit the cluster side by side (at least 1), by CPUs and, if used, GPUs."""
    fit = math.floor(resources.get("CPU", 0) / trial_cpus(cfg) + 1e-9)
    if uses_gpu(cfg, resources.get("GPU", 0)):
        fit = min(fit, int(resources["GPU"] // cfg.runtime.num_workers))
    return max(1, fit)


def sweep_folder(spec: SweepSpec, cfg: Config, storage: str | None, name: str | None) -> SweepFolder:
    """<storage>/<sweep name>: the trials' run folders, Tune's state, the results and tune.log."""
    from pipelines.cli.args import UsageError
    from pipelines.runs.plan import storage_folder

    try:
        base_storage = storage_folder(storage, cfg)
    except UsageError as exc:
        raise SweepError(str(exc)) from None
    return SweepFolder(base_storage / (name or timestamped(f"sweep-{spec.name}")))


class TrialLines(Callback):
    """A Tune callback (on the Tune driver): one console line per trial epoch, and per trial end."""

    def __init__(self, console: Console, spec: SweepSpec, max_epochs: int) -> None:
        self.console: Console | None = console
        self.spec, self.last_epoch = spec, max_epochs - 1

    def __getstate__(self) -> dict:  # Tune saves its run config; the console (a stream) stays here
        return {**self.__dict__, "console": None}

    def _name(self, trial) -> str:
        values = swept_values(self.spec, trial.config)
        return f"trial {trial.trial_id} (" + ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}"
                                                       for k, v in values.items()) + ")"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from pipelines.ray_layer.progress_relay import epoch_summary

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
              sweep_name: str | None = None, out: str | None = None, console: Console | None = None
              ) -> dict[str, Any]:
    """Run the sweep on the connected Ray cluster; returns rows, best row and the markdown path."""
    import ray
    from ray import tune

    from pipelines.sweeps.spec import spec_params
    from pipelines.tracking.runs import finish_run, tracking_uri

    console = console or Console()
    extra = list(extra_overrides or [])
    cfg = check_sweep(spec, config_path, profile, extra)  # every value, before anything starts
    folder = sweep_folder(spec, cfg, storage, sweep_name)
    setup = TrialSetup(spec, str(Path(config_path).resolve()), profile, tuple(extra), str(folder.path))
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
    asha = finishing_asha(max_epochs, spec.grace_period, spec.reduction_factor) if kind == "asha" else None
    uri = tracking_uri(cfg)
    effective = {"sweep.config": setup.config_path, "sweep.scheduler": kind,
                 "sweep.num_samples": str(num_samples or spec.num_samples),
                 "sweep.trials": str(num_trials(spec, num_samples)), "sweep.max_concurrent": str(concurrent),
                 **({"sweep.profile": profile} if profile else {}),
                 **({"sweep.extra_set": json.dumps(extra)} if extra else {})}
    parent = open_sweep_run(uri, cfg.tracking.experiment_name, spec, folder, {**spec_params(spec), **effective})
    setup = dataclasses.replace(setup, parent_run_id=parent)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"cpu": TRIAL_DRIVER_CPUS}),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=asha,
                                    num_samples=num_samples or spec.num_samples, max_concurrent_trials=concurrent),
        # verbose=0: no status tables; one line per trial epoch instead (TrialLines)
        run_config=tune.RunConfig(name=folder.tune_state.name, **storage_arguments(str(folder.path)), verbose=0,
                                  callbacks=[TrialLines(console, spec, max_epochs)]),
    )
    try:
        # Tune's reporter still prints its "Configuration for experiment" box and where its results
        # and TensorBoard files are, with print(): those lines belong in the log, not the console.
        log_stream = console.log.as_stream() if console.log is not None and not console.log.verbose else None
        with contextlib.redirect_stdout(log_stream) if log_stream is not None else contextlib.nullcontext():
            results = tuner.fit()
        rows = collect_rows(results, spec, folder, max_epochs)
        close_stopped_runs(rows, uri)
        markdown = render_results(rows, spec, str(folder.path), uri, parent)
        console.say("\n" + markdown.rstrip())
        paths = [atomic_write_text(folder.results, markdown)]
        if out:
            paths.append(atomic_write_text(out, markdown))
        close_sweep_run(uri, parent, rows, spec, paths[0])
    except BaseException as exc:  # the parent run must not stay RUNNING
        finish_run(uri, parent, [], status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return {"rows": rows, "best": best_row(rows, spec.mode), "sweep_dir": str(folder.path),
            "results_file": str(paths[-1]), "markdown": markdown, "tracking_uri": uri, "mlflow_run_id": parent}


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune search space: dotted keys (and `setting`) -> Tune domains."""
    from ray import tune

    space: dict[str, Any] = {}
    if spec.settings:
        space[SETTING_KEY] = tune.grid_search(list(spec.settings))
    for p in spec.params:
        if p.domain == "grid":
            space[p.key] = tune.grid_search(list(p.values))
        elif p.domain == "choice":
            space[p.key] = tune.choice(list(p.values))
        elif p.domain == "loguniform":
            space[p.key] = tune.loguniform(*p.values)
        else:
            space[p.key] = tune.uniform(*p.values)
    return space
