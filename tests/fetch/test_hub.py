"""A Hugging Face source fetched through the real `huggingface_hub` client from a loopback hub
(tests/support/model_server.py, reached through HF_ENDPOINT): verified against the LFS sha256 the
hub publishes, linked at the LlamaModel's path, with the hub's refusals said in one line."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from llamacontroller.fetch import layout
from llamacontroller.fetch.errors import ChecksumMismatch, FetchError
from llamacontroller.fetch.progress import Progress
from llamacontroller.fetch.run import fetch
from llamacontroller.resource import HuggingFaceSource, ModelSource
from tests.support.model_server import ModelServers
from tests.support.paths import REPO

REPO_ID = "tiny-org/tiny-GGUF"
HUB_ARGS = ("--hf-repo", REPO_ID, "--hf-file", "tiny-q8_0.gguf")


def _hub(file: str = "tiny-q8_0.gguf", revision: str = "main", **more: object) -> ModelSource:
    return ModelSource(hugging_face=HuggingFaceSource(repo=REPO_ID, file=file, revision=revision, **more))


def _fetch(
    servers: ModelServers, source: ModelSource, models_dir: Path, token: str | None = None
) -> tuple[Path, str]:
    out = io.StringIO()
    path = fetch(source, models_dir, Progress(out, interval=0), endpoint=servers.url, token=token)
    return path, out.getvalue()


def test_the_fake_hub_is_one_the_real_client_downloads_from(
    servers: ModelServers, model_bytes: bytes, tmp_path: Path
):
    """The layout and headers are the hub's: huggingface_hub's own download takes the file from it."""
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    path = hf_hub_download(
        REPO_ID, "tiny-q8_0.gguf", endpoint=servers.url, cache_dir=tmp_path / "hf", token=False
    )
    assert Path(path).read_bytes() == model_bytes


def test_a_hub_file_is_verified_and_linked_at_the_llamamodels_path(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    entry = servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    source = _hub()
    path, said = _fetch(servers, source, models_dir)
    assert path == models_dir / layout.source_path(source)
    assert path.is_symlink() and path.read_bytes() == model_bytes
    blob = models_dir / layout.blob_path(entry.sha256, "tiny-q8_0.gguf")
    assert path.resolve() == blob.resolve()
    assert os.readlink(path) == f"../../../../sha256/{entry.sha256}/tiny-q8_0.gguf"
    assert f"commit {entry.commit[:12]}, sha256 {entry.sha256}, 533.5 KiB" in said
    assert servers.served.gets[f"/blobs/{entry.sha256}"] == 1

    _, said = _fetch(servers, source, models_dir)  # the hub is asked again; the file is not fetched again
    assert "is in place" in said and servers.served.gets[f"/blobs/{entry.sha256}"] == 1


def test_a_moved_branch_gets_the_new_file_and_an_unreachable_hub_the_old(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    path, _ = _fetch(servers, _hub(), models_dir)
    newer = model_bytes + b"\0" * 32
    moved = servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", newer)
    path, _ = _fetch(servers, _hub(), models_dir)
    assert path.read_bytes() == newer and moved.sha256 in os.readlink(path)

    out = io.StringIO()  # a hub that does not answer: the link made before serves, and it is said
    kept = fetch(_hub(), models_dir, Progress(out, interval=0), endpoint="http://127.0.0.1:9")
    assert kept.read_bytes() == newer
    assert "is out of reach" in out.getvalue() and "using the file fetched before" in out.getvalue()


def test_a_hub_file_that_does_not_match_its_sha256_leaves_nothing(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    entry = servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    servers.served.blobs[entry.sha256] = model_bytes[:-1] + b"\1"  # the storage serves other bytes
    with pytest.raises(ChecksumMismatch) as caught:
        _fetch(servers, _hub(), models_dir)
    assert f"expected sha256 {entry.sha256}, got " in str(caught.value)
    assert not (models_dir / layout.BLOBS_DIR / entry.sha256).exists()
    assert not (models_dir / layout.source_path(_hub())).exists()


def test_the_token_reaches_the_hub_for_a_private_repository(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    servers.served.repos[REPO_ID].token = "hf_secret"
    with pytest.raises(
        FetchError, match=r"no such repository on .* \(a private repository needs huggingFace.tokenSecret\)"
    ):
        _fetch(servers, _hub(), models_dir)
    path, _ = _fetch(servers, _hub(), models_dir, token="hf_secret")
    assert path.read_bytes() == model_bytes


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (_hub(file="other.gguf"), f"{REPO_ID}: no file 'other.gguf' at main"),
        (_hub(revision="v9"), f"{REPO_ID}: no revision 'v9'"),
    ],
)
def test_the_hubs_refusals_are_one_line(
    servers: ModelServers, models_dir: Path, model_bytes: bytes, source, message
):
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    with pytest.raises(FetchError) as caught:
        _fetch(servers, source, models_dir)
    assert str(caught.value) == message


def test_a_gated_repository_without_access_is_said(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    servers.served.repos[REPO_ID].gated = True
    servers.served.repos[REPO_ID].token = "hf_granted"
    with pytest.raises(FetchError) as caught:
        _fetch(servers, _hub(), models_dir, token="hf_other")
    assert str(caught.value) == f"{REPO_ID} is gated: its token (huggingFace.tokenSecret) has no access"


def test_the_command_takes_hf_endpoint_and_its_token_from_the_environment(
    servers: ModelServers, models_dir: Path, model_bytes: bytes
):
    servers.add_hub_file(REPO_ID, "tiny-q8_0.gguf", model_bytes)
    servers.served.repos[REPO_ID].token = "hf_secret"
    done = subprocess.run(
        [sys.executable, "-m", "llamacontroller.cli", "fetch", "--models-dir", str(models_dir), *HUB_ARGS],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "HF_ENDPOINT": servers.url,
            "HF_TOKEN": "hf_secret",
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(models_dir / layout.source_path(_hub()))
    assert "100 % of 533.5 KiB" in done.stderr
    sha = servers.served.repos[REPO_ID].files["main"]["tiny-q8_0.gguf"].sha256
    # the hub's protocol only: huggingface_hub's HEAD of the file, then its bytes (no telemetry)
    assert servers.served.requests == [f"HEAD /{REPO_ID}/resolve/main/tiny-q8_0.gguf", f"GET /blobs/{sha}"]
