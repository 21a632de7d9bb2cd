"""One entry point for what a LlamaModel becomes; the operator and `llamacontroller render` share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render.pod import render_pod
from llamacontroller.render.service import render_service
from llamacontroller.resource import LlamaModel
from llamacontroller.slots import Placement, place


@dataclass(frozen=True)
class Children:
    placement: Placement
    pod: dict[str, Any]
    service: dict[str, Any]


def render_children(lm: LlamaModel, config: OperatorConfig) -> Children:
    """Raises PlacementError when the slot table cannot place the LlamaModel."""
    placement = place(lm, config)
    return Children(
        placement=placement, pod=render_pod(lm, placement, config), service=render_service(lm, placement)
    )
