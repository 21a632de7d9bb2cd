"""Leader election on a Lease: taken when free or expired, renewed through failed calls and
conflicts, given up in time when it cannot be renewed.

The API server here is a fake (``LeaseServer`` on an httpx.MockTransport, an external system): it
holds one Lease with the API server's rules (a create of an existing Lease and a write on an older
resourceVersion are conflicts), and answers the statuses queued in ``faults`` instead (each for the
next call of its method)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

import httpx

from llamacontroller.kube.api import KubeApi
from llamacontroller.kube.leader import Leadership

LEASE = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


class LeaseServer:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.faults: list[tuple[str, int]] = []  # (method, status): answered instead of its next call
        self.failing = False  # every call fails (an API server away)

    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity"))

    def _store(self, body: dict[str, Any]) -> httpx.Response:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return httpx.Response(200, json=self.lease)

    def touch(self) -> None:
        """A write the client did not see answered (its own renewal, whose answer was lost)."""
        assert self.lease is not None
        self._store(self.lease)

    def handle(self, request: httpx.Request) -> httpx.Response:
        fault = next((f for f in self.faults if f[0] == request.method), None)
        if fault is not None:
            self.faults.remove(fault)
        if self.failing or fault:
            return httpx.Response(fault[1] if fault else 500, json={"kind": "Status"})
        body = json.loads(request.content) if request.content else None
        if request.method == "GET":
            return httpx.Response(200, json=self.lease) if self.lease else httpx.Response(404, json={})
        if request.method == "POST":
            return httpx.Response(409, json={}) if self.lease else self._store(body)
        assert self.lease is not None and body is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return httpx.Response(409, json={"reason": "Conflict"})
        return self._store(body)


def leadership(server: LeaseServer, me: str, duration: float = 1.0, renew: float = 0.2) -> Leadership:
    client = httpx.AsyncClient(base_url="http://api", transport=httpx.MockTransport(server.handle))
    return Leadership(KubeApi(client), "ns", "op", duration=duration, renew=renew, me=me)


def test_a_stand_by_takes_the_lease_once_the_holder_stops_renewing_for_its_duration() -> None:
    server = LeaseServer()

    async def main() -> float:
        await leadership(server, "a").acquire()
        began = time.monotonic()
        await leadership(server, "b").acquire()  # "a" never renews: it is dead
        return time.monotonic() - began

    waited = asyncio.run(main())
    assert server.holder() == "b" and 1.0 <= waited < 1.5


def test_errors_while_standing_by_are_tried_again() -> None:
    server = LeaseServer()
    server.faults = [("GET", 500), ("GET", 429), ("GET", 500)]

    async def main() -> None:
        await asyncio.wait_for(leadership(server, "a").acquire(), 2)

    asyncio.run(main())
    assert server.holder() == "a"


def test_a_conflict_on_renewal_is_no_loss() -> None:
    """The holder's previous renewal was done but its answer lost, then a write conflicts: the
    Lease, read again, is still its own. (Before, a conflict counted as another holder's.)"""
    server = LeaseServer()
    lost: list[bool] = []

    async def main() -> None:
        holder = leadership(server, "a")
        await holder.acquire()
        server.touch()
        server.faults = [("PUT", 409)]
        keeping = asyncio.create_task(holder.keep(lambda: lost.append(True)))
        await asyncio.sleep(0.9)
        keeping.cancel()

    asyncio.run(main())
    assert lost == [] and server.holder() == "a" and server.version >= 5


def test_renewals_that_fail_for_less_than_the_margin_cost_nothing() -> None:
    server = LeaseServer()
    lost: list[bool] = []

    async def main() -> None:
        holder = leadership(server, "a", duration=1.5, renew=0.3)
        await holder.acquire()
        keeping = asyncio.create_task(holder.keep(lambda: lost.append(True)))
        await asyncio.sleep(0.35)
        server.failing = True  # for 0.6 s: less than duration - renew (1.2 s) after the last renewal
        await asyncio.sleep(0.6)
        server.failing = False
        await asyncio.sleep(0.8)
        keeping.cancel()

    asyncio.run(main())
    assert lost == []


def test_a_holder_that_cannot_renew_stops_before_a_stand_by_may_take_over() -> None:
    server = LeaseServer()

    async def main() -> float:
        holder = leadership(server, "a")
        await holder.acquire()
        taken = time.monotonic()  # the lease's record last changed here, for everyone
        server.failing = True
        stopped = asyncio.Event()
        await asyncio.wait_for(holder.keep(stopped.set), 3)
        return time.monotonic() - taken

    stopped_after = asyncio.run(main())
    assert stopped_after < 1.0  # a stand-by takes over no earlier than the lease's duration (1 s)
