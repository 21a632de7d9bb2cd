"""kopf wiring: kopf runs the process (signals, logging); the Operator does the work, and serves
``/healthz`` and ``/metrics`` on the ``--liveness`` address (kube/endpoint.py).

No kopf handler watches a resource: the Operator's informers do (kube/operator.py), so kopf writes
nothing to LlamaModels (no bookkeeping annotations, no finalizers) and each reconcile reads from
memory. With leader election on, the operator acts only while it holds the Lease (kube/leader.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from llamacontroller.kube.api import KubeApi
from llamacontroller.kube.endpoint import Endpoint
from llamacontroller.kube.leader import Leadership, own_namespace
from llamacontroller.kube.metrics import OperatorMetrics
from llamacontroller.kube.operator import Operator


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf serves no resource here, so it needs neither CRDs nor namespaces: no scanning (and no
    # list/watch of them to grant). A LlamaModel CRD created after the operator started is found by
    # the informers, which list again until it answers.
    settings.scanning.disabled = True
    memo.metrics = OperatorMetrics()
    api = KubeApi.from_environment(timeout=memo.config.api_timeout_seconds, observe=memo.metrics.api_call)
    memo.operator = Operator(api, memo.config, memo.namespaces, memo.metrics)
    memo.leading = False
    if memo.liveness:  # a stand-by is alive too: served before the Lease is asked for
        memo.endpoint = Endpoint(
            memo.liveness, memo.metrics, lambda: memo.leading, lambda: memo.operator.synced
        )
        await memo.endpoint.start()
    election = memo.config.leader_election
    if election.enabled:
        leadership = Leadership(
            api,
            election.namespace or own_namespace(),
            election.lease_name,
            duration=election.lease_duration_seconds,
            renew=election.renew_seconds,
        )
        await leadership.acquire()
        memo.leadership = leadership
        memo.keeping = asyncio.create_task(leadership.keep(lambda: _lost(memo)))
    memo.leading = True
    await memo.operator.start()


def _lost(memo: kopf.Memo) -> None:
    """Someone else may act now: stop acting at once, and end the process (exit code 1)."""
    memo.lost.set()
    memo.leading = False
    asyncio.get_running_loop().create_task(memo.operator.stop())
    memo.stop_flag.set()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()  # nothing acts any more: the Lease can go
    if getattr(memo, "endpoint", None) is not None:
        await memo.endpoint.stop()
    if getattr(memo, "keeping", None) is not None:
        memo.keeping.cancel()
        if not memo.lost.is_set():
            await memo.leadership.release()
    await memo.operator.api.close()
    # After a signal, kopf's waiter on the stop flag is still pending, and kopf gives such tasks
    # 5 s before it cancels them: the flag set here ends it at once.
    memo.stop_flag.set()
