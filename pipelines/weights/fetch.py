"""One file over HTTP(S): resumable, with a progress bar, checked by sha256 before it takes its name.

Bytes go to `<file>.part`; an interrupted download keeps it and the next run asks the server for
the rest (an HTTP Range request; a server that ignores it sends the whole file again, which
replaces the part). Only a file whose sha256 matches the expected one (a full digest, or the
prefix a release name carries) is renamed to its final name, so a half or wrong file is never
where a config reads it. Without an expected digest the file's sha256 is recorded beside it
(`<file>.sha256`, the `sha256sum` format) and later runs check the file against that record.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from adatad.atomic import atomic_write_text

CHUNK = 1 << 20
USER_AGENT = "adatad-ray fetch_weights (urllib)"


class FetchError(RuntimeError):
    """A download or check that failed (one line naming the URL or file and what to do)."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    resumed_from: int  # bytes already there when this run started (0: a fresh download)


def part_file(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def record_file(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def file_sha256(path: Path, digest: hashlib._Hash | None = None) -> hashlib._Hash:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def matches(digest: str, expected: str) -> bool:
    """A full digest, or the leading digits an mmaction2 release name publishes."""
    return digest.lower().startswith(expected.strip().lower())


def recorded_sha256(dest: Path) -> str | None:
    """The digest `fetch` recorded for a file that has no published one, or None."""
    record = record_file(dest)
    return record.read_text().split()[0] if record.is_file() and record.read_text().strip() else None


def write_record(dest: Path, digest: str) -> Path:
    return atomic_write_text(record_file(dest), f"{digest}  {dest.name}\n")


def _bar(total: int | None, initial: int, name: str):
    """tqdm on a terminal (stderr); elsewhere none (the caller prints a line before and after)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def _start(url: str, offset: int) -> tuple[http.client.HTTPResponse | None, int]:
    """The response (None: nothing left to read), and where its body starts in the file: `offset`,
    or 0 when the server sends the whole file."""
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # nothing after `offset`: the part is whole already, check it as it is
            return None, offset
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: cannot connect ({reason})") from None
    if offset and response.status == 206:
        start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
        if start != str(offset):
            response.close()
            raise FetchError(f"{url}: asked for bytes from {offset}, the server sent "
                             f"{response.headers.get('Content-Range')!r}")
        return response, offset
    if "text/html" in response.headers.get("Content-Type", ""):
        response.close()
        raise FetchError(f"{url}: the server answered with a web page, not the file (Google Drive does so when "
                         "a file's download quota is used up or it needs a sign-in): open the URL in a browser "
                         "and save the file where the config expects it")
    return response, 0


def fetch(url: str, dest: Path, expected_sha256: str | None = None, say=print) -> Fetched:
    """Download `url` to `dest` (resuming `dest.part`), check it and rename it into place.

    Raises FetchError: no connection, an interrupted transfer (the part is kept: run again to
    resume) or a digest that differs from `expected_sha256` (the part is deleted: it would only
    resume into the same wrong file).
    """
    dest = Path(dest)
    part = part_file(dest)
    offset = part.stat().st_size if part.is_file() else 0
    response, start = _start(url, offset)
    dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answers: a failed try leaves nothing
    digest = file_sha256(part) if start else hashlib.sha256()
    written = start
    try:
        if response is not None:
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            say(f"downloading {dest.name}" + (f" ({total / 2**20:,.1f} MiB)" if total else "") + f" from {url}"
                + (f", resuming at {start / 2**20:,.1f} MiB" if start else ""))
            with open(part, "ab" if start else "wb") as fh, _bar(total, start, dest.name) as bar:
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
            if total is not None and written < total:
                raise http.client.IncompleteRead(b"", total - written)
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"{url}: the download stopped at {written / 2**20:,.1f} MiB ({type(exc).__name__}); "
                         f"run the same command again to resume from {part}") from None
    finally:
        if response is not None:
            response.close()
    sha = digest.hexdigest()
    if expected_sha256 and not matches(sha, expected_sha256):
        part.unlink(missing_ok=True)
        raise FetchError(f"{url}: sha256 {sha} does not match the published {expected_sha256}; the download was "
                         "deleted, not used (run again to download it anew, or check the source)")
    os.replace(part, dest)
    return Fetched(dest, sha, offset)
