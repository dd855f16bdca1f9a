"""Training progress from the Ray Train workers to the driver's console.

Workers must not print progress themselves: their output is forwarded through Ray (prefixed,
possibly from several processes, and into the log file by `run_log.RunLog`). Instead
they post small events to a `ProgressRelay` actor (0 CPU) and the driver draws one progress bar
per epoch and one summary line per epoch from them (`TrainingProgressView`).

Events (dicts with "kind"): start (resumed_epoch: a worker group started; a second one means
Ray Train restarted it after a failure), epoch_start (epoch, steps), step (epoch, step, steps, loss,
lr, clips_per_s, wait_frac), val (epoch, rank, windows so far), epoch (the epoch's metrics), note /
warning (text).
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import ray

from pipelines.cli.console import Console, ProgressBar


@ray.remote(num_cpus=0, max_restarts=0)
class ProgressRelay:
    """A bounded mailbox: workers post, the driver drains."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._events: collections.deque = collections.deque(maxlen=capacity)

    def post(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events = list(self._events)
        self._events.clear()
        return events


class ProgressReporter:
    """Worker side. Step events are fire-and-forget; epoch lines and warnings wait for delivery
    (once per epoch), so they reach the driver before the epoch's report does."""

    def __init__(self, relay: Any | None, rank: int) -> None:
        self.relay, self.rank = relay, rank

    def post(self, kind: str, wait: bool = False, **fields: Any) -> None:
        if self.relay is None:
            return
        ref = self.relay.post.remote({"kind": kind, "rank": self.rank, **fields})
        if wait:
            try:
                ray.get(ref, timeout=30)
            except Exception:  # noqa: BLE001 - progress must never fail training
                pass


def epoch_summary(metrics: dict[str, Any], last_epoch: int) -> str:
    """`epoch  3/14  loss 0.6436  5.4 clips/s  4.4 s  wait 12%  |  mAP 84.67 % (best 84.67 %)`."""
    width = len(str(last_epoch))
    line = (f"epoch {int(metrics['epoch']):>{width}}/{last_epoch}  loss {metrics['loss']:.4f}  "
            f"{metrics['clips_per_s']:.2f} clips/s  {metrics['epoch_time_s']:.1f} s  "
            f"wait {100 * metrics.get('data_wait_frac', 0.0):.0f}%")
    if "average_mAP" in metrics:
        line += f"  |  mAP {100 * metrics['average_mAP']:.2f} %"
        best = metrics.get("best_average_mAP")
        if best is not None and best >= 0:
            line += f" (best {100 * best:.2f} %)"
        if "val_time_s" in metrics:
            line += f"  val {metrics['val_time_s']:.1f} s"
    failures = int(metrics.get("decode_failures", 0))
    if failures:
        line += f"  {failures} clip(s) skipped"
    lost, repeated = int(metrics.get("clips_lost", 0)), int(metrics.get("clips_repeated", 0))
    if lost or repeated:  # a node or actor failed mid-epoch and Ray Data could not recover every clip
        line += f"  {lost} clip(s) lost, {repeated} repeated"
    return line


class TrainingProgressView:
    """Driver side: polls the relay from a thread and renders bars and summary lines."""

    def __init__(self, console: Console, relay: Any, epochs: int, val_windows: int, poll_s: float = 0.5,
                 interval_s: float = 30.0) -> None:
        self.console, self.relay, self.last_epoch = console, relay, epochs - 1
        self.val_windows, self.poll_s, self.interval_s = val_windows, poll_s, interval_s
        self._bar: ProgressBar | None = None
        self._bar_key: tuple[str, int] | None = None
        self._val_counts: dict[int, int] = {}
        self._starts = 0  # training worker groups started: more than one means Ray Train restarted them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="adatad-progress", daemon=True)

    def start(self) -> TrainingProgressView:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, then render whatever is still in the relay (the last epoch's line)."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()
        self._close_bar()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()

    def _drain(self) -> None:
        try:
            events = ray.get(self.relay.drain.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a lost relay only costs the progress display
            return
        for event in events:
            self.handle(event)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._bar_key = None, None

    def _bar_for(self, key: tuple[str, int], total: int, desc: str) -> ProgressBar:
        if self._bar_key != key:
            self._close_bar()
            self._bar = self.console.progress(total, desc, self.interval_s)
            self._bar_key = key
        assert self._bar is not None
        return self._bar

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        width = len(str(self.last_epoch))
        if kind == "epoch_start":
            epoch = int(event["epoch"])
            self._bar_for(("train", epoch), int(event["steps"]), f"epoch {epoch:>{width}}/{self.last_epoch}")
        elif kind == "step":
            epoch = int(event["epoch"])
            bar = self._bar_for(("train", epoch), int(event["steps"]), f"epoch {epoch:>{width}}/{self.last_epoch}")
            bar.update(int(event["step"]), {
                "loss": f"{event['loss']:.4f}", "lr": f"{event['lr']:.1e}",
                "clips/s": f"{event['clips_per_s']:.2f}", "wait": f"{100 * event['wait_frac']:.0f}%"})
        elif kind == "val":
            epoch = int(event["epoch"])
            if self._bar_key != ("val", epoch):
                self._val_counts = {}
            self._val_counts[int(event["rank"])] = int(event["windows"])
            desc = f"validate {epoch:>{width}}/{self.last_epoch}" if epoch >= 0 else "test windows"  # test.py: -1
            bar = self._bar_for(("val", epoch), self.val_windows, desc)
            bar.update(sum(self._val_counts.values()), {})
        elif kind == "epoch":
            self._close_bar()
            self.console.say(epoch_summary(event["metrics"], self.last_epoch))
        elif kind == "start":  # a training worker group started (again, after a failure)
            self._starts += 1
            epoch = event.get("resumed_epoch")
            where = f"the checkpoint of epoch {epoch}" if epoch is not None else "the start (no checkpoint yet)"
            if self._starts > 1:
                self._close_bar()
                self.console.warn(f"a training worker failed (node lost or process killed); Ray Train restarted "
                                  f"the workers from {where}")
            elif epoch is not None:
                self.console.say(f"resumed from {where}")
        elif kind == "note":
            self.console.say(str(event["text"]))
        elif kind == "warning":
            self.console.warn(str(event["text"]))

