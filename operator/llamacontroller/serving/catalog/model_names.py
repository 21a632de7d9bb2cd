"""Ollama model names: ``[host/][namespace/]model[:tag]``, tag ``latest`` by default.

Ollama resolves a bare ``phi-4`` to ``registry.ollama.ai/library/phi-4:latest``; clients send any of
these spellings and in any case, so names are compared on their canonical form.
"""

from __future__ import annotations

from typing import NamedTuple

# The name as listed: its own spelling, `:latest` added when it has no tag (as the resource says).
from llamacontroller.resource import DEFAULT_TAG
from llamacontroller.resource import normalize_model_name as with_tag

__all__ = ["ModelName", "parse_name", "same_model", "with_tag"]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"


class ModelName(NamedTuple):
    host: str
    namespace: str
    model: str
    tag: str


def parse_name(name: str) -> ModelName:
    """The four parts of a name, lower-cased, with Ollama's defaults for the missing ones."""
    text = name.strip().lower()
    path, _, last = text.rpartition("/")
    model, _, tag = last.partition(":")
    parts = path.split("/") if path else []
    host = parts[0] if len(parts) >= 2 else DEFAULT_HOST
    namespace = "/".join(parts[1:]) if len(parts) >= 2 else (parts[0] if parts else DEFAULT_NAMESPACE)
    return ModelName(host, namespace, model, tag or DEFAULT_TAG)


def same_model(a: str, b: str) -> bool:
    """True when two spellings name the same model (``phi-4``, ``PHI-4:latest``, ``library/phi-4``)."""
    return parse_name(a) == parse_name(b)
