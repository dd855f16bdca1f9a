"""A real S3 endpoint on this machine for the tests and benchmarks: moto's server mode, in this process.

moto keeps its buckets in this process's memory, so the server can be stopped and started again on
the same port (a real outage: connections are refused meanwhile) without losing an object. The
standard AWS variables point at it (`env`); set before Ray starts, every Ray worker, decode actor and
`ray start` node of the session inherits them, as the nodes of a cloud cluster hold theirs. moto
accepts any credentials unless `credentials_checked()` turns its IAM check on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`start()` / `stop()` the endpoint at `url`; `env` holds the AWS variables that name it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = None

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
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + 30
        while True:  # its thread binds the port after start() returns
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

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
