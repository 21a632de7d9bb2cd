"""kopf wiring: kopf runs the process (signals, liveness, logging); the Operator does the work.

No kopf handler watches a resource: the Operator's informers do (kube/operator.py), so kopf writes
nothing to LlamaModels (no bookkeeping annotations, no finalizers) and each reconcile reads from
memory.
"""

from __future__ import annotations

from typing import Any

import kopf

from llamacontroller.kube.api import KubeApi
from llamacontroller.kube.operator import Operator


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    memo.operator = Operator(KubeApi.from_environment(), memo.config, memo.namespaces)
    await memo.operator.start()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()
    await memo.operator.api.close()


@kopf.on.probe(id="synced")
def synced(memo: kopf.Memo, **_: Any) -> bool:
    """The liveness endpoint's answer: whether the caches hold the cluster."""
    return bool(memo.operator.synced)
