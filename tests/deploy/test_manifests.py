"""deploy/ builds with kubectl's kustomize, validates against the Kubernetes schemas, and says what the
issue asks: copies in sync, one operator, two gateways, hardened containers."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llamacontroller import cli
from llamacontroller.config import load_config
from tests.cluster.cluster import LocalCluster
from tests.support.dockerfile import RUNTIME, of
from tests.support.manifests import DEPLOY, NAMESPACE, NODE_AGENT_NAMESPACE, flag, mounted_config, one
from tests.support.paths import REPO

# The copies kustomize needs inside deploy/ (it loads no file outside the kustomization's tree).
COPIES = {
    DEPLOY / "config" / "operator.yaml": REPO / "config" / "operator.yaml",
    DEPLOY / "crds" / "llamamodel.yaml": REPO / "crds" / "llamamodel.yaml",
    DEPLOY / "crds" / "llamanode.yaml": REPO / "crds" / "llamanode.yaml",
}
# The oldest Kubernetes the manifests claim (docs/install.md), kubectl's here, the newest known.
KUBERNETES_VERSIONS = ("1.29.0", "1.32.0", "1.37.0")
HARDENED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


@pytest.mark.parametrize("copy_path", list(COPIES), ids=lambda p: str(p.relative_to(REPO)))
def test_the_copies_in_deploy_match_their_sources(copy_path: Path, update_golden: bool):
    source = COPIES[copy_path]
    if update_golden:
        copy_path.write_bytes(source.read_bytes())
    assert copy_path.read_bytes() == source.read_bytes(), (
        f"{copy_path.relative_to(REPO)} drifted from {source.relative_to(REPO)}: "
        "run `.venv/bin/python -m pytest tests/deploy --update-golden`"
    )


def test_the_base_holds_everything_and_nothing_more(manifests: list[dict[str, Any]]):
    config = one(manifests, "ConfigMap", "llamacontroller-config-")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in manifests) == sorted(
        [
            ("Namespace", NAMESPACE),
            ("Namespace", NODE_AGENT_NAMESPACE),
            ("CustomResourceDefinition", "llamamodels.llamacontroller.io"),
            ("CustomResourceDefinition", "llamanodes.llamacontroller.io"),
            ("ServiceAccount", "llamacontroller-operator"),
            ("ServiceAccount", "llamacontroller-gateway"),
            ("ServiceAccount", "llamacontroller-node-agent"),
            ("ClusterRole", "llamacontroller-operator"),
            ("ClusterRole", "llamacontroller-gateway"),
            ("ClusterRole", "llamacontroller-node-agent"),
            ("ClusterRoleBinding", "llamacontroller-operator"),
            ("ClusterRoleBinding", "llamacontroller-gateway"),
            ("ClusterRoleBinding", "llamacontroller-node-agent"),
            ("Role", "llamacontroller-operator-lease"),
            ("RoleBinding", "llamacontroller-operator-lease"),
            ("ConfigMap", config["metadata"]["name"]),
            ("Deployment", "llamacontroller-operator"),
            ("Deployment", "llamacontroller-gateway"),
            ("Service", "llamacontroller-gateway"),
            ("DaemonSet", "llamacontroller-node-agent"),
        ]
    )
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in manifests:
        home = NODE_AGENT_NAMESPACE if doc["metadata"]["name"] == "llamacontroller-node-agent" else NAMESPACE
        expected = None if doc["kind"] in cluster_scoped else home
        assert doc["metadata"].get("namespace") == expected, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llamacontroller"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    manifests: list[dict[str, Any]], version: str
):
    for doc in manifests:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_the_api_server_would(manifests: list[dict[str, Any]]):
    """A control: a misspelt field and a wrong type do fail, so the test above is not vacuous."""
    deployment = copy.deepcopy(one(manifests, "Deployment", "llamacontroller-operator"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[1], strict=True)
    deployment = copy.deepcopy(one(manifests, "Deployment", "llamacontroller-operator"))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[1], strict=True)


def test_the_configmap_is_config_operator_yaml(manifests: list[dict[str, Any]]):
    assert mounted_config(manifests) == (REPO / "config" / "operator.yaml").read_text()
    configmap = one(manifests, "ConfigMap", "llamacontroller-config-")
    assert list(configmap["data"]) == ["operator.yaml"]


@pytest.mark.parametrize("plural", ["llamamodels", "llamanodes"])
def test_each_crd_is_its_file_in_crds(manifests: list[dict[str, Any]], plural: str):
    built = copy.deepcopy(one(manifests, "CustomResourceDefinition", f"{plural}."))
    assert built["metadata"].pop("labels") == {"app.kubernetes.io/part-of": "llamacontroller"}
    assert built == yaml.safe_load((REPO / "crds" / f"{plural.removesuffix('s')}.yaml").read_text())


def assert_runs_as_the_images_user(spec: dict[str, Any]) -> None:
    """The Pod runs as the Dockerfile's USER, never root, with the runtime's default seccomp."""
    (user,) = [i.args for i in of(RUNTIME, "USER")]
    uid, gid = (int(part) for part in user.split(":"))
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return one(manifests, "Deployment", name)["spec"]["template"]["spec"]


def test_one_operator_at_a_time(manifests: list[dict[str, Any]]):
    """kopf runs standalone (no peering): one replica, and the old Pod goes before the new starts."""
    spec = one(manifests, "Deployment", "llamacontroller-operator")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}


def test_the_operator_runs_with_the_mounted_config_and_its_health_endpoint(
    manifests: list[dict[str, Any]],
):
    container = pod_spec(manifests, "llamacontroller-operator")["containers"][0]
    args = container["args"]
    assert args == [
        "operator",
        "--config",
        "/etc/llamacontroller/operator.yaml",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
    ]
    parsed = cli.parser().parse_args(args)  # the real CLI accepts them
    assert (parsed.command, parsed.config, parsed.namespace) == ("operator", args[2], None)
    port = next(p for p in container["ports"] if p["name"] == "health")["containerPort"]
    assert parsed.liveness == f"http://0.0.0.0:{port}/healthz"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/llamacontroller")
    assert mount["readOnly"] is True


def test_the_gateway_serves_11434_with_two_replicas(manifests: list[dict[str, Any]]):
    deployment = one(manifests, "Deployment", "llamacontroller-gateway")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["gateway", "--listen", "0.0.0.0:11434"]
    assert container["ports"] == [{"name": "http", "containerPort": 11434, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "http"}, probe
    service = one(manifests, "Service", "llamacontroller-gateway")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 11434, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The Service must not select the operator's Pod.
    operator_pod = one(manifests, "Deployment", "llamacontroller-operator")["spec"]["template"]
    assert not service["spec"]["selector"].items() <= operator_pod["metadata"]["labels"].items()


def test_the_gateway_command_line_parses(manifests: list[dict[str, Any]]):
    args = pod_spec(manifests, "llamacontroller-gateway")["containers"][0]["args"]
    parsed = cli.parser().parse_args(args)  # the real CLI accepts them
    assert (parsed.command, parsed.listen, parsed.namespace) == ("gateway", flag(args, "--listen"), None)


@pytest.mark.parametrize("name", ["llamacontroller-operator", "llamacontroller-gateway"])
def test_containers_are_hardened_and_sized(manifests: list[dict[str, Any]], name: str):
    spec = pod_spec(manifests, name)
    assert_runs_as_the_images_user(spec)
    assert spec["serviceAccountName"] == name
    assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    (container,) = spec["containers"]
    assert container["securityContext"] == HARDENED
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    # A read-only root: the only writable place is an emptyDir for scratch files.
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert next(v for v in spec["volumes"] if v["name"] == writable[0]["name"])["emptyDir"]


def test_the_node_agent_runs_on_every_gpu_node_as_the_slot_pods_do(manifests: list[dict[str, Any]]):
    """Where slot Pods may run (their tolerations, runtime class and models volume, read-only), with
    the node's PIDs (NVML names host PIDs), NVML for `utility` only, its node's name from the
    downward API, and nothing privileged."""
    config = load_config(REPO / "config" / "operator.yaml")
    daemonset = one(manifests, "DaemonSet", "llamacontroller-node-agent")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["tolerations"] == config.tolerations
    assert spec["runtimeClassName"] == config.runtime_class_name
    assert spec["hostPID"] is True and spec.get("hostNetwork") is not True
    (container,) = spec["containers"]
    args = cli.parser().parse_args(container["args"])  # the real CLI accepts them
    assert (args.command, args.node) == ("node-agent", None)
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "NODE_NAME": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "utility",
    }
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert models == {"name": "models", "mountPath": args.models_dir, "readOnly": True}
    assert args.models_dir == config.models_volume.mount_path
    volume = next(v for v in spec["volumes"] if v["name"] == "models")
    assert {k: v for k, v in volume.items() if k != "name"} == config.models_volume.volume_source()
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    assert_runs_as_the_images_user(spec)
    assert container["securityContext"] == HARDENED
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, kind
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    gateway = one(manifests, "Service", "llamacontroller-gateway")["spec"]["selector"]
    assert not gateway.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()


def test_one_image_of_the_packages_version_for_operator_gateway_and_adapters(
    manifests: list[dict[str, Any]], tmp_path: Path
):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    images = set()
    for name in ("llamacontroller-operator", "llamacontroller-gateway"):
        (container,) = pod_spec(manifests, name)["containers"]
        images.add(container["image"])
        assert container["imagePullPolicy"] == "IfNotPresent"
    (image,) = images
    assert image.endswith(f"/llamacontroller:{version}"), image
    # The slots' adapter sidecars, as the deployed config names their image.
    path = tmp_path / "operator.yaml"
    path.write_text(mounted_config(manifests))
    assert load_config(path).adapter.image == image, "config's adapter.image is not the deployed image"


def test_the_namespace_enforces_the_restricted_pod_security_standard(manifests: list[dict[str, Any]]):
    (namespace,) = [d for d in manifests if d["kind"] == "Namespace" and d["metadata"]["name"] == NAMESPACE]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_node_agents_namespace_holds_the_node_agent_only(manifests: list[dict[str, Any]]):
    """hostPID needs the `privileged` level: its own namespace, with nothing else in it."""
    labels = one(manifests, "Namespace", NODE_AGENT_NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    there = [
        (d["kind"], d["metadata"]["name"])
        for d in manifests
        if d["metadata"].get("namespace") == NODE_AGENT_NAMESPACE
    ]
    assert sorted(there) == [
        ("DaemonSet", "llamacontroller-node-agent"),
        ("ServiceAccount", "llamacontroller-node-agent"),
    ]


def test_the_api_server_accepts_every_manifest(cluster: LocalCluster, installed: list[dict[str, Any]]):
    """`kubectl apply -k deploy/` as a server-side dry run on the test cluster (where deploy/'s
    namespace exists): every object passes validation and admission, the Deployments meet the
    namespace's restricted Pod Security Standard and the node agent's DaemonSet its namespace's
    privileged one, without a warning."""
    done = cluster.kubectl("apply", "-k", str(DEPLOY), "--dry-run=server")
    kinds = sorted(line.split("/")[0] for line in done.stdout.splitlines())
    assert kinds == sorted(
        [
            "namespace",
            "namespace",
            "customresourcedefinition.apiextensions.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io",
            "serviceaccount",
            "serviceaccount",
            "serviceaccount",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "role.rbac.authorization.k8s.io",
            "rolebinding.rbac.authorization.k8s.io",
            "configmap",
            "service",
            "deployment.apps",
            "deployment.apps",
            "daemonset.apps",
        ]
    ), done.stdout
    assert all(line.endswith("(server dry run)") for line in done.stdout.splitlines())
    assert done.stderr == "", done.stderr


def test_the_api_server_warns_of_a_deployment_below_the_standard(
    cluster: LocalCluster, installed: list[dict[str, Any]], manifests: list[dict[str, Any]]
):
    """A control: a Pod that may run as root does draw the Pod Security warning."""
    deployment = copy.deepcopy(one(manifests, "Deployment", "llamacontroller-gateway"))
    del deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    done = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(deployment))
    assert 'would violate PodSecurity "restricted:latest": runAsNonRoot != true' in done.stderr
