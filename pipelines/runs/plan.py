"""A training run's plan: its config and run folder, with the resume rules checked before anything starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adatad.config import PROJECT_ROOT, Config, load_config
from adatad.run_folder import RunFolder, latest_run, timestamped
from pipelines.cli.args import DEFAULT_CONFIG, UsageError


@dataclass
class RunPlan:
    cfg: Config
    run_name: str
    storage: Path
    resumed: bool

    @property
    def run_dir(self) -> Path:
        return self.storage / self.run_name

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


def storage_folder(storage: str | None, cfg: Config) -> Path:
    """The folder that holds the run folders: `--storage`, else `runtime.storage_path` (relative to
    the project). It must be a filesystem path: on a multi-node cluster one that every node mounts at
    the same place (NFS), because Ray Train writes checkpoints there from the worker's node while the
    driver writes the run's history, reports and MLflow run id beside them with plain file calls."""
    where, value = ("--storage", storage) if storage else ("runtime.storage_path", cfg.runtime.storage_path)
    if "://" in value:
        raise UsageError(f"{where} {value}: cloud storage URIs are not supported; use a filesystem path that "
                         "every node mounts at the same place (e.g. NFS), see README 'On a Ray cluster'")
    folder = Path(storage) if storage else Path(cfg.resolve_path(value))
    if not folder.is_absolute():
        raise UsageError(f"--storage {storage}: expected an absolute path (Ray workers change directory)")
    return folder


def plan_run(config: str | None, overrides: list[str], profile: str | None, storage: str | None,
             run_name: str | None, resume: bool) -> RunPlan:
    """Config + run folder, with the resume rules checked before anything expensive starts."""
    base = load_config(config or PROJECT_ROOT / DEFAULT_CONFIG, overrides, profile)
    storage_dir = storage_folder(storage, base)
    if resume and run_name is None:
        latest = latest_run(storage_dir)
        if latest is None:
            raise UsageError(f"--resume: no run to resume in {storage_dir}")
        run_name = latest.name
    run_name = run_name or timestamped(base.name)
    folder = RunFolder(storage_dir / run_name)
    if resume:
        if not folder.config.is_file():
            raise UsageError(f"--resume: {folder.path} has no {folder.config.name}; nothing to resume")
        # The run's own effective config, plus any --set given now (e.g. more epochs).
        return RunPlan(load_config(folder.config, overrides), run_name, storage_dir, resumed=True)
    if folder.path.exists():
        raise UsageError(f"run folder {folder.path} exists: pass --resume to continue it, or choose another "
                         "--run-name")
    return RunPlan(base, run_name, storage_dir, resumed=False)
