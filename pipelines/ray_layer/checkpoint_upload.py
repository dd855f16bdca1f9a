"""A checkpoint copied to a run folder at a URI through an outage of its endpoint (`adatad.retry`).

Ray Train uploads a reported checkpoint itself, retrying 3 times within a few seconds; an endpoint
away for longer fails the report, and Ray Train then restarts the workers from the previous
checkpoint (the epoch is trained again). Handed to `ray.train.report(checkpoint_upload_fn=...)`,
this upload instead waits for the endpoint for up to `runtime.storage_retry_s`, with one warning
line, and writes to the very folder Ray's own upload would (Ray checks that it is in the run's folder).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import pyarrow.fs as pafs
import ray.train

from adatad.retry import retrying


def upload_checkpoint(checkpoint: ray.train.Checkpoint, checkpoint_dir_name: str) -> ray.train.Checkpoint:
    storage = ray.train.get_context().get_storage()
    destination = posixpath.join(storage.experiment_fs_path, checkpoint_dir_name)
    fs = storage.storage_filesystem
    # use_threads=False: pyarrow's threaded S3 uploads are unsafe (apache/arrow#32372; Ray does the same)
    retrying(lambda: pafs.copy_files(checkpoint.path, destination, source_filesystem=checkpoint.filesystem,
                                     destination_filesystem=fs, use_threads=False, chunk_size=64 * 2**20),
             f"uploading checkpoint {checkpoint_dir_name}")
    return ray.train.Checkpoint(destination, fs)


def checkpoint_uploader() -> Callable[[ray.train.Checkpoint, str], ray.train.Checkpoint] | None:
    """`upload_checkpoint` when this run's storage is an object store; None (Ray's own copy) on a filesystem."""
    fs = ray.train.get_context().get_storage().storage_filesystem
    return None if isinstance(fs, pafs.LocalFileSystem) else upload_checkpoint
