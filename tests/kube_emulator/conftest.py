"""Shared fixtures of the emulator's own tests: the ``kube`` emulator, a Widget CRD, kubectl, clients."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
import yaml

from .fixtures import kube, kube_options
from .runner import EmulatorThread

__all__ = ["kube", "kube_options"]

WIDGETS = ("example.test", "v1", "widgets")
PODS = ("", "v1", "pods")
CONFIGMAPS = ("", "v1", "configmaps")
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.test"},
    "spec": {
        "group": "example.test",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["all", "examples"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "A widget for testing the emulator.",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "description": "The desired state of the widget.",
                                "required": ["size"],
                                "properties": {
                                    "size": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": 100,
                                        "description": "How big.",
                                    },
                                    "mode": {
                                        "type": "string",
                                        "enum": ["single", "both"],
                                        "default": "single",
                                    },
                                    "color": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10},
                                    "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                                    "gpu": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {
                                            "count": {
                                                "type": "integer",
                                                "default": 1,
                                                "exclusiveMinimum": True,
                                                "minimum": 0,
                                            },
                                            "ratio": {"type": "number", "nullable": True},
                                        },
                                    },
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string", "minLength": 2},
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string", "enum": ["Pending", "Ready", "Failed"]},
                                    "observed": {"type": "integer"},
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["type", "status"],
                                            "properties": {
                                                "type": {"type": "string"},
                                                "status": {"type": "string"},
                                                "reason": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget_crd() -> dict[str, Any]:
    return copy.deepcopy(WIDGET_CRD)


def widget(name: str, size: int = 3, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "example.test/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }
    if namespace:
        body["metadata"]["namespace"] = namespace
    return body


def pod(
    name: str, namespace: str = "default", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec},
    }


@pytest.fixture()
def widgets(kube: EmulatorThread) -> tuple[str, str, str]:
    """The Widget CRD, registered and established."""
    kube.create(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), widget_crd())
    kube.wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (
                kube.get(
                    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, "widgets.example.test"
                )
                or {}
            )
            .get("status", {})
            .get("conditions", [])
        ),
        timeout=10,
    )
    return WIDGETS


@pytest.fixture()
def http(kube: EmulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube.url, timeout=30) as client:
        yield client


@pytest.fixture()
def api_client(kube: EmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    """A kubernetes client configured from the emulator's kubeconfig (read now, not at import)."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=os.environ["KUBECONFIG"], client_configuration=config)
    with kubernetes.client.ApiClient(config) as client:
        yield client


class Kubectl:
    """Runs kubectl against the emulator (KUBECONFIG is exported by the kube fixture)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run, require success and a clean stderr; return stdout."""
        result = self.run(*args, input=input)
        assert result.stderr == "", f"kubectl {' '.join(args)} wrote to stderr:\n{result.stderr}"
        return result.stdout

    def apply(self, *docs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        text = yaml.safe_dump_all(list(docs))
        return self.run("apply", "-f", "-", input=text, check=check)


@pytest.fixture()
def kubectl(kube: EmulatorThread, tmp_path: Path) -> Kubectl:
    return Kubectl(tmp_path)
