"""A LlamaModel with spec.model.source on the test cluster: its Pod's init container (the project's
image, `llamacontroller fetch`, run by the node agent) fetches the file from a file server on the
cluster's network into the models volume, and llama-server serves it; the status says Downloading
meanwhile, with the progress the fetch logs (read through the API server and the node agent's
kubelet API), and a checksum that does not match fails the LlamaModel with both hashes."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.fetch import layout
from llamacontroller.fetch.progress import human_size
from tests.cluster.cluster import LocalCluster
from tests.support.builders import arg, lm, write_settings
from tests.support.components import OperatorProcess
from tests.support.kube import Kube
from tests.support.model_server import ModelServers, model_servers
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)
TOLD = {"Downloading", "ServerReady"}  # the Events of a LlamaModel whose file was fetched


@pytest.fixture
def files(cluster: LocalCluster) -> Iterator[ModelServers]:
    """The file server and hub, on the cluster's bridge: the Pods reach them there."""
    assert cluster.network is not None
    with model_servers(cluster.network.host_address) as running:
        yield running


@pytest.fixture
def operator_config(tmp_path: Path, files: ModelServers) -> Path:
    """Looks again every second; the fetch's hub is the loopback one (a mirror, to the Pods)."""
    return write_settings(tmp_path, resyncSeconds=1, sources={"hubEndpoint": files.url})


@pytest.fixture
def model(tmp_path: Path) -> bytes:
    """A tiny model no earlier test fetched (the cluster's models folder lives for the session)."""
    return write_demo_model(tmp_path / "fresh.gguf", seed=uuid.uuid4().int % 2**31).read_bytes()


def test_two_llamamodels_with_one_url_source_fetch_it_once_and_serve_it(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, files: ModelServers, model: bytes
) -> None:
    models = cluster.options.models_dir
    assert models is not None
    sha = hashlib.sha256(model).hexdigest()
    source = {"url": files.add_file("/models/fresh.gguf", model), "sha256": sha}
    # A 64 KiB chunk a second: about 9 s, long enough for the operator (it looks every second) to
    # show the fetch's progress, and for the second Pod's fetch to wait for the first.
    files.served.delay = 1.0
    kube.apply(
        lm("first", model={"source": source}, gpu={"mode": "single", "gpuId": 0}),
        lm("second", model={"name": "second", "source": source}, gpu={"mode": "single", "gpuId": 1}),
    )
    fetching = {}
    for name in ("first", "second"):
        downloading = kube.wait_phase(name, "Downloading", "Downloading", timeout=60)
        pod = kube.one_pod(name)["metadata"]["name"]
        fetching[name] = f"pod {pod} is fetching the model into the models volume"
        assert downloading["message"].startswith(fetching[name])
    # The progress is the last line of the fetch's log, which the operator reads through pods/log:
    # of whichever fetch took the volume's lock first (the other waits for it, and says so).
    size = re.escape(human_size(len(model)))

    def showing_progress() -> re.Match[str] | None:
        for name in ("first", "second"):
            status = kube.status(name)
            progress = re.compile(re.escape(fetching[name]) + r": (\d{1,3}) % of " + size)
            if status.get("phase") == "Downloading" and (shown := progress.fullmatch(status["message"])):
                return shown
        return None

    shown = eventually(showing_progress, timeout=30, what="the fetch's progress in the status")
    assert 0 <= int(shown.group(1)) <= 100

    for name in ("first", "second"):
        kube.wait_phase(name, "Ready", "ServerReady", timeout=120)
        assert arg(kube.one_pod(name), "--model") == f"/models/.sources/sha256/{sha}/fresh.gguf"
        eventually(lambda name=name: set(kube.reasons(name)) >= TOLD, what=f"{name}'s events")
    assert (models / layout.blob_path(sha, "fresh.gguf")).read_bytes() == model
    assert files.served.gets["/models/fresh.gguf"] == 1  # two Pods, one download


def test_a_source_whose_checksum_does_not_match_fails_with_both_hashes(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, files: ModelServers, model: bytes
) -> None:
    models = cluster.options.models_dir
    assert models is not None
    wrong, actual = hashlib.sha256(b"another model").hexdigest(), hashlib.sha256(model).hexdigest()
    url = files.add_file("/models/fresh.gguf", model)
    kube.apply(lm("wrong", model={"source": {"url": url, "sha256": wrong}}))
    status = kube.wait_phase("wrong", "Failed", "FetchFailed", timeout=60)
    pod = kube.one_pod("wrong")["metadata"]["name"]
    assert status["message"].startswith(
        f"fetching the model in pod {pod} failed: checksum mismatch for {url}: "
        f"expected sha256 {wrong}, got {actual}"
    ), status["message"]
    target = models / layout.blob_path(wrong, "fresh.gguf")
    assert not target.exists()  # (what a failed fetch leaves: nothing, tests/fetch; a retry may run now)
    eventually(
        lambda: files.served.gets["/models/fresh.gguf"] >= 2, timeout=30, what="retried by the kubelet"
    )
    assert kube.status("wrong")["phase"] == "Failed"  # the retries do not flap it to Downloading
    assert not target.exists()


def test_a_hub_source_is_fetched_from_the_configs_mirror_and_served(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, files: ModelServers, model: bytes
) -> None:
    models = cluster.options.models_dir
    assert models is not None
    entry = files.add_hub_file("tiny-org/tiny-GGUF", "tiny-q8_0.gguf", model)
    hub = {"repo": "tiny-org/tiny-GGUF", "file": "tiny-q8_0.gguf"}
    kube.apply(lm("hub", model={"source": {"huggingFace": hub}}))
    kube.wait_phase("hub", "Ready", "ServerReady", timeout=120)
    link = "/models/.sources/huggingface/tiny-org/tiny-GGUF/main/tiny-q8_0.gguf"
    assert arg(kube.one_pod("hub"), "--model") == link
    assert (models / link.removeprefix("/models/")).resolve() == (
        models / layout.blob_path(entry.sha256, "tiny-q8_0.gguf")
    ).resolve()
    assert files.served.requests == [
        "HEAD /tiny-org/tiny-GGUF/resolve/main/tiny-q8_0.gguf",
        f"GET /blobs/{entry.sha256}",
    ]


def test_a_private_hub_repository_takes_the_token_of_its_secret(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, files: ModelServers, model: bytes
) -> None:
    files.add_hub_file("tiny-org/private-GGUF", "tiny-q8_0.gguf", model)
    files.served.repos["tiny-org/private-GGUF"].token = "hf_granted"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf"},
            "stringData": {"token": "hf_other"},
        }
    )
    hub = {
        "repo": "tiny-org/private-GGUF",
        "file": "tiny-q8_0.gguf",
        "tokenSecret": {"name": "hf", "key": "token"},
    }
    kube.apply(lm("private", model={"source": {"huggingFace": hub}}))
    status = kube.wait_phase("private", "Failed", "FetchFailed", timeout=60)
    assert "tiny-org/private-GGUF: no such repository on " in status["message"], status["message"]

    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf"},
            "stringData": {"token": "hf_granted"},
        }
    )
    kube.wait_phase(
        "private", "Ready", "ServerReady", timeout=120
    )  # the kubelet's next try takes the new token
