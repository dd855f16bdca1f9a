"""What survives on a multi-node cluster when a node goes away: the real train.py on a real Ray cluster.

    python benchmarks/bench_node_faults.py                      # all faults, ~8 min on 2 cores
    python benchmarks/bench_node_faults.py --faults data-node   # one of data-node, train-node, sigterm
    python benchmarks/bench_node_faults.py --storage s3         # storage and data in a bucket, + outages

The cluster (tests/cluster_bed.py): a head (1 CPU) that runs the driver, a "GPU" node (1 CPU +
gpu_node) for the Ray Train worker, and two CPU-only data nodes (1 CPU + data_node each) for the
decode actors; every node is a `ray start` process group on this machine. Each fault gets a fresh
cluster and a 3-epoch run on synthetic videos (`runtime.max_failures=2`, every checkpoint kept):

- data-node:  mid-epoch 1, SIGKILL a data node's raylet and every process on it; training goes on
              with the other data node.
- train-node: mid-epoch 1, SIGKILL the node of the training worker; a replacement node with the same
              resources joins 10 s later and Ray Train restarts the worker from the last checkpoint.
- sigterm:    mid-epoch 1, SIGTERM to the driver (a preempted head, `ray job stop`); it stops, writes
              what it has, and `--resume` finishes the run.

With `--storage s3` the run folder and the data set (annotations, class map, videos) are in a bucket of a
local S3 endpoint (moto behind a proxy, tests/s3_server.py) and every node keeps its temporary files in
a folder of its own: no folder is shared between nodes. Two faults of the endpoint are added:

- outage:     mid-epoch 1, the endpoint goes away for 10 s (port closed, connections dropped) and
              comes back; reads and writes wait (adatad/retry.py), the console says so once.
- outage-lasting: mid-epoch 1, the endpoint goes away for longer than runtime.storage_retry_s (20 s
              here): the run stops as SIGTERM does, with `--resume` printed; the endpoint comes back
              and `--resume` finishes the run.

One line per fault: `fault <name>: survived <yes|no>, epochs <completed>/<planned>, clips lost <n>,
clips repeated <n>, recovery <s> s`. Survived: the run (for sigterm: the resumed run) ends with exit
code 0, a continuous history and a FINISHED MLflow run. Clips lost/repeated: summed over the epochs
of history.json (each epoch's plan is one clip per training video). Recovery: data-node, the extra
time of the affected epoch over the median of the others; train-node, from the kill to the console's
"a training worker failed ... restarted" line; sigterm, from the signal to the driver's exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from adatad.run_folder import RunFolder  # noqa: E402
from tests.cluster_bed import ClusterBed  # noqa: E402
from tests.conftest import fresh_mlflow_db, s3_overrides, tiny_overrides  # noqa: E402
from tests.run_watch import registered_epochs  # noqa: E402
from tests.s3_server import session_server  # noqa: E402

EPOCHS = 3
S3: dict = {}  # --storage s3: {"server": S3Server, "data": URI of the data set}
OUTAGE_S, LASTING_RETRY_S = 10.0, 20.0
PLACEMENT = ["runtime.worker_resources={gpu_node: 1}", "runtime.decode_actor_resources={data_node: 1}",
             "runtime.decode_actors=2", "runtime.max_failures=2", "train.checkpoints_to_keep=10",
             "train.val_start_epoch=2"]


@dataclass
class Outcome:
    survived: bool
    epochs: int
    lost: int
    repeated: int
    recovery_s: float
    detail: str = ""

    def line(self, name: str) -> str:
        return (f"fault {name}: survived {'yes' if self.survived else 'no'}, epochs {self.epochs}/{EPOCHS}, "
                f"clips lost {self.lost}, clips repeated {self.repeated}, recovery {self.recovery_s:.1f} s")


def make_data(root: Path) -> Path:
    from adatad.datasets.synthetic import generate_dataset

    if not (root / "annotations.json").is_file():
        generate_dataset(root, num_train=10, num_test=2, num_classes=3, duration_s=(10.0, 12.0), fps=30,
                         width=112, height=64, seed=5, action_duration_s=(1.5, 3.0), gap_s=(1.0, 3.0))
    return root


def wait_for(condition, timeout_s: float, what: str, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.2)


def start_bed(work: Path) -> ClusterBed:
    bed = ClusterBed(work)
    bed.start_head(num_cpus=1)
    bed.add_nodes([("gpu", 1, {"gpu_node": 1}), *[(f"data-{i}", 1, {"data_node": 100}) for i in range(2)]])
    return bed


def storage(work: Path):
    """Where the runs go: `work/runs`, or a bucket's folder named after the work folder (--storage s3)."""
    return f"s3://bench/{work.name}/runs" if S3 else work / "runs"


def run_folder(work: Path, name: str) -> RunFolder:
    return RunFolder(f"{storage(work)}/{name}")


def train_command(data: Path, work: Path, bed: ClusterBed, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    db = fresh_mlflow_db(work / "mlflow.db")
    overrides = (s3_overrides(S3["data"], str(storage(work)), db, epochs=EPOCHS) if S3
                 else tiny_overrides(data, work / "runs", db, epochs=EPOCHS))
    sets = [a for o in [*overrides, *PLACEMENT, *extra] for a in ("--set", o)]
    return [sys.executable, "pipelines/train.py", "--cluster", bed.gcs_address, "--run-name", name,
            "--skip-data-check", *sets]


def start_and_wait_for_epoch_0(command: list[str], bed: ClusterBed, run: RunFolder, sink) -> subprocess.Popen:
    """Start train.py and return once epoch 0's checkpoint is registered and epoch 1 has begun."""
    proc = subprocess.Popen(command, cwd=REPO, env=bed.env, stdout=sink, stderr=subprocess.STDOUT)
    wait_for(lambda: 0 in registered_epochs(str(run.path)), 600, "the checkpoint of epoch 0",
             lambda: proc.poll() is None)
    time.sleep(1.0)  # into epoch 1's clips
    return proc


def summarise(run: RunFolder, work: Path, recovery_s: float, rc: int, detail: str = "") -> Outcome:
    from mlflow.tracking import MlflowClient

    try:
        history = json.loads(run.history.read_text())
    except (OSError, ValueError):
        history = []
    epochs = [int(h["epoch"]) for h in history]
    status = MlflowClient(f"sqlite:///{work / 'mlflow.db'}").get_run(run.read_mlflow_run_id()).info.status \
        if run.read_mlflow_run_id() else "?"
    survived = rc == 0 and epochs == list(range(EPOCHS)) and status == "FINISHED"
    return Outcome(survived, len(history), int(sum(h.get("clips_lost", 0) for h in history)),
                   int(sum(h.get("clips_repeated", 0) for h in history)), recovery_s,
                   detail or f"exit {rc}, MLflow {status}")


def fault_data_node(data: Path, work: Path) -> Outcome:
    bed = start_bed(work / "bed")
    try:
        run = run_folder(work, "data-node")
        with open(work / "console.txt", "w") as sink:
            proc = start_and_wait_for_epoch_0(train_command(data, work, bed, "data-node"), bed, run, sink)
            bed.kill_node("data-0")
            rc = proc.wait(timeout=900)
        history = json.loads(run.history.read_text()) if run.history.is_file() else []
        times = {int(h["epoch"]): h["epoch_time_s"] for h in history}
        extra = times.get(1, 0.0) - statistics.median([t for e, t in times.items() if e != 1] or [0.0])
        return summarise(run, work, max(extra, 0.0), rc)
    finally:
        bed.stop()


def fault_train_node(data: Path, work: Path) -> Outcome:
    bed = start_bed(work / "bed")
    try:
        run = run_folder(work, "train-node")
        console = work / "console.txt"
        with open(console, "w") as sink:
            proc = start_and_wait_for_epoch_0(train_command(data, work, bed, "train-node"), bed, run, sink)
            killed = time.monotonic()
            bed.kill_node("gpu")
            time.sleep(10.0)  # the node is gone for a while; then a replacement with the same resources joins
            bed.add_node("gpu-2", num_cpus=1, resources={"gpu_node": 1})
            wait_for(lambda: "a training worker failed" in console.read_text(), 600, "the restart line",
                     lambda: proc.poll() is None)
            recovery = time.monotonic() - killed
            rc = proc.wait(timeout=900)
        return summarise(run, work, recovery, rc)
    finally:
        bed.stop()


def fault_sigterm(data: Path, work: Path) -> Outcome:
    bed = start_bed(work / "bed")
    try:
        run = run_folder(work, "sigterm")
        command = train_command(data, work, bed, "sigterm")
        with open(work / "console.txt", "w") as sink:
            proc = start_and_wait_for_epoch_0(command, bed, run, sink)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            first_rc = proc.wait(timeout=120)
            stop_s = time.monotonic() - sent
        stopped_clean = first_rc == 143 and run.history.is_file()
        resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=bed.env, capture_output=True, text=True,
                                 timeout=900)
        (work / "console_resumed.txt").write_text(resumed.stdout + resumed.stderr)
        outcome = summarise(run, work, stop_s, resumed.returncode if stopped_clean else 1,
                            f"first run exit {first_rc}, resumed exit {resumed.returncode}")
        return outcome
    finally:
        bed.stop()


def fault_outage(data: Path, work: Path) -> Outcome:
    bed = start_bed(work / "bed")
    try:
        run = run_folder(work, "outage")
        console = work / "console.txt"
        with open(console, "w") as sink:
            proc = start_and_wait_for_epoch_0(train_command(data, work, bed, "outage"), bed, run, sink)
            with S3["server"].outage():
                time.sleep(OUTAGE_S)
            rc = proc.wait(timeout=900)
        warnings = [line for line in console.read_text().splitlines() if line.startswith("warning: the object store")]
        history = json.loads(run.history.read_text()) if run.history.is_file() else []
        times = {int(h["epoch"]): h["epoch_time_s"] for h in history}
        extra = times.get(1, 0.0) - statistics.median([t for e, t in times.items() if e != 1] or [0.0])
        outcome = summarise(run, work, max(extra, 0.0), rc if len(warnings) == 1 else 1,
                            f"exit {rc}, {len(warnings)} outage warning line(s)")
        return outcome
    finally:
        bed.stop()


def fault_outage_lasting(data: Path, work: Path) -> Outcome:
    bed = start_bed(work / "bed")
    try:
        run = run_folder(work, "lasting")
        command = train_command(data, work, bed, "lasting", (f"runtime.storage_retry_s={LASTING_RETRY_S:g}",))
        console = work / "console.txt"
        with open(console, "w") as sink:
            proc = start_and_wait_for_epoch_0(command, bed, run, sink)
            began = time.monotonic()
            S3["server"].stop()
            try:
                first_rc = proc.wait(timeout=300)
                stop_s = time.monotonic() - began
            finally:
                S3["server"].start()
        printed = "continue with: python pipelines/train.py --resume --run-name lasting" in console.read_text()
        resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=bed.env, capture_output=True, text=True,
                                 timeout=900)
        (work / "console_resumed.txt").write_text(resumed.stdout + resumed.stderr)
        return summarise(run, work, stop_s, resumed.returncode if first_rc == 143 and printed else 1,
                         f"first run exit {first_rc} after {stop_s:.0f} s (--resume printed: {printed}), "
                         f"resumed exit {resumed.returncode}")
    finally:
        bed.stop()


FAULTS = {"data-node": fault_data_node, "train-node": fault_train_node, "sigterm": fault_sigterm}
S3_FAULTS = {"outage": fault_outage, "outage-lasting": fault_outage_lasting}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=None, help=f"comma-separated subset of {', '.join(FAULTS)} "
                        f"(and with --storage s3: {', '.join(S3_FAULTS)}); default: all")
    parser.add_argument("--storage", choices=("local", "s3"), default="local",
                        help="s3: run folder and data in a bucket of a local S3 endpoint, no folder shared by nodes")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_node_faults_"))
    data = make_data(work / "data")
    faults = {**FAULTS, **(S3_FAULTS if args.storage == "s3" else {})}
    if args.storage == "s3":
        server = session_server()  # its AWS variables are in this environment: the bed's nodes inherit them
        server.start()
        S3.update(server=server, data=server.upload_tree(data, server.bucket("bench") + "/data"))
    print(f"work folder: {work}; storage {args.storage}", flush=True)
    for name in (args.faults or ",".join(faults)).split(","):
        start = time.monotonic()
        try:
            outcome = faults[name](data, work / name)
        except Exception as exc:  # noqa: BLE001 - a fault the run did not survive is a result too
            outcome = Outcome(False, 0, 0, 0, 0.0, f"{type(exc).__name__}: {exc}")
        label = f"{name} ({args.storage})" if args.storage == "s3" else name
        print(outcome.line(label) + f"   ({outcome.detail}; {time.monotonic() - start:.0f} s)", flush=True)
    if S3:
        S3["server"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
