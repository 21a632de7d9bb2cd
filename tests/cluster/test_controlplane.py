"""The control plane itself: versions, RBAC with ServiceAccount tokens, the audit log, and the
controllers the project relies on (garbage collection, namespaces)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.cluster.cluster import LocalCluster
from tests.cluster.test_kubelet import eventually


def test_kubectl_and_the_server_are_1_37(cluster: LocalCluster) -> None:
    done = cluster.kubectl("version", "-o", "json")
    versions = json.loads(done.stdout)
    assert versions["clientVersion"]["gitVersion"].startswith("v1.37.")
    assert versions["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert "WARNING" not in done.stderr


def test_a_service_account_token_is_held_to_its_rbac_grants(
    cluster: LocalCluster, namespace: str, kube_api: client.ApiClient, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)
    assert cluster.control_plane is not None
    kubeconfig = cluster.control_plane.service_account_kubeconfig(namespace, "reader", tmp_path / "reader")
    as_reader = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))

    eventually(lambda: as_reader.list_namespaced_config_map(namespace) is not None, what="allowed")
    with pytest.raises(ApiException) as refused:
        as_reader.list_namespaced_secret(namespace)
    assert refused.value.status == 403

    user = f"system:serviceaccount:{namespace}:reader"

    def audited() -> list[dict]:
        events = cluster.control_plane.audit_events()  # type: ignore[union-attr]
        return [e for e in events if e["user"]["username"] == user and e["verb"] == "list"]

    seen = eventually(
        lambda: (
            {(e["objectRef"]["resource"], e["responseStatus"]["code"]) for e in audited()}
            >= {("configmaps", 200), ("secrets", 403)}
            and audited()
        ),
        what="audited",
    )
    assert all(e["level"] == "Metadata" and "requestObject" not in e for e in seen)


def test_the_garbage_collector_deletes_dependents(
    cluster: LocalCluster, namespace: str, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(dependent_gone, timeout=30, what="the dependent deleted")


def test_a_deleted_namespace_is_emptied_and_removed(
    cluster: LocalCluster, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"gone-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})
    eventually(lambda: core.list_namespaced_service_account(name).items, what="the default ServiceAccount")
    began = time.monotonic()
    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(namespace_gone, timeout=60, what="namespace removed")
    assert time.monotonic() - began < 60
