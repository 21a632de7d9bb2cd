"""`llamacontroller fetch` of a URL source against a loopback file server: placed at its content's
path, resumed after a broken connection or a killed fetch, refused on a wrong checksum with nothing
left, fetched once by concurrent fetches, and a read-only volume said in one line."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamacontroller.fetch import layout
from llamacontroller.fetch.errors import ChecksumMismatch, FetchError
from llamacontroller.fetch.progress import Progress
from llamacontroller.fetch.run import fetch
from llamacontroller.resource import ModelSource
from tests.support.model_server import ModelServers
from tests.support.paths import REPO


def _source(url: str, data: bytes) -> ModelSource:
    return ModelSource(url=url, sha256=hashlib.sha256(data).hexdigest())


def _fetch(source: ModelSource, models_dir: Path) -> tuple[Path, str]:
    out = io.StringIO()
    return fetch(source, models_dir, Progress(out, interval=0)), out.getvalue()


def _cli(
    *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "llamacontroller.cli", "fetch", *args]
    environment = {**os.environ, "PYTHONPATH": str(REPO / "operator"), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)


def test_a_url_lands_at_its_content_path(servers: ModelServers, models_dir: Path, model_bytes: bytes):
    source = _source(servers.add_file("/files/tiny.gguf", model_bytes), model_bytes)
    path, said = _fetch(source, models_dir)
    assert path == models_dir / ".sources" / "sha256" / source.sha256 / "tiny.gguf"  # type: ignore[operator]
    assert path == models_dir / layout.source_path(source)
    assert path.read_bytes() == model_bytes
    assert servers.served.gets["/files/tiny.gguf"] == 1
    assert "100 % of 533.5 KiB" in said and "verified and in place" in said
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf"]  # no partial, no lock

    again, said = _fetch(source, models_dir)
    assert again == path and "is in place" in said
    assert servers.served.gets["/files/tiny.gguf"] == 1  # nothing fetched twice


def test_a_broken_connection_is_resumed_where_it_stopped(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    url = servers.add_file("/files/tiny.gguf", model_bytes)
    servers.served.drop_once["/files/tiny.gguf"] = 200_000
    path, said = _fetch(_source(url, model_bytes), models_dir)
    assert path.read_bytes() == model_bytes
    assert servers.served.ranges == ["", "bytes=200000-"]
    assert "the connection failed at 195.3 KiB" in said


def test_a_server_error_is_tried_again_and_a_client_error_is_not(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    url = servers.add_file("/files/tiny.gguf", model_bytes)
    servers.served.fail_once["/files/tiny.gguf"] = 503
    path, said = _fetch(_source(url, model_bytes), models_dir)
    assert path.read_bytes() == model_bytes
    assert "(HTTP 503 Service Unavailable): trying again" in said
    missing = servers.add_file("/files/other.gguf", b"x").replace("other", "gone")
    with pytest.raises(FetchError) as caught:
        _fetch(ModelSource(url=missing, sha256="0" * 64), models_dir)
    assert str(caught.value) == f"{missing}: HTTP 404 Not Found"
    assert not (models_dir / layout.BLOBS_DIR / ("0" * 64)).exists()


def test_a_killed_fetch_is_resumed_from_its_partial_file(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    source = _source(servers.add_file("/files/tiny.gguf", model_bytes), model_bytes)
    target = models_dir / layout.source_path(source)
    target.parent.mkdir(parents=True)
    target.with_name("tiny.gguf.partial").write_bytes(model_bytes[:123_456])
    path, said = _fetch(source, models_dir)
    assert path.read_bytes() == model_bytes
    assert servers.served.ranges == ["bytes=123456-"]
    assert "resuming at 120.6 KiB" in said


def test_a_wrong_checksum_leaves_nothing_and_says_both(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    url = servers.add_file("/files/tiny.gguf", model_bytes)
    wrong = hashlib.sha256(b"another file").hexdigest()
    source = ModelSource(url=url, sha256=wrong)
    with pytest.raises(ChecksumMismatch) as caught:
        _fetch(source, models_dir)
    actual = hashlib.sha256(model_bytes).hexdigest()
    assert str(caught.value) == f"checksum mismatch for {url}: expected sha256 {wrong}, got {actual}"
    assert not (models_dir / layout.BLOBS_DIR / wrong).exists()

    termination = models_dir.parent / "termination-log"
    done = _cli(
        "--models-dir",
        str(models_dir),
        "--url",
        url,
        "--sha256",
        wrong,
        "--termination-log",
        str(termination),
    )
    assert done.returncode == 2
    line = f"error: checksum mismatch for {url}: expected sha256 {wrong}, got {actual}"
    assert done.stderr.splitlines()[-1] == line
    assert termination.read_text() == line
    assert not (models_dir / layout.BLOBS_DIR / wrong).exists()


def test_concurrent_fetches_download_once(servers: ModelServers, models_dir: Path, model_bytes: bytes):
    source = _source(servers.add_file("/files/tiny.gguf", model_bytes), model_bytes)
    servers.served.delay = 0.05  # about half a second per fetch: the others start meanwhile
    assert source.url and source.sha256
    args = ("--models-dir", str(models_dir), "--url", source.url, "--sha256", source.sha256)
    command = [sys.executable, "-m", "llamacontroller.cli", "fetch", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in running]
    target = models_dir / layout.source_path(source)
    assert [(code, out.strip()) for code, out, _ in results] == [(0, str(target))] * 3
    assert servers.served.gets["/files/tiny.gguf"] == 1
    assert sum("fetched meanwhile" in err or "is in place" in err for _, _, err in results) == 2
    assert target.read_bytes() == model_bytes
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny.gguf"]


def test_a_read_only_volume_is_one_clear_error(servers: ModelServers, models_dir: Path, model_bytes: bytes):
    source = _source(servers.add_file("/files/tiny.gguf", model_bytes), model_bytes)
    assert source.url and source.sha256
    # a read-only bind mount of the folder, in a mount namespace of the fetch's own
    python = [sys.executable, "-m", "llamacontroller.cli", "fetch"]
    args = ["--models-dir", str(models_dir), "--url", source.url, "--sha256", source.sha256]
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(models_dir), *python, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: cannot write to the models volume at {models_dir}: Read-only file system; fetching a "
        "model source needs it writable (or put the file there by hand and use model.path)"
    )
    assert servers.served.gets["/files/tiny.gguf"] == 0
