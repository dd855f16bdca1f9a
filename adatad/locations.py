"""Locations a user gives: a local path or a URI (`s3://`, `gs://`, ...), read and written through pyarrow.fs.

Why pyarrow.fs: Ray Train writes its checkpoints with it (`RunConfig(storage_path="s3://...")`),
Parquet reads byte ranges through it, and pyarrow ships S3 and GCS clients, so nothing else is
needed for a URI. `as_path` gives a `pathlib.Path` for a local path and an `ObjectPath` for a URI:
the few pathlib methods the readers and the run folder use (`/`, `name`, `is_file`, `read_text`,
`open`, `glob`, `stat`, ...), so one code path reads either.

Credentials and the endpoint come only from the standard AWS variables and files
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
`AWS_DEFAULT_REGION`/`AWS_REGION`, `~/.aws/credentials`). The endpoint of an S3-compatible store
(`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`) is honoured by `pyarrow.fs.FileSystem.from_uri`
(what Ray uses) but not by `S3FileSystem()` built directly (pyarrow 25), so `filesystem` passes it
explicitly: every reader, Ray Train's storage and a pickled copy on another node all use the same
endpoint.

Writes go to the object in one PUT (an object appears whole or not at all, like a rename on disk).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from adatad.retry import retrying

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# Attempts of the S3 client per request (AWS "standard" retries, a second or two in all). An outage
# of the endpoint is ridden out by `adatad.retry` around every ObjectPath call, which also says so
# in one warning line; the client's own retries stay short so that it notices.
S3_ATTEMPTS = 3


class LocationError(OSError):
    """A location that cannot be used (missing bucket, refused credentials, unreachable endpoint):
    one line naming the URI."""


def is_uri(location: object) -> bool:
    """`scheme://...`, other than `file://` (a local path)."""
    text = os.fspath(location) if isinstance(location, os.PathLike) else location
    return isinstance(text, str) and bool(_URI.match(text)) and not text.startswith("file://")


def endpoint_url() -> str | None:
    """The S3 endpoint the standard AWS variables name (None: AWS itself)."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def s3_filesystem(attempts: int = S3_ATTEMPTS, connect_timeout_s: float | None = None) -> pafs.S3FileSystem:
    """pyarrow's S3 client with the endpoint of the AWS variables (credentials: the AWS default chain)."""
    kwargs: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    endpoint = endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme or "https")
        # A custom endpoint (MinIO, moto, Ceph) serves paths, not bucket subdomains.
        kwargs["force_virtual_addressing"] = False
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if connect_timeout_s is not None:
        kwargs.update(connect_timeout=connect_timeout_s, request_timeout=max(connect_timeout_s, 10.0))
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of `uri` and the path inside it (`s3://bucket/key` -> (S3, `bucket/key`))."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        return s3_filesystem(), uri.split("://", 1)[1].rstrip("/")
    try:
        fs, path = pafs.FileSystem.from_uri(uri)  # gs://, hdfs://, ... (what pyarrow itself resolves)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        try:  # any scheme fsspec knows (its package installed), as Ray Train resolves them too
            import fsspec

            fsspec_fs, path = fsspec.core.url_to_fs(uri)
            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), path.rstrip("/")
        except (ImportError, ValueError):
            raise LocationError(f"{uri}: no filesystem for this URI ({exc})") from None
    return fs, path.rstrip("/")


def bucket_of(uri: str) -> str:
    """`s3://bucket/key` -> `bucket`."""
    return urlparse(uri).netloc


@dataclass(frozen=True)
class Stat:
    st_size: int
    st_mtime: float


class ObjectPath:
    """A file or folder at a URI, with the pathlib methods this project uses (see the module).

    It has no `__fspath__`: handing one to `open()` or `os.*` fails at once instead of writing a
    local folder called `s3:`.
    """

    def __init__(self, uri: str, fs: pafs.FileSystem | None = None, path: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        if fs is None or path is None:
            fs, path = filesystem(self.uri)
        self.fs, self.path = fs, path

    # ------------------------------------------------------------ names
    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ObjectPath({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.uri < other.uri

    def __truediv__(self, name: str | os.PathLike) -> ObjectPath:
        name = os.fspath(name).strip("/")
        return ObjectPath(f"{self.uri}/{name}", self.fs, f"{self.path}/{name}")

    def joinpath(self, *names: str) -> ObjectPath:
        out = self
        for name in names:
            out = out / name
        return out

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> ObjectPath:
        head = self.uri.rsplit("/", 1)[0]
        return ObjectPath(head, self.fs, posixpath.dirname(self.path)) if "/" in self.path else self

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def is_absolute(self) -> bool:
        return True

    def resolve(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    # ------------------------------------------------------------ queries
    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        """`action()` with one-line errors naming the URI, retried through an outage (`adatad.retry`)."""
        def attempt() -> Any:
            try:
                return action()
            except (FileNotFoundError, LocationError):
                raise
            except OSError as exc:
                raise LocationError(f"{self.uri}: {reason_of(exc, self.uri)}") from None
        try:
            return retrying(attempt, f"{what} {self.uri}")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}: not found") from None

    def info(self) -> pafs.FileInfo:
        return self._call("reading", lambda: self.fs.get_file_info(self.path))

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def stat(self) -> Stat:
        info = self.info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self.uri}: not found")
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        return Stat(st_size=int(info.size or 0), st_mtime=mtime)

    def iterdir(self) -> list[ObjectPath]:
        found = self._call("listing", lambda: self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)))
        return [self / posixpath.basename(i.path) for i in found]

    def glob(self, pattern: str) -> list[ObjectPath]:
        """Matches of `pattern` (`*`, `?`, `[...]` within one level, levels split by `/`)."""
        level = [self]
        for part in pattern.strip("/").split("/"):
            level = [child for folder in level for child in folder.iterdir() if fnmatch.fnmatchcase(child.name, part)]
        return level

    # ------------------------------------------------------------ reading
    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        return self._call("reading", read)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open_input_file(self) -> pa.NativeFile:
        """A seekable file that reads byte ranges (Parquet footers and row groups, a video's head and tail)."""
        return self._call("reading", lambda: self.fs.open_input_file(self.path))

    def open(self, mode: str = "r", encoding: str | None = None, **_: Any):
        """For reading: `rb` a seekable ranged file, `r` the text (read whole: small files only)."""
        if mode in ("r", "rt"):
            return io.StringIO(self.read_text(encoding or "utf-8"))
        if mode == "rb":
            return self.open_input_file()
        raise ValueError(f"{self.uri}: open for writing is write_bytes/write_text (one PUT), not mode {mode!r}")

    # ------------------------------------------------------------ writing
    def write_bytes(self, data: bytes) -> int:
        """The object written in one request: readers see the old object or the new one."""
        def write() -> None:
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
        self._call("writing", write)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def upload(self, local: str | os.PathLike) -> ObjectPath:
        """Copy the local file `local` here (one PUT for small files; a multipart upload for large ones,
        which the store also makes visible only when complete)."""
        self._call("writing", lambda: pafs.copy_files(os.fspath(local), self.path, destination_filesystem=self.fs,
                                                       use_threads=False))
        return self

    def download(self, local: str | os.PathLike) -> Path:
        self._call("reading", lambda: pafs.copy_files(self.path, os.fspath(local), source_filesystem=self.fs))
        return Path(local)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a key's prefix exists once an object is under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._call("deleting", lambda: self.fs.delete_file(self.path))
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        try:
            self._call("deleting", lambda: self.fs.delete_dir(self.path))
        except FileNotFoundError:
            pass


def as_path(location: str | os.PathLike) -> Path | ObjectPath:
    """A `Path` for a local path (`file://` stripped), an `ObjectPath` for a URI."""
    if isinstance(location, (Path, ObjectPath)):
        return location
    text = os.fspath(location)
    if is_uri(text):
        return ObjectPath(text)
    return Path(text.removeprefix("file://"))


def open_input_file(location: str | os.PathLike | ObjectPath) -> pa.NativeFile:
    """A seekable file: memory-mapped when local, ranged reads when a URI (Parquet reads only what it needs)."""
    path = as_path(location)
    if isinstance(path, ObjectPath):
        return path.open_input_file()
    return pa.memory_map(os.fspath(path), "r")


def join(location: str, *names: str) -> str:
    """`location/names...` for a local path or a URI alike (no normalisation of a URI)."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *(n.strip("/") for n in names)])
    return os.path.join(location, *names)


def parent_of(location: str) -> str:
    """The folder of a file location (a URI's prefix, or a local path's directory)."""
    if is_uri(location):
        return location.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(location))


# ---------------------------------------------------------------- checks before any work starts

def check_writable_location(uri: str, what: str) -> None:
    """Where a run will write: the bucket exists and takes a write, with these credentials, from this
    machine. One line naming `what` and the URI, and nothing left behind; before any training starts."""
    with _named(what):
        fs, path = quick_filesystem(uri), filesystem(uri)[1]
        _check_bucket(fs, uri)
        probe = f"{path}/.adatad-write-check"
        try:
            with fs.open_output_stream(probe) as stream:
                stream.write(b"")
            fs.delete_file(probe)
        except OSError as exc:
            raise LocationError(f"{uri}: cannot write there ({reason_of(exc, uri)})") from None


def check_readable_location(uri: str, what: str) -> None:
    """Something the run will read: there, readable with these credentials, from this machine."""
    with _named(what):
        fs, path = quick_filesystem(uri), filesystem(uri)[1]
        _check_bucket(fs, uri)
        try:
            info = fs.get_file_info(path)
        except OSError as exc:
            raise LocationError(f"{uri}: {reason_of(exc, uri)}") from None
        if info.type == pafs.FileType.NotFound:
            raise LocationError(f"{uri}: not found")


@contextlib.contextmanager
def _named(what: str) -> Iterator[None]:
    """A LocationError's line starts with the flag or key that gave the location."""
    try:
        yield
    except LocationError as exc:
        raise LocationError(f"{what} {exc}") from None


def quick_filesystem(uri: str) -> pafs.FileSystem:
    """A client that gives up quickly: a wrong endpoint is one line in seconds, not after minutes of retries
    (pyarrow's GCS client retries for 15 minutes by default)."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        return s3_filesystem(attempts=2, connect_timeout_s=5)
    if scheme in ("gs", "gcs"):
        from datetime import timedelta

        return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=5))
    return filesystem(uri)[0]


def _check_bucket(fs: pafs.FileSystem, uri: str) -> None:
    bucket = bucket_of(uri)
    try:
        info = fs.get_file_info(bucket)
    except OSError as exc:
        raise LocationError(f"{uri}: {reason_of(exc, uri)}") from None
    if info.type == pafs.FileType.NotFound:
        raise LocationError(f"{uri}: bucket '{bucket}' does not exist" + (_endpoint_note() if _is_s3(uri) else ""))


def _is_s3(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in ("s3", "s3a")


def _endpoint_note() -> str:
    endpoint = endpoint_url()
    return f" at {endpoint}" if endpoint else ""


def reason_of(exc: BaseException, uri: str = "s3://") -> str:
    """pyarrow's S3 messages, cut to what a user acts on (credentials, endpoint, permission)."""
    text = str(exc)
    if not _is_s3(uri):
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return first[:200]
    endpoint = endpoint_url() or "the AWS endpoint"
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "Could not resolve" in text:
        return (f"cannot reach {endpoint} (check AWS_ENDPOINT_URL and the network)")
    if any(code in text for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                                     "ExpiredToken", "No response body", "AWS Error ACCESS_DENIED",
                                     "AWS Error UNKNOWN (HTTP status 403)", "HTTP status 403")):
        return ("access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the "
                "bucket's permissions)")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]
