"""Builders: a LlamaModel body, and the repository's own settings."""

from __future__ import annotations

from typing import Any

from llamacontroller.config import OperatorConfig, load_config
from tests.support.paths import REPO


def repo_config(**overrides: Any) -> OperatorConfig:
    config = load_config(REPO / "config" / "operator.yaml")
    return OperatorConfig.model_validate(config.model_dump() | overrides)


def llamamodel(name: str = "phi-4", uid: str = "uid-phi-4", namespace: str = "default", **spec: Any) -> dict:
    body_spec: dict[str, Any] = {"model": {"path": "phi-4.gguf"}, "nodeName": "node-a"}
    body_spec.update(spec)
    return {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 1},
        "spec": body_spec,
    }
