"""Detect actions in new videos with a trained checkpoint: Ray Data batch inference -> results json.

    python pipelines/detect.py --checkpoint runs/synthetic/checkpoint_... --videos data/synthetic/videos
    python pipelines/detect.py --checkpoint CKPT --videos a.mp4 b.mkv --plot-dir plots --annotations GT.json
    python pipelines/detect.py --checkpoint adatad_s_thumos.pth --config configs/thumos_videomae_s_768x1_160_adapter.yaml \
        --videos DIR --out detections.json                          # OpenTAD's published weights

Stages: list videos -> probe each with the decoder (Ray tasks: real frame count and fps; a video
that cannot be opened goes straight to "errors") -> sliding test windows, each video decoded once
on CPU actors (`pipelines.data.test_dataset`, the training-validation dataset) -> `Predict` actors
(one GPU each when the cluster has GPUs and runtime.use_gpu is set, else CPU) with the EMA weights ->
per-video merge + soft-NMS on the driver (`adatad.engine.validation.WindowCollector`, the training
validation code) -> one json, written atomically and readable by `pipelines/evaluate.py`:

    {"results": {video_id: [{"segment": [s, e], "label": name, "score": x}, ...]},
     "errors": {video_id: "one-line reason"}}

The model's settings (architecture, window, frame stride, crop) always come from the checkpoint;
`--config` / `--set` may change only what does not change the model's input (runtime.*,
model.inference.*, data.test_window_overlap, data.decode_threads, train.val_batch_size, train.amp).
An OpenTAD checkpoint has no config: `--config` then describes its architecture as well
(`adatad.models.trained.read_trained`). EMA weights by default, `--no-ema` for the plain ones.
Ray's own output goes to `<out>.log` beside the json (`--verbose` shows it too).
Bad input: one line on stderr and exit code 2. Exit code 1 when no video could be processed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `pipelines` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from adatad.atomic import atomic_write_text
from adatad.config import Config, ConfigError, config_from_dict, deep_merge, load_config, parse_override
from adatad.data.annotations import AnnotationError, VideoRecord, load_class_names
from adatad.data.clips import count_windows
from adatad.data.sampling import sliding_windows
from adatad.data.video import VideoDecodeError, VideoInfo, probe_video, read_frames
from adatad.data.video_files import VIDEO_EXTENSIONS
from adatad.engine.validation import WindowCollector
from adatad.evaluation import EvaluationInputError, load_ground_truth
from adatad.models.trained import TrainedWeightsError, read_trained
from adatad.postprocess import Detections
from pipelines.console import Console, RunLog

SUBSET = "detect"  # VideoRecord.subset of the videos given on the command line
PASSTHROUGH = ("video_index", "window_start_frame", "fps", "duration", "frame_stride", "valid")
# Settings a user may change at detection time: none of them changes what the model sees.
CHANGEABLE = ("runtime.", "model.inference.", "data.test_window_overlap", "data.decode_threads",
              "train.val_batch_size", "train.amp")
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class DetectInputError(ValueError):
    """A problem with the command-line inputs, reported as one line."""


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint.pt, a Ray checkpoint folder holding one, a run folder (latest checkpoint), "
                        "or an OpenTAD .pth (with --config)")
    p.add_argument("--no-ema", action="store_true", help="use the plain weights instead of the EMA ones")
    p.add_argument("--videos", required=True, nargs="+", metavar="DIR_OR_FILE",
                   help=f"video files and/or folders (a folder: its files ending in {', '.join(VIDEO_EXTENSIONS)})")
    p.add_argument("--config", default=None,
                   help="YAML whose runtime and model.inference groups replace the checkpoint's (for an OpenTAD "
                        "checkpoint: its whole model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a detection-time setting, e.g. --set runtime.val_decode_actors=2 (repeatable)")
    p.add_argument("--cluster", default="local",
                   help="local (start Ray here), auto (attach to a running cluster) or an address")
    p.add_argument("--out", default="detections.json", help="results json (default: detections.json)")
    p.add_argument("--plot-dir", default=None, help="write a timeline PNG per video into this folder")
    p.add_argument("--plot-min-score", type=float, default=0.1,
                   help="detections drawn in the timeline have at least this score (default: 0.1)")
    p.add_argument("--min-score", type=float, default=None,
                   help="keep detections scoring at least this (default: model.inference.min_score)")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep at most this many detections per video (default: model.inference.max_seg_num)")
    p.add_argument("--annotations", default=None,
                   help="THUMOS-style annotation json: ground truth drawn in the timelines (any subset)")
    p.add_argument("--class-map", default=None,
                   help="class names, one per line, in the model's index order (default: see resolve_class_names)")
    p.add_argument("--decode-actors", type=int, default=None,
                   help="decode actors (default: runtime.val_decode_actors)")
    p.add_argument("--predict-actors", type=int, default=None,
                   help="model actors (default: one per GPU, or 1 without GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own output")
    return p


# ---------------------------------------------------------------- inputs: checkpoint, config, classes, videos


def _changeable(key_path: str) -> bool:
    return any(key_path == c or (c.endswith(".") and key_path.startswith(c)) for c in CHANGEABLE)


def detection_config(trained: Config, config_file: str | None, overrides: Sequence[str]) -> Config:
    """The checkpoint's config with the detection-time changes of `--config` and `--set` applied."""
    raw = trained.to_dict()
    if config_file:
        other = load_config(config_file).to_dict()
        raw = deep_merge(raw, {"runtime": other["runtime"], "model": {"inference": other["model"]["inference"]}})
    for item in overrides:
        update = parse_override(item)
        key = item.partition("=")[0].strip()
        if not _changeable(key):
            raise ConfigError(f"--set {key}: cannot change at detection time (the model was trained with the "
                              f"checkpoint's value); changeable: {', '.join(CHANGEABLE)}")
        raw = deep_merge(raw, update)
    return config_from_dict(raw)


def resolve_class_names(cfg: Config, class_map: str | None = None, annotations: str | None = None
                        ) -> tuple[list[str], str]:
    """The model's class names in index order, and where they came from.

    First that exists: `--class-map`; the class map the training used (data.class_map_file); the
    labels of `--annotations` (derived as evaluate.py and training do); the labels of the training
    annotation file. The training's own files come before `--annotations` because they define the
    index order the model learnt; `--annotations` is the fallback when the run's data moved.
    """
    d = cfg.data
    candidates: list[tuple[str, str, str | None]] = []  # (source, annotation file, class map file)
    if class_map:
        if not Path(class_map).is_file():
            raise DetectInputError(f"--class-map {class_map}: file not found")
        candidates.append((f"--class-map {class_map}", class_map, class_map))
    train_map = cfg.resolve_path(d.class_map_file) if d.class_map_file else None
    if train_map and Path(train_map).is_file():
        candidates.append((f"the training class map {train_map}", train_map, train_map))
    if annotations:
        candidates.append((f"the labels of --annotations {annotations}", annotations, None))
    train_annotations = cfg.resolve_path(d.annotation_file)
    if Path(train_annotations).is_file():
        candidates.append((f"the labels of the training annotations {train_annotations}", train_annotations, None))
    if not candidates:
        raise DetectInputError(f"no class names: the checkpoint's data.class_map_file ({d.class_map_file}) and "
                               f"data.annotation_file ({d.annotation_file}) do not exist here; pass --class-map "
                               "or --annotations")
    source, annotation_file, map_file = candidates[0]
    names = load_class_names(annotation_file, map_file)
    if len(names) != cfg.model.head.num_classes:
        raise DetectInputError(f"{source}: {len(names)} classes, but the checkpoint's model has "
                               f"model.head.num_classes={cfg.model.head.num_classes}")
    return names, source


def list_videos(inputs: Sequence[str], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given plus the video files directly inside each folder; sorted by video id (file stem)."""
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
            if not files:
                raise DetectInputError(f"--videos {item}: folder holds no video files ({', '.join(extensions)})")
        elif path.exists():
            files = [path]
        else:
            raise DetectInputError(f"--videos {item}: no such file or folder")
        for f in files:
            f = Path(os.path.abspath(f))  # not resolve(): a symlink's own name is the video id the user chose
            if f.stem in found and found[f.stem] != f:
                raise DetectInputError(f"video id {f.stem!r} (the file name without extension) is used by both "
                                       f"{found[f.stem]} and {f}; rename one")
            found[f.stem] = f
    return [found[k] for k in sorted(found)]


def probe_records(paths: Sequence[Path], num_cpus: float) -> tuple[list[VideoRecord], dict[str, str]]:
    """Records built from the decoder's own frame count and fps (duration = frames / fps), one Ray
    task per video (adatad.data.video only: no torch import in the task worker); videos that fail
    go to the returned errors (video id -> the decoder's one-line message)."""
    import ray

    probe = ray.remote(num_cpus=num_cpus, max_retries=0)(probe_video)
    refs = [probe.remote(str(p)) for p in paths]
    records, errors = [], {}
    for path, ref in zip(paths, refs, strict=True):
        try:
            info = ray.get(ref)
        except VideoDecodeError as exc:  # Ray re-raises it as a RayTaskError that is also a VideoDecodeError
            errors[path.stem] = str(getattr(exc, "cause", None) or exc)
            continue
        try:
            records.append(video_record(path, info))
        except VideoDecodeError as exc:
            errors[path.stem] = str(exc)
    return records, errors


def video_record(path: Path, info: VideoInfo) -> VideoRecord:
    """A record without ground truth from the decoder's frame count and fps (duration = frames / fps)."""
    if not (info.num_frames >= 1 and np.isfinite(info.fps) and info.fps > 0):
        raise VideoDecodeError(f"{path}: decoder reports {info.num_frames} frames at {info.fps!r} fps")
    return VideoRecord(video_id=path.stem, path=str(path), subset=SUBSET, duration=info.num_frames / info.fps,
                       num_frames=info.num_frames, fps=info.fps, segments=np.zeros((0, 2)),
                       labels=np.zeros((0,), np.int64))


# ---------------------------------------------------------------- the model stage


class Predict:
    """Ray Data callable class: loads the detector once per actor and predicts batches of windows.

    Output columns have fixed shapes so they travel through Arrow: detections padded to
    `pre_nms_topk` rows (the most `decode_window` returns per window) with their `count`, plus the
    window bookkeeping columns (`PASSTHROUGH`). Windows whose decode failed (valid=False) are not
    run through the model and come out with count 0.
    """

    def __init__(self, state: Any, pre_nms_thresh: float, pre_nms_topk: int, amp: bool, threads: int) -> None:
        import ray

        from adatad.models.build import model_from_checkpoint

        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _ = model_from_checkpoint(state, use_ema=True)
        self.model = model.to(self.device).eval()
        self.pre_nms_thresh, self.pre_nms_topk, self.amp = pre_nms_thresh, pre_nms_topk, amp

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from adatad.engine.step import autocast

        valid = np.asarray(batch["valid"], dtype=bool)
        n, k = len(valid), self.pre_nms_topk
        out = {key: np.asarray(batch[key]) for key in PASSTHROUGH}
        out["segments"] = np.zeros((n, k, 2), np.float32)
        out["scores"] = np.zeros((n, k), np.float32)
        out["labels"] = np.full((n, k), -1, np.int64)
        out["count"] = np.zeros(n, np.int64)
        rows = np.flatnonzero(valid)
        if len(rows) == 0:
            return out
        frames, masks = batch["frames"], batch["masks"]
        if len(rows) < n:  # fancy indexing copies, so only when some window failed
            frames, masks = frames[rows], masks[rows]
        frames = torch.from_numpy(frames).to(self.device)  # writable: map_batches(zero_copy_batch=False)
        masks = torch.from_numpy(masks).to(self.device)
        with torch.no_grad(), autocast(self.device, self.amp):
            dets = self.model.predict(frames, masks, pre_nms_thresh=self.pre_nms_thresh,
                                      pre_nms_topk=self.pre_nms_topk)
        for row, d in zip(rows, dets, strict=True):
            m = len(d)
            out["segments"][row, :m] = d.segments.numpy()
            out["scores"][row, :m] = d.scores.numpy()
            out["labels"][row, :m] = d.labels.numpy()
            out["count"][row] = m
        return out


def predict_resources(cfg: Config, cluster_gpus: float, actors: int | None) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor): one GPU each when runtime.use_gpu and GPUs exist."""
    use_gpu = bool(cfg.runtime.use_gpu and cluster_gpus >= 1)
    if actors is None:
        actors = int(cluster_gpus) if use_gpu else 1
    if actors < 1:
        raise DetectInputError(f"--predict-actors {actors}: expected >= 1")
    return actors, (1.0 if use_gpu else 0.0), max(cfg.runtime.cpus_per_worker, 0.0 if use_gpu else 1.0)


def build_dataset(cfg: Config, records: list[VideoRecord], state_ref: Any, actors: int, gpus: float,
                  cpus: float):
    """Windows -> decoded clips (the validation dataset) -> per-window detections (fixed shapes)."""
    from ray.data import ActorPoolStrategy

    from pipelines.data import test_dataset

    inf = cfg.model.inference
    return test_dataset(cfg, records).map_batches(
        Predict,
        fn_constructor_kwargs={"state": state_ref, "pre_nms_thresh": inf.pre_nms_thresh,
                               "pre_nms_topk": inf.pre_nms_topk, "amp": cfg.train.amp,
                               "threads": 0 if gpus else max(1, int(cpus))},
        batch_size=cfg.train.val_batch_size,
        batch_format="numpy",
        # Ray's zero-copy batches are read-only views, which torch.from_numpy warns about (it cannot
        # mark a tensor read-only); a writable copy of the window costs a memcpy next to the model.
        zero_copy_batch=False,
        compute=ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=cpus,
    )


# ---------------------------------------------------------------- per-video merge on the driver


@dataclass
class _Window:
    start: int
    dets: Detections
    meta: dict[str, Any]


def iter_windows(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[int, _Window]]:
    """(video index, window) per row of the Predict output, detections cut back to their count."""
    for batch in batches:
        for i in range(len(batch["count"])):
            m = int(batch["count"][i])
            dets = Detections(torch.from_numpy(batch["segments"][i, :m].copy()),
                              torch.from_numpy(batch["scores"][i, :m].copy()),
                              torch.from_numpy(batch["labels"][i, :m].copy()))
            meta = {key: batch[key][i] for key in PASSTHROUGH}
            yield int(meta["video_index"]), _Window(int(meta["window_start_frame"]), dets, meta)


def merge_one(index: int, windows: list[_Window], records: list[VideoRecord], class_names: list[str],
              inference) -> list[dict]:
    """One video's windows (sorted by start, for a deterministic merge) through WindowCollector."""
    windows = sorted(windows, key=lambda w: w.start)
    collector = WindowCollector()
    batch = {key: [w.meta[key] for w in windows] for key in PASSTHROUGH}
    collector.add_batch([w.dets for w in windows], batch)
    return collector.results(records, class_names, inference)["results"][records[index].video_id]


def _first_arrival(batches: Iterator[dict[str, np.ndarray]], marks: list[tuple[float, int]], bar=None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Pass batches through, noting (time, rows) of the first one for the throughput stats and
    moving the progress bar by the windows that arrived."""
    done = 0
    for batch in batches:
        if not marks:
            marks.append((time.perf_counter(), len(batch["count"])))
        done += len(batch["count"])
        if bar is not None:
            bar.update(done)
        yield batch


def decode_failure_message(record: VideoRecord, cfg: Config, start_frame: int) -> str:
    """The decoder's own message for a window that failed inside a decode actor (re-read here once)."""
    d = cfg.data
    for plan in sliding_windows(record, d.window_size, d.frame_stride, d.test_window_overlap):
        if plan.window_start_frame == start_frame:
            try:
                read_frames(record.path, plan.frame_indices, num_threads=d.decode_threads)
            except VideoDecodeError as exc:
                return str(exc)
            break
    return f"{record.path}: window at frame {start_frame} failed to decode in a decode actor (see its log)"


def collect(batches: Iterator[dict[str, np.ndarray]], records: list[VideoRecord], class_names: list[str],
            cfg: Config, inference) -> tuple[dict[str, list[dict]], dict[str, str], int]:
    """Merge each video as soon as all its windows arrived; returns (results, errors, windows seen)."""
    d = cfg.data
    expected = [count_windows(r, d) for r in records]
    pending: dict[int, list[_Window]] = defaultdict(list)
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    seen = 0
    for index, window in iter_windows(batches):
        seen += 1
        pending[index].append(window)
        if len(pending[index]) < expected[index]:
            continue
        windows = pending.pop(index)
        failed = [w.start for w in windows if not bool(w.meta["valid"])]
        record = records[index]
        if failed:
            errors[record.video_id] = (f"{decode_failure_message(record, cfg, min(failed))} "
                                       f"({len(failed)} of {len(windows)} windows failed)")
        else:
            results[record.video_id] = merge_one(index, windows, records, class_names, inference)
    for index, windows in pending.items():  # cannot happen unless rows were lost on the way
        errors[records[index].video_id] = f"only {len(windows)} of {expected[index]} windows came back"
    return results, errors, seen


# ---------------------------------------------------------------- plots and the whole run


def ground_truth_for_plots(annotations: str) -> dict[str, list[dict]]:
    """Every video of the annotation file (all subsets) -> its GT events."""
    try:
        data = json.loads(Path(annotations).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationInputError(f"--annotations {annotations}: cannot read it as json ({exc})") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise EvaluationInputError(f"{annotations}: missing object 'database' (expected the THUMOS layout)")
    subsets = {str(v.get("subset")) for v in database.values() if isinstance(v, dict)}
    return load_ground_truth(annotations, sorted(subsets))


def write_plots(plot_dir: str | Path, records: list[VideoRecord], results: dict[str, list[dict]],
                class_names: list[str], gt: dict[str, list[dict]] | None, min_score: float) -> list[Path]:
    from adatad.visualize import plot_timeline

    written = []
    for record in records:
        if record.video_id not in results:
            continue
        events = None if gt is None else gt.get(record.video_id)
        if events is not None:
            events = [e for e in events if e["label"] in class_names]
        written.append(plot_timeline(Path(plot_dir) / f"{record.video_id}.png", record.video_id, record.duration,
                                     class_names, results[record.video_id], events, min_score))
    return written


@dataclass
class DetectPlan:
    """Everything checked before Ray starts: a bad input fails in a second with one line."""

    checkpoint: Path
    state: dict[str, Any]  # `TrainedModel.state`: the chosen weights, config and class names
    cfg: Config
    inference: Any  # adatad.config.InferenceConfig with --min-score / --top-k applied
    class_names: list[str]
    class_source: str
    ground_truth: dict[str, list[dict]] | None
    paths: list[Path]


def plan_detection(args: argparse.Namespace) -> DetectPlan:
    from adatad.models.build import model_from_checkpoint

    base = load_config(args.config) if args.config else None  # an OpenTAD file's architecture
    try:
        file = read_trained(args.checkpoint, base, use_ema=not args.no_ema)
        state = file.state
        stored_names = list(state.get("class_names") or [])
        _, trained = model_from_checkpoint(state)  # fails here, not in an actor, if the weights do not fit
    except (TrainedWeightsError, ValueError) as exc:
        raise DetectInputError(f"--checkpoint: {exc}") from None
    checkpoint = file.path
    cfg = detection_config(trained, args.config, args.overrides)
    inference = dataclasses.replace(
        cfg.model.inference,
        min_score=cfg.model.inference.min_score if args.min_score is None else args.min_score,
        max_seg_num=cfg.model.inference.max_seg_num if args.top_k is None else args.top_k,
    )
    if inference.max_seg_num < 1:
        raise DetectInputError(f"--top-k {args.top_k}: expected >= 1")
    if args.decode_actors is not None:
        if args.decode_actors < 1:
            raise DetectInputError(f"--decode-actors {args.decode_actors}: expected >= 1")
        cfg.runtime.val_decode_actors = args.decode_actors
    if stored_names and not args.class_map:
        class_names = stored_names
        source = "the checkpoint" if file.kind == "adatad" else f"the config's {cfg.data.class_map_file}"
    else:
        class_names, source = resolve_class_names(cfg, args.class_map, args.annotations)
    gt = ground_truth_for_plots(args.annotations) if args.annotations and args.plot_dir else None
    return DetectPlan(checkpoint, state, cfg, inference, class_names, source, gt, list_videos(args.videos))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole detection; Ray is connected here unless it already is. Returns the written json plus
    `stats` (videos, windows, seconds, windows_per_s, first_batch_s, steady_windows_per_s) and `plots`."""
    plan = plan_detection(args)
    log = RunLog(Path(args.out).with_suffix(".log"), verbose=args.verbose).attach()
    try:
        return _detect(args, plan, Console(log, quiet=args.quiet), log)
    finally:
        log.close()


def _detect(args: argparse.Namespace, plan: DetectPlan, console: Console, log: RunLog) -> dict[str, Any]:
    import ray

    from pipelines.cluster import connect

    cfg, state, class_names, paths = plan.cfg, plan.state, plan.class_names, plan.paths
    console.say(f"checkpoint {plan.checkpoint}; {len(class_names)} classes from {plan.class_source}; "
                f"{len(paths)} videos; full log: {log.path}")
    resources = connect(args.cluster, cfg.runtime.local_num_cpus, None, cfg.runtime.object_store_memory_mb)
    log.attach_ray()
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = args.verbose
    start = time.perf_counter()
    arrival: list[tuple[float, int]] = []
    try:
        records, errors = probe_records(paths, cfg.runtime.decode_actor_cpus)
        results: dict[str, list[dict]] = {}
        windows = 0
        if records:
            actors, gpus, cpus = predict_resources(cfg, resources.get("GPU", 0.0), args.predict_actors)
            needed = actors * cpus + cfg.runtime.val_decode_actors * cfg.runtime.decode_actor_cpus
            if needed > resources.get("CPU", 0.0):
                console.warn(f"the actors ask for {needed:g} CPUs but the cluster has {resources.get('CPU', 0):g}; "
                             "they wait for an autoscaler (lower runtime.cpus_per_worker, --decode-actors or "
                             "runtime.decode_actor_cpus otherwise)")
            total = sum(count_windows(r, cfg.data) for r in records)
            ds = build_dataset(cfg, records, ray.put(state), actors, gpus, cpus)
            bar = console.progress(total, "detect")
            batches = _first_arrival(ds.iter_batches(batch_size=None, batch_format="numpy"), arrival, bar)
            try:
                results, decode_errors, windows = collect(batches, records, class_names, cfg, plan.inference)
            finally:
                bar.close()
            errors.update(decode_errors)
    finally:
        context.enable_progress_bars = bars
    seconds = time.perf_counter() - start
    output = {"results": dict(sorted(results.items())), "errors": dict(sorted(errors.items()))}
    atomic_write_text(args.out, json.dumps(output) + "\n")
    plots = write_plots(args.plot_dir, records, results, class_names, plan.ground_truth, args.plot_min_score) \
        if args.plot_dir else []
    stats = {"videos": len(paths), "failed": len(errors), "windows": windows, "seconds": round(seconds, 3),
             "windows_per_s": round(windows / seconds, 3) if seconds > 0 else 0.0}
    if arrival:  # start-up (probe, actors, model load, first batch) vs the stream after the first batch
        first_s, first_n = arrival[0][0] - start, arrival[0][1]
        stats["first_batch_s"] = round(first_s, 3)
        if windows > first_n and seconds > first_s:
            stats["steady_windows_per_s"] = round((windows - first_n) / (seconds - first_s), 3)
    console.say(f"{len(results)} videos detected, {len(errors)} failed; {windows} windows in {seconds:.1f} s "
                f"({stats['windows_per_s']:.2f} windows/s); wrote {args.out}"
                + (f" and {len(plots)} timelines in {args.plot_dir}" if plots else ""))
    for vid, message in sorted(errors.items()):
        print(f"failed: {vid}: {message}", file=sys.stderr)
    return {**output, "stats": stats, "plots": [str(p) for p in plots]}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.cluster import ClusterError

    try:
        output = run(args)
    except (DetectInputError, ConfigError, AnnotationError, EvaluationInputError, ClusterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. --out or --plot-dir in an unwritable place
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0 if output["results"] or not output["errors"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
