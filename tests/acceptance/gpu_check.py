"""GPU check of the full-size recipe: train step time and peak memory, eval windows/s, CPU decode vs GPU.

Built to run once on a bare GPU machine with one command and nothing but torch, numpy, timm,
torchvision and OpenCV (decord only if present; no Ray, MLflow, PyAV, and PyYAML optional). Every
part runs in its own try/except, so an out-of-memory batch is a row of the table and the rest still
runs; a global time budget skips what is left with a note. The markdown table is rewritten after
every part, so a run cut short still leaves its figures.

Parts (full size: VideoMAE-S, adapters in all 12 blocks, 768 frames x 160 px, random weights):
  train    `adatad.engine.state.build_training_state` + `adatad.engine.step.train_step` as training runs
           them (AMP fp16 + GradScaler, AdamW param groups, EMA, grad clipping), batch 1/4/8 with
           activation checkpointing and batch 1 without; host->device copy of the uint8 batch included;
  eval     `AdaTAD.predict` under autocast (validation's call), batch 1/4;
  backbone one training step per backbone of OpenTAD's zoo at batch 1 (S, B, L, H and VideoMAEv2-g at
           768 x 160 px; the g at 224 px with 2 frames per position, 1536 frames, adapters in blocks
           20-39; the longest inputs: EPIC's L at 768 x 8 = 6,144 frames and Ego4D's L at 1,800 x 4 =
           7,200 frames, 192 px, padded to 2,048 positions; the side networks (AdaTAD†) of the g at
           224 px and of S), with activation checkpointing and AMP, random weights: peak memory and
           step time, the figures docs/recipe.md "Memory and checkpoints" estimates;
  decode   N spawned processes, one thread each, running `ClipLoader(train=True).load` (sample a
           random window, decode with decord, full train augmentation) on a pre-made THUMOS-like video;
  ratio    CPU clips/s at N processes against the GPU's training clips/s at its best batch.

    python tests/acceptance/gpu_check.py --make-video data/gpu_check/thumos_like_300s.mp4   # here (needs PyAV)
    python tests/acceptance/gpu_check.py --out gpu_check.md --video data/gpu_check/thumos_like_300s.mp4
    python tests/acceptance/gpu_check.py --out /tmp/dry.md --dry-run                          # tiny, on CPU
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib.util
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script on a machine where adatad is not installed
    sys.path.insert(0, str(REPO))

RECIPE = REPO / "configs" / "thumos_videomae_s_768x1_160_adapter.yaml"
GIB = 2**30
PARTS = ("train", "eval", "backbone", "decode")

# The backbone rows: name -> (`VIDEOMAE_VARIANTS` size, data overrides, backbone overrides beyond the size,
# head overrides). "g-224x2" is OpenTAD's e2e_thumos_videomaev2_g_768x2_224_adapter.py: 768 positions x 2
# frames at 224 px, adapters (and so the backward) in blocks 20-39 only. "L-epic-768x8" and
# "L-ego4d-1800x4" are configs/opentad/e2e_epic_videomae_l_ft_768x8_160_adapter_noun.yaml and
# e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4.yaml (Ego4D: 110 classes, 10 levels, 2,048 positions);
# "g-224x2-side" / "S-side" the side networks of e2e_thumos_videomaev2_g_768x2_224_side_2e-4.yaml and
# e2e_thumos_videomae_s_768x1_160_side.yaml.
_G224 = {"crop_size": 224, "frames_per_position": 2, "train_resize_short": 256, "test_resize_short": 224}
_EGO4D_HEAD = {"num_classes": 110, "arch": (2, 2, 9), "use_abs_pe": True, "max_seq_len": 2048,
               "mha_win_size": [17] * 7 + [-1] * 3, "filter_similar_gt": False,
               "regression_ranges": [(0, 4), (2, 8), (4, 16), (8, 32), (16, 64), (32, 128), (64, 256), (128, 512),
                                     (256, 1024), (512, 10000)]}
BACKBONES: dict[str, tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "S": ("S", {}, {}, {}),
    "B": ("B", {}, {}, {}),
    "L": ("L", {}, {}, {}),
    "H": ("H", {}, {}, {}),
    "g": ("g", {}, {}, {}),
    "g-224x2": ("g", _G224, {"adapter_layers": list(range(20, 40))}, {}),
    "L-epic-768x8": ("L", {"frame_stride": 16, "frames_per_position": 8}, {},
                     {"num_classes": 293, "mha_win_size": 9}),
    "L-ego4d-1800x4": ("L", {"window_size": 1800, "frame_stride": 8, "frames_per_position": 4, "crop_size": 192,
                             "train_resize_short": 220, "test_resize_short": 192},
                       {"adapter_layers": list(range(12, 24))}, _EGO4D_HEAD),
    "g-224x2-side": ("g", _G224, {"adapter_type": "ladder", "adapter_layers": list(range(20, 40)),
                                  "adapter_mlp_ratio": 0.125, "drop_path_rate": 0.0}, {}),
    "S-side": ("S", {}, {"adapter_type": "ladder", "adapter_layers": list(range(6, 12)), "drop_path_rate": 0.0}, {}),
}


def ensure_yaml_importable() -> bool:
    """True if PyYAML is there; otherwise put a stub in its place and return False.

    `adatad.config` imports yaml at module level, but this script only needs its dataclasses (the
    recipe is their defaults), so a bare image without PyYAML must not stop it.
    """
    try:
        import yaml  # noqa: F401

        return True
    except ImportError:
        stub = types.ModuleType("yaml")
        stub.YAMLError = type("YAMLError", (Exception,), {})  # adatad.config names it in except clauses
        sys.modules["yaml"] = stub
        return False


def recipe_config(have_yaml: bool) -> tuple[Any, str]:
    """The THUMOS recipe with a random backbone: from the YAML file when PyYAML is there, else from
    the `adatad.config` dataclass defaults (which state the same recipe; tests/test_gpu_check.py checks)."""
    from adatad.config import Config, load_config

    if have_yaml:
        cfg = load_config(RECIPE, ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
        source = f"{RECIPE.relative_to(REPO)}"
    else:
        cfg = Config()
        cfg.model.backbone.checkpoint = None
        cfg.model.backbone.allow_random_init = True
        source = "adatad.config.Config() defaults (PyYAML missing)"
    return cfg, source


def shrink_for_dry_run(cfg: Any) -> Any:
    """Same recipe and code paths at sizes a CPU runs in seconds (32 frames, 32 px, 2-block ViT)."""
    from adatad.config import validate

    cfg = copy.deepcopy(cfg)
    d, b, h = cfg.data, cfg.model.backbone, cfg.model.head
    d.window_size, d.crop_size, d.train_resize_short, d.test_resize_short = 32, 32, 36, 32
    d.max_segments = 16
    b.embed_dim, b.depth, b.num_heads = 64, 2, 2
    h.embed_dim, h.feat_channels, h.n_head = 64, 64, 4
    validate(cfg)
    return cfg


def backbone_config(cfg: Any, name: str, dry: bool) -> Any:
    """The recipe with backbone `name` (`BACKBONES`), batch 1, activation checkpointing on.

    The dry run keeps each size's heads, patch, MLP ratio, adapter placement and frames per position,
    with 2 blocks of 8 channels per head on the dry run's tiny window (the g-224x2 adapter in block 1).
    """
    from adatad.config import validate
    from adatad.models.videomae import VIDEOMAE_VARIANTS

    variant, data, extra, head = BACKBONES[name]
    cfg = copy.deepcopy(cfg)
    b = cfg.model.backbone
    for key, value in {**VIDEOMAE_VARIANTS[variant], **extra}.items():
        setattr(b, key, value)
    for key, value in data.items():
        setattr(cfg.data, key, value)
    for key, value in head.items():
        setattr(cfg.model.head, key, value)
    b.activation_checkpointing = True
    cfg.train.batch_size = 1
    if dry:
        ratio = b.mlp_hidden_dim / b.embed_dim if b.mlp_hidden_dim else None
        b.embed_dim, b.depth = 8 * b.num_heads, 2
        b.mlp_hidden_dim = round(ratio * b.embed_dim) if ratio else None
        if b.adapter_layers is not None:  # in-block: in the second block; a ladder: on both
            b.adapter_layers = [0, 1] if b.adapter_type == "ladder" else [1]
        cfg.data.crop_size = cfg.data.test_resize_short = 32
        cfg.data.train_resize_short = 36
        cfg.data.window_size = 32
        if cfg.model.head.max_seq_len is not None:  # the padding, to the dry window's smallest whole levels
            cfg.model.head.max_seq_len = 2 ** cfg.model.head.arch[2]
    validate(cfg)
    return cfg


def backbone_setting(cfg: Any, name: str) -> str:
    d = cfg.data
    return f"{name}: {d.window_size}x{d.frames_per_position} frames, {d.crop_size} px, batch 1"


# ------------------------------------------------------------------------------------ results table


@dataclasses.dataclass
class Row:
    part: str  # train / eval / decode / ratio
    setting: str
    time: str = "-"
    throughput: str = "-"
    memory: str = "-"
    status: str = "ok"
    values: dict[str, float] = dataclasses.field(default_factory=dict)  # numbers other rows use


@dataclasses.dataclass
class Report:
    out: Path
    header: list[str]
    rows: list[Row] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def markdown(self) -> str:
        lines = ["# GPU check: AdaTAD full-size recipe", "", *[f"- {h}" for h in self.header], "",
                 "| part | setting | time | throughput | peak memory | status |", "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in
                                    (r.part, r.setting, r.time, r.throughput, r.memory, r.status)) + " |"
                  for r in self.rows]
        if self.notes:
            lines += ["", "Notes:", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Rewritten after every part (temp file + rename), so a killed run leaves what it measured."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(self.markdown())
        os.replace(tmp, self.out)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------ GPU parts


def synthetic_frames(cfg: Any, batch: int, seed: int = 0) -> Any:
    """Random uint8 clips (B, T x s, H, W, 3) on the CPU (s = frames per position): what the data
    pipeline hands the train loop."""
    import torch

    g = torch.Generator().manual_seed(seed)
    t, s = cfg.data.window_size * cfg.data.frames_per_position, cfg.data.crop_size
    return torch.randint(0, 256, (batch, t, s, s, 3), dtype=torch.uint8, generator=g)


def synthetic_batch(cfg: Any, frames: Any) -> dict[str, Any]:
    """A training batch in `adatad.data.batch` layout: 4 ground-truth actions per window, THUMOS-sized."""
    import torch

    b, t = frames.shape[0], cfg.data.window_size  # positions (frames.shape[1] = t x frames per position)
    m = cfg.data.max_segments
    segments = torch.zeros(b, m, 2)
    labels = torch.full((b, m), -1, dtype=torch.int64)
    starts = torch.tensor([0.05, 0.3, 0.55, 0.8]) * t
    for i in range(b):
        segments[i, :4, 0] = starts
        segments[i, :4, 1] = starts + t * (0.02 + 0.04 * ((torch.arange(4) + i) % 4))
        labels[i, :4] = (torch.arange(4) + i) % cfg.model.head.num_classes
    return {"frames": frames, "masks": torch.ones(b, t, dtype=torch.bool), "segments": segments,
            "labels": labels, "num_segments": torch.full((b,), 4, dtype=torch.int64)}


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_text(device: Any) -> tuple[str, dict[str, float]]:
    import torch

    if device.type != "cuda":
        return "- (CPU)", {}
    alloc = torch.cuda.max_memory_allocated(device) / GIB
    reserved = torch.cuda.max_memory_reserved(device) / GIB
    return f"{alloc:.2f} GiB ({reserved:.2f} reserved)", {"peak_gib": alloc, "reserved_gib": reserved}


def timed_loop(step: Callable[[], None], device: Any, warmup: int, iters: int, cap_s: float) -> list[float]:
    """Seconds per call after `warmup` calls; stops early once the timed calls pass `cap_s`."""
    for _ in range(warmup):
        step()
    sync(device)
    times: list[float] = []
    begin = time.perf_counter()
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
        if time.perf_counter() - begin > cap_s:
            break
    return times


def measure_train(cfg: Any, frames: Any, batch: int, checkpointing: bool, device: Any, args: argparse.Namespace,
                  warmup: int | None = None, iters: int | None = None) -> Row:
    import torch

    from adatad.engine.state import build_training_state
    from adatad.engine.step import train_step

    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.activation_checkpointing = checkpointing
    cfg.train.batch_size = batch
    setting = f"batch {batch}, checkpointing {'on' if checkpointing else 'off'}"
    reset_peak(device)
    torch.manual_seed(0)
    state = build_training_state(cfg, steps_per_epoch=1000, device=device)
    host = synthetic_batch(cfg, frames[:batch])
    results = []

    def step() -> None:
        on_device = {k: v.to(device, non_blocking=True) for k, v in host.items()}  # as the train loop does
        results.append(train_step(state.model, on_device, state.optimizer, state.scheduler, state.scaler,
                                  state.ema, cfg.train.clip_grad_norm, device, cfg.train.amp))

    warmup = args.warmup if warmup is None else warmup
    times = timed_loop(step, device, warmup, args.iters if iters is None else iters, args.part_cap_s)
    memory, mem_values = peak_text(device)
    med = statistics.median(times)
    skipped = sum(r.skipped for r in results[warmup:])
    note = f", {skipped} skipped by GradScaler" if skipped else ""
    return Row("train", setting, f"{med * 1e3:.1f} ms/step (median of {len(times)}{note})",
               f"{batch / med:.2f} clips/s", memory,
               values={"clips_per_s": batch / med, "step_s": med, "loss": results[-1].loss, **mem_values})


def measure_backbone(cfg: Any, name: str, device: Any, args: argparse.Namespace) -> Row:
    """One backbone's training step at batch 1 (`measure_train`: AMP, GradScaler, AdamW, EMA, clipping),
    with its parameter count; fewer iterations than the train part (`--backbone-iters`)."""
    cfg = backbone_config(cfg, name, args.dry_run)
    row = measure_train(cfg, synthetic_frames(cfg, 1), 1, True, device, args, warmup=args.backbone_warmup,
                        iters=args.backbone_iters)
    row.part = "backbone"
    row.values["window_frames"] = cfg.data.window_size * cfg.data.frames_per_position
    return row


def measure_eval(cfg: Any, frames: Any, batch: int, device: Any, args: argparse.Namespace) -> Row:
    import torch

    from adatad.engine.step import autocast
    from adatad.models.build import build_model

    reset_peak(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    clip = frames[:batch]
    masks = torch.ones(clip.shape[:2], dtype=torch.bool)
    inf = cfg.model.inference

    @torch.no_grad()
    def step() -> None:
        with autocast(device, cfg.train.amp):  # as validation calls it
            model.predict(clip.to(device, non_blocking=True), masks.to(device, non_blocking=True),
                          pre_nms_thresh=inf.pre_nms_thresh, pre_nms_topk=inf.pre_nms_topk)

    times = timed_loop(step, device, args.warmup, args.iters, args.part_cap_s)
    memory, mem_values = peak_text(device)
    med = statistics.median(times)
    return Row("eval", f"batch {batch}", f"{med * 1e3:.1f} ms/batch (median of {len(times)})",
               f"{batch / med:.2f} windows/s", memory, values={"windows_per_s": batch / med, **mem_values})


# ------------------------------------------------------------------------------------ CPU decode


def _decode_worker(data: dict[str, Any], video: str, seed: int, seconds: float, barrier: Any, queue: Any) -> None:
    """One decode process: one OpenCV/decord thread, the train ClipLoader on random windows of `video`.

    Counts whole clips finished in `seconds` after every process passed the barrier (start-up and
    the first clip, which loads the decoder, are not counted).
    """
    try:
        ensure_yaml_importable()
        import cv2

        cv2.setNumThreads(1)
        from adatad.config import DataConfig
        from adatad.data.annotations import VideoRecord
        from adatad.data.clips import ClipLoader, record_to_row
        from adatad.data.video import probe_video

        info = probe_video(video)
        duration = info.num_frames / info.fps
        starts = np.arange(5.0, max(duration - 10.0, 5.0), 15.0)  # a 4 s action every 15 s, THUMOS-like
        record = VideoRecord(video_id=Path(video).stem, path=str(video), subset="training", duration=duration,
                             num_frames=info.num_frames, fps=info.fps,
                             segments=np.stack([starts, starts + 4.0], axis=1),
                             labels=np.arange(len(starts), dtype=np.int64) % 20)
        row = record_to_row(record, 0)
        loader = ClipLoader(DataConfig(**data), train=True)
        rng = np.random.default_rng(seed)
        if not loader.load(row, rng)["valid"]:
            raise RuntimeError(f"{video}: the first clip failed to decode")
    except BaseException as exc:
        barrier.abort()  # the others stop waiting at once
        queue.put({"error": first_line(exc)})
        return
    try:
        barrier.wait(timeout=120)
    except Exception as exc:  # noqa: BLE001 - another process failed before the start
        queue.put({"error": f"start barrier broken ({first_line(exc)})"})
        return
    start = last = time.perf_counter()
    cpu0 = time.process_time()
    clips = invalid = 0
    while last - start < seconds:
        invalid += not bool(loader.load(row, rng)["valid"])
        clips += 1
        last = time.perf_counter()
    queue.put({"clips": clips, "elapsed": last - start, "cpu_s": time.process_time() - cpu0, "invalid": invalid})


def measure_decode(data: dict[str, Any], video: str, procs: int, seconds: float) -> Row:
    """Aggregate clips/s of `procs` concurrent decode processes (sum of each process's rate)."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy a CUDA context and torch threads
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {k: os.environ.get(k) for k in one_thread}
    os.environ.update(one_thread)  # inherited by the children only
    try:
        workers = [ctx.Process(target=_decode_worker, args=(data, video, 1000 + i, seconds, barrier, queue),
                               daemon=True) for i in range(procs)]
        for w in workers:
            w.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    results, deadline = [], time.monotonic() + 120 + 3 * seconds  # start-up allowance, then the run
    try:
        while len(results) < procs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{procs - len(results)} of {procs} decode processes did not report in time")
            try:
                results.append(queue.get(timeout=min(remaining, 5.0)))
            except Exception:  # noqa: BLE001 - queue.Empty: check that the workers are alive
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead:  # killed without a report (e.g. a crash in the decoder): release the others
                    barrier.abort()
                    raise RuntimeError(f"a decode process exited with code {dead[0].exitcode}") from None
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    rate = sum(r["clips"] / r["elapsed"] for r in results)
    clips = sum(r["clips"] for r in results)
    cpu_per_clip = sum(r["cpu_s"] for r in results) / clips
    invalid = sum(r["invalid"] for r in results)
    status = "ok" if invalid == 0 else f"FAILED: {invalid} clips did not decode"
    return Row("decode", f"{procs} process{'es' if procs > 1 else ''} x 1 thread",
               f"{procs / rate:.2f} s/clip per process ({cpu_per_clip:.2f} CPU s), {clips} clips",
               f"{rate:.2f} clips/s", "-", status, values={"clips_per_s": rate, "procs": procs})


def ratio_rows(report: Report) -> list[Row]:
    """CPU decode clips/s at each N against the GPU's training clips/s at its best batch (with
    activation checkpointing, as the recipe trains, when such a row exists)."""
    train = [r for r in report.rows if r.part == "train" and r.status == "ok"]
    train = [r for r in train if "checkpointing on" in r.setting] or train
    decode = [r for r in report.rows if r.part == "decode" and r.status == "ok"]
    if not train or not decode:
        return []
    best = max(train, key=lambda r: r.values["clips_per_s"])
    gpu = best.values["clips_per_s"]
    rows = []
    for d in decode:
        cpu, n = d.values["clips_per_s"], int(d.values["procs"])
        needed = gpu / (cpu / n)  # processes at this per-process rate that keep the GPU busy
        rows.append(Row("ratio", f"{n} decode processes vs GPU train {best.setting}", "-",
                        f"CPU {cpu:.2f} / GPU {gpu:.2f} clips/s = {cpu / gpu:.2f} (~{needed:.1f} processes "
                        "keep the GPU busy)", "-", "ok", values={"ratio": cpu / gpu, "procs_needed": needed}))
    return rows


# ------------------------------------------------------------------------------------ driver


def make_video(path: Path, seconds: float, width: int = 320, height: int = 180) -> Path:
    """A THUMOS-like H.264 mp4 (30 fps; 320x180 like THUMOS) made with adatad.datasets.synthetic (needs PyAV)."""
    from adatad.datasets.synthetic import VIDEO_DIR, generate_dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        generate_dataset(tmp, num_train=1, num_test=0, num_classes=4, duration_s=seconds, fps=30, width=width,
                         height=height, seed=15)
        os.replace(next((Path(tmp) / VIDEO_DIR).glob("*.mp4")), path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", type=Path, help="markdown file to write the table to")
    p.add_argument("--video", type=Path, help="THUMOS-like mp4 for the decode part (skipped without it)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the parts left once this much time has passed")
    p.add_argument("--dry-run", action="store_true", help="every part at tiny sizes on the CPU (a test runs it)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="which parts to run (a rerun of one part on a short lease); ratio rows need train + decode")
    p.add_argument("--train-batches", type=int, nargs="+", default=[1, 4, 8], help="with activation checkpointing")
    p.add_argument("--no-checkpointing-batches", type=int, nargs="*", default=[1])
    p.add_argument("--eval-batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--backbones", nargs="*", choices=list(BACKBONES), default=list(BACKBONES),
                   help="backbone rows (batch 1, checkpointing, AMP); g-224x2 = the g at 224 px, 768 x 2 frames; "
                        "L-epic-768x8 / L-ego4d-1800x4 = the EPIC / Ego4D rows' inputs; *-side = side networks")
    p.add_argument("--backbone-warmup", type=int, default=1, help="untimed steps per backbone row")
    p.add_argument("--backbone-iters", type=int, default=None, help="timed steps per backbone row (default 3; dry run 1)")
    p.add_argument("--procs", type=int, nargs="*", default=None, help="decode processes (default 4 8 16; dry run 1 2)")
    p.add_argument("--decode-seconds", type=float, default=None, help="timed seconds per N (default 20; dry run 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations per part (default 3; dry run 1)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per part (default 10; dry run 2)")
    p.add_argument("--part-cap-s", type=float, default=30.0, help="stop a part's timed iterations after this long")
    p.add_argument("--make-video", type=Path, metavar="PATH",
                   help="only write a THUMOS-like mp4 to PATH (needs PyAV; run it where PyAV is installed)")
    p.add_argument("--video-seconds", type=float, default=300.0, help="length of the --make-video clip")
    args = p.parse_args(argv)
    if args.make_video is None and args.out is None:
        p.error("--out is required (or --make-video PATH)")
    dry = args.dry_run
    args.procs = args.procs if args.procs is not None else ([1, 2] if dry else [4, 8, 16])
    args.decode_seconds = args.decode_seconds if args.decode_seconds is not None else (1.0 if dry else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (1 if dry else 3)
    args.iters = args.iters if args.iters is not None else (2 if dry else 10)
    args.backbone_iters = args.backbone_iters if args.backbone_iters is not None else (1 if dry else 3)
    return args


def importable(name: str) -> bool:
    """find_spec without importing; a finder that refuses the name counts as absent."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def environment_lines(dry: bool) -> list[str]:
    import torch

    lines = []
    if not dry and torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {prop.name}, {prop.total_memory / GIB:.1f} GiB, {prop.multi_processor_count} SMs, "
                     f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        lines.append("device: CPU (dry run: tiny sizes, the figures only show that every part runs)" if dry
                     else "device: CPU")
    lines.append(f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
                 f"decord {'present' if importable('decord') else 'absent'}")
    return lines


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        return run_parts(args, scratch)


def run_parts(args: argparse.Namespace, scratch: str) -> int:
    """Every part in order under the time budget; `scratch` holds the dry run's tiny video."""
    t0 = time.perf_counter()
    have_yaml = ensure_yaml_importable()
    import torch

    gpu_parts = {"train", "eval", "backbone"} & set(args.parts)
    if gpu_parts and not args.dry_run and not torch.cuda.is_available():
        print(f"error: no CUDA device visible to torch {torch.__version__} (built for CUDA {torch.version.cuda}); "
              "gpu_check measures a GPU: run it on the GPU machine, or pass --dry-run for the tiny CPU check",
              file=sys.stderr)
        return 2
    device = torch.device("cuda", 0) if gpu_parts and not args.dry_run else torch.device("cpu")
    if args.dry_run:
        torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they give, worse on a busy machine
    cfg, source = recipe_config(have_yaml)
    if args.dry_run:
        cfg = shrink_for_dry_run(cfg)
    b = cfg.model.backbone
    try:
        header = environment_lines(args.dry_run)
    except Exception as exc:  # noqa: BLE001 - a broken driver shows up in the parts too; still write the table
        header = [f"device: {device} (could not be described: {first_line(exc)})"]
    shrunk = " shrunk for the dry run" if args.dry_run else ""
    header.append(f"recipe: {source}{shrunk}; random backbone weights; ViT embed {b.embed_dim} x {b.depth} blocks, "
                  f"adapters ({b.adapter_type}) in {'all' if b.adapter_layers is None else b.adapter_layers} blocks; "
                  f"window {cfg.data.window_size} frames x {cfg.data.crop_size} px; AMP fp16 {cfg.train.amp} "
                  f"(GradScaler on CUDA), AdamW param groups, EMA {cfg.train.ema}")
    header.append(f"timing: {args.warmup} warm-up + up to {args.iters} timed iterations per part (median; a part's "
                  f"timed loop stops after {args.part_cap_s:g} s), synchronised; peak = max_memory_allocated "
                  "(max_memory_reserved in brackets), reset per part; train includes the host->device copy")
    header.append(f"backbone rows: the train part's step (model, EMA sharing the frozen ViT, AdamW, AMP, "
                  f"activation checkpointing) at batch 1 per size of OpenTAD's zoo, {args.backbone_warmup} warm-up + "
                  f"{args.backbone_iters} timed steps; the peak includes building the state"
                  + (" (dry run: 2 blocks, 8 channels per head, 32 px)" if args.dry_run else ""))
    header.append(f"started {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; budget {args.budget_s:g} s")
    report = Report(args.out, header)
    if not have_yaml:
        report.notes.append("PyYAML is not installed: the recipe came from the adatad.config dataclass defaults")
    report.write()

    frames_pool: list[Any] = []

    def frames() -> Any:  # one pool of random clips, sliced per batch size
        if not frames_pool:
            frames_pool.append(synthetic_frames(cfg, max(args.train_batches + args.no_checkpointing_batches
                                                         + args.eval_batches)))
        return frames_pool[0]

    parts: list[tuple[str, str, Callable[[], Row | str]]] = []
    for batch in args.train_batches:
        parts.append(("train", f"batch {batch}, checkpointing on",
                      lambda bs=batch: measure_train(cfg, frames(), bs, True, device, args)))
    for batch in args.no_checkpointing_batches:
        parts.append(("train", f"batch {batch}, checkpointing off",
                      lambda bs=batch: measure_train(cfg, frames(), bs, False, device, args)))
    for batch in args.eval_batches:
        parts.append(("eval", f"batch {batch}", lambda bs=batch: measure_eval(cfg, frames(), bs, device, args)))
    for name in args.backbones:  # each its own part: an out-of-memory g leaves the smaller rows standing
        parts.append(("backbone", backbone_setting(backbone_config(cfg, name, args.dry_run), name),
                      lambda name=name: measure_backbone(cfg, name, device, args)))
    video = args.video
    if video is None and args.dry_run and importable("av"):
        video = make_video(Path(scratch) / "tiny.mp4", 12.0, width=160, height=96)
    data = dataclasses.asdict(cfg.data) | {"decode_threads": 1}
    decode_skip = None
    if not importable("decord"):
        decode_skip = "skipped: decord is not importable (carry the decord2 wheel; see tests/acceptance/README.md)"
    elif video is None:
        decode_skip = "skipped: no --video given"
    elif not Path(video).is_file():
        decode_skip = f"skipped: --video {video} does not exist"
    for n in args.procs:
        name = f"{n} process{'es' if n > 1 else ''} x 1 thread"
        if decode_skip:
            parts.append(("decode", name, lambda reason=decode_skip: reason))
        else:
            parts.append(("decode", name, lambda n=n: measure_decode(data, str(video), n, args.decode_seconds)))

    parts = [p for p in parts if p[0] in args.parts]
    for part, setting, fn in parts:
        elapsed = time.perf_counter() - t0
        if elapsed > args.budget_s:
            report.rows.append(Row(part, setting, status=f"skipped: time budget spent ({elapsed:.0f} s > "
                                                         f"--budget-s {args.budget_s:g})"))
            report.notes.append(f"{part} {setting}: skipped, budget spent")
            report.write()
            continue
        print(f"[{elapsed:6.1f} s] {part}: {setting} ...", flush=True)
        start = time.perf_counter()
        try:
            row = fn()
            if isinstance(row, str):  # a skip decided before the run
                report.notes.append(f"{part} {setting}: {row}")
                row = Row(part, setting, status=row)
        except Exception as exc:  # noqa: BLE001 - one failing part (e.g. OOM at batch 8) is a row, not the end
            oom = isinstance(exc, torch.OutOfMemoryError) if hasattr(torch, "OutOfMemoryError") else False
            memory, _ = peak_text(device)
            row = Row(part, setting, memory=memory,
                      status=("FAILED: out of GPU memory" if oom else f"FAILED: {first_line(exc)}"))
        finally:
            reset_peak(device)  # frees what a failed part left behind before the next one
        row.part, row.setting = part, setting
        report.rows.append(row)
        print(f"           -> {row.time} | {row.throughput} | {row.memory} | {row.status} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)
        report.write()

    report.rows.extend(ratio_rows(report))
    wall = time.perf_counter() - t0
    report.header.append(f"wall time {wall:.0f} s")
    report.write()
    print(report.markdown(), flush=True)
    failed = [r for r in report.rows if r.status.startswith("FAILED")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_video is not None:
        start = time.perf_counter()
        path = make_video(args.make_video, args.video_seconds)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.video_seconds:g} s, 320x180, 30 fps) "
              f"in {time.perf_counter() - start:.0f} s")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
