"""Shared test options and fixtures.

The suites that need Kubernetes (tests/e2e, tests/deploy) share one test cluster for the whole run
(tests/cluster: a real control plane, kubelets of our own that run Pods as local processes): LlamaController
installed as deploy/ installs it (the CRD, the ServiceAccounts and their ClusterRoles), a namespace
per test, and the operator as a process with its ServiceAccount's token, one per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.support.builders import write_settings
from tests.support.components import OPERATOR_ACCOUNT, OPERATOR_USER, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import (
    Kube,
    new_namespace,
    refused_by_rbac,
    remove_namespace,
    requests_of,
)
from tests.support.project_cluster import install, project_cluster_options

# Real llama-server fixtures (start_server, demo_model, llama_server_binary) for every suite, and the
# test cluster's (cluster, kube_api; the cluster's logs in a failed test's report): this conftest sets
# the cluster's options and the namespaces of the suites that need Kubernetes.
pytest_plugins = ("tests.server.fixtures", "tests.cluster.fixtures")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the code")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Each phase's report on the test item (``rep_setup``, ``rep_call``), for fixtures' teardowns."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def cluster_options(tmp_path_factory: pytest.TempPathFactory) -> ClusterOptions:
    """The project's test cluster (tests/support/project_cluster.py)."""
    from tests.cluster.fixtures import TEST_IMAGES  # here: pytest loads the module as a plugin first

    return project_cluster_options(tmp_path_factory.mktemp("cluster-models"), TEST_IMAGES)


@pytest.fixture(scope="session")
def installed(cluster: LocalCluster) -> list[dict[str, Any]]:
    """LlamaController installed as deploy/ installs it, but for its Deployments: the operator and
    the gateway run here, as processes with their ServiceAccounts' tokens."""
    return install(cluster)


@pytest.fixture
def namespace(cluster: LocalCluster, installed: list[dict[str, Any]]) -> Iterator[str]:
    """A fresh namespace with its `llama-models` claim. Afterwards it is deleted, and its Pods and
    LlamaModels are gone before the next test begins: no server holds a slot into the next test, and
    no LlamaModel is a holder or a waiter in its ledger (the namespace itself may take a while)."""
    name = new_namespace(cluster)
    try:
        yield name
    finally:
        remove_namespace(cluster, name)


@pytest.fixture
def kube(cluster: LocalCluster, namespace: str) -> Iterator[Kube]:
    """The test's namespace, as admin."""
    view = Kube(cluster, namespace)
    yield view
    view.close()


@pytest.fixture
def operator_config(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The operator's settings on the test cluster; a test changes some by parametrizing this fixture
    indirectly with them."""
    return write_settings(tmp_path, **getattr(request, "param", {}))


@pytest.fixture
def operator(
    cluster: LocalCluster,
    namespace: str,
    operator_config: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """`llamacontroller operator` for every namespace, with the operator's ServiceAccount, started
    and stopped around the test (before its namespace goes). A request that RBAC refuses fails the
    test, and so does a traceback in its log."""
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    kubeconfig = account_kubeconfig(cluster, OPERATOR_ACCOUNT, tmp_path / "operator.kubeconfig")
    process = OperatorProcess(kubeconfig, tmp_path / "operator.log", operator_config)
    process.start_ready()
    yield process
    process.stop()
    call = getattr(request.node, "rep_call", None)
    if call is None or call.failed:
        print(f"--- operator log ---\n{process.log()[-20000:]}")
        return
    assert "Traceback" not in process.log(), process.log()[-20000:]
    refused = refused_by_rbac(requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER))
    assert not refused, "the operator's ClusterRole does not grant:\n" + "\n".join(refused)
