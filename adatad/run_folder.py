"""Every file of a training run, test and sweep folder, named (and found) in one place.

A training run folder `<storage>/<run name>/` holds what `pipelines/train.py` writes beside Ray
Train's own checkpoint folders:

    config.yaml  history.json  stats.json  train.log  mlflow_run_id
    training_curves.png  TRAINING_SUMMARY.md
    checkpoint_epoch_<NNNN>/checkpoint.pt  (+ history.json, predictions.json of that epoch)

(runs made before checkpoints were named by epoch have Ray's `checkpoint_<time>` folders instead;
both sort oldest first by name, and the older names before the newer ones.)

A test folder (`pipelines/test.py --out-dir`) holds predictions.json, metrics.json, TEST_SUMMARY.md and
test.log; a sweep folder (`pipelines/tune.py`) SWEEP_RESULTS.md, tune.log, Tune's state in tune/ and
one run folder per trial in runs/. Ray, MLflow and the commands all name these files through here.
A folder may be at a URI (`s3://...`): its `path` is then an `adatad.locations.ObjectPath`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adatad.locations import as_path

CHECKPOINT_FILE = "checkpoint.pt"      # this project's checkpoint, inside a Ray checkpoint folder
CHECKPOINT_DIR_GLOB = "checkpoint_*"   # Ray Train's checkpoint folders; their names sort by epoch (or time)
HISTORY_FILE = "history.json"          # per-epoch records (in the run folder and each checkpoint folder)
PREDICTIONS_FILE = "predictions.json"  # results json of a validated epoch / of a test


def checkpoint_dir_name(epoch: int) -> str:
    """The checkpoint folder of an epoch, `checkpoint_epoch_0007`: a person finds an epoch by its name,
    and names sort by epoch (4 digits; a run of 10,000 epochs or more would still sort after the
    `checkpoint_<time>` folders of older runs, just not among its own)."""
    return f"checkpoint_epoch_{epoch:04d}"


def timestamped(prefix: str, now: datetime | None = None) -> str:
    """A new folder's name: `<prefix>-<YYYYmmdd-HHMMSS>` (a run `<config>-...`, a test `test-<config>-...`,
    a sweep `sweep-<sweep>-...`); names sort by time."""
    return f"{prefix}-{(now or datetime.now()):%Y%m%d-%H%M%S}"


class RunFolderError(ValueError):
    """A run-folder file that is missing or unreadable (one line naming the file)."""


def read_json(path: Path) -> Any:
    """A json file of a run folder, with one-line errors."""
    try:
        return json.loads(as_path(path).read_text())
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except FileNotFoundError:
        raise RunFolderError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: cannot read ({exc})") from None


@dataclass(frozen=True)
class _Folder:
    """A folder of known files (`path` may be given as a string, or a URI)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", as_path(self.path))

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class RunFolder(_Folder):
    """A training run: `<storage>/<run name>`."""

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"  # the effective config; also marks a folder as a run

    @property
    def history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def stats(self) -> Path:
        return self.path / "stats.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def mlflow_run_id(self) -> Path:
        return self.path / "mlflow_run_id"

    @property
    def curves(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def summary(self) -> Path:
        return self.path / "TRAINING_SUMMARY.md"

    def read_mlflow_run_id(self) -> str | None:
        return self.mlflow_run_id.read_text().strip() if self.mlflow_run_id.is_file() else None

    @property
    def ray_snapshot(self) -> Path:
        return self.path / "checkpoint_manager_snapshot.json"  # Ray Train's record of its checkpoints

    def registered_checkpoint_names(self) -> set[str] | None:
        """The checkpoint folders Ray Train finished and registered, or None without its record.

        A folder Ray was still copying when its process died is not registered: a resumed run
        never starts from it, and neither should anything that picks "the latest checkpoint".
        """
        try:
            snapshot = json.loads(self.ray_snapshot.read_text())
            return {str(r["checkpoint_dir_name"]) for r in snapshot["checkpoint_results"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def checkpoint_dirs(self) -> list[Path]:
        """Ray's checkpoint folders holding a checkpoint file (the registered ones where Ray's record
        exists), oldest first."""
        registered = self.registered_checkpoint_names()
        return sorted(p for p in self.path.glob(CHECKPOINT_DIR_GLOB) if (p / CHECKPOINT_FILE).is_file()
                      and (registered is None or p.name in registered))

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint file, or None."""
        found = self.checkpoint_dirs()
        return found[-1] / CHECKPOINT_FILE if found else None


def latest_run(storage: Path) -> RunFolder | None:
    """The run folder in `storage` whose config was written last (what `--resume` continues)."""
    configs = sorted(as_path(storage).glob(f"*/{RunFolder(Path()).config.name}"), key=lambda p: p.stat().st_mtime)
    return RunFolder(configs[-1].parent) if configs else None


@dataclass(frozen=True)
class EvalFolder(_Folder):
    """The output of `pipelines/test.py` (a checkpoint evaluated on the test subset)."""

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def summary(self) -> Path:
        return self.path / "TEST_SUMMARY.md"

    @property
    def log(self) -> Path:
        return self.path / "test.log"


@dataclass(frozen=True)
class SweepFolder(_Folder):
    """The output of `pipelines/tune.py`: results, log, Tune's state and the trials' run folders."""

    @property
    def results(self) -> Path:
        return self.path / "SWEEP_RESULTS.md"

    @property
    def log(self) -> Path:
        return self.path / "tune.log"

    @property
    def mlflow_run_id(self) -> Path:
        return self.path / "mlflow_run_id"  # the sweep's parent MLflow run

    @property
    def tune_state(self) -> Path:
        return self.path / "tune"  # Ray Tune's experiment folder (RunConfig(name="tune"))

    @property
    def trial_runs(self) -> Path:
        """The storage folder of the trials' Ray Train runs (one run folder per trial)."""
        return self.path / "runs"

    def trial_run(self, run_name: str) -> RunFolder:
        return RunFolder(self.trial_runs / run_name)
