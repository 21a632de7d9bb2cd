"""pytest fixtures of the test cluster, and a hook that adds the control plane's log tails to the
report of a failed test that used a cluster. tests/conftest.py loads this module as a plugin of every
suite; a conftest that wants a cluster of its own imports what it uses:

    from tests.cluster.fixtures import cluster, cluster_options, kube_api, namespace  # noqa: F401

``cluster`` is session-scoped: one control plane and its nodes for the whole run (start-up takes
seconds, not per test); override ``cluster_options`` (session scope) in a conftest to change the nodes,
images or timings. ``namespace`` gives each test a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.cluster.images import Image
from tests.cluster.kubelet import TestNode

TEST_IMAGE = "test.local/python:3"  # runs this Python: args are the interpreter's
TEST_IMAGES = {"test.local/python:*": Image([sys.executable])}

_active: list[LocalCluster] = []


@pytest.fixture(scope="session")
def cluster_options(tmp_path_factory: pytest.TempPathFactory) -> ClusterOptions:
    """Two GPU nodes, a models folder, and the test image."""
    return ClusterOptions(
        nodes=(TestNode("node-a", gpus=2), TestNode("node-b", gpus=2)),
        models_dir=tmp_path_factory.mktemp("models"),
        images=TEST_IMAGES,
    )


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_options: ClusterOptions
) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), cluster_options)
    try:
        local.start()
    except Exception as error:
        tails = local.log_tails()
        local.stop()
        pytest.fail(f"the test cluster did not start: {error}\n{tails}", pytrace=False)
    _active.append(local)
    try:
        yield local
    finally:
        _active.remove(local)
        local.stop()


@pytest.fixture(scope="session")
def kube_api(cluster: LocalCluster) -> client.ApiClient:
    """The official client as admin."""
    return config.new_client_from_config(str(cluster.kubeconfig))


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    core = client.CoreV1Api(kube_api)
    name = f"test-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A failed test that used the cluster gets the end of every control-plane log in its report."""
    outcome = yield
    report = outcome.get_result()
    used = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and _active and "cluster" in getattr(item, "fixturenames", ()):
        local = used if isinstance(used, LocalCluster) else _active[-1]
        report.sections.append(("test cluster logs", local.log_tails()))
