"""The ledger read from the cluster's objects: who holds which slot, who waits, in which order.

Pure functions over the objects the API returns. The rules that judge a request against them are
in slots.py; the decision that uses both is reconcile.py.

- A server Pod holds its slot until it is gone from the API, even while it terminates (its
  annotations name the node and the holder, its labels the slot).
- A LlamaModel whose status says the slot was granted (``SlotAvailable=True``) holds it too, while
  its Pod is briefly gone (deleted from outside, evicted, being recreated).
- A LlamaModel whose status says ``Waiting`` stands in its node's queue, ordered by creation time,
  then by when it started waiting.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from llamacontroller.config import OperatorConfig
from llamacontroller.render import names
from llamacontroller.resource import LlamaModelStatus, Phase
from llamacontroller.slot_table import slot_gpus
from llamacontroller.slots import Claim, QueueKey, Waiter
from llamacontroller.status import CONDITION_SLOT, micro_from_rfc3339

log = logging.getLogger(__name__)


def status_of(body: dict[str, Any]) -> LlamaModelStatus:
    """A LlamaModel's status, parsed once; one that cannot be read counts as empty (and is logged)."""
    try:
        return LlamaModelStatus.model_validate(body.get("status") or {})
    except ValidationError as exc:
        meta = body.get("metadata", {})
        log.warning("unreadable status of %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
        return LlamaModelStatus()


def who(body: dict[str, Any]) -> str:
    """`namespace/name`: how the ledger names a LlamaModel."""
    meta = body["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def uid(body: dict[str, Any]) -> str:
    """What tells a LlamaModel from an earlier one of the same name."""
    return str(body["metadata"].get("uid") or "")


def server_hash(pod: dict[str, Any]) -> str | None:
    """The hash of the rendered server a Pod runs (render/pod.py writes it): another one is a switch."""
    value = pod["metadata"].get("annotations", {}).get(names.ANNOTATION_POD_HASH)
    return str(value) if value else None


def claim_of(pod: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Claim:
    """A server Pod holds its slot until it is gone from the API, even while it terminates; it is
    its owner's by UID (a Pod without the label is nobody's, so it stands in everyone's way)."""
    meta = pod["metadata"]
    annotations, labels = meta.get("annotations", {}), meta.get("labels", {})
    slot = labels.get(names.LABEL_SLOT, "")
    return Claim(
        node=annotations.get(names.ANNOTATION_NODE, ""),
        slot=slot,
        gpus=slot_gpus(slot, gpu_count, config.ports),
        holder=annotations.get(names.ANNOTATION_HOLDER, f"{meta['namespace']}/?"),
        owner_uid=labels.get(names.LABEL_OWNER_UID, ""),
    )


def holds_slot(status: LlamaModelStatus) -> bool:
    """The status says the slot was granted (and not given up since)."""
    granted = [c for c in status.conditions if c.type == CONDITION_SLOT]
    return bool(granted) and granted[0].status == "True" and bool(status.slot)


def status_claim_of(body: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Claim | None:
    """A LlamaModel granted a slot keeps it while its Pod is briefly gone: the slot is released by
    deleting or moving the LlamaModel, not by losing a Pod."""
    status = status_of(body)
    if not holds_slot(status) or status.slot is None:
        return None
    gpus = slot_gpus(status.slot, gpu_count, config.ports)
    return Claim(node=status.node or "", slot=status.slot, gpus=gpus, holder=who(body), owner_uid=uid(body))


def queue_key(body: dict[str, Any], waiting_since: str) -> QueueKey:
    created = micro_from_rfc3339(body["metadata"].get("creationTimestamp", ""))
    return QueueKey(created=created, waiting_since=waiting_since, who=who(body))


def waiter_of(body: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Waiter | None:
    """A LlamaModel in the queue, as its last status says."""
    status = status_of(body)
    if status.phase is not Phase.WAITING or not status.node or not status.slot:
        return None
    key = queue_key(body, status.waiting_since or "")
    gpus = slot_gpus(status.slot, gpu_count, config.ports)
    return Waiter(node=status.node, slot=status.slot, gpus=gpus, who=key.who, key=key, owner_uid=uid(body))
