"""A tiny kopf operator for the emulator's smoke test: it is run with ``kopf run --standalone``.

It reconciles ``widgets.example.test``: on create it sets ``status.phase`` and ``status.observed``;
its delete handler makes kopf put a finalizer on every widget and remove it when the widget is deleted.
Each handler logs a marker line that the test counts to prove that nothing is processed twice across
restarts.
"""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = True
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 40
    settings.queueing.idle_timeout = 0.5
    settings.batching.exit_timeout = 1.0
    settings.batching.idle_timeout = 0.5
    settings.persistence.finalizer = "example.test/smoke-finalizer"


@kopf.on.create("example.test", "v1", "widgets")
def created(name: str, spec: dict[str, Any], patch: kopf.Patch, **_: Any) -> None:
    print(f"SMOKE-CREATED {name} size={spec.get('size')}", flush=True)
    patch.status["phase"] = "Ready"
    patch.status["observed"] = spec.get("size")


@kopf.on.update("example.test", "v1", "widgets", field="spec.size")
def resized(name: str, new: Any, **_: Any) -> None:
    print(f"SMOKE-RESIZED {name} size={new}", flush=True)


@kopf.on.delete("example.test", "v1", "widgets")
def deleted(name: str, **_: Any) -> None:
    print(f"SMOKE-DELETED {name}", flush=True)
