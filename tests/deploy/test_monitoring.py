"""deploy/components/monitoring: an overlay of deploy/ with it builds; its ServiceMonitor and
PodMonitors select the objects that serve /metrics, on ports they have; the base's scrape
annotations name the ports that serve /metrics; every query of the Grafana dashboard parses
(promtool)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from llamacontroller.config import load_config
from llamacontroller.render import names
from llamacontroller.render.children import render_children
from llamacontroller.render.pod import ADAPTER_PORT_NAME, PORT_NAME
from llamacontroller.resource import parse_llamamodel
from tests.support.manifests import DEPLOY, kustomize_build, one
from tests.support.paths import REPO
from tests.support.prometheus import DASHBOARD, dashboard_queries, promtool_parse_queries


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """deploy/ with the component, as an overlay adds it."""
    root = tmp_path_factory.mktemp("overlay")
    shutil.copytree(DEPLOY, root / "deploy")
    (root / "overlay").mkdir()
    (root / "overlay" / "kustomization.yaml").write_text(
        "resources: [../deploy]\ncomponents: [../deploy/components/monitoring]\n"
    )
    return kustomize_build(root / "overlay")


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def port_names(pod_spec: dict[str, Any]) -> set[str]:
    return {p["name"] for c in pod_spec["containers"] for p in c.get("ports", [])}


def test_the_component_adds_the_monitors_and_the_dashboard(monitored: list[dict[str, Any]]):
    kinds = sorted(
        (d["kind"], d["metadata"]["name"]) for d in monitored if "monitoring.coreos.com" in d["apiVersion"]
    )
    assert kinds == [
        ("PodMonitor", "llamacontroller-operator"),
        ("PodMonitor", "llamacontroller-slots"),
        ("ServiceMonitor", "llamacontroller-gateway"),
    ]
    dashboard = one(monitored, "ConfigMap", "llamacontroller-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["grafana-dashboard.json"]) == json.loads(DASHBOARD.read_text())


def test_the_monitors_select_what_serves_metrics_on_its_ports(monitored: list[dict[str, Any]]):
    gateway_service = one(monitored, "Service", "llamacontroller-gateway")
    service_monitor = one(monitored, "ServiceMonitor", "llamacontroller-gateway")
    assert labels_match(service_monitor["spec"]["selector"], gateway_service["metadata"]["labels"])
    assert service_monitor["spec"]["endpoints"][0]["port"] in {
        p["name"] for p in gateway_service["spec"]["ports"]
    }
    operator = one(monitored, "Deployment", "llamacontroller-operator")["spec"]["template"]
    pod_monitor = one(monitored, "PodMonitor", "llamacontroller-operator")
    assert labels_match(pod_monitor["spec"]["selector"], operator["metadata"]["labels"])
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= port_names(operator["spec"])

    # the slot Pods, as the operator renders them: llama-server's port and the adapter's
    slots = one(monitored, "PodMonitor", "llamacontroller-slots")["spec"]
    assert slots["namespaceSelector"] == {"any": True}
    assert slots["selector"]["matchLabels"] == {names.LABEL_MANAGED_BY: names.MANAGER}
    assert {e["port"] for e in slots["podMetricsEndpoints"]} == {PORT_NAME, ADAPTER_PORT_NAME}
    for endpoint in slots["podMetricsEndpoints"]:
        sources = {r["sourceLabels"][0]: r["targetLabel"] for r in endpoint["relabelings"]}
        meta = "__meta_kubernetes_pod_label_"
        assert sources == {
            meta + re.sub(r"[^a-zA-Z0-9]", "_", names.LABEL_NODE): "node",
            meta + re.sub(r"[^a-zA-Z0-9]", "_", names.LABEL_SLOT): "slot",
        }


def test_the_slot_pods_have_the_labels_and_ports_the_pod_monitor_selects():
    config = load_config(REPO / "config" / "operator.yaml")
    body = {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": "phi-4", "namespace": "default", "uid": "u1"},
        "spec": {
            "model": {"path": "phi.gguf"},
            "nodeName": "gpu-node-1",
            "gpu": {"mode": "single", "gpuId": 0},
        },
    }
    children = render_children(parse_llamamodel(body), config)
    pod = children.pod
    assert pod["metadata"]["labels"][names.LABEL_MANAGED_BY] == names.MANAGER
    assert {names.LABEL_NODE, names.LABEL_SLOT} <= set(pod["metadata"]["labels"])
    assert {PORT_NAME, ADAPTER_PORT_NAME} <= port_names(pod["spec"])
    assert "--metrics" in pod["spec"]["containers"][0]["args"]


def test_the_scrape_annotations_name_the_ports_that_serve_metrics(manifests: list[dict[str, Any]]):
    for name in ("llamacontroller-operator", "llamacontroller-gateway"):
        template = one(manifests, "Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert int(annotations["prometheus.io/port"]) in ports, name


def test_every_dashboard_query_parses(tmp_path: Path):
    queries = dashboard_queries()
    assert len(queries) >= 12
    promtool_parse_queries(queries, tmp_path)
    panels = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    for wanted in (
        "Slots held per node",
        "LlamaModels per phase",
        "Requests per second",
        "Tokens per second",
    ):
        assert wanted in panels
    assert any("time_to_first_token" in q and "0.95" in q for q in queries)
