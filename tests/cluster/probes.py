"""Container probes as the kubelet runs them: httpGet, tcpSocket and exec, with the probe's timing.

An httpGet probe succeeds on a status from 200 to 399; its port is a number or the name of one of the
container's ports; the host is the Pod's IP unless the probe names one. Every probe opens a new
connection, as the kubelet's do.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.cluster.network import netns_exec


@dataclass(frozen=True)
class ProbeTiming:
    """A probe's schedule and thresholds, with the API's defaults."""

    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> ProbeTiming:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    message: str = ""


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"port {port!r} is not one of the container's named ports")


# Probes never verify certificates (as the kubelet's); one context serves them all.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


async def _http_get(
    action: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout: float
) -> ProbeResult:
    port = resolve_port(action["port"], container)
    scheme = str(action.get("scheme") or "HTTP").lower()
    host = action.get("host") or pod_ip
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {header["name"]: header["value"] for header in action.get("httpHeaders") or []}
    url = f"{scheme}://{host}:{port}{path}"
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=INSECURE, trust_env=False, limits=limits, timeout=timeout) as http:
        try:
            response = await http.get(url, headers=headers)
        except httpx.HTTPError as error:
            return ProbeResult(False, f'Get "{url}": {error!r}')
    if 200 <= response.status_code < 400:
        return ProbeResult(True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {response.status_code}")


async def _tcp_socket(
    action: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, timeout: float
) -> ProbeResult:
    port = resolve_port(action["port"], container)
    host = action.get("host") or pod_ip
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as error:
        return ProbeResult(False, f"dial tcp {host}:{port}: {error!r}")
    writer.close()
    return ProbeResult(True)


async def _exec(command: Sequence[str], netns: str | None, timeout: float) -> ProbeResult:
    argv = netns_exec(netns, command) if netns else list(command)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return ProbeResult(False, f"command timed out after {timeout:g}s")
    if process.returncode == 0:
        return ProbeResult(True)
    return ProbeResult(False, output.decode(errors="replace")[-1024:])


async def run_probe(
    probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, netns: str | None
) -> ProbeResult:
    """One attempt of ``probe`` against the container (in its Pod's namespace for exec)."""
    timeout = ProbeTiming.of(probe).timeout
    try:
        if "httpGet" in probe:
            return await _http_get(probe["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in probe:
            return await _tcp_socket(probe["tcpSocket"], container, pod_ip, timeout)
        if "exec" in probe:
            return await _exec(probe["exec"].get("command") or [], netns, timeout)
    except ValueError as error:
        return ProbeResult(False, str(error))
    return ProbeResult(False, "the kubelet runs httpGet, tcpSocket and exec probes only")
