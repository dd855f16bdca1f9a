"""Watching real runs from a test: their processes (Linux /proc) and what their run folder records.

Processes are found by their Ray process title among the descendants (or the session) of the
process that started them, so a test only ever signals processes it started, never another Ray on
the machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line / Ray process title)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), cmdline)
    return table


def descendants(root: int) -> dict[int, str]:
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = table[child][2]
            stack.append(child)
    return found


def titled(root: int, title: str) -> dict[int, str]:
    return {pid: cmd for pid, cmd in descendants(root).items() if cmd.startswith(title)}


def session_processes(session: int) -> list[int]:
    return [pid for pid, (_, sid, _) in processes().items() if sid == session]


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
             alive: Callable[[], bool] = lambda: True) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert alive(), f"the run ended while waiting for {what}"
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def registered_epochs(run_dir: Path) -> list[int]:
    """Epochs whose checkpoint Ray has registered (what a restart or --resume continues from)."""
    from adatad.run_folder import RunFolder

    try:
        snapshot = json.loads(RunFolder(run_dir).ray_snapshot.read_text())
    except (OSError, ValueError):
        return []
    return sorted(int(r["metrics"]["epoch"]) for r in snapshot.get("checkpoint_results", []))
