"""`pipelines/fetch_weights.py` against a real HTTP server on 127.0.0.1 serving a file the test makes:
a good file, a wrong sha256, a download cut off half-way and resumed, a file without a published
digest (recorded, then checked), and the published sha256 prefix of an mmaction2 name enforced even
from a mirror. Plus the line `train.py` / `check_data.py` / `prepare_dataset.py` print when the
backbone file is missing.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adatad.config import CONFIG_DIR, load_config
from pipelines import fetch_weights
from pipelines.cli.hints import missing_backbone, python_command
from pipelines.weights.fetch import matches, part_file, record_file
from pipelines.weights.sources import SOURCES, release_hash_prefix, source_for

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a cut half-way leaves a real part file


class Server(http.server.ThreadingHTTPServer):
    """Serves PAYLOAD at every path; `/cut` sends half of it once, then closes the connection."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.ranges: list[str | None] = []  # the Range header of every request, in order
        self.cut_once = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        start = int(header.removeprefix("bytes=").split("-")[0]) if header else 0
        body = PAYLOAD[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        if self.path == "/cut" and self.server.cut_once:
            self.server.cut_once = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True  # the client is left waiting for bytes that never come
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _fetch(capsys, *args: str) -> tuple[int, str, str]:
    rc = fetch_weights.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_good_file_lands_whole_and_is_checked_not_fetched_again(server: Server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "pretrained" / "backbone.pth"
    rc, out, err = _fetch(capsys, "--out", str(dest), "--source-url", f"{server.url}/good", "--sha256", SHA)
    assert rc == 0, err
    assert dest.read_bytes() == PAYLOAD and not part_file(dest).exists()
    assert f"sha256 {SHA} matches the published {SHA}" in out
    rc, out, _ = _fetch(capsys, "--out", str(dest), "--source-url", f"{server.url}/good", "--sha256", SHA)
    assert rc == 0 and "already there, sha256 matches" in out
    assert server.ranges == [None]  # one request in all: the second run only checked the file


def test_a_wrong_sha256_refuses_the_file_with_one_line(server: Server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "backbone.pth"
    rc, _, err = _fetch(capsys, "--out", str(dest), "--source-url", f"{server.url}/good", "--sha256", "0" * 64)
    assert rc == 1
    assert err.strip().splitlines() == [f"error: {server.url}/good: sha256 {SHA} does not match the published "
                                        f"{'0' * 64}; the download was deleted, not used (run again to download "
                                        "it anew, or check the source)"]
    assert not dest.exists() and not part_file(dest).exists()


def test_an_interrupted_download_resumes_where_it_stopped(server: Server, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "backbone.pth"
    args = ("--out", str(dest), "--source-url", f"{server.url}/cut", "--sha256", SHA)
    rc, _, err = _fetch(capsys, *args)
    assert rc == 1 and "run the same command again to resume" in err, err
    kept = part_file(dest).stat().st_size
    assert 0 < kept < len(PAYLOAD) and not dest.exists()
    rc, out, err = _fetch(capsys, *args)
    assert rc == 0, err
    assert server.ranges == [None, f"bytes={kept}-"]  # the second request asked only for the rest
    assert f"resuming at {kept / 2**20:,.1f} MiB" in out
    assert dest.read_bytes() == PAYLOAD and not part_file(dest).exists()


def test_without_a_published_digest_the_download_is_recorded_and_checked(server: Server, tmp_path: Path,
                                                                          capsys) -> None:
    dest = tmp_path / "backbone.pth"
    rc, out, _ = _fetch(capsys, "--out", str(dest), "--source-url", f"{server.url}/good")
    assert rc == 0 and "none is published" in out
    assert record_file(dest).read_text() == f"{SHA}  backbone.pth\n"  # the sha256sum format
    dest.write_bytes(PAYLOAD[:-1] + b"x")  # changed since it was fetched
    rc, _, err = _fetch(capsys, "--out", str(dest), "--source-url", f"{server.url}/good")
    assert rc == 1 and f"does not match the recorded {SHA}" in err and len(err.strip().splitlines()) == 1


def test_the_published_prefix_of_an_mmaction2_name_holds_for_a_mirror_too(server: Server, tmp_path: Path,
                                                                        capsys) -> None:
    """The config names the L file; served from a 'mirror' with other bytes, its name's prefix refuses them."""
    name = "vit-large-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-229dbb03.pth"
    dest = tmp_path / "pretrained" / name
    rc, _, err = _fetch(capsys, "--config", str(CONFIG_DIR / "opentad" / "e2e_thumos_videomae_l_768x1_160_adapter.yaml"),
                        "--set", f"model.backbone.checkpoint={dest}", "--source-url", f"{server.url}/good")
    assert rc == 1 and "does not match the published 229dbb03" in err
    assert not dest.exists()
    assert release_hash_prefix(name) == "229dbb03" and source_for(dest).sha256 == "229dbb03"
    assert matches(SHA, SHA[:8]) and not matches(SHA, "229dbb03")


def test_the_table_covers_every_backbone_file_the_configs_name() -> None:
    named = {Path(load_config(p).model.backbone.checkpoint).name for p in sorted(CONFIG_DIR.rglob("*.yaml"))
             if "profiles" not in p.parts and "sweeps" not in p.parts and load_config(p).model.backbone.checkpoint}
    assert named <= {s.file for s in SOURCES}
    assert all((s.url is None) == bool(s.how) for s in SOURCES)  # no URL: the way to get it instead


@pytest.mark.parametrize(("config", "says"), [
    ("thumos_videomae_s_768x1_160_adapter.yaml", "; fetch it with: {py} pipelines/fetch_weights.py --config {cfg}"),
    ("opentad/e2e_thumos_videomaev2_g_768x1_160_adapter.yaml",
     "; nobody may redistribute it, {py} pipelines/fetch_weights.py --config {cfg} says how to get it"),
])
def test_a_missing_backbone_names_the_command_that_fetches_it(config: str, says: str, tmp_path: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("ADATAD_ROOT", str(tmp_path))  # relative paths resolve here: no pretrained/ yet
    cfg = load_config(CONFIG_DIR / config)
    line = missing_backbone(cfg, f"configs/{config}")
    path = tmp_path / cfg.model.backbone.checkpoint
    assert line == f"VideoMAE checkpoint not found: {path}" + says.format(py=python_command(), cfg=f"configs/{config}")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert missing_backbone(cfg, f"configs/{config}") is None
