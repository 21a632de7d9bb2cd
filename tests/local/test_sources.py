"""`llamacontroller up` with a LlamaModel whose model has a source: fetched into --models-dir,
verified, before the server starts; a second `up` finds it there."""

from __future__ import annotations

import hashlib
import signal

import pytest

from llamacontroller.fetch import layout
from tests.support.local_runtime import Local, llamamodel_file
from tests.support.model_server import model_servers
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)


def test_up_fetches_a_source_before_it_serves_it(local: Local):
    data = (local.models / "demo.gguf").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with model_servers() as files:
        url = files.add_file("/demo.gguf", data)
        llamamodel_file(local.files, "fetched", model={"source": {"url": url, "sha256": sha}})
        local.start()
        eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60, what="served")
        assert files.served.gets["/demo.gguf"] == 1
        assert (local.models / layout.blob_path(sha, "demo.gguf")).read_bytes() == data
        log = local.log()
        assert f"default/fetched: {url}\n" in log and "100 % of 533.5 KiB\n" in log
        assert local.process is not None
        local.process.send_signal(signal.SIGTERM)
        local.process.wait(30)

        local.start()  # the file is there: nothing is fetched again
        eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60, what="served again")
        assert files.served.gets["/demo.gguf"] == 1
        assert f"{layout.blob_path(sha, 'demo.gguf')} is in place" in local.log()


def test_up_says_which_llamamodels_fetch_failed(local: Local):
    data = (local.models / "demo.gguf").read_bytes()
    wrong = hashlib.sha256(b"other").hexdigest()
    with model_servers() as files:
        url = files.add_file("/demo.gguf", data)
        llamamodel_file(local.files, "wrong", model={"source": {"url": url, "sha256": wrong}})
        done = local.cli(*local.up_args(), check=False)
    assert done.returncode == 2
    actual = hashlib.sha256(data).hexdigest()
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: default/wrong: checksum mismatch for {url}: expected sha256 {wrong}, got {actual}"
    )
