"""The Pod's own readiness probe, read against a real llama-server while it loads and once it serves."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from llamacontroller.local.probe import probe_passes
from llamacontroller.render.children import render_children
from llamacontroller.resource import Phase, parse_llamamodel
from llamacontroller.status import observe_pod
from tests.server.fixtures import StartServer
from tests.support.builders import llamamodel, repo_config
from tests.support.servers import HOST, pod_args

# A large context makes llama-server clear a big KV cache while it loads: /health answers 503 long
# enough (some tenths of a second) to be seen.
SLOW_LOAD = {"threads": 1, "ctxSize": 262144}


def as_kubelet_reports(ready: bool) -> dict:
    """The Pod a kubelet would write for this probe result (the container runs either way)."""
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "phi-4-pod"},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": str(ready)},
            ],
            "containerStatuses": [{"ready": ready, "state": {"running": {"startedAt": started}}}],
        },
    }


def test_health_moves_from_503_to_200_and_the_status_follows(start_server: StartServer):
    body = llamamodel(parameters=SLOW_LOAD)
    container = render_children(parse_llamamodel(body), repo_config()).pod["spec"]["containers"][0]
    assert pod_args(body, repo_config()) == container["args"]
    server = start_server(body, wait=False)
    ports = {"http": int(server.url.rsplit(":", 1)[1])}

    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, what = probe_passes(container["readinessProbe"], HOST, ports)
        seen.append(what)
        phase = observe_pod(as_kubelet_reports(ready), datetime.now(UTC), 300).phase
        assert phase is (Phase.READY if ready else Phase.LOADING)
        if ready:
            break
        time.sleep(0.005)
    assert seen[-1].endswith(": 200"), seen[-5:]
    assert any(s.endswith(": 503") for s in seen), "llama-server was never seen loading"
    first_503 = next(i for i, s in enumerate(seen) if s.endswith(": 503"))
    assert all(not s.endswith(": 200") for s in seen[:first_503])
