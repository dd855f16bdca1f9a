"""A real S3 endpoint on this machine for the tests and benchmarks: moto's server mode, in this process.

Clients reach moto through a small TCP proxy on the endpoint's port, which counts the bytes and
requests that pass (`bytes_down`, `requests`: what a reader costs on the wire) and makes an outage
real: `stop()` closes the port and every open connection (a keep-alive connection to a stopped
server would otherwise go on being served), `start()` opens it again; moto and its buckets stay
up behind it. The standard AWS variables point at it (`env`); set before Ray starts, every Ray
worker, decode actor and `ray start` node of the session inherits them, as the nodes of a cloud
cluster hold theirs. moto accepts any credentials unless `credentials_checked()` turns its IAM check on.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"


def _wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:  # moto's thread binds the port after start() returns
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Proxy:
    """TCP from `port` to moto's port, counting what passes; `close()` drops the port and every connection."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.bytes_down = self.bytes_up = self.requests = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked on it (close alone would not)
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while chunk := source.recv(1 << 16):
                sink.sendall(chunk)
                with self._lock:
                    if up:
                        self.bytes_up += len(chunk)
                        self.requests += len(_REQUEST_LINE.findall(chunk))
                    else:
                        self.bytes_down += len(chunk)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)


_REQUEST_LINE = re.compile(rb"^(?:GET|HEAD|PUT|POST|DELETE) /\S* HTTP/1\.1\r$", re.M)


class S3Server:
    """`start()` / `stop()` the endpoint at `url` (moto keeps running behind it); `env` holds the AWS
    variables that name it; `close()` ends everything."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._moto = None
        self._proxy: _Proxy | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION}

    def export(self) -> None:
        """Into this process's environment (and so into everything it starts later), replacing any
        AWS endpoint, profile or session token of the user's."""
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            os.environ.pop(name, None)
        os.environ.update(self.env)

    def start(self) -> S3Server:
        if self._moto is None:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
            moto_port = free_port()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
            self._moto.start()
            _wait_for_port(moto_port)
            self._proxy = _Proxy(self.port, moto_port)
        self._proxy.open()
        return self

    def stop(self) -> None:
        """The endpoint goes away: its port closed, every connection dropped (moto keeps the objects)."""
        if self._proxy is not None:
            self._proxy.close()

    def close(self) -> None:
        self.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    @property
    def running(self) -> bool:
        return self._proxy is not None and self._proxy._listener is not None

    @property
    def traffic(self) -> tuple[int, int]:
        """(bytes sent to clients, requests) so far."""
        return (self._proxy.bytes_down, self._proxy.requests) if self._proxy else (0, 0)

    def bucket(self, name: str) -> str:
        """A new empty bucket (or an existing one); returns `s3://name`."""
        import pyarrow.fs as pafs

        from adatad.locations import s3_filesystem

        fs = s3_filesystem()
        if fs.get_file_info(name).type == pafs.FileType.NotFound:
            pafs.S3FileSystem(endpoint_override=self.url, scheme="http", allow_bucket_creation=True).create_dir(name)
        return f"s3://{name}"

    def upload_tree(self, local: Path, uri: str) -> str:
        """Every file under `local` to `uri/<relative path>`; returns `uri`."""
        import pyarrow.fs as pafs

        from adatad.locations import filesystem

        fs, path = filesystem(uri)
        pafs.copy_files(str(local), path, destination_filesystem=fs)
        return uri

    def keys(self, uri: str) -> list[str]:
        """Every object under `uri`, relative to it."""
        import pyarrow.fs as pafs

        from adatad.locations import filesystem

        fs, path = filesystem(uri)
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return sorted(i.path.removeprefix(path + "/") for i in found if i.type == pafs.FileType.File)

    @contextlib.contextmanager
    def credentials_checked(self) -> Iterator[None]:
        """Meanwhile moto checks every request's credentials against its IAM (none exist: all are refused)."""
        from moto import settings

        before = settings.INITIAL_NO_AUTH_ACTION_COUNT
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = before

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The endpoint away meanwhile (connections refused), then back with every object."""
        self.stop()
        try:
            yield
        finally:
            self.start()


_SESSION: list[S3Server] = []


def session_server() -> S3Server:
    """The one endpoint of a test session (conftest may be imported twice: as `conftest` and `tests.conftest`)."""
    if not _SESSION:
        _SESSION.append(S3Server())
    return _SESSION[0]
