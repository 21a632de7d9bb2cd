"""Names and labels of the children: deterministic, valid for Kubernetes, stable across switches."""

from __future__ import annotations

import hashlib
import re

DOMAIN = "llamacontroller.io"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_OWNER_UID = f"{DOMAIN}/owner-uid"
LABEL_MODEL = f"{DOMAIN}/llamamodel"
LABEL_NODE = f"{DOMAIN}/node"
LABEL_SLOT = f"{DOMAIN}/slot"
ANNOTATION_POD_HASH = f"{DOMAIN}/pod-hash"
ANNOTATION_MODEL_NAME = f"{DOMAIN}/model-name"
ANNOTATION_HOLDER = f"{DOMAIN}/holder"
ANNOTATION_NODE = f"{DOMAIN}/node"
MANAGER = "llamacontroller"
SERVER_NAME = "llama-server"

_MAX_LABEL = 63


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _fit(text: str, limit: int) -> str:
    """Keep a name under its limit, keeping it unique with a hash of the whole."""
    if len(text) <= limit:
        return text
    suffix = short_hash(text)
    return f"{text[: limit - len(suffix) - 1].rstrip('-.')}-{suffix}"


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text).strip("-._")
    return _fit(cleaned, _MAX_LABEL).strip("-._")


def dns1035(text: str) -> str:
    """A DNS-1035 label (Service names): lowercase alphanumerics and '-', starting with a letter.

    Where the text must change to become one (a node named `a.b` gives `a-b`), a hash of the
    original keeps it apart from the text that is already that label (a node named `a-b`)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"x-{cleaned}"
    if cleaned != text:
        return f"{cleaned[: _MAX_LABEL - 9].rstrip('-')}-{short_hash(text)}"
    return _fit(cleaned, _MAX_LABEL).rstrip("-")


def service_name(node: str, slot: str, node_named: bool) -> str:
    """`llama-<node>-<slot>`, or `llama-<slot>` on the operator's default node.

    It depends on the slot only, never on the model, so clients keep their address when a slot's
    model is switched.
    """
    return dns1035(f"llama-{node}-{slot}" if node_named else f"llama-{slot}")


def pod_name(object_name: str, pod_hash: str) -> str:
    """`<llamamodel>-<hash>`: a new name per rendered server, so a switch never reuses a dying Pod's."""
    return f"{_fit(object_name, 253 - 9)}-{pod_hash}"
