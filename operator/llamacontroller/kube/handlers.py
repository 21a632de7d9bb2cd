"""kopf wiring: each handler turns an event into a call of the Reconciler, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from llamacontroller.kube.api import KubeApi
from llamacontroller.kube.reconciler import Reconciler
from llamacontroller.render import names
from llamacontroller.resource import GROUP, PLURAL, VERSION

OWN_CHILDREN = {names.LABEL_MANAGED_BY: names.MANAGER}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping goes to our own annotations; its per-handler events only when they fail.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.DOMAIN)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.DOMAIN, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{names.DOMAIN}/finalizer"  # unused: no handler needs one
    settings.posting.loggers = True  # handler failures reach `kubectl describe`, not only the log
    settings.posting.level = logging.WARNING
    memo.reconciler = Reconciler(KubeApi.from_environment(), memo.config, memo.namespaces)
    # A safety net: the cluster is the truth, so look at everything again now and then, even
    # without events. One task for the operator, not a kopf timer per object: kopf puts a finalizer
    # on objects with timers, and a LlamaModel could then not be deleted while the operator is down.
    memo.resync = asyncio.create_task(memo.reconciler.resync_forever(memo.config.resync_seconds))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.resync
    await memo.reconciler.close()
    await memo.reconciler.api.close()


@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=2)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=2)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=2)
async def llamamodel_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace is not None:  # LlamaModels are namespaced: always
        await memo.reconciler.reconcile(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def llamamodel_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A deleted LlamaModel leaves the queue (a holder's Pod going away is seen on its own)."""
    node = ((event.get("object") or {}).get("status") or {}).get("node")
    if event.get("type") == "DELETED" and node:
        memo.reconciler.wake(node)


@kopf.on.event("", "v1", "pods", labels=OWN_CHILDREN)
async def server_pod_event(event: kopf.RawEvent, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await _child_changed(event, meta, memo)


@kopf.on.event("", "v1", "services", labels=OWN_CHILDREN)
async def slot_service_event(event: kopf.RawEvent, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    await _child_changed(event, meta, memo)


async def _child_changed(event: kopf.RawEvent, meta: kopf.Meta, memo: kopf.Memo) -> None:
    """A child moved: its holder re-reads it; a child gone may free a slot for those waiting."""
    holder = meta.annotations.get(names.ANNOTATION_HOLDER, "")
    if "/" in holder:
        namespace, name = holder.split("/", 1)
        await memo.reconciler.reconcile(namespace, name)
    node = meta.annotations.get(names.ANNOTATION_NODE)
    if event.get("type") == "DELETED" and node:
        memo.reconciler.wake(node)
