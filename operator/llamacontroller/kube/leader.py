"""One operator acts at a time: the one that holds a coordination.k8s.io Lease.

An operator that starts waits until it holds the Lease, then renews it every ``renew`` seconds. A
Lease is free when nobody holds it, or when its record has not changed for ``duration`` seconds since
this process last saw it change: expiry is judged by the watcher's own clock, never by comparing
its clock with the holder's. A holder that cannot renew for ``duration - renew`` seconds stops
acting (``on_lost``) before anyone else may take over, so two operators never act at once.

A holder renews with one write on the version it last saw (a conflict, as when its previous renewal
was done but its answer lost, makes it read the Lease again). A call that fails (an error, a lost
answer, a conflict) is tried again after ``retry`` seconds, a tenth of ``renew``, and no call waits
longer than ``renew`` for its answer: several failed calls in a row cost no lease.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamacontroller.kube.api import ApiError, KubeApi

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str:
    """The namespace the operator runs in: its ServiceAccount's in a Pod, else the kubeconfig's
    current context's (as kubectl takes it), else `default`."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        pass
    from kubernetes import config

    try:
        _, current = config.list_kube_config_contexts(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError):
        return "default"
    return str((current or {}).get("context", {}).get("namespace") or "default")


def identity() -> str:
    """This process, for the Lease's holderIdentity: the Pod's name (its host name) and a suffix,
    so that a restarted container is another holder."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Seen:
    """A Lease record as last seen, and when (this process's monotonic clock)."""

    record: tuple[str, str]  # holder and renew time
    at: float


class Leadership:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        *,
        duration: float = 15.0,
        renew: float = 5.0,
        me: str | None = None,
    ) -> None:
        if not 0 < renew < duration:
            raise ValueError(f"the renew interval ({renew} s) must be shorter than the lease ({duration} s)")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.duration = duration
        self.renew = renew
        self.me = me or identity()
        self.retry = renew / 10
        self._seen: Seen | None = None
        self._lease: dict[str, Any] | None = None

    async def acquire(self) -> None:
        """Returns once this process holds the Lease."""
        announced = False
        while True:
            try:
                if await self._try():
                    break
            except (ApiError, OSError) as exc:
                log.warning("Could not read or take the lease %s (%s); trying again", self.name, exc)
                await asyncio.sleep(self.retry)
                continue
            if not announced and self._lease is not None:
                log.info("Standing by: %s holds the lease %s", self._holder(), self.name)
                announced = True
            await asyncio.sleep(self.renew)
        log.info("Holding the lease %s as %s", self.name, self.me)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until this fails for too long; then ``on_lost`` (stop acting) and return."""
        renewed = time.monotonic()
        wait = self.renew
        while True:
            await asyncio.sleep(wait)
            sent = time.monotonic()  # a renewal counts from when it was sent, not when it was answered
            try:
                if await self._try():
                    renewed, wait = sent, self.renew
                    continue
                reason = f"{self._holder()} took it"
            except (ApiError, OSError) as exc:
                if time.monotonic() + self.retry - renewed < self.duration - self.renew:
                    log.warning("Could not renew the lease %s (%s); trying again", self.name, exc)
                    wait = self.retry
                    continue
                reason = f"not renewed for {time.monotonic() - renewed:.0f} s: {exc}"
            log.error("Lost the lease %s (%s): stopping", self.name, reason)
            on_lost()
            return

    async def release(self) -> None:
        """On a clean stop, give the Lease up at once: a stand-by takes over without waiting for it
        to expire. A failure here only costs that wait."""
        lease = self._lease
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
            return
        body = self._body(lease)
        body["spec"] |= {"holderIdentity": "", "leaseDurationSeconds": 1}
        try:
            await self.api.replace_lease(self.namespace, body)
        except (ApiError, OSError) as exc:
            log.warning("Could not give up the lease %s: %s", self.name, exc)
        else:
            log.info("Gave up the lease %s", self.name)

    def _holder(self) -> str:
        return str((self._lease or {}).get("spec", {}).get("holderIdentity"))

    async def _try(self) -> bool:
        """Take or renew the Lease if it is free or this process's; whether it holds it now."""
        held, timeout = self._lease, min(self.renew, self.api.timeout)
        if held is not None and self._holder() == self.me:
            renewed = await self.api.replace_lease(self.namespace, self._body(held), timeout=timeout)
            if renewed is not None:
                self._lease = renewed
                return True
        lease = await self.api.get_lease(self.namespace, self.name, timeout=timeout)
        self._lease = lease
        if lease is None:
            created = await self.api.create_lease(self.namespace, self._body(None), timeout=timeout)
            self._lease = created
            return created is not None  # None: another process created it first
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime") or "")
        if self._seen is None or self._seen.record != record:
            self._seen = Seen(record, time.monotonic())
        expired = time.monotonic() - self._seen.at > float(spec.get("leaseDurationSeconds") or self.duration)
        if holder not in ("", self.me) and not expired:
            return False
        replaced = await self.api.replace_lease(self.namespace, self._body(lease), timeout=timeout)
        if replaced is None:  # written by someone since it was read: who holds it now, a new read says
            raise ApiError(409, "Conflict", f"the lease {self.name} changed since it was read")
        self._lease = replaced
        return True

    def _body(self, lease: dict[str, Any] | None) -> dict[str, Any]:
        now = now_micro()
        spec = (lease or {}).get("spec") or {}
        taking = spec.get("holderIdentity") != self.me
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                **({"resourceVersion": lease["metadata"]["resourceVersion"]} if lease else {}),
            },
            "spec": {
                "holderIdentity": self.me,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": now if taking else spec.get("acquireTime", now),
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if taking and lease else 0),
            },
        }
