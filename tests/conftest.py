"""Shared test options and fixtures.

The suites that need Kubernetes (tests/e2e, tests/deploy) share one test cluster for the whole run
(tests/cluster: a real control plane, node agents that run Pods as local processes): LlamaController
installed as deploy/ installs it (the CRD, the ServiceAccounts and their ClusterRoles), a namespace
per test, and the operator as a process with its ServiceAccount's token, one per test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamacontroller.demo_model import write_demo_model
from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.cluster.controlplane import ControlPlaneOptions
from tests.cluster.nodeagent import TestNode
from tests.support.builders import TINY_MODEL, write_settings
from tests.support.components import OPERATOR_ACCOUNT, OPERATOR_USER, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import (
    Kube,
    new_namespace,
    refused_by_rbac,
    remove_namespace,
    requests_of,
    stand_in_images,
)
from tests.support.manifests import kustomize_build
from tests.support.paths import REPO

# Real llama-server fixtures (start_server, demo_model, llama_server_binary) for every suite, and the
# test cluster's (cluster, kube_api; the cluster's logs in a failed test's report): this conftest sets
# the cluster's options and the namespaces of the suites that need Kubernetes.
pytest_plugins = ("tests.server.fixtures", "tests.cluster.fixtures")

# The nodes of the project's test cluster: the examples' nodes, node-a, a node with 4 GPUs, and a
# passive node whose Pods' statuses the tests write as a kubelet would (what no process can show).
NODES = (
    TestNode("gpu-node-1"),
    TestNode("gpu-node-2"),
    TestNode("node-a"),
    TestNode("quad", gpus=4),
    TestNode("passive", passive=True),
)
INSTALLED_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


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
    """The project's test cluster. Its models folder holds the tiny model under every file name the
    tests' LlamaModels name (the examples' too); OwnerReferencesPermissionEnforcement is on, as on
    OpenShift, so the operator's owner references need what deploy/ grants; a crashing container
    is retried after 1, 2, 4, 4 ... seconds. The CRD is applied before the controllers start, so that
    the garbage collector deletes the children of a LlamaModel from the first test on."""
    from tests.cluster.fixtures import TEST_IMAGES  # here: pytest loads the module as a plugin first

    models = tmp_path_factory.mktemp("cluster-models")
    tiny = write_demo_model(models / TINY_MODEL)
    for example in sorted((REPO / "examples").glob("*.yaml")):
        model = yaml.safe_load(example.read_text())["spec"]["model"]
        for name in (model["path"], model.get("projector")):
            if name and not (models / name).exists():
                (models / name).hardlink_to(tiny)
    plugins = ("NodeRestriction", "OwnerReferencesPermissionEnforcement")
    return ClusterOptions(
        nodes=NODES,
        models_dir=models,
        images={**TEST_IMAGES, **stand_in_images(sys.executable)},
        backoff_base=1.0,
        backoff_max=4.0,
        control_plane=ControlPlaneOptions(admission_plugins=plugins, preinstalled=(REPO / "crds",)),
    )


@pytest.fixture(scope="session")
def installed(cluster: LocalCluster) -> list[dict[str, Any]]:
    """LlamaController installed: `kubectl apply -f crds/`, then deploy/'s namespace, ServiceAccounts,
    ClusterRoles and their bindings (not its Deployments: the operator and the gateway run here, as
    processes with their ServiceAccounts' tokens). The objects applied from deploy/."""
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=established", "crd/llamamodels.llamacontroller.io")
    objects = [doc for doc in kustomize_build() if doc["kind"] in INSTALLED_KINDS]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return objects


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
