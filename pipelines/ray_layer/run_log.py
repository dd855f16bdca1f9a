"""One log file per command run: our console lines, Python logging and Ray's forwarded output.

Ray prints a lot by default (Ray Data progress bars and plans, Train's reports, actor start-up
lines of every worker process, forwarded to the driver). A run of this project instead shows its
own lines on the console (`console.Console`) and writes everything else, with those lines, to one
log file in the run folder. `--verbose` keeps Ray's own console output as well (the log file still
gets a copy of everything that goes through Python logging).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from pipelines.cli.console import strip_ansi

# Loggers of Ray and the libraries it pulls in whose INFO output belongs in the log file.
QUIET_LOGGERS = ("ray", "ray.data", "mlflow", "alembic", "py.warnings", "filelock", "urllib3",
                 "adatad")  # adatad: e.g. the retries of an object store (adatad/retry.py)
RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"  # ray.experimental.tqdm_ray: a progress-bar state, not a line


class _PlainFormatter(logging.Formatter):
    """Log records without terminal colour codes (Ray colours some of its messages)."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


class RunLog:
    """One log file that receives our console lines, Python logging and Ray's forwarded worker output.

    Use `attach()` before `ray.init` (catches Ray's driver-side messages such as the token-auth
    notice) and `attach_ray()` after it (takes over the printing of worker output). `close()`
    restores everything, so tests and notebooks can run several commands in one process.
    """

    def __init__(self, path: str | Path | None, verbose: bool = False) -> None:
        self.path = Path(path) if path else None
        self.verbose = verbose
        self._handler: logging.Handler | None = None
        self._saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []
        self._ray_hook: tuple[Any, str] | None = None
        self._error_hook: tuple[Any, Any] | None = None  # (ray._private.worker, its print_to_stdstream)
        self._lock = threading.Lock()
        self._fd2: int | None = None  # the console's fd 2 while native stderr goes to the file
        self._saved_stderr: TextIO | None = None

    # ---------------------------------------------------------------- Python logging

    def attach(self) -> RunLog:
        if self._handler is not None:
            return self
        import ray  # noqa: F401 - importing Ray (and Ray Data) installs console handlers, re-routed below
        import ray.data  # noqa: F401

        if not self.verbose:  # MLflow installs its own console handler when first imported: not here
            os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(self.path, encoding="utf-8")
        else:
            self._handler = logging.NullHandler()
        self._handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.INFO)  # Ray Data's logger runs at DEBUG
        logging.captureWarnings(True)
        for name in QUIET_LOGGERS:
            self._route(logging.getLogger(name))
        if not self.verbose and self.path is not None:
            self._native_stderr_to_file()
        return self

    def _native_stderr_to_file(self) -> None:
        """Native code's writes to fd 2 go to the file; Python's `sys.stderr` stays on the console.

        Ray's C++ core worker in this process logs some errors straight to fd 2 (e.g. "core_worker.cc:
        ... has constructor arguments in the object store", when Ray Data runs in the driver as in
        detect.py); Python logging cannot catch those. Child processes started from here (a local
        Ray's raylet and GCS) inherit the file as their stderr too.
        """
        sys.stderr.flush()
        self._fd2 = os.dup(2)
        target = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, 2)
        os.close(target)
        try:
            python_on_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, ValueError, OSError):  # e.g. pytest's capture object
            python_on_fd2 = False
        if python_on_fd2:  # Python's own stderr keeps the console, on a copy of the old fd 2
            self._saved_stderr = sys.stderr
            sys.stderr = open(self._fd2, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                              closefd=False)

    def _route(self, logger: logging.Logger) -> None:
        """Send `logger` to the file (and, when verbose, keep its own console handlers too)."""
        assert self._handler is not None
        self._saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        if not self.verbose:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
        logger.addHandler(self._handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)

    def attach_ray(self) -> None:
        """After `ray.init`: worker output goes to the file instead of the console (unless verbose).

        Ray has no public switch for *where* forwarded worker output goes (only `log_to_driver`,
        which drops it altogether), so this replaces the printing handler of Ray's dispatcher
        (`ray._private.ray_logging`, pinned Ray 2.60). If that internal moves, the output simply
        stays on the console.
        """
        self.attach()
        for name in QUIET_LOGGERS:  # ray.init may have reconfigured Ray's loggers
            logger = logging.getLogger(name)
            if self._handler not in logger.handlers:
                self._route(logger)
        if self.verbose or self._ray_hook is not None:
            return
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # pragma: no cover - a Ray without the dispatcher: keep Ray's printing
            return
        names = [name for name, _ in dispatcher.handlers]
        if "ray_print_logs" not in names:
            return
        self._ray_hook = (dispatcher, dict(dispatcher.handlers)["ray_print_logs"])
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("adatad_run_log", self._worker_lines)
        # Cluster errors the GCS publishes to the driver (e.g. a node marked dead) bypass the
        # dispatcher: Ray prints them with `print_to_stdstream`, several raw lines with colour codes.
        import ray._private.worker as ray_worker

        self._error_hook = (ray_worker, ray_worker.print_to_stdstream)
        ray_worker.print_to_stdstream = self._cluster_error_lines

    def _cluster_error_lines(self, data: dict[str, Any], ignore_prefix: bool = False) -> None:
        """A cluster error: the whole text to the file, one line on the console."""
        if data.get("pid") != "raylet" or self._error_hook is None:
            if self._error_hook is not None:
                self._error_hook[1](data, ignore_prefix)
            return
        lines = [strip_ansi(line) for line in data.get("lines", []) if line.strip()]
        self.write_lines(f"(raylet) {line}" for line in lines)
        text = " ".join(" ".join(lines).split())
        dead = re.search(r"node id: ([0-9a-f]{8})\w* .*has been marked dead", text)
        summary = (f"Ray marked node {dead.group(1)} dead (it stopped answering); the work it held is retried "
                   "on other nodes" if dead else text[:200])
        print(f"warning: {summary} (details in {self.path})", file=sys.stderr, flush=True)

    def _worker_lines(self, data: dict[str, Any]) -> None:
        """One batch of forwarded worker output -> the file, prefixed like Ray's console."""
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # periodic status dumps; only its events are news (as Ray does)
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')})" if who else f"(pid={data.get('pid')})"
        lines = [strip_ansi(line) for line in lines if RAY_TQDM_MAGIC not in line]
        self.write_lines(f"{prefix} {line}" for line in lines if line.strip())

    # ---------------------------------------------------------------- writing

    def as_stream(self) -> _LogStream:
        """A text stream whose lines go to the log file (for `contextlib.redirect_stdout` around a
        library that prints instead of logging)."""
        return _LogStream(self)

    def write_lines(self, lines) -> None:
        if self.path is None or self._handler is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = "".join(f"{stamp} {line.rstrip()}\n" for line in lines)
        if not text:
            return
        with self._lock:
            stream = getattr(self._handler, "stream", None)
            if stream is not None:
                stream.write(text)
                stream.flush()

    def close(self) -> None:
        if self._fd2 is not None:
            if self._saved_stderr is not None:
                sys.stderr.flush()
                sys.stderr = self._saved_stderr
                self._saved_stderr = None
            os.dup2(self._fd2, 2)
            os.close(self._fd2)
            self._fd2 = None
        if self._error_hook is not None:
            module, printer = self._error_hook
            module.print_to_stdstream = printer
            self._error_hook = None
        if self._ray_hook is not None:
            dispatcher, handler = self._ray_hook
            dispatcher.remove_handler("adatad_run_log")
            dispatcher.add_handler("ray_print_logs", handler)
            self._ray_hook = None
        for logger, handlers, propagate, level in reversed(self._saved):
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        self._saved.clear()
        logging.captureWarnings(False)
        if self._handler is not None:
            self._handler.close()
            self._handler = None


class _LogStream(io.TextIOBase):
    """Write-only text stream: complete lines to `RunLog.write_lines`, the rest when flushed."""

    def __init__(self, log: RunLog) -> None:
        self._log, self._pending = log, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        self._log.write_lines(strip_ansi(line) for line in lines if line.strip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self._log.write_lines([strip_ansi(self._pending)])
        self._pending = ""
