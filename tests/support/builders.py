"""Builders: a LlamaModel body, and the repository's own settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llamacontroller.config import OperatorConfig, load_config
from tests.support.paths import REPO

TINY_MODEL = "tiny.gguf"  # the tiny model's file in a cluster's models folder (tests/conftest.py)


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


def lm(name: str, node: str = "node-a", **spec: Any) -> dict[str, Any]:
    """A LlamaModel to apply to a cluster (its namespace is the one it is applied in), serving the
    tiny model unless ``model`` says otherwise."""
    return {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": name},
        "spec": {"model": {"path": TINY_MODEL}, "nodeName": node, **spec},
    }


def arg(pod: dict[str, Any], flag: str, container: int = 0) -> str:
    """The value of one llama-server flag in a Pod's arguments."""
    args: list[str] = pod["spec"]["containers"][container]["args"]
    return args[args.index(flag) + 1]


GPU_FLAGS = ("--split-mode", "--main-gpu", "--tensor-split")


def gpu_flags(args: list[str]) -> str:
    """The flags of llama-server's arguments that place it on its GPUs, with their values."""
    return " ".join(a for i, a in enumerate(args) if a in GPU_FLAGS or (i and args[i - 1] in GPU_FLAGS))


def visible_gpus(pod: dict[str, Any], container: int = 0) -> str | None:
    """The GPUs a Pod's server container is given to see (NVIDIA_VISIBLE_DEVICES), if it names them."""
    env = pod["spec"]["containers"][container].get("env") or []
    return next((var["value"] for var in env if var["name"] == "NVIDIA_VISIBLE_DEVICES"), None)


def cluster_settings(**overrides: Any) -> dict[str, Any]:
    """The operator's settings on a test cluster: the built-in ones (config/operator.yaml), with
    servers kept light (one thread each: the test nodes are one small machine), then ``overrides``."""
    settings: dict[str, Any] = OperatorConfig().model_dump(mode="json", by_alias=True, exclude_none=True)
    settings["defaults"]["threads"] = 1
    return settings | overrides


def write_settings(folder: Path, **overrides: Any) -> Path:
    """``cluster_settings(**overrides)`` as a settings file for ``--config``."""
    path = folder / "operator.yaml"
    path.write_text(yaml.safe_dump(cluster_settings(**overrides)))
    return path
