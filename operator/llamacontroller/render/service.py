"""The Service in front of a slot: named after the slot, selecting whichever Pod holds it."""

from __future__ import annotations

from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render import names
from llamacontroller.render.pod import ADAPTER_PORT_NAME, PORT_NAME, child_metadata
from llamacontroller.resource import LlamaModel
from llamacontroller.slots import Placement


def slot_selector(placement: Placement) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGER,
        names.LABEL_NODE: names.label_value(placement.node),
        names.LABEL_SLOT: placement.slot,
    }


def render_service(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    """llama-server's own port (OpenAI API, /metrics), and the adapter's Ollama port when it runs."""
    name = names.service_name(placement.node, placement.slot, node_named=bool(lm.spec.node_name))
    ports = [{"name": PORT_NAME, "port": placement.port, "targetPort": PORT_NAME, "protocol": "TCP"}]
    if config.adapter.enabled:
        port = config.adapter.port
        ports.append(
            {"name": ADAPTER_PORT_NAME, "port": port, "targetPort": ADAPTER_PORT_NAME, "protocol": "TCP"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(lm, placement, name),
        "spec": {
            "type": "ClusterIP",
            "selector": slot_selector(placement),
            "ports": ports,
        },
    }


def service_endpoint(service: dict[str, Any], port_name: str = PORT_NAME) -> str | None:
    """The in-cluster URL of a port of a slot's Service (llama-server's by default); None without it."""
    meta = service["metadata"]
    for port in service["spec"]["ports"]:
        if port["name"] == port_name:
            return f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}"
    return None


def api_endpoint(service: dict[str, Any]) -> str | None:
    """The adapter's URL (Ollama and OpenAI APIs), when the Service has its port."""
    return service_endpoint(service, ADAPTER_PORT_NAME)


def service_matches(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether an existing Service already fronts the slot as wanted (so no write is needed)."""
    have, want = existing.get("metadata", {}), wanted["metadata"]
    return bool(
        existing.get("spec", {}).get("selector") == wanted["spec"]["selector"]
        and existing.get("spec", {}).get("ports") == wanted["spec"]["ports"]
        and have.get("ownerReferences") == want.get("ownerReferences")
        and want["labels"].items() <= (have.get("labels") or {}).items()
        and want["annotations"].items() <= (have.get("annotations") or {}).items()
    )
