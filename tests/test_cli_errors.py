"""Bad input to `pipelines/train.py`: exit status 2 and one clear line on stderr, before Ray starts.

A few cases run the real command in a subprocess (interpreter start, argument parsing, exit
status, no traceback); the others call `main()` in-process, which is the same code path minus
the interpreter start, to keep the file fast.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adatad.engine.state import read_checkpoint
from adatad.models.videomae import VideoMAEBackbone
from adatad.models.weights import WeightsError
from pipelines import train
from pipelines.cli.hints import python_command
from pipelines.runs.preflight import check_initial_weights
from tests.conftest import REPO, tiny_config, tiny_overrides


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _cli(args: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "pipelines/train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - start


def _one_line_error(stderr: str) -> str:
    """The error line; fails unless stderr is exactly one line and holds no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = train.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def tiny_args(tiny_data: Path, tmp_path: Path) -> list[str]:
    return _sets(tiny_overrides(tiny_data, tmp_path / "runs", tmp_path / "mlflow.db"))


# ------------------------------------------------------------------ real command lines


def test_cli_config_errors_exit_2_with_one_line() -> None:
    proc, _ = _cli(["--set", "train.lrr=1"])
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == "error: unknown key 'train.lrr' (did you mean 'train.lr'?)"
    proc, _ = _cli(["--set", "train.lr"])
    assert proc.returncode == 2
    assert _one_line_error(proc.stderr) == "error: override 'train.lr': expected KEY.PATH=VALUE, e.g. train.lr=2e-4"


def test_cli_missing_backbone_checkpoint_fails_before_ray(tiny_args: list[str]) -> None:
    proc, _ = _cli([*tiny_args, "--set", "model.backbone.checkpoint=/nonexistent.pth"])
    assert proc.returncode == 2
    py = os.path.relpath(sys.executable, REPO)  # the interpreter as the command prints it (pipelines/cli/hints.py)
    py = sys.executable if py.startswith("..") else py
    assert _one_line_error(proc.stderr) == (
        "error: model.backbone.checkpoint: VideoMAE checkpoint not found: /nonexistent.pth (no published source is "
        f"known for this file name; {py} pipelines/fetch_weights.py --list shows the known ones)")
    assert "Ray cluster" not in proc.stdout  # failed before connecting


def test_a_missing_published_backbone_names_the_command_that_fetches_it(tiny_args, tmp_path, capsys) -> None:
    path = tmp_path / "pretrained" / "vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"
    rc, out, err = _main([*tiny_args, "--set", f"model.backbone.checkpoint={path}", "--skip-data-check"], capsys)
    assert rc == 2 and "local Ray" not in out
    assert _one_line_error(err) == (
        f"error: model.backbone.checkpoint: VideoMAE checkpoint not found: {path}; fetch it with: {python_command()} "
        f"pipelines/fetch_weights.py --config configs/synthetic.yaml --set model.backbone.checkpoint={path}")


def test_cli_unreachable_cluster_fails_in_seconds(tiny_args: list[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"
    proc, elapsed = _cli([*tiny_args, "--cluster", address, "--skip-data-check"])
    assert proc.returncode == 2
    line = _one_line_error(proc.stderr)
    assert line == (f"error: --cluster {address}: no Ray cluster answers at that address within 3 s (check "
                    "host/port, firewall, and that `ray start --head` runs there)")
    assert elapsed < 15, elapsed


# ------------------------------------------------------------------ the same main(), in-process


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.epochs=abc"], "error: train.epochs: expected an integer, got 'abc'"),
        (["--set", "train.lr=-1"], "error: train.lr: -1.0 is invalid, expected >= 0"),
        (["--set", "data.flip_ratio=[1, 2"], "error: override 'data.flip_ratio=[1, 2': value is not valid YAML"),
        (["--profile", "huge"], "error: profile 'huge' does not exist (known profiles: 32gb, 64gb"),
        (["--config", "/nonexistent.yaml"], "error: config file /nonexistent.yaml does not exist"),
        (["--storage", "relative/runs"], "error: --storage relative/runs: expected an absolute path"),
    ],
)
def test_config_and_usage_errors(argv: list[str], message: str, capsys) -> None:
    rc, out, err = _main(argv, capsys)
    assert rc == 2
    assert _one_line_error(err).startswith(message), err


def test_resume_errors(tiny_args: list[str], tmp_path: Path, capsys) -> None:
    rc, _, err = _main([*tiny_args, "--resume"], capsys)
    assert rc == 2 and _one_line_error(err) == f"error: --resume: no run to resume in {tmp_path / 'runs'}"
    rc, _, err = _main([*tiny_args, "--resume", "--run-name", "nope"], capsys)
    assert rc == 2
    assert _one_line_error(err) == f"error: --resume: {tmp_path / 'runs' / 'nope'} has no config.yaml; nothing to resume"
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    rc, _, err = _main([*tiny_args, "--run-name", "taken"], capsys)
    assert rc == 2 and "exists: pass --resume to continue it" in _one_line_error(err)


def test_annotation_errors(tiny_data: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    args = _sets(tiny_overrides(data, tmp_path / "runs", tmp_path / "mlflow.db"))
    anno = data / "annotations.json"
    good = json.loads(anno.read_text())

    anno.write_text('{"database": {\n  "v": {"subset": "training",, }}}')
    rc, _, err = _main(args, capsys)
    assert rc == 2
    assert _one_line_error(err) == f"error: {anno}: invalid json at line 2 column 30: Expecting property name " \
                                   "enclosed in double quotes"

    vid = next(v for v, info in good["database"].items() if info["subset"] == "training")
    for change, message in [
        (lambda d: d[vid].pop("duration"), f"video '{vid}': missing field 'duration'"),
        (lambda d: d[vid]["annotations"][0].update(segment=[5.0, 2.0]),
         f"video '{vid}': annotations[0]: field 'segment': start 5.0 >= end 2.0"),
        (lambda d: d[vid]["annotations"][0].update(label="Juggling"),
         f"video '{vid}': annotations[0]: field 'label': 'Juggling' is not in the class map"),
        (lambda d: [info.update(subset="validation") for info in d.values()],
         "no video in subset ['training']; subsets present: ['validation']"),
    ]:
        broken = json.loads(json.dumps(good))
        change(broken["database"])
        anno.write_text(json.dumps(broken))
        rc, _, err = _main(args, capsys)
        assert rc == 2
        assert _one_line_error(err).startswith(f"error: {anno}: {message}"), err


def test_data_check_lists_every_bad_video_before_training(tiny_data: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    videos = sorted((data / "videos").glob("*.mp4"))
    videos[0].unlink()
    videos[-1].write_bytes(b"")
    rc, out, err = _main(_sets(tiny_overrides(data, tmp_path / "runs", tmp_path / "mlflow.db")), capsys)
    assert rc == 2 and "Ray cluster" not in out
    lines = err.splitlines()
    assert lines[0] == "data check: 2 problem(s) in 9 video(s):"
    assert sorted(lines[1:]) == [f"  {videos[0]}: file not found", f"  {videos[-1]}: file is empty (0 bytes)"]


# ------------------------------------------------------------------ checkpoints


class NotAWeight:
    """A pickled object of this class must be refused by weights_only=True loading."""


def _tiny_backbone(**changes) -> VideoMAEBackbone:
    kwargs = dict(embed_dim=64, depth=2, num_heads=2, adapter_type=None)
    return VideoMAEBackbone(**{**kwargs, **changes})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    files = {name: root / f"{name}.pth" for name in ("good", "text", "pickle", "narrow", "shallow")}
    torch.save({"model": _tiny_backbone().state_dict()}, files["good"])
    files["text"].write_text("not a checkpoint\n")
    torch.save({"model": NotAWeight()}, files["pickle"])
    torch.save(_tiny_backbone(embed_dim=32).state_dict(), files["narrow"])
    shallow = _tiny_backbone(depth=1).state_dict()
    shallow["blocks.7.attn.extra"] = torch.zeros(1)
    torch.save(shallow, files["shallow"])
    return files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "VideoMAE checkpoint not found: {path}"),
        ("text", "{path} is not a loadable PyTorch checkpoint: not a zip archive: truncated, corrupt or another "
                 "format"),
        ("pickle", "{path} is not a loadable PyTorch checkpoint: weights_only refused it: Unsupported global"),
        ("narrow", "{path} does not fit this VideoMAE architecture: 28 of another shape [patch_embed.proj.weight: "
                   "file [32, 3, 2, 16, 16] vs model [64, 3, 2, 16, 16]"),
        ("shallow", "{path} does not fit this VideoMAE architecture: 13 missing [blocks.1.norm1.weight"),
    ],
)
def test_bad_backbone_checkpoint_fails_before_ray(name: str, message: str, checkpoints, tiny_args, tmp_path,
                                                  capsys) -> None:
    path = checkpoints.get(name, tmp_path / "missing.pth")
    rc, out, err = _main([*tiny_args, "--set", f"model.backbone.checkpoint={path}", "--skip-data-check"], capsys)
    assert rc == 2 and "local Ray" not in out
    line = _one_line_error(err)
    assert line.startswith("error: model.backbone.checkpoint: " + message.format(path=path)), line
    if name == "shallow":
        assert "unexpected [blocks.7.attn.extra]" in line


def test_good_backbone_checkpoint_passes_the_early_check(checkpoints, tiny_data, tmp_path) -> None:
    cfg = tiny_config(tiny_data, tmp_path / "runs", tmp_path / "db",
                      extra=[f"model.backbone.checkpoint={checkpoints['good']}"])
    check_initial_weights(cfg)  # raises on any problem


def test_bad_init_from_fails_before_ray(checkpoints, tiny_args, tmp_path, capsys) -> None:
    """model.init_from is read on the driver first: a VideoMAE file there is not a trained detector."""
    rc, out, err = _main([*tiny_args, "--set", f"model.init_from={checkpoints['good']}", "--skip-data-check"],
                         capsys)
    assert rc == 2 and "local Ray" not in out
    line = _one_line_error(err)
    assert line.startswith(f"error: model.init_from: {checkpoints['good']}: neither an adatad checkpoint"), line
    assert not list((tmp_path).glob("**/train.log"))  # no run folder for a run that never started


def test_training_checkpoint_reader_refuses_bad_files(checkpoints, tmp_path) -> None:
    with pytest.raises(WeightsError, match=f"checkpoint {tmp_path / 'none.pt'} does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    for name in ("text", "pickle"):
        with pytest.raises(WeightsError, match="not an adatad training checkpoint") as info:
            read_checkpoint(checkpoints[name])
        assert "\n" not in str(info.value), str(info.value)  # one line, not PyTorch's advice page
    with pytest.raises(WeightsError, match="expected keys 'model' and 'config'"):
        read_checkpoint(checkpoints["narrow"])


# ------------------------------------------------------------------ cluster


def test_cluster_auto_without_a_cluster_says_how_to_start_one(monkeypatch) -> None:
    # Other Ray instances may run on this machine, so "none running" is simulated at ray.init.
    from pipelines.ray_layer import cluster

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", no_cluster)
    with pytest.raises(cluster.ClusterError) as info:
        cluster.connect("auto")
    assert str(info.value) == ("--cluster auto: no running Ray cluster found (start one with "
                               "`ray start --head --num-cpus=N`, or use --cluster local)")
    with pytest.raises(cluster.ClusterError, match="expected local, auto, host:port or ray://host:port"):
        cluster.connect("nonsense")


def test_a_storage_uri_that_cannot_be_used_is_one_line_before_ray(tiny_args, monkeypatch, capsys) -> None:
    """A run folder may be at a URI (tests/test_object_storage.py); one that cannot be reached, or whose
    scheme nothing here resolves, is refused in one line before Ray starts."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    rc, out, err = _main([*tiny_args, "--storage", "s3://bucket/runs"], capsys)
    assert rc == 2 and "local Ray" not in out
    assert _one_line_error(err) == ("error: --storage s3://bucket/runs: cannot reach http://127.0.0.1:9 (check "
                                    "AWS_ENDPOINT_URL and the network)")
    rc, _, err = _main([*tiny_args, "--set", "runtime.storage_path=foo://bucket/runs"], capsys)
    assert rc == 2 and _one_line_error(err) == ("error: runtime.storage_path foo://bucket/runs: no filesystem for "
                                                "this URI (Unrecognized filesystem type in URI: foo://bucket/runs)")


def test_a_missing_video_classifier_fails_before_ray(tiny_args, tmp_path, capsys) -> None:
    missing = tmp_path / "classifier.json"
    one_class = ["model.head.num_classes=1", "data.class_agnostic=true", "model.inference.multiclass_nms=false",
                 f"model.inference.external_classifier={missing}"]
    rc, out, err = _main([*tiny_args, "--skip-data-check", *_sets(one_class)], capsys)
    assert rc == 2 and "local Ray" not in out
    assert _one_line_error(err) == (f"error: model.inference.external_classifier: {missing}: video classifier file "
                                    "(model.inference.external_classifier) does not exist")
