"""A container's HTTP probe, evaluated as the kubelet does: the local runtime judges its servers with
the very probe rendered into the Pod."""

from __future__ import annotations

from typing import Any

import httpx


def probe_url(probe: dict[str, Any], host: str, ports: dict[str, int]) -> str:
    """The URL an httpGet probe asks for; a named port is looked up in the container's ports."""
    http_get = probe["httpGet"]
    port = http_get["port"]
    number = ports[port] if isinstance(port, str) else int(port)
    return f"{http_get.get('scheme', 'HTTP').lower()}://{host}:{number}{http_get.get('path', '/')}"


def probe_passes(
    probe: dict[str, Any], host: str, ports: dict[str, int], timeout: float = 1.0
) -> tuple[bool, str]:
    """Success is a status from 200 to 399, as for the kubelet; the second value says what was seen."""
    url = probe_url(probe, host, ports)
    try:
        response = httpx.get(url, timeout=probe.get("timeoutSeconds", timeout))
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}"
    return 200 <= response.status_code < 400, f"GET {url}: {response.status_code}"
