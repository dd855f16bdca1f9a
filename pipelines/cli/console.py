"""What a user sees: our own lines printed once, and one progress bar.

`Console.say` prints a line and copies it to the run log (`pipelines/ray_layer/run_log.py`); `Console.progress`
opens a `ProgressBar`. Not a terminal (CI, `> file`, `ray job submit` logs): no redraws and no ANSI
escapes; progress becomes at most one plain line per `interval_s` seconds.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Protocol, TextIO


class LineLog(Protocol):
    """Where the console copies its lines (`pipelines/ray_layer/run_log.RunLog`, the command's log file)."""

    def write_lines(self, lines: list[str]) -> None: ...

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


class Console:
    """Our own lines: printed once on the console and copied to the run log."""

    def __init__(self, log: LineLog | None = None, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.log = log
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.terminal = is_terminal(self.stream)
        self._bar: ProgressBar | None = None

    def say(self, text: str = "") -> None:
        if self.log is not None:
            self.log.write_lines(text.splitlines() or [""])
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.clear()
        print(text, file=self.stream, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def warn(self, text: str) -> None:
        """A warning the user can act on: on the console (stderr) once, and in the log."""
        if self.log is not None:
            self.log.write_lines([f"warning: {text}"])
        if self._bar is not None:
            self._bar.clear()
        print(f"warning: {text}", file=sys.stderr, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def progress(self, total: int, desc: str, interval_s: float = 30.0) -> ProgressBar:
        bar = ProgressBar(self, total, desc, interval_s)
        self._bar = bar
        return bar


class ProgressBar:
    """A tqdm bar on a terminal; elsewhere at most one plain line per `interval_s` seconds.

    `update(done, **fields)` sets the absolute position and the shown fields (loss, lr, ...).
    """

    def __init__(self, console: Console, total: int, desc: str, interval_s: float = 30.0) -> None:
        self.console, self.total, self.desc, self.interval_s = console, max(1, total), desc, interval_s
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._bar = None
        if console.terminal and not console.quiet:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, file=console.stream, dynamic_ncols=True, leave=False,
                             bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")

    def update(self, done: int, fields: dict[str, str] | None = None) -> None:
        done = min(max(done, 0), self.total)
        text = "  ".join(f"{k} {v}" for k, v in (fields or {}).items())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(done - self._bar.n)
        else:
            now = time.perf_counter()
            if now - self._last >= self.interval_s and done < self.total and not self.console.quiet:
                elapsed = now - self.start
                eta = elapsed / done * (self.total - done) if done else float("nan")
                line = f"{self.desc} {done}/{self.total}  {text}  eta {format_duration(eta)}".rstrip()
                print(line, file=self.console.stream, flush=True)
                self._last = now
        self.done = done

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.clear()

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.console._bar is self:
            self.console._bar = None


def format_duration(seconds: float) -> str:
    """`1:02:03`, `2:03` or `45 s`; `?` when unknown."""
    if seconds != seconds or seconds == float("inf"):  # NaN or inf
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
