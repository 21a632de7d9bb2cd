"""The agents' API client against the real API server: list then watch, and a new list when the
version it watches from is gone (410)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.cluster.cluster import LocalCluster
from tests.cluster.kubeapi import ApiError, KubeClient, Reflector


def pod_template(name: str) -> dict[str, Any]:
    container = {"name": "main", "image": "test.local/none"}
    return {"metadata": {"name": name}, "template": {"spec": {"containers": [container]}}}


async def reflect(kube: KubeClient, path: str, start_version: str | None) -> tuple[Reflector, list[str]]:
    """Runs a Reflector on ``path`` while the object ``fresh`` is created there; its events."""
    events: list[str] = []

    async def record(kind: str, obj: dict[str, Any]) -> None:
        events.append(f"{kind} {obj['metadata']['name']}")

    reflector = Reflector(kube, path, record)
    task = asyncio.create_task(reflector.run(start_version))
    try:
        await asyncio.wait_for(reflector.synced.wait(), 10)
        await kube.create(path, pod_template("fresh"))
        async with asyncio.timeout(10):
            while "ADDED fresh" not in events:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return reflector, events


def test_a_reflector_lists_then_watches(cluster: LocalCluster, namespace: str) -> None:
    assert cluster.control_plane is not None
    path = f"/api/v1/namespaces/{namespace}/podtemplates"
    cluster.control_plane.request("POST", path, pod_template("before"))

    async def run() -> tuple[Reflector, list[str]]:
        kube = KubeClient(cluster.control_plane.admin, "test-reflector")  # type: ignore[union-attr]
        try:
            return await reflect(kube, path, None)
        finally:
            await kube.aclose()

    reflector, events = asyncio.run(run())
    assert events == ["ADDED before", "ADDED fresh"]
    assert reflector.lists == 1 and set(reflector.store) == {f"{namespace}/before", f"{namespace}/fresh"}


def test_a_reflector_lists_again_when_its_version_is_gone(cluster: LocalCluster, namespace: str) -> None:
    control_plane = cluster.control_plane
    assert control_plane is not None
    path = f"/api/v1/namespaces/{namespace}/podtemplates"
    old = control_plane.request("POST", path, pod_template("before"))
    assert old is not None
    for name in ("after", "later"):  # the revision after "before" is compacted away
        control_plane.request("POST", path, pod_template(name))
    control_plane.compact_etcd()

    async def run() -> tuple[Reflector, list[str], int]:
        kube = KubeClient(control_plane.admin, "test-reflector")
        try:
            try:  # the API's answer to a watch from the old version
                async for _ in kube.watch(path, {}, old["metadata"]["resourceVersion"]):
                    break
                status = 200
            except ApiError as error:
                status = error.status
            reflector, events = await reflect(kube, path, old["metadata"]["resourceVersion"])
            return reflector, events, status
        finally:
            await kube.aclose()

    reflector, events, status = asyncio.run(run())
    assert status == 410
    assert reflector.lists == 1  # resumed from the old version, told 410, listed
    assert {"ADDED before", "ADDED after", "ADDED later", "ADDED fresh"} <= set(events)
