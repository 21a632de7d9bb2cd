"""End to end on the project's test cluster (tests/conftest.py: the cluster, LlamaController
installed, a namespace per test, the operator); here, the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.components import GATEWAY_ACCOUNT, GATEWAY_USER, GatewayProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import refused_by_rbac, requests_of


@pytest.fixture
def gateway(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    """`llamacontroller gateway` with the gateway's ServiceAccount, in the client namespace."""
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    kubeconfig = account_kubeconfig(cluster, GATEWAY_ACCOUNT, tmp_path / "gateway.kubeconfig")
    process = GatewayProcess(cluster, kubeconfig, tmp_path / "gateway.log")
    process.audit_mark = mark
    process.start_listening()
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-10000:]
    refused = refused_by_rbac(requests_of(cluster.control_plane.audit_events(mark), GATEWAY_USER))
    assert not refused, "the gateway's ClusterRole does not grant:\n" + "\n".join(refused)
