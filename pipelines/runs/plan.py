"""A training run's plan: its config and run folder, with the resume rules checked before anything starts."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from adatad.config import PROJECT_ROOT, Config, load_config
from adatad.locations import LocationError, ObjectPath, as_path, check_writable_location, is_uri
from adatad.run_folder import RunFolder, latest_run, timestamped
from pipelines.cli.args import DEFAULT_CONFIG, UsageError


@dataclass
class RunPlan:
    cfg: Config
    run_name: str
    storage: Path | ObjectPath
    resumed: bool

    @property
    def run_dir(self) -> Path | ObjectPath:
        return self.storage / self.run_name

    @property
    def folder(self) -> RunFolder:
        """The run folder (at a URI when the storage is one): Ray Train's checkpoints, the records."""
        return RunFolder(self.run_dir)

    @property
    def local(self) -> RunFolder:
        """Where the driver writes what must exist as a local file: the log as the run goes, the records
        and reports MLflow logs from files. The run folder itself when it is local; for a URI a folder
        named after it under the temp directory, uploaded by `publish`."""
        if isinstance(self.run_dir, ObjectPath):
            return RunFolder(Path(tempfile.gettempdir()) / "adatad-runs" / self.run_dir.uri.replace("://", "/", 1))
        return self.folder

    def publish(self, *files: Path) -> None:
        """Copy files written into `local` to the run folder (nothing to do when that is local)."""
        if isinstance(self.run_dir, ObjectPath):
            for file in files:
                (self.run_dir / Path(file).name).upload(file)


def storage_folder(storage: str | None, cfg: Config) -> Path | ObjectPath:
    """The folder that holds the run folders: `--storage`, else `runtime.storage_path` (relative to
    the project). A URI (`s3://bucket/runs`) is checked here, before anything starts: the bucket exists
    and takes a write with these credentials from this machine (one line, nothing left behind). Ray
    Train writes the checkpoints there from the worker's node and the driver writes the run's records
    beside them, so on a multi-node cluster it is a URI or a path every node mounts at the same place."""
    where, value = ("--storage", storage) if storage else ("runtime.storage_path", cfg.runtime.storage_path)
    if is_uri(value):
        try:
            check_writable_location(value, where)
        except LocationError as exc:
            raise UsageError(str(exc)) from None
        return as_path(value)
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
