"""Runs and data on object storage, against a real S3 endpoint on this machine (moto's server, tests/s3_server.py).

Every location a user gives may be a URI: `--storage`, `--resume`, `test.py` / `detect.py --checkpoint`
and their outputs, the data keys, the frame store and the initial weights; a bad bucket, credentials
or endpoint is one line before anything starts; an outage of the endpoint is ridden out with one
warning, one that lasts gives up. The multi-node run with no shared folder: tests/test_cluster.py.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.locations import LocationError, ObjectPath, as_path, is_uri
from adatad.retry import StorageUnavailable, retrying, set_window
from tests.conftest import s3_overrides, tiny_overrides
from tests.run_watch import wait_for


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def s3_data(s3, tiny_data: Path) -> str:
    """The tiny data set (annotations, class map, videos) in a bucket of its own."""
    return s3.upload_tree(tiny_data, s3.bucket("adatad-data") + "/tiny")


# ------------------------------------------------------------------ locations


def test_a_location_at_a_uri_reads_and_writes_as_a_path(s3) -> None:
    from adatad.atomic import atomic_write_text

    root = as_path(s3.bucket("adatad-paths") + "/a")
    assert isinstance(root, ObjectPath) and str(root) == "s3://adatad-paths/a"
    written = atomic_write_text(root / "run" / "config.yaml", "name: x\n")  # one PUT: whole or nothing
    assert written == root / "run" / "config.yaml" and written.read_text() == "name: x\n"
    assert (root / "run").is_dir() and written.is_file() and written.stat().st_size == 8
    assert [p.name for p in root.glob("*/config.yaml")] == ["config.yaml"]
    assert written.parent == root / "run" and written.stem == "config" and written.suffix == ".yaml"
    with pytest.raises(FileNotFoundError, match="s3://adatad-paths/a/nothing: not found"):
        (root / "nothing").read_text()
    with pytest.raises(TypeError):
        open(written)  # noqa: SIM115 - a URI is never taken for a local path
    assert [is_uri(x) for x in ("s3://b/k", "gs://b/k", "file:///tmp/x", "/tmp/x", "runs")] == [
        True, True, False, False, False]
    assert as_path("file:///tmp/x") == Path("/tmp/x")


def test_a_log_at_a_uri_continues_the_remote_record_not_a_stale_local_mirror(s3, tmp_path: Path) -> None:
    """The driver writes a URI run's log to a mirror under the temp folder named after the URI, which an
    earlier run of the same name may have left (its bucket folder since removed, another endpoint)."""
    from pipelines.runs.uploads import adopt_remote_log

    remote, local = as_path(s3.bucket("adatad-logs") + "/run/train.log"), tmp_path / "mirror" / "train.log"
    local.parent.mkdir()
    local.write_text("an earlier run's line\n")
    adopt_remote_log(local, remote)  # a new run: no remote log, so the mirror's lines are not this run's
    assert not local.exists()
    remote.write_text("line 1\n")
    local.write_text("line 1\nline 2 (written before the kill, not uploaded yet)\n")
    adopt_remote_log(local, remote)  # resumed on the same machine: the mirror extends the record, kept
    assert local.read_text().endswith("not uploaded yet)\n")
    remote.write_text("line 1\nline 2 (from a resume on another machine)\n")
    adopt_remote_log(local, remote)  # the record went on elsewhere: it is taken whole
    assert local.read_text() == remote.read_text()
    local.unlink()
    adopt_remote_log(local, remote)  # resumed on a machine without a mirror: fetched
    assert local.read_text() == remote.read_text() and [p.name for p in local.parent.iterdir()] == ["train.log"]


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials", "unreachable endpoint"])
def test_bad_storage_is_one_line_before_anything_starts(case: str, s3, s3_data: str, tmp_path: Path,
                                                        monkeypatch, capsys) -> None:
    from pipelines import train

    bucket = s3.bucket("adatad-bad")
    storage = "s3://no-such-bucket/runs" if case == "missing bucket" else bucket + "/runs"
    before = s3.keys(bucket)
    started = time.monotonic()
    with monkeypatch.context() as patch, s3.credentials_checked() if case == "wrong credentials" else _nothing():
        if case == "unreachable endpoint":
            patch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        rc = train.main([*sets(s3_overrides(s3_data, storage, tmp_path / "mlflow.db")), "--run-name", "bad"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("error")] == [{
        "missing bucket": f"error: runtime.storage_path {storage}: bucket 'no-such-bucket' does not exist at {s3.url}",
        "wrong credentials": f"error: runtime.storage_path {storage}: access denied (check AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket's permissions)",
        "unreachable endpoint": f"error: runtime.storage_path {storage}: cannot reach http://127.0.0.1:9 (check "
                                "AWS_ENDPOINT_URL and the network)",
    }[case]]
    assert time.monotonic() - started < 30  # not after minutes of retries
    assert s3.keys(bucket) == before  # nothing written


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_bad_locations_of_the_other_commands_are_one_line(s3, s3_data: str, tmp_path: Path, capsys) -> None:
    from pipelines import detect, test, train

    missing = f"{s3_data}/nothing.json"
    overrides = [*s3_overrides(s3_data, str(tmp_path / "runs"), tmp_path / "mlflow.db"),
                 f"data.annotation_file={missing}"]
    assert train.main([*sets(overrides), "--run-name", "x"]) == 2
    assert _errors(capsys) == [f"error: data.annotation_file {missing}: not found"]
    assert test.main(["--checkpoint", "s3://no-such-bucket/runs/x"]) == 2
    assert _errors(capsys) == [f"error: --checkpoint s3://no-such-bucket/runs/x: bucket 'no-such-bucket' does not "
                               f"exist at {s3.url}"]
    assert detect.main(["--checkpoint", str(tmp_path / "x.pt"), "--videos", str(tmp_path),
                        "--out", "s3://no-such-bucket/d.json"]) == 2
    assert _errors(capsys) == [f"error: --out s3://no-such-bucket: bucket 'no-such-bucket' does not exist at {s3.url}"]
    assert not (tmp_path / "runs").exists()


def test_every_data_location_reads_from_the_object_store(s3, s3_data: str, tiny_data: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    from adatad.data import node_cache
    from adatad.data.frame_store.build import VideoToStore, build_entry
    from adatad.data.frame_store.check import check_store
    from adatad.data.frame_store.entry import EntryReader
    from adatad.data.frame_store.spec import entry_path, spec_for_config, write_manifest
    from adatad.data.splits import load_splits
    from adatad.data.video import VideoDecodeError, read_frames
    from adatad.data.video_files import list_videos
    from adatad.models.weights import read_torch_file

    monkeypatch.setattr(node_cache, "cache_dir", lambda: tmp_path / "cache")
    cfg = load_config(CONFIG_DIR / "synthetic.yaml", s3_overrides(s3_data, "runs", tmp_path / "m.db")
                      + [f"data.block_list={s3_data}/blocked.txt"])
    (tmp_path / "blocked.txt").write_text("video_test_0000003\n")
    as_path(f"{s3_data}/blocked.txt").upload(tmp_path / "blocked.txt")
    train, test, classes = load_splits(cfg)  # annotations, class map, block list and video folder at URIs
    local = load_config(CONFIG_DIR / "synthetic.yaml", tiny_overrides(tiny_data, tmp_path, tmp_path / "m.db"))
    local_train, local_test, local_classes = load_splits(local)
    assert classes == local_classes and [r.video_id for r in train] == [r.video_id for r in local_train]
    assert [r.video_id for r in test] == [r.video_id for r in local_test][:2]  # the third is blocked
    assert train[0].path == f"{s3_data}/videos/{Path(local_train[0].path).name}"

    indices = np.array([0, 40, 80, 300])
    assert np.array_equal(read_frames(train[0].path, indices), read_frames(local_train[0].path, indices))
    read_frames(train[0].path, indices)
    assert node_cache.stats["hits"] >= 1  # the second read decodes the node's copy
    as_path(f"{s3_data}/videos/empty.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=f"^{s3_data}/videos/empty.mp4: file is empty"):
        read_frames(f"{s3_data}/videos/empty.mp4", indices)
    with pytest.raises(VideoDecodeError, match=f"^{s3_data}/videos/none.mp4: file not found$"):
        read_frames(f"{s3_data}/videos/none.mp4", indices)
    assert [p.name for p in list_videos([f"{s3_data}/videos"])][:2] == ["empty.mp4", "video_test_0000001.mp4"]

    # a frame store at a URI (prepare_frames.py --store s3://...: each entry built here, uploaded whole):
    # checked from the entries' footers, windows read by byte ranges or from the node's cache
    spec = spec_for_config(cfg.data)
    store, remote = tmp_path / "frames", f"{s3_data}/frames"
    write_manifest(store, spec)
    write_manifest(remote, spec)
    r = local_train[1]
    assert build_entry(store, VideoToStore(r.video_id, r.path, r.num_frames), spec).error is None
    for r in train[:2]:  # from the videos in the bucket into the store in the bucket
        assert build_entry(remote, VideoToStore(r.video_id, r.path, r.num_frames), spec).error is None
    report = check_store(remote, train[:2], cfg.data)
    assert report.lines("fix") == [] and report.summary().startswith(f"frame store {remote}: all 2 videos")
    with EntryReader(entry_path(store, train[1].path)) as here:
        expected = here.read(indices[:3])
    for cached in (False, True):  # by byte ranges, or from the node's cache (data.cache_gb > 0)
        with EntryReader(entry_path(remote, train[1].path), cached=cached) as stored:
            assert np.array_equal(stored.read(indices[:3]), expected)

    # weights (model.backbone.checkpoint, model.init_from, --checkpoint) read whole into memory
    torch.save({"w": torch.arange(4.0)}, tmp_path / "w.pth")
    as_path(f"{s3_data}/w.pth").upload(tmp_path / "w.pth")
    assert torch.equal(read_torch_file(f"{s3_data}/w.pth")["w"], torch.arange(4.0))


# ------------------------------------------------------------------ outages


def test_an_outage_is_ridden_out_with_one_warning_and_a_lasting_one_gives_up(s3, caplog) -> None:
    target = as_path(s3.bucket("adatad-outage") + "/x.txt")
    target.write_text("kept")
    set_window(60)
    restart = threading.Timer(4.0, s3.start)  # longer than the S3 client's own few retries
    s3.stop()
    restart.start()
    with caplog.at_level(logging.WARNING, logger="adatad.storage"):
        assert target.read_text() == "kept"  # waited for the endpoint to come back
    restart.join()
    warnings = [r.getMessage() for r in caplog.records if "retrying for up to 60 s" in r.getMessage()]
    assert warnings == [f"reading {target}: cannot reach {s3.url} (check AWS_ENDPOINT_URL and the network); "
                        "retrying for up to 60 s"]
    set_window(1)
    try:
        with s3.outage(), pytest.raises(StorageUnavailable, match=r"still failing after 1 s \(runtime.storage_retry_s\)"):
            target.read_text()
    finally:
        set_window(120)
    with pytest.raises(LocationError, match="not found|access denied"), s3.credentials_checked():
        retrying(target.read_text, "x")  # not waited for: refused at once


def test_the_driver_warns_once_and_stops_a_run_whose_store_stays_away(s3, monkeypatch) -> None:
    from pipelines.runs import storage_watch

    stopped: list[str] = []
    monkeypatch.setattr(storage_watch, "stop_from_thread", stopped.append)
    warned: list[str] = []
    watch = storage_watch.StorageWatch([s3.bucket("adatad-watch") + "/runs", "/local/data"], 1.5, warned.append,
                                       every_s=0.2)
    try:
        with watch, s3.outage():
            wait_for(lambda: stopped, 20, "the watch to stop the run")
    finally:
        set_window(120)
    assert warned == [f"the object store ({s3.url}) does not answer; reads and writes are retried for up to 2 s "
                      "(runtime.storage_retry_s), then the run stops"]
    assert stopped[0].startswith("the object store did not answer for ") and watch.outage


def test_a_sweep_keeps_its_folder_at_a_uri(s3, tiny_data: Path, tmp_path: Path) -> None:
    """tune.py --storage s3://...: the sweep's folder (results, tune.log, the trials' run folders) and Tune's
    own state there, through the same filesystem as Ray Train's (`trainer.storage_arguments`)."""
    import pyarrow.fs as pafs

    from pipelines.ray_layer.sweeps import sweep_folder
    from pipelines.ray_layer.trainer import storage_arguments
    from pipelines.sweeps.spec import load_sweep

    storage = s3.bucket("adatad-sweeps") + "/sweeps"
    spec = load_sweep(CONFIG_DIR / "sweeps" / "batch_workers_synthetic.yaml")
    cfg = load_config(CONFIG_DIR / "synthetic.yaml", tiny_overrides(tiny_data, tmp_path, tmp_path / "m.db"))
    folder = sweep_folder(spec, cfg, storage, "sw")
    assert folder.path == as_path(f"{storage}/sw") and folder.trial_run("t1").path == as_path(f"{storage}/sw/runs/t1")
    arguments = storage_arguments(str(folder.path))
    assert arguments["storage_path"] == "adatad-sweeps/sweeps/sw"
    assert isinstance(arguments["storage_filesystem"], pafs.S3FileSystem)
    assert storage_arguments(str(tmp_path)) == {"storage_path": str(tmp_path)}
