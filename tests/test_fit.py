"""The whole fit without Ray (`adatad.engine.fit`): three epochs of the demo's model with validation,
interrupted after epoch 1 and resumed from its checkpoint, in a process where `import ray` fails; and
two epochs of the same model with another `train.seed`.

What it proves: the library trains, validates on schedule, keeps the best mAP and the history, and
continues a run from a checkpoint exactly (the resumed epochs equal an uninterrupted run's), from
plain lists of batches, with nothing of Ray importable: what a notebook or the DataLoader baseline needs.
And runs repeat: the batches are made as the Ray Data path makes them (each epoch's video order and
each clip's window and augmentation from (seed, epoch, video), `adatad/data/clips.py`), the second
run of the seed with its own loader decoding the clips in the opposite order, as other decode actors
at other times would; its losses and mAP equal the first run's to the last bit on CPU, and another
seed's differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO

NO_RAY = """
import importlib.abc, sys
class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is blocked in this test")
        return None
sys.meta_path.insert(0, NoRay())
sys.path.insert(0, {repo!r})
from tests.test_fit import scenario
scenario({data!r}, {out!r})
"""


class Interrupted(RuntimeError):
    """Stands for a preempted process: raised once epoch 1's checkpoint is written."""


def _batches(examples: list[dict], size: int) -> list:
    import torch

    from adatad.data.batch import collate_examples

    out = []
    for i in range(0, len(examples), size):
        stacked = collate_examples(examples[i:i + size])
        stacked.pop("video_id", None)
        out.append({k: torch.from_numpy(np.asarray(v)) for k, v in stacked.items()})
    return out


def scenario(data: str, out: str) -> None:
    """Run in the subprocess: an uninterrupted 3-epoch fit and an interrupted + resumed one."""
    import torch

    from adatad.data.clips import ClipLoader, clip_rng, epoch_order, record_to_row
    from adatad.data.splits import load_splits
    from adatad.engine.fit import FitHooks, fit
    from adatad.engine.state import build_training_state, read_checkpoint, save_checkpoint
    from tests.conftest import tiny_config

    torch.set_num_threads(1)
    work = Path(out).parent
    cfg = tiny_config(Path(data), work / "runs", work / "mlflow.db", epochs=3,
                      extra=["train.val_interval=2", "evaluation.tiou_thresholds=[0.1, 0.5]"])
    train_records, test_records, class_names = load_splits(cfg)
    test_loader = ClipLoader(cfg.data, train=False)
    windows = [w for i, r in enumerate(test_records) for w in test_loader.iter_video_windows(record_to_row(r, i))]
    test = _batches(windows, 2)
    rows = [record_to_row(r, i) for i, r in enumerate(train_records)]

    def batches_of(seed: int, backwards: bool = False):
        """A run's training batches: its own loader (its own decode actor), clips from (seed, epoch, video)."""
        loader = ClipLoader(cfg.data, train=True)

        def train_batches(epoch: int) -> list:
            order = epoch_order(seed, epoch, len(rows))
            clips = {v: loader.load(rows[v], clip_rng(seed, epoch, v)) for v in (order[::-1] if backwards else order)}
            return _batches([clips[v] for v in order], 2)
        return train_batches

    train_batches = batches_of(cfg.train.seed)
    paths = [r.path for r in train_records]
    device = torch.device("cpu")
    steps = len(train_batches(0))

    def new_state(seed: int = cfg.train.seed):
        torch.manual_seed(seed)  # the model's initial weights, as the Ray worker seeds them (rank 0)
        return build_training_state(cfg, steps_per_epoch=steps, device=device)

    events: list = []
    whole = fit(new_state(), cfg, train_batches, lambda e: test, device, train_paths=paths,
                test_records=test_records, class_names=class_names,
                hooks=FitHooks(on_epoch_start=lambda e: events.append(("start", e)),
                               on_val_windows=lambda e, n: events.append(("val", e, n)) if n == len(windows) else None,
                               on_epoch_end=lambda done: events.append(("end", done.epoch, done.results is not None))))

    state = new_state()
    checkpoint = work / "checkpoint"

    def stop_after_epoch_1(done) -> None:
        save_checkpoint(state, cfg, checkpoint, class_names)
        if done.epoch == 1:
            raise Interrupted

    again = batches_of(cfg.train.seed, backwards=True)  # the same seed, decoded by another "actor"
    try:
        fit(state, cfg, again, lambda e: test, device, train_paths=paths, test_records=test_records,
            class_names=class_names, hooks=FitHooks(on_epoch_end=stop_after_epoch_1))
    except Interrupted:
        pass
    resumed_state = new_state()
    resumed_state.load_state_dict(read_checkpoint(checkpoint))
    resumed_from = resumed_state.epoch
    resumed = fit(resumed_state, cfg, again, lambda e: test, device, train_paths=paths,
                  test_records=test_records, class_names=class_names)

    other_seed = cfg.train.seed + 1
    other = new_state(other_seed)

    def stop_after_two(done) -> None:
        if done.epoch == 1:
            raise Interrupted

    try:
        fit(other, cfg, batches_of(other_seed), lambda e: test, device, train_paths=paths,
            test_records=test_records, class_names=class_names, hooks=FitHooks(on_epoch_end=stop_after_two))
    except Interrupted:
        pass
    Path(out).write_text(json.dumps({"whole": whole, "resumed": resumed, "resumed_from": resumed_from,
                                     "other_seed": other.history, "events": events, "windows": len(windows),
                                     "ray": "ray" in sys.modules}))


def test_three_epochs_with_validation_and_a_resume_without_ray(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit.json"
    code = NO_RAY.format(repo=str(REPO), data=str(tiny_data), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["ray"] is False
    whole, resumed = got["whole"], got["resumed"]
    assert [h["epoch"] for h in whole] == [h["epoch"] for h in resumed] == [0, 1, 2]
    assert got["resumed_from"] == 1
    # val_interval 2: epoch 1 validates, and the last epoch always does
    assert [("average_mAP" in h) for h in whole] == [False, True, True]
    assert got["events"] == [["start", 0], ["end", 0, False], ["start", 1], ["val", 1, got["windows"]],
                             ["end", 1, True], ["start", 2], ["val", 2, got["windows"]], ["end", 2, True]]
    # Only what an epoch measured: no mAP (and no best so far) before the first validation, no placeholder
    assert not {"best_average_mAP", "val_score", "val_time_s"} & set(whole[0])
    best = [h.get("best_average_mAP") for h in whole]
    assert best[1] == whole[1]["average_mAP"] and best[2] == max(best[1], whole[2]["average_mAP"])
    counts = ("steps", "decode_failures", "clips_lost", "clips_repeated")
    assert all(type(h[k]) is int for h in whole for k in counts)  # integers in history.json
    for a, b in zip(whole, resumed, strict=True):  # the second run of the seed, resumed, is the first, bit for bit
        for key in ("loss", "cls_loss", "reg_loss", "lr_base", "average_mAP", "mAP_0.1", "mAP_0.5",
                    "best_average_mAP", "clips_lost"):
            assert (key in a) == (key in b) and a.get(key) == b.get(key), (a["epoch"], key)
    other = got["other_seed"]  # another train.seed: other initial weights, other clips
    assert [h["epoch"] for h in other] == [0, 1]
    assert all(o["loss"] != w["loss"] for o, w in zip(other, whole[:2], strict=True))
    assert all(h["clips_lost"] == 0 and h["decode_failures"] == 0 for h in whole)
