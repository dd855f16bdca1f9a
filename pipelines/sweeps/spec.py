"""Sweep files (`configs/sweeps/*.yaml`): what to vary, how to pick the best, checked before Ray starts.

A sweep varies dotted config keys (the same keys `--set` takes) on top of a base experiment config:

    name: adapter_lr
    config: configs/synthetic.yaml        # base config (the --config flag wins)
    metric: average_mAP                   # reported at validated epochs
    mode: max
    scheduler: asha                       # asha | none
    asha: {grace_period: 1, reduction_factor: 2}
    set: [train.epochs=10]                # fixed overrides for every trial
    params:                               # crossed with each other
      train.adapter_lr: {grid: [1.0e-4, 2.0e-4, 4.0e-4]}   # or choice / loguniform / uniform
    settings:                             # named bundles, one trial each (zipped, not crossed)
      32gb: {train.batch_size: 4, runtime.decode_actors: 6}

Every value is validated against the config schema (unknown key, wrong type, impossible value)
before any trial starts, so a typo fails in the first second with the config's one-line error.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adatad.config import PROJECT_ROOT, Config, ConfigError, load_config

SETTING_KEY = "setting"  # Tune search-space key holding the name of a `settings` bundle
DOMAINS = ("grid", "choice", "loguniform", "uniform")
SCHEDULERS = ("asha", "none")
TOP_KEYS = ("name", "description", "config", "profile", "set", "metric", "mode", "scheduler", "asha",
            "num_samples", "max_concurrent", "params", "settings")
MAX_CHECKED_COMBINATIONS = 64  # beyond this, values are checked one key at a time


class SweepError(ValueError):
    """A problem with a sweep file or its values (one line naming the file and key)."""


@dataclass(frozen=True)
class ParamSpec:
    key: str                 # dotted config path
    domain: str              # one of DOMAINS
    values: tuple[Any, ...]  # grid/choice values, or (low, high)

    @property
    def sampled(self) -> bool:
        return self.domain in ("loguniform", "uniform")


@dataclass
class SweepSpec:
    name: str
    source: Path
    config: str | None = None
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    metric: str = "average_mAP"
    mode: str = "max"
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    num_samples: int = 1
    max_concurrent: int | None = None
    params: list[ParamSpec] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def trial_run_name(self, trial_id: str) -> str:
        """The run folder (and MLflow run) name of a trial."""
        return f"{self.name}_{trial_id}"

    def swept_keys(self) -> list[str]:
        keys = [p.key for p in self.params]
        for bundle in self.settings.values():
            keys += [k for k in bundle if k not in keys]
        return keys


def override(key: str, value: Any) -> str:
    """`key=value` for `load_config`; JSON is valid YAML and keeps floats, bools and lists exact."""
    return f"{key}={json.dumps(value)}"


def trial_overrides(spec: SweepSpec, params: dict[str, Any], extra: list[str] | None = None) -> list[str]:
    """The `--set` list of one trial: the sweep's `set`, the command line's `--set`, then the trial's
    settings bundle and values (last, so a swept key always takes the trial's value)."""
    out = list(spec.overrides) + list(extra or [])
    setting = params.get(SETTING_KEY)
    if setting is not None:
        out += [override(k, v) for k, v in spec.settings[setting].items()]
    out += [override(k, v) for k, v in params.items() if k != SETTING_KEY]
    return out


def _fail(source: Path, where: str, message: str) -> SweepError:
    return SweepError(f"{source}: {where}: {message}")


def _param(source: Path, key: Any, raw: Any) -> ParamSpec:
    where = f"params.{key}"
    if not isinstance(key, str) or "." not in key:
        raise _fail(source, where, "expected a dotted config key such as train.adapter_lr")
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in DOMAINS:
        raise _fail(source, where, f"expected one of {{grid: [...]}}, {{choice: [...]}}, "
                                   f"{{loguniform: [low, high]}}, {{uniform: [low, high]}}, got {raw!r}")
    domain, values = next(iter(raw.items()))
    if not isinstance(values, list) or not values:
        raise _fail(source, where, f"{domain}: expected a non-empty list, got {values!r}")
    if domain in ("loguniform", "uniform"):
        numbers = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numbers or not values[0] < values[1] or (domain == "loguniform" and values[0] <= 0):
            need = "0 < low < high" if domain == "loguniform" else "low < high"
            raise _fail(source, where, f"{domain}: expected [low, high] numbers with {need}, got {values!r}")
    return ParamSpec(key, domain, tuple(values))


def _settings(source: Path, raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(source, "settings", f"expected a mapping name -> {{config.key: value}}, got {raw!r}")
    out = {}
    for name, bundle in raw.items():
        if not isinstance(bundle, dict) or not bundle or not all(isinstance(k, str) and "." in k for k in bundle):
            raise _fail(source, f"settings.{name}", f"expected a mapping of dotted config keys, got {bundle!r}")
        out[str(name)] = dict(bundle)
    return out


def _number(source: Path, raw: dict, key: str, kind: type, default: Any, minimum: float) -> Any:
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise _fail(source, key, f"expected {'an integer' if kind is int else 'a number'} >= {minimum}, "
                                 f"got {value!r}")
    return kind(value)


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse and shape-check a sweep file (the values are checked against the config by `check_sweep`)."""
    source = Path(path)
    if not source.is_file():
        known = sorted(p.name for p in (PROJECT_ROOT / "configs" / "sweeps").glob("*.yaml"))
        raise SweepError(f"sweep file {source} does not exist (shipped sweeps: {', '.join(known)})")
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SweepError(f"{source}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(source, str(key), f"unknown key (expected: {', '.join(TOP_KEYS)})")
    if not raw.get("params") and not raw.get("settings"):
        raise SweepError(f"{source}: nothing to sweep: give `params` and/or `settings`")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise _fail(source, "params", f"expected a mapping of config keys, got {params_raw!r}")
    overrides = raw.get("set") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise _fail(source, "set", f"expected a list of KEY=VALUE strings, got {overrides!r}")
    mode, scheduler = raw.get("mode", "max"), str(raw.get("scheduler", "asha")).lower()
    if mode not in ("max", "min"):
        raise _fail(source, "mode", f"expected max or min, got {mode!r}")
    if scheduler not in SCHEDULERS:
        raise _fail(source, "scheduler", f"expected one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    asha = raw.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise _fail(source, "asha", f"expected {{grace_period: int, reduction_factor: number}}, got {asha!r}")
    metric = raw.get("metric", "average_mAP")
    if not isinstance(metric, str) or not metric:
        raise _fail(source, "metric", f"expected a metric name such as average_mAP, got {metric!r}")
    return SweepSpec(
        name=str(raw.get("name") or source.stem),
        source=source,
        config=raw.get("config"),
        profile=raw.get("profile"),
        overrides=list(overrides),
        metric=metric,
        mode=mode,
        scheduler=scheduler,
        grace_period=_number(source, asha, "grace_period", int, 1, 1),
        reduction_factor=_number(source, asha, "reduction_factor", float, 2.0, 1.01),
        num_samples=_number(source, raw, "num_samples", int, 1, 1),
        max_concurrent=_number(source, raw, "max_concurrent", int, None, 1),
        params=[_param(source, k, v) for k, v in params_raw.items()],
        settings=_settings(source, raw["settings"]) if raw.get("settings") else {},
        description=str(raw.get("description") or ""),
    )


def _candidates(spec: SweepSpec) -> list[list[tuple[str, Any]]]:
    """Per dimension, the (key, value) choices whose validity decides every trial's validity."""
    dims: list[list[tuple[str, Any]]] = []
    if spec.settings:
        dims.append([(SETTING_KEY, name) for name in spec.settings])
    for p in spec.params:
        dims.append([(p.key, v) for v in p.values])  # sampled domains: both bounds
    return dims


def check_sweep(spec: SweepSpec, config_path: str | Path, profile: str | None = None,
                extra_overrides: list[str] | None = None) -> Config:
    """Load the base config with every swept value; raise SweepError naming the first bad one.

    Returns the config of the first combination (for sizing the trials). Combinations are all
    checked when there are few (e.g. a batch size that must divide by the worker count); with
    many, each value is checked once against the base.
    """
    dims = _candidates(spec)
    total = 1
    for dim in dims:
        total *= len(dim)
    if total <= MAX_CHECKED_COMBINATIONS:
        combos = [dict(c) for c in itertools.product(*dims)]
    else:
        combos = [dict([choice]) for dim in dims for choice in dim]
    first: Config | None = None
    for combo in combos:
        try:
            cfg = load_config(config_path, trial_overrides(spec, combo, extra_overrides), profile)
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            raise SweepError(f"{spec.source}: {exc} (with {shown})") from None
        first = first or cfg
    assert first is not None
    return first


def num_trials(spec: SweepSpec, num_samples: int | None = None) -> int:
    grid = len(spec.settings) or 1
    for p in spec.params:
        grid *= len(p.values) if p.domain == "grid" else 1
    return grid * (num_samples or spec.num_samples)


def spec_params(spec: SweepSpec) -> dict[str, str]:
    """The sweep file as MLflow params of the sweep's parent run: what is varied, how, and how judged."""
    out = {"sweep.name": spec.name, "sweep.file": str(spec.source), "sweep.metric": spec.metric,
           "sweep.mode": spec.mode, "sweep.scheduler": spec.scheduler, "sweep.num_samples": str(spec.num_samples),
           "sweep.swept_keys": ",".join(spec.swept_keys())}
    if spec.config:
        out["sweep.config"] = spec.config
    if spec.scheduler == "asha":
        out["sweep.asha.grace_period"] = str(spec.grace_period)
        out["sweep.asha.reduction_factor"] = str(spec.reduction_factor)
    if spec.overrides:
        out["sweep.set"] = json.dumps(spec.overrides)
    for p in spec.params:
        out[f"sweep.params.{p.key}"] = json.dumps({p.domain: list(p.values)})
    for name, bundle in spec.settings.items():  # MLflow keys allow letters, digits, _ - . / and space
        out["sweep.settings." + re.sub(r"[^\w\-./ ]", "_", name)] = json.dumps(bundle)
    return out
