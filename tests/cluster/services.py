"""The stand-in for cluster DNS and kube-proxy: a hosts file kept equal to the Services' endpoints.

There is no kube-proxy and no DNS server. For every Service with a ready endpoint, the hosts file maps
``<service>.<namespace>.svc.cluster.local``, ``<service>.<namespace>.svc`` and
``<service>.<namespace>`` to that endpoint's Pod IP (the first ready address, in sorted order), so
``http://<service>.<namespace>.svc:<port>`` reaches the Pod when the Service's port equals the
container port (true of the project's Services). A Service without a ready endpoint has no line:
its name does not resolve. ``ip netns exec`` bind-mounts the file over /etc/hosts of the processes
run in the cluster's client namespace. It is rewritten in place (same inode), so that bind mounts
see every change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.cluster.kubeapi import KubeClient, Reflector

BASE_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def ready_addresses(slices: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ready IPv4 endpoint addresses of a Service's EndpointSlices, sorted."""
    addresses: set[str] = set()
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") != "IPv4":
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                addresses.update(endpoint.get("addresses") or [])
    return sorted(addresses)


def hosts_text(
    services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]], domain: str = "cluster.local"
) -> str:
    """The hosts file for these Services and EndpointSlices."""
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for endpoint_slice in slices:
        meta = endpoint_slice["metadata"]
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((meta["namespace"], owner), []).append(endpoint_slice)
    lines = [BASE_HOSTS.rstrip("\n")]
    for service in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        addresses = ready_addresses(by_service.get((namespace, name), []))
        if addresses:
            names = (f"{name}.{namespace}.svc.{domain}", f"{name}.{namespace}.svc", f"{name}.{namespace}")
            lines.append(f"{addresses[0]}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


class ServiceHosts:
    """Watches Services and EndpointSlices and rewrites ``hosts_file`` whenever the mapping changes."""

    def __init__(self, client: KubeClient, hosts_file: Path) -> None:
        self.hosts_file = hosts_file
        self.services = Reflector(client, "/api/v1/services", self._changed)
        self.slices = Reflector(client, "/apis/discovery.k8s.io/v1/endpointslices", self._changed)
        self._text = ""

    async def _changed(self, _kind: str, _obj: dict[str, Any]) -> None:
        text = hosts_text(self.services.store.values(), self.slices.store.values())
        if text != self._text:
            with self.hosts_file.open("w") as hosts:  # in place: bind mounts keep the inode
                hosts.write(text)
            self._text = text

    async def run(self) -> None:
        await asyncio.gather(self.services.run(), self.slices.run())
