"""The frame store (adatad/data/frame_store/, pipelines/prepare_frames.py) against decoding the videos.

Proofs asked of the store: the plans (frame indices, masks, ground truth) of every training clip
and test window are the same with and without it; its frames equal the decoder's (bit for bit with
the lossless codec, PSNR >= 40 dB with the default one); every bad store is one line naming the
videos and the command that fixes it, before anything expensive starts. No Ray here: entries are
built by the library (`build_entry`) as each Ray task of `prepare_frames.py` builds them.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.dataset
import pytest

from adatad.config import Config
from adatad.data.clips import ClipLoader, record_to_row
from adatad.data.frame_store.build import VideoToStore, build_entry, entry_is_current, remove_partial_entries
from adatad.data.frame_store.check import check_store, fill_frame_counts_from_store
from adatad.data.frame_store.codec import CODECS, CodecError, FrameCodec
from adatad.data.frame_store.entry import EntryReader, FrameStoreError, read_entry_info
from adatad.data.frame_store.spec import (
    StoreSpec,
    StoreSpecError,
    entry_path,
    spec_for_config,
    write_manifest,
)
from adatad.data.splits import load_splits
from adatad.data.transforms import ResizeShortSide
from adatad.data.video import read_frames
from tests.conftest import tiny_config, tiny_overrides

LOSSY_PSNR_DB = 40.0  # the stated bound of the default codec (measured: above 50 dB on these videos)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _build(root: Path, records, spec: StoreSpec) -> Path:
    write_manifest(root, spec)
    for r in records:
        built = build_entry(root, VideoToStore(r.video_id, r.path, r.num_frames), spec)
        assert built.error is None and built.frames > 0, built
    return root


@pytest.fixture(scope="module")
def tiny(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny data set's config and records, and a store of it per codec (default and lossless)."""
    work = tmp_path_factory.mktemp("frame_store")
    cfg = tiny_config(tiny_data, work / "runs", work / "mlflow.db")
    train, test, _ = load_splits(cfg)
    stores = {codec: _build(work / codec, train + test, spec_for_config(cfg.data, codec))
              for codec in ("yuv420-zstd", "rgb-zstd")}
    return {"cfg": cfg, "train": train, "test": test, "stores": stores, "work": work, "data": tiny_data}


def _with_store(cfg: Config, root: Path | None, **data_changes) -> Config:
    return replace(cfg, data=replace(cfg.data, frame_store=str(root) if root else None, **data_changes))


# ---------------------------------------------------------------- codecs


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", [(64, 112), (37, 53)])  # odd sides: I420 pads and cuts again
def test_codecs_round_trip(codec: str, size: tuple[int, int]) -> None:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    smooth = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], axis=-1)
    frame = np.clip(smooth + np.random.default_rng(0).integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)
    c = FrameCodec(codec)
    out = np.empty_like(frame)
    c.decode_into(c.encode(frame), out)
    if c.lossless:
        assert np.array_equal(out, frame)
    else:
        assert _psnr(out, frame) >= 30.0 and not np.array_equal(out, frame)


def test_codec_and_spec_refuse_what_they_do_not_know() -> None:
    with pytest.raises(CodecError, match="expected one of yuv420-zstd, rgb-zstd, jpeg"):
        FrameCodec("png")
    with pytest.raises(CodecError, match="takes no quality"):
        FrameCodec("yuv420-zstd", 90)
    with pytest.raises(CodecError, match="expected 1-100"):
        FrameCodec("jpeg", 0)
    assert FrameCodec("jpeg").quality == 90
    with pytest.raises(StoreSpecError, match="step must divide"):
        spec_for_config(replace(Config().data, frame_stride=4), step=3)
    with pytest.raises(StoreSpecError, match="resizes frames to 182 px"):
        spec_for_config(Config().data, short_side=160)


# ---------------------------------------------------------------- frames and plans


@pytest.mark.parametrize("codec", ["yuv420-zstd", "rgb-zstd"])
def test_stored_frames_equal_the_decoders(tiny: dict, codec: str) -> None:
    """Every stored frame of every video (grid + the clamped last one) against decord's."""
    worst = float("inf")
    for r in tiny["train"] + tiny["test"]:
        with EntryReader(entry_path(tiny["stores"][codec], r.path), r.video_id) as entry:
            indices = np.append(entry.indices, [entry.info.source_frames + 5])  # past the end: clamped, as decord's
            stored = entry.read(indices)
        decoded = read_frames(r.path, indices)
        assert stored.shape == decoded.shape
        if codec == "rgb-zstd":
            assert np.array_equal(stored, decoded), r.video_id
        worst = min(worst, _psnr(stored, decoded))
    assert worst >= LOSSY_PSNR_DB, worst


@pytest.mark.parametrize("codec", ["yuv420-zstd", "rgb-zstd"])
def test_training_clips_have_the_same_plans_and_pixels(tiny: dict, codec: str) -> None:
    """Same seed, same draws: the plans of every training clip (three epochs' worth) are identical with
    and without the store; so are the examples' masks and ground truth, and their augmented pixels
    (bit for bit from the lossless store)."""
    cfg = tiny["cfg"]
    video, store = ClipLoader(cfg.data, train=True), ClipLoader(_with_store(cfg, tiny["stores"][codec]).data, train=True)
    for i, record in enumerate(tiny["train"]):
        row = record_to_row(record, i)
        for seed in range(3):
            a, b = video.plan(row, np.random.default_rng(seed)), store.plan(row, np.random.default_rng(seed))
            assert np.array_equal(a.frame_indices, b.frame_indices) and np.array_equal(a.mask, b.mask)
            assert np.array_equal(a.segments, b.segments) and np.array_equal(a.labels, b.labels)
        x, y = video.load(row, np.random.default_rng(7)), store.load(row, np.random.default_rng(7))
        assert y["valid"] and set(x) == set(y)
        for key in set(x) - {"frames"}:
            assert np.array_equal(x[key], y[key]), key
        if codec == "rgb-zstd":
            assert np.array_equal(x["frames"], y["frames"])
        else:
            assert _psnr(x["frames"], y["frames"]) >= 30.0  # after the demo's colour jitter and resampling


@pytest.mark.parametrize("codec", ["yuv420-zstd", "rgb-zstd"])
def test_test_windows_have_the_same_plans_and_pixels(tiny: dict, codec: str) -> None:
    cfg = tiny["cfg"]
    video = ClipLoader(cfg.data, train=False)
    store = ClipLoader(_with_store(cfg, tiny["stores"][codec]).data, train=False)
    for i, record in enumerate(tiny["test"]):
        row = record_to_row(record, i)
        xs, ys = list(video.iter_video_windows(row)), list(store.iter_video_windows(row))
        assert len(xs) == len(ys) > 1
        for x, y in zip(xs, ys, strict=True):
            for key in set(x) - {"frames"}:
                assert np.array_equal(x[key], y[key]), key
            if codec == "rgb-zstd":
                assert np.array_equal(x["frames"], y["frames"])
            else:
                assert _psnr(x["frames"], y["frames"]) >= LOSSY_PSNR_DB


def test_a_finer_store_serves_a_coarser_grid(tiny: dict) -> None:
    """A step-2 store serves the tiny config (step 4) with every second stored frame, bit for bit."""
    cfg, records = tiny["cfg"], tiny["test"][:1]
    root = _build(tiny["work"] / "step2", records, spec_for_config(cfg.data, "rgb-zstd", step=2))
    assert check_store(str(root), records, cfg.data).ok
    row = record_to_row(records[0], 0)
    xs = list(ClipLoader(cfg.data, train=False).iter_video_windows(row))
    ys = list(ClipLoader(_with_store(cfg, root).data, train=False).iter_video_windows(row))
    assert all(np.array_equal(x["frames"], y["frames"]) for x, y in zip(xs, ys, strict=True))


def test_whole_video_sampling_reads_its_frames_from_a_resize_store(tiny: dict) -> None:
    """ActivityNet's sampling: the store holds each video's N x s spread frames (a resize store)."""
    cfg = _with_store(tiny["cfg"], None, sampling="resize", window_size=16, frames_per_position=2)
    records = tiny["test"][:2]
    spec = spec_for_config(cfg.data, "rgb-zstd")
    assert (spec.sampling, spec.frames) == ("resize", 32)
    root = _build(tiny["work"] / "resize", records, spec)
    assert check_store(str(root), records, cfg.data).ok
    for i, record in enumerate(records):
        row = record_to_row(record, i)
        (x,) = ClipLoader(cfg.data, train=False).iter_video_windows(row)
        (y,) = ClipLoader(_with_store(cfg, root).data, train=False).iter_video_windows(row)
        assert np.array_equal(x["frames"], y["frames"]) and np.array_equal(x["masks"], y["masks"])


def test_frames_larger_than_the_transforms_need_are_stored_resized(tiny: dict) -> None:
    """A 64-px short side stored at 48 px: exactly the transforms' own ResizeShortSide(48)."""
    cfg = _with_store(tiny["cfg"], None, train_resize_short=48, test_resize_short=40, crop_size=32)
    record = tiny["test"][0]
    root = _build(tiny["work"] / "small", [record], spec_for_config(cfg.data, "rgb-zstd"))
    with EntryReader(entry_path(root, record.path)) as entry:
        assert entry.info.size == (48, 84) and entry.info.source_size == (64, 112)
        stored = entry.read(entry.indices)
    decoded = read_frames(record.path, entry.indices)
    assert np.array_equal(stored, ResizeShortSide(48)(decoded, np.random.default_rng(0)))


def test_pyarrow_reads_the_store_as_one_table(tiny: dict) -> None:
    """What Ray Data's read_parquet reads: one row per stored frame, the entries' names, ascending indices."""
    root = tiny["stores"]["yuv420-zstd"]
    table = pyarrow.dataset.dataset(root / "videos", format="parquet").to_table(columns=["video_id", "index"])
    records = tiny["train"] + tiny["test"]
    assert set(table.column("video_id").to_pylist()) == {Path(r.path).stem for r in records}
    counts = sum(len(EntryReader(entry_path(root, r.path)).indices) for r in records)
    assert table.num_rows == counts


# ---------------------------------------------------------------- a bad store: one line each


def _problems(root: Path, records, data) -> list[str]:
    return check_store(str(root), records, data).lines("FIX")


def test_every_bad_store_is_one_line_naming_the_videos(tiny: dict, tmp_path: Path) -> None:
    cfg, records = tiny["cfg"], tiny["train"] + tiny["test"]
    good = tiny["stores"]["yuv420-zstd"]
    report = check_store(str(good), records, cfg.data)
    assert report.ok and report.lines("FIX") == [] and report.summary().endswith(f"all {len(records)} videos stored")

    assert _problems(tmp_path / "nothing", records, cfg.data) == [
        f"frame store {tmp_path / 'nothing'}: folder not found; build one for this config there: FIX"]
    (tmp_path / "empty").mkdir()
    assert _problems(tmp_path / "empty", records, cfg.data) == [
        f"frame store {tmp_path / 'empty'}: no frame store there (no frame_store.json); build one for this config "
        "there: FIX"]
    assert _problems(good, records, replace(cfg.data, frame_stride=2)) == [
        f"frame store {good}: cannot serve this config: it holds every 4. frame, this config reads every 2. frame; "
        "build one for this config in another folder: FIX"]
    assert _problems(good, records, replace(cfg.data, train_resize_short=96)) == [
        f"frame store {good}: cannot serve this config: its frames have short side <= 72 px, this config resizes "
        "to 96 px; build one for this config in another folder: FIX"]

    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    entry_path(broken, records[0].path).unlink()  # never stored
    entry_path(broken, records[1].path).write_bytes(b"not parquet")  # a damaged entry
    videos = tmp_path / "videos"  # a changed source: a copy of the video, then re-encoded (other bytes)
    videos.mkdir()
    changed = replace(records[2], path=str(shutil.copy(records[2].path, videos)))
    Path(changed.path).write_bytes(Path(records[3].path).read_bytes())
    gone = replace(records[4], path=str(tmp_path / "deleted" / Path(records[4].path).name))  # source deleted
    lines = _problems(broken, [records[0], records[1], changed, records[3], gone, *records[5:]], cfg.data)
    n = len(records)
    assert lines == [
        f"frame store {broken}: 1 of {n} videos not stored: {records[0].video_id}; store them: FIX",
        f"frame store {broken}: 1 of {n} videos changed since they were stored (size or content differs): "
        f"{records[2].video_id}; store them again: FIX",
        f"frame store {broken}: 1 of {n} videos stored in unreadable entries: {records[1].video_id}; store them "
        "again: FIX",
    ]
    assert check_store(str(broken), [gone], cfg.data).unverified == 1  # used as stored, without its video


def test_records_without_frame_counts_take_the_stored_ones(tiny: dict) -> None:
    record = tiny["test"][0]
    unknown = replace(record, num_frames=0, fps=0.0)
    (filled,) = fill_frame_counts_from_store([unknown], str(tiny["stores"]["rgb-zstd"]))
    assert filled.num_frames == read_entry_info(entry_path(tiny["stores"]["rgb-zstd"], record.path)).source_frames
    assert filled.fps == pytest.approx(30.0)
    with pytest.raises(FrameStoreError, match="no frame count in the annotation file and no readable entry"):
        fill_frame_counts_from_store([unknown], str(tiny["work"] / "nothing"))


def test_train_and_check_data_stop_on_a_missing_entry_before_anything_starts(tiny: dict, tmp_path: Path,
                                                                             capsys) -> None:
    from pipelines import check_data, train

    store = tmp_path / "store"
    shutil.copytree(tiny["stores"]["yuv420-zstd"], store)
    missing = tiny["test"][1]
    entry_path(store, missing.path).unlink()
    sets = [a for o in tiny_overrides(tiny["data"], tmp_path / "runs", tmp_path / "m.db") + [f"data.frame_store={store}"]
            for a in ("--set", o)]
    assert train.main(["--run-name", "never", *sets]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: frame store {store}: 1 of 9 videos not stored: "
                                               f"{missing.video_id}; store them: "), err
    assert "pipelines/prepare_frames.py --set data.annotation_file=" in err[0] and err[0].endswith(f"--store {store}")
    assert not (tmp_path / "runs").exists()  # nothing written
    assert check_data.main(sets) == 1
    assert capsys.readouterr().err.splitlines() == err
    assert check_data.main(sets[:-2] + ["--set", f"data.frame_store={tiny['stores']['yuv420-zstd']}"]) == 0
    assert "all 9 videos stored" in capsys.readouterr().out


def test_a_rebuild_skips_current_entries_and_clears_a_killed_builds_leftovers(tiny: dict, tmp_path: Path) -> None:
    cfg, record = tiny["cfg"], tiny["test"][0]
    spec = spec_for_config(cfg.data)
    video = VideoToStore(record.video_id, record.path, record.num_frames)
    root = _build(tmp_path / "store", [record], spec)
    assert entry_is_current(root, video, spec)
    assert not entry_is_current(root, video, replace(spec, codec="rgb-zstd"))
    assert not entry_is_current(root, replace(video, record_frames=record.num_frames + 1), spec)
    leftover = entry_path(root, "other.mp4").parent / ".other.parquet.abc123.tmp"
    leftover.write_bytes(b"half an entry")
    assert remove_partial_entries(root) == 1 and not leftover.exists()
    bad = build_entry(root, VideoToStore("gone", str(tmp_path / "gone.mp4")), spec)
    assert bad.error == f"{tmp_path / 'gone.mp4'}: file not found" and not entry_path(root, "gone.mp4").exists()
