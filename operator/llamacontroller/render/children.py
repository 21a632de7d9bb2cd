"""One entry point for what a LlamaModel becomes; the operator and `llamacontroller render` share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render.args import ServerPlan, plan_server
from llamacontroller.render.pod import render_pod
from llamacontroller.render.service import render_service
from llamacontroller.resource import LlamaModel
from llamacontroller.slots import Placement, place


@dataclass(frozen=True)
class Children:
    lm: LlamaModel
    placement: Placement
    server: ServerPlan  # what the Pod's llama-server container runs
    pod: dict[str, Any]
    service: dict[str, Any]


def render_children(lm: LlamaModel, config: OperatorConfig, gpu_count: int | None = None) -> Children:
    """Raises PlacementError when the node's slots cannot place the LlamaModel."""
    placement = place(lm, config, gpu_count)
    return Children(
        lm=lm,
        placement=placement,
        server=plan_server(lm, placement, config),
        pod=render_pod(lm, placement, config),
        service=render_service(lm, placement, config),
    )
