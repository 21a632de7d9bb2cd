"""The project's test cluster (tests/cluster) as the suites that need Kubernetes use it, for
tests/conftest.py's fixtures and for the benchmarks that need a cluster (bench/chaos.py): its nodes,
its models, its images, and LlamaController installed as deploy/ installs it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from llamacontroller.demo_model import write_demo_model
from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.cluster.controlplane import ControlPlaneOptions
from tests.cluster.images import Image
from tests.cluster.kubelet import TestNode
from tests.support.builders import TINY_MODEL
from tests.support.kube import stand_in_images
from tests.support.manifests import kustomize_build
from tests.support.paths import REPO

# The examples' nodes, node-a, a node with 4 GPUs, and a passive node whose Pods' statuses the tests
# write as a kubelet would (what no process can show).
NODES = (
    TestNode("gpu-node-1"),
    TestNode("gpu-node-2"),
    TestNode("node-a"),
    TestNode("quad", gpus=4),
    TestNode("passive", passive=True),
)
INSTALLED_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def project_cluster_options(models: Path, images: dict[str, Image]) -> ClusterOptions:
    """The cluster's options. ``models`` (a folder) gets the tiny model under every file name the
    tests' LlamaModels name (the examples' too); ``images``: besides the test stand-ins.
    OwnerReferencesPermissionEnforcement is on, as on OpenShift, so the operator's owner references
    need what deploy/ grants; a crashing container is retried after 1, 2, 4, 4 ... seconds. The CRD
    is applied before the controllers start, so that the garbage collector deletes the children of
    a LlamaModel from the first test on."""
    tiny = write_demo_model(models / TINY_MODEL)
    for example in sorted((REPO / "examples").glob("*.yaml")):
        model = yaml.safe_load(example.read_text())["spec"]["model"]
        for name in (model.get("path"), model.get("projector")):  # a source is fetched, not placed
            if name and not (models / name).exists():
                (models / name).hardlink_to(tiny)
    plugins = ("NodeRestriction", "OwnerReferencesPermissionEnforcement")
    return ClusterOptions(
        nodes=NODES,
        models_dir=models,
        images={**images, **stand_in_images(sys.executable)},
        backoff_base=1.0,
        backoff_max=4.0,
        control_plane=ControlPlaneOptions(admission_plugins=plugins, preinstalled=(REPO / "crds",)),
    )


def install(cluster: LocalCluster) -> list[dict[str, Any]]:
    """LlamaController installed: `kubectl apply -f crds/`, then deploy/'s namespace, ServiceAccounts,
    ClusterRoles and their bindings (not its Deployments: the operator and the gateway run as
    processes with their ServiceAccounts' tokens). The objects applied from deploy/."""
    cluster.kubectl("apply", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=established", "crd/llamamodels.llamacontroller.io")
    objects = [doc for doc in kustomize_build() if doc["kind"] in INSTALLED_KINDS]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return objects
