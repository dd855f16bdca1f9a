"""One video's entry in the store: a Parquet file of (video_id, index, frame) rows, 64 frames a row group.

Why Parquet: pyarrow and Ray Data read it as it is (``pyarrow.dataset`` / ``ray.data.read_parquet`` over
``<store>/videos/`` gives one row per stored frame), the footer says where each row group lies, so a
window reads only the row groups it covers (a local file is memory-mapped; an entry at a URI is
read from the node's cache, or by byte ranges: the footer, the ``index`` column, then those row groups), and the entry's facts travel in the file's own key-value metadata. Columns:
``video_id`` (dictionary-encoded string), ``index`` (int32 raw frame index, ascending), ``frame``
(binary: one frame compressed by the entry's codec, see ``codec.py``). The file itself is written
uncompressed (the frames are compressed already) and only ``index`` has statistics.

An entry is written to a temporary file beside its final name and renamed when complete, so a
reader (or a build killed half-way) never sees half an entry.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from adatad.atomic import atomic_open
from adatad.data.frame_store.codec import FrameCodec
from adatad.data.frame_store.spec import StoreSpec
from adatad.locations import ObjectPath, as_path, open_input_file
from adatad.retry import StorageUnavailable, retrying

ROWS_PER_GROUP = 64
METADATA_KEY = b"adatad.data.frame_store.entry"
SCHEMA = pa.schema([("video_id", pa.dictionary(pa.int32(), pa.string())), ("index", pa.int32()),
                    ("frame", pa.binary())])


class FrameStoreError(RuntimeError):
    """A stored entry is missing, unreadable or lacks a requested frame; the message names the video."""


@dataclass(frozen=True)
class EntryInfo:
    """What an entry says about itself (the file's key-value metadata)."""

    video_id: str  # the entry's name: the video file's name without extension
    source: str  # fingerprint of the source video (adatad.data.frame_store.fingerprint)
    source_frames: int  # frames the decoder counts in the source video
    source_fps: float
    source_size: tuple[int, int]  # (height, width) of the source frames
    size: tuple[int, int]  # (height, width) of the stored frames
    record_frames: int  # frame count of the record it was built for (resize sampling spreads over it)
    spec: StoreSpec

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw["spec"] = self.spec.to_dict()
        return json.dumps(raw).encode()

    @classmethod
    def from_json(cls, text: bytes) -> EntryInfo:
        raw: dict[str, Any] = json.loads(text)
        raw["spec"] = StoreSpec.from_dict(raw["spec"])
        raw["source_size"], raw["size"] = tuple(raw["source_size"]), tuple(raw["size"])
        return cls(**raw)


def write_entry(path: str | Path, info: EntryInfo, chunks: Iterable[tuple[np.ndarray, list[bytes]]]) -> int:
    """Write ``chunks`` of (ascending raw indices, encoded frames) as the entry at ``path``, atomically.
    Returns the file's size in bytes."""
    schema = SCHEMA.with_metadata({METADATA_KEY: info.to_json()})
    if isinstance(as_path(path), ObjectPath):  # a store at a URI: built locally, then one (multipart) upload,
        with tempfile.TemporaryDirectory() as folder:  # which the store shows only once it is complete
            size = write_entry(Path(folder) / as_path(path).name, info, chunks)
            as_path(path).upload(Path(folder) / as_path(path).name)
        return size
    path = Path(path)
    with atomic_open(path, "wb") as sink:
        with pq.ParquetWriter(sink, schema, compression="none", use_dictionary=["video_id"],
                              write_statistics=["index"]) as writer:
            for indices, blobs in chunks:
                table = pa.table({
                    "video_id": pa.DictionaryArray.from_arrays(np.zeros(len(blobs), np.int32), [info.video_id]),
                    "index": pa.array(np.asarray(indices, np.int32)),
                    "frame": pa.array(blobs, pa.binary()),
                }, schema=schema)
                writer.write_table(table, row_group_size=ROWS_PER_GROUP)
    return path.stat().st_size


def read_entry_info(path: str | Path) -> EntryInfo:
    """The entry's metadata, from its footer alone (no frame is read)."""
    try:
        metadata = pq.read_schema(open_input_file(path)).metadata or {}
        return EntryInfo.from_json(metadata[METADATA_KEY])
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as exc:
        raise FrameStoreError(f"{path}: not a frame store entry ({_first_line(exc)})") from None


class EntryReader:
    """Reads frames of one entry by raw frame index; keeps the file open (use as a context manager).

    ``read`` clamps indices to the source's frames (as ``read_frames`` does) and accepts any order
    and repeats, so it also serves a front-to-back stream of test windows (``WindowStream``).
    """

    def __init__(self, path: str | Path, video_id: str | None = None, cached: bool = False) -> None:
        """``cached``: an entry at a URI is read from the node's cache (``adatad/data/node_cache.py``)
        instead of by byte ranges."""
        self.path = as_path(path)
        name = f"video '{video_id}'" if video_id else str(self.path)
        try:
            present = self.path.is_file()
        except OSError as exc:  # a store at a URI that cannot be reached (after adatad.retry's window)
            raise FrameStoreError(f"{name}: {exc}") from None
        if not present:
            raise FrameStoreError(f"{name}: not in the frame store (no {self.path}); build it with "
                                  f"pipelines/prepare_frames.py")

        def open_entry() -> tuple[pq.ParquetFile, EntryInfo, np.ndarray]:
            source = self.path
            if cached and isinstance(source, ObjectPath):
                from adatad.data.node_cache import local_copy

                source = local_copy(str(source))
            file = pq.ParquetFile(open_input_file(source))  # memory-mapped, or byte ranges of a URI
            info = EntryInfo.from_json(file.schema_arrow.metadata[METADATA_KEY])
            return file, info, file.read(columns=["index"]).column(0).to_numpy().astype(np.int64)

        try:
            self._file, self.info, self.indices = retrying(open_entry, f"reading {self.path}")
        except StorageUnavailable as exc:
            raise FrameStoreError(f"{name}: {exc}") from None
        except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as exc:
            raise FrameStoreError(f"{name}: frame store entry {self.path} is unreadable ({_first_line(exc)}); "
                                  f"build it again with pipelines/prepare_frames.py") from None
        groups = self._file.metadata
        self._group_starts = np.cumsum([0] + [groups.row_group(g).num_rows for g in range(groups.num_row_groups)])
        self._codec: FrameCodec = self.info.spec.frame_codec()
        self._name = name

    def __enter__(self) -> EntryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file = None

    def rows_of(self, indices: np.ndarray) -> np.ndarray:
        """Row of each (clamped) raw index; FrameStoreError names the first index the entry lacks."""
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, self.info.source_frames - 1)
        rows = np.searchsorted(self.indices, idx)
        rows_ok = np.minimum(rows, len(self.indices) - 1)
        missing = self.indices[rows_ok] != idx
        if missing.any():
            raise FrameStoreError(f"{self._name}: frame {int(idx[missing][0])} is not in the frame store entry "
                                  f"{self.path} ({self.info.spec.grid()}); build a store for this config with "
                                  f"pipelines/prepare_frames.py")
        return rows

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Frames at raw ``indices`` -> contiguous uint8 (T, H, W, 3) at the stored size."""
        if self._file is None:
            raise ValueError(f"{self._name}: entry reader is closed")
        rows = self.rows_of(indices)
        unique, inverse = np.unique(rows, return_inverse=True)
        h, w = self.info.size
        frames = np.empty((len(unique), h, w, 3), np.uint8)
        groups = np.searchsorted(self._group_starts, unique, side="right") - 1
        try:
            for group in np.unique(groups).tolist():
                column = retrying(lambda group=group: self._file.read_row_group(group, columns=["frame"]),
                                  f"reading {self.path}").column(0)
                chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
                start = int(self._group_starts[group])
                for at in np.flatnonzero(groups == group).tolist():
                    self._codec.decode_into(chunk[int(unique[at]) - start].as_buffer(), frames[at])
        except StorageUnavailable as exc:
            raise FrameStoreError(f"{self._name}: {exc}") from None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise FrameStoreError(f"{self._name}: frame store entry {self.path} is unreadable "
                                  f"({_first_line(exc)}); build it again with pipelines/prepare_frames.py") from None
        if len(unique) == len(rows) and (np.diff(rows) > 0).all():
            return frames
        return frames[inverse.reshape(-1)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
