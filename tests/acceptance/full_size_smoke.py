"""Full-size smoke run: `pipelines/train.py` on the unmodified THUMOS recipe, on CPU, as a user runs it.

The recipe (`configs/thumos_videomae_s_768x1_160_adapter.yaml`: VideoMAE-S, 768 frames x 160 px,
adapters in all 12 blocks, activation checkpointing) is changed only where a 2-core CPU machine
forces it: no AMP, batch 1, `runtime.use_gpu=false`, 2 local CPUs, two decode actors of half a CPU,
a fixed object store; plus the data paths, 1 epoch and validation at epoch 0. The backbone is a
random VideoMAE-S written in the mmaction2 checkpoint layout, so the real loading code runs.

Data: THUMOS-like H.264 videos (320x180, 30 fps, `adatad.datasets.synthetic`), 2 train videos longer
than one 3,072-frame window and 1 test video that spans 3 sliding windows, labelled with THUMOS
class names so the recipe's 20-class map and head stay as they are. Videos and checkpoint are
cached in --work-dir.

Recorded, from files and the OS, never from train.py's console text:
  wall time of the command; run folder `history.json` / `stats.json` (epoch and validation time,
  steps, the worker's ru_maxrss, checkpoint size); CPU and wall seconds of every `train_step`
  (a sitecustomize hook on PYTHONPATH wraps `adatad.engine.step.train_step` in whichever process
  imports it, i.e. the Ray Train worker, and appends one JSON line per step); peak RSS (VmHWM) and
  CPU seconds of every process of the run from /proc every second; the object store's bytes in use
  every second, asked from a helper process through the cluster's GCS (its port file in the session folder
  of a private RAY_TMPDIR) and the raylet's GetNodeStats, as `ray memory --stats-only` does.

    .venv/bin/python tests/acceptance/full_size_smoke.py                 # full size: ~20 min of both cores
    .venv/bin/python tests/acceptance/full_size_smoke.py --tiny          # 64 frames x 64 px: a few minutes
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIG = "configs/thumos_videomae_s_768x1_160_adapter.yaml"
CLASS_MAP = REPO / "configs" / "thumos14_classes.txt"
STEP_LOG_ENV = "ADATAD_SMOKE_STEP_LOG"
MIB = 2**20


@dataclass(frozen=True)
class Sizes:
    """Video sizes: train videos longer than one window, the test video 3 sliding windows."""

    width: int
    height: int
    train_s: tuple[float, float]
    test_s: float
    overrides: tuple[str, ...] = ()  # --tiny only: the smaller window and crop


FULL = Sizes(320, 180, (115.0, 130.0), 180.0)  # window 768 x stride 4 = 3072 frames = 102.4 s
TINY = Sizes(160, 96, (12.0, 14.0), 16.0,  # window 64 x 4 = 256 frames = 8.5 s
             ("data.window_size=64", "data.crop_size=64", "data.train_resize_short=72", "data.test_resize_short=64"))


# ------------------------------------------------------------------------------------ inputs


def prepare_videos(root: Path, sizes: Sizes) -> tuple[Path, Path]:
    """2 train + 1 test THUMOS-like videos (cached) -> (annotation file, video folder).

    Two generator runs (train and test lengths differ), joined into one THUMOS-layout folder by
    hard links; labels renamed to the first THUMOS class names so the recipe's class map applies.
    """
    from adatad.datasets.synthetic import (
        ANNOTATION_FILE,
        VIDEO_DIR,
        dataset_is_complete,
        generate_from_spec,
    )
    from adatad.datasets.synthetic_plan import ACTION_CLASSES, SyntheticSpec

    common = {"num_classes": 4, "fps": 30, "width": sizes.width, "height": sizes.height}
    parts = {
        "train_set": SyntheticSpec(num_train=2, num_test=0, duration_s=sizes.train_s, seed=11, **common),
        "test_set": SyntheticSpec(num_train=0, num_test=1, duration_s=(sizes.test_s, sizes.test_s), seed=12,
                                  **common),
    }
    videos = root / VIDEO_DIR
    videos.mkdir(parents=True, exist_ok=True)
    thumos = [line.strip() for line in CLASS_MAP.read_text().splitlines() if line.strip()]
    rename = {c.name: thumos[i] for i, c in enumerate(ACTION_CLASSES)}  # synthetic class k -> THUMOS class k
    database: dict[str, Any] = {}
    for name, spec in parts.items():
        part = root / name
        if not dataset_is_complete(part, spec):
            print(f"generating {name} ({spec.num_train + spec.num_test} video(s), {spec.width}x{spec.height}) ...",
                  flush=True)
            generate_from_spec(part, spec)
        for vid, entry in json.loads((part / ANNOTATION_FILE).read_text())["database"].items():
            entry["annotations"] = [{**a, "label": rename[a["label"]]} for a in entry["annotations"]]
            database[vid] = entry
            link = videos / f"{vid}.mp4"
            link.unlink(missing_ok=True)
            try:
                os.link(part / VIDEO_DIR / f"{vid}.mp4", link)
            except OSError:
                shutil.copy2(part / VIDEO_DIR / f"{vid}.mp4", link)
    annotations = root / "annotations.json"
    annotations.write_text(json.dumps({"database": database}, indent=1) + "\n")
    return annotations, videos


def random_videomae_s_mmaction2(path: Path) -> tuple[Path, str]:
    """A random VideoMAE-S checkpoint in the mmaction2 layout (cached); returns (path, how it was made).

    Uses the writer of tests/test_videomae.py when importable (one definition of the layout), else
    renames a fresh `VideoMAEBackbone`'s encoder weights to mmaction2's key names.
    """
    import torch

    if path.is_file():
        return path, "cached"
    try:
        from tests.test_videomae import official_state, to_mmaction

        state = to_mmaction(official_state(dim=384, depth=12, seed=0))
        how = "tests/test_videomae.py official_state + to_mmaction"
    except ImportError:
        from adatad.models.videomae import build_videomae

        own = build_videomae("S").state_dict()
        state = {}
        for key, value in own.items():
            if "adapter" in key:
                continue
            key = key.replace("patch_embed.proj.", "patch_embed.projection.")
            key = key.replace(".mlp.fc1.", ".mlp.layers.0.0.").replace(".mlp.fc2.", ".mlp.layers.1.")
            state["backbone." + key] = value.clone()
        how = "VideoMAEBackbone weights renamed to mmaction2 keys"
    # What a real mmaction2 file carries besides the encoder (the loader drops it).
    state |= {"cls_head.fc_cls.weight": torch.zeros(400, 384), "cls_head.fc_cls.bias": torch.zeros(400),
              "backbone.fc_norm.weight": torch.ones(384), "backbone.fc_norm.bias": torch.zeros(384)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"meta": {"note": "random weights for a smoke run"}, "state_dict": state}, tmp)
    os.replace(tmp, path)
    return path, how


# A sitecustomize module on the run's PYTHONPATH: every process of the run (driver, raylet
# workers, actors) imports it at start-up; only a process that imports adatad.engine.step (the
# Ray Train worker) gets the timing wrapper.
STEP_HOOK = f'''"""Written by tests/acceptance/full_size_smoke.py: one JSON line per train_step (CPU and wall seconds)."""
import os
import sys

_LOG = os.environ.get("{STEP_LOG_ENV}")


def _wrap(module):
    import functools
    import json
    import time

    real = module.train_step

    @functools.wraps(real)
    def train_step(*args, **kwargs):
        cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
        result = real(*args, **kwargs)
        line = {{"pid": os.getpid(), "cpu_s": time.process_time() - cpu,
                 "thread_cpu_s": time.thread_time() - thread, "wall_s": time.perf_counter() - wall}}
        with open(_LOG, "a") as fh:
            fh.write(json.dumps(line) + "\\n")
        return result

    module.train_step = train_step


if _LOG:
    import importlib.abc
    import importlib.machinery

    class _StepHook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "adatad.engine.step":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return None
            real_exec = spec.loader.exec_module

            def exec_module(module):
                real_exec(module)
                _wrap(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _StepHook())
'''


# ------------------------------------------------------------------------------------ sampling


@dataclass
class ProcInfo:
    name: str
    hwm_kb: int = 0
    cpu_s: float = 0.0


@dataclass
class Samples:
    procs: dict[int, ProcInfo] = field(default_factory=dict)
    tree_rss_peak_kb: int = 0
    store_peak_bytes: int = 0
    store_capacity_bytes: int = 0
    store_spilled_bytes: int = 0
    store_samples: int = 0
    store_error: str | None = None


def _proc_table() -> dict[int, int]:
    """pid -> parent pid for every process (from /proc/<pid>/stat)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _descendants(root: int, parents: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def sample_procs(root: int, samples: Samples) -> None:
    """Peak RSS (VmHWM) and CPU seconds of every process under `root`, and the tree's summed RSS."""
    tick = os.sysconf("SC_CLK_TCK")
    total_rss = 0
    for pid in _descendants(root, _proc_table()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
            info = samples.procs.get(pid)
            if info is None:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                info = samples.procs[pid] = ProcInfo(cmdline.strip()[:120])
        except OSError:
            continue
        fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
        info.hwm_kb = max(info.hwm_kb, int(fields.get("VmHWM", 0)))
        total_rss += int(fields.get("VmRSS", 0))
        rest = stat[stat.rindex(")") + 2:].split()
        info.cpu_s = (int(rest[11]) + int(rest[12])) / tick  # utime + stime
    samples.tree_rss_peak_kb = max(samples.tree_rss_peak_kb, total_rss)


def probe_store(ray_tmp: Path, out: Path, interval_s: float = 1.0) -> None:
    """Object-store bytes in use on the run's node every `interval_s`, one JSON line each, until killed.

    Asked like `ray memory --stats-only`: the GCS (port from its file in the session folder of the
    run's private RAY_TMPDIR) lists the node, whose raylet answers GetNodeStats. Runs in its own
    process (`--probe-store`) so Ray's client and its log lines stay out of the measuring script.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # before importing ray: Ray 2.60 local clusters use tokens
    import ray
    from ray._private.internal_api import node_stats

    parent = os.getppid()
    gcs = None
    with open(out, "a") as fh:
        while os.getppid() == parent:
            time.sleep(interval_s)
            try:
                if gcs is None:
                    ports = glob.glob(str(ray_tmp / "ray" / "session_latest" / "gcs_server_port_*"))
                    if not ports:
                        continue
                    port = Path(ports[0]).read_text().strip()
                    gcs = ray._raylet.GcsClient(address=f"{ray.util.get_node_ip_address()}:{port}")
                for node in gcs.get_all_node_info(timeout=5).values():
                    if node.node_manager_port:
                        s = node_stats(node.node_manager_address, node.node_manager_port,
                                       include_memory_info=False).store_stats
                        line = {"used": int(s.object_store_bytes_used), "capacity": int(s.object_store_bytes_avail),
                                "spilled": int(s.spilled_bytes_total), "objects": int(s.num_local_objects)}
                        fh.write(json.dumps(line) + "\n")
            except Exception as exc:  # noqa: BLE001 - cluster starting or gone: note it, keep going
                fh.write(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip()[:160]}"}) + "\n")
            fh.flush()


def read_store_samples(path: Path, samples: Samples) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    for line in lines:
        if "error" in line:
            samples.store_error = line["error"]
            continue
        samples.store_peak_bytes = max(samples.store_peak_bytes, line["used"])
        samples.store_capacity_bytes = line["capacity"]
        samples.store_spilled_bytes = max(samples.store_spilled_bytes, line["spilled"])
        samples.store_samples += 1


def sampler(root: int, samples: Samples, stop: threading.Event) -> None:
    """/proc every second; errors never stop the run being measured."""
    while not stop.wait(1.0):
        try:
            sample_procs(root, samples)
        except Exception:  # noqa: BLE001 - a process vanishing mid-read, e.g.
            pass


# ------------------------------------------------------------------------------------ run


def overrides_for(args: argparse.Namespace, annotations: Path, videos: Path, checkpoint: Path, work: Path,
                  sizes: Sizes) -> list[str]:
    """Only what a CPU machine forces, the data paths, and a one-epoch validated run."""
    return [
        f"data.annotation_file={annotations}",
        f"data.video_dir={videos}",
        f"model.backbone.checkpoint={checkpoint}",
        "train.epochs=1",
        "train.val_start_epoch=0",
        "train.batch_size=1",
        "train.amp=false",
        "runtime.use_gpu=false",
        f"runtime.local_num_cpus={args.cpus}",
        f"runtime.object_store_memory_mb={args.object_store_mb}",
        f"runtime.decode_actors={args.decode_actors}",
        f"runtime.decode_actor_cpus={args.decode_actor_cpus}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        *sizes.overrides,
    ]


def count_test_windows(annotations: Path, videos: Path, window: int, stride: int, overlap: float) -> int:
    from adatad.data.annotations import load_annotations, load_class_names
    from adatad.data.sampling import sliding_windows

    names = load_class_names(str(annotations), str(CLASS_MAP))
    test, _ = load_annotations(str(annotations), str(videos), "validation", names)
    return sum(len(sliding_windows(r, window, stride, overlap)) for r in test)


def figures(run_dir: Path, wall_s: float, rc: int, samples: Samples, step_log: Path, windows: int
            ) -> list[tuple[str, str]]:
    """(figure, value) rows from the run folder's files, the step log and the samples."""
    rows: list[tuple[str, str]] = [("train.py exit code", str(rc)), ("wall time of the command", f"{wall_s:.0f} s")]
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else []
    stats = json.loads((run_dir / "stats.json").read_text()) if (run_dir / "stats.json").is_file() else {}
    steps = [json.loads(line) for line in step_log.read_text().splitlines()] if step_log.is_file() else []
    if stats:
        rows.append(("Ray Train fit (stats.json wall_time_s)", f"{stats['wall_time_s']:.0f} s"))
    if history:
        h = history[-1]
        n = int(h["steps"])
        rows.append(("training epoch (epoch_time_s, steps)", f"{h['epoch_time_s']:.0f} s, {n} steps, "
                                                             f"{h['epoch_time_s'] / max(n, 1):.1f} s/step wall"))
        if "val_time_s" in h:
            rows.append(("validation (val_time_s, windows)", f"{h['val_time_s']:.0f} s, {windows} windows, "
                                                             f"{h['val_time_s'] / max(windows, 1):.1f} s/window"))
        rows.append(("peak RSS of the train worker (history peak_memory_mb = ru_maxrss after training)",
                     f"{h['peak_memory_mb'] / 1024:.2f} GiB"))
        rows.append(("loss / average mAP (random weights: sanity only)",
                     f"{h['loss']:.4f} / {h.get('average_mAP', float('nan')):.4f}"))
    if steps:
        cpu = [s["cpu_s"] for s in steps]
        rows.append(("CPU s per train_step (process; thread)",
                     f"{sum(cpu) / len(cpu):.1f} ({sum(s['thread_cpu_s'] for s in steps) / len(steps):.1f}); "
                     f"per step: {', '.join(f'{c:.1f}' for c in cpu)}"))
        rows.append(("wall s per train_step", ", ".join(f"{s['wall_s']:.1f}" for s in steps)))
    else:
        rows.append(("CPU s per train_step", "n/a (the step hook logged nothing)"))
    worker_pids = {s["pid"] for s in steps} or {p for p, i in samples.procs.items() if "TrainWorker" in i.name}
    worker = [samples.procs[p] for p in worker_pids if p in samples.procs]
    if worker:
        rows.append(("train worker, whole life (/proc VmHWM; CPU s)",
                     f"{max(w.hwm_kb for w in worker) / MIB:.2f} GiB; {sum(w.cpu_s for w in worker):.0f} CPU s"))
    driver = [i for i in samples.procs.values() if "pipelines/train.py" in i.name]
    if driver:
        rows.append(("driver (train.py) peak RSS", f"{max(d.hwm_kb for d in driver) / MIB:.2f} GiB"))
    if samples.procs:
        rows.append(("all processes of the run: CPU s; peak of summed RSS (shared pages counted per process)",
                     f"{sum(i.cpu_s for i in samples.procs.values()):.0f} CPU s; "
                     f"{samples.tree_rss_peak_kb / MIB:.2f} GiB over {len(samples.procs)} processes"))
    if samples.store_samples:
        rows.append(("object store peak in use (sampled every second) / capacity; spilled",
                     f"{samples.store_peak_bytes / MIB:.0f} MiB / {samples.store_capacity_bytes / MIB:.0f} MiB; "
                     f"{samples.store_spilled_bytes / MIB:.0f} MiB"))
    else:
        rows.append(("object store peak", f"n/a ({samples.store_error or 'no sample'})"))
    if stats:
        ckpt_dir = Path(stats["checkpoint"])
        on_disk = sum(f.stat().st_size for f in ckpt_dir.rglob("*") if f.is_file()) if ckpt_dir.is_dir() else 0
        rows.append(("checkpoint (stats.json checkpoint_size_mb; folder on disk)",
                     f"{stats['checkpoint_size_mb']:.1f} MiB; {on_disk / MIB:.1f} MiB"))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--work-dir", type=Path, default=REPO / "data" / "full_size_smoke",
                   help="cache of videos and checkpoint, run storage, logs (default: data/full_size_smoke)")
    p.add_argument("--run-name", default=None, help="run folder name (default: full-size-smoke-<time>)")
    p.add_argument("--tiny", action="store_true",
                   help="window 64, crop 64, 160x96 videos of 12-16 s (same ViT-S, same command): checks the script")
    p.add_argument("--cpus", type=int, default=2, help="runtime.local_num_cpus")
    p.add_argument("--object-store-mb", type=int, default=2048, help="runtime.object_store_memory_mb")
    p.add_argument("--decode-actors", type=int, default=2)
    p.add_argument("--decode-actor-cpus", type=float, default=0.5)
    p.add_argument("--print-only", action="store_true", help="prepare the inputs, print the command, do not run it")
    p.add_argument("--probe-store", nargs=2, type=Path, metavar=("RAY_TMPDIR", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe_store:
        probe_store(*args.probe_store)
        return 0
    sizes = TINY if args.tiny else FULL
    work = args.work_dir.resolve() / ("tiny" if args.tiny else "full")
    work.mkdir(parents=True, exist_ok=True)
    run_name = args.run_name or f"{'tiny' if args.tiny else 'full'}-size-smoke-{datetime.now():%Y%m%d-%H%M%S}"
    storage = work / "runs"
    annotations, videos = prepare_videos(work / "data", sizes)
    checkpoint, how = random_videomae_s_mmaction2(args.work_dir.resolve() / "vit-s_random_mmaction2.pth")
    overrides = overrides_for(args, annotations, videos, checkpoint, work, sizes)
    window = 64 if args.tiny else 768
    windows = count_test_windows(annotations, videos, window, 4, 0.5)

    cmd = [sys.executable, "pipelines/train.py", "--cluster", "local", "--config", CONFIG,
           "--run-name", run_name, "--storage", str(storage)]
    for item in overrides:
        cmd += ["--set", item]
    print(f"checkpoint: {checkpoint} ({how})\ntest windows: {windows}\ncommand (from {REPO}):\n  "
          + " ".join(cmd), flush=True)
    if args.print_only:
        return 0

    hook_dir = work / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(STEP_HOOK)
    step_log = work / f"{run_name}.steps.jsonl"
    step_log.unlink(missing_ok=True)
    store_log = work / f"{run_name}.store.jsonl"
    store_log.unlink(missing_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="adfs-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), **{STEP_LOG_ENV: str(step_log)},
               PYTHONPATH=os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH", "")) if p))
    console = work / f"{run_name}.console.log"
    samples, stop = Samples(), threading.Event()
    start = time.perf_counter()
    with open(console, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        thread = threading.Thread(target=sampler, args=(proc.pid, samples, stop), daemon=True)
        thread.start()
        with open(work / f"{run_name}.store_probe.log", "w") as probe_log:
            probe = subprocess.Popen([sys.executable, __file__, "--probe-store", str(ray_tmp), str(store_log)],
                                     stdout=probe_log, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:  # passed through for the person watching; never parsed
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    wall = time.perf_counter() - start
    stop.set()
    probe.terminate()
    probe.wait(timeout=30)
    thread.join(timeout=30)
    read_store_samples(store_log, samples)
    if rc == 0:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    else:
        print(f"train.py failed (exit {rc}); Ray's session logs are kept in {ray_tmp}", file=sys.stderr)

    rows = figures(storage / run_name, wall, rc, samples, step_log, windows)
    title = (f"## {'Tiny' if args.tiny else 'Full-size'} smoke run `{run_name}` "
             f"({datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f})")
    table = "\n".join([title, "", "| figure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]) + "\n"
    (work / f"{run_name}.figures.md").write_text(table)
    (work / f"{run_name}.figures.json").write_text(json.dumps(dict(rows), indent=1) + "\n")
    print("\n" + table + f"\n(figures also in {work / (run_name + '.figures.md')}; console in {console})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
