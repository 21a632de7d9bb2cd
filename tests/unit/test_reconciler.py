"""The reconciler's locking and its writes that fail: a LlamaModel moved to another node while it
waited for its old node's lock is decided under the new node's lock, against the new node's Pods; a
failed write is reported; a Pod created without an answer holds its GPUs until a read says whether
it exists.

The API server here is a fake (``FakeApi``, an external system, at the level of KubeApi's calls):
it records the writes, and holds a create until the test releases it."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from llamacontroller.kube.api import ApiError
from llamacontroller.kube.cache import ClusterCache
from llamacontroller.kube.reconciler import ActionFailed, Reconciler
from llamacontroller.render.children import render_children
from llamacontroller.resource import Phase, parse_llamamodel
from tests.support.builders import llamamodel, repo_config

CONFIG = repo_config()


class FakeApi:
    def __init__(self) -> None:
        self.created: list[str] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        self.hold: dict[str, asyncio.Event] = {}  # pod name prefix -> released when set
        self.lose_answers = False  # creates are done, their answers lost
        self.existing: dict[str, dict[str, Any]] = {}  # pods done whose answer was lost
        self.timeout = 30.0
        self.service_answer: ApiError | None = None  # the error every service write meets
        self.logs: dict[tuple[str, str], str | ApiError] = {}  # (pod, container) -> its log's tail
        self.log_reads: list[tuple[str, str, int]] = []

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        name = pod["metadata"]["name"]
        for prefix, released in self.hold.items():
            if name.startswith(prefix):
                await released.wait()
        self.created.append(name)
        created = copy.deepcopy(pod)
        created["metadata"] |= {"uid": f"pod-{name}", "resourceVersion": str(len(self.created) + 100)}
        if self.lose_answers:
            self.existing[name] = created
            raise ApiError(0, "Unreachable", f"POST pods {name}: ReadTimeout")
        return created

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.existing.get(name)

    async def delete_pod(self, namespace: str, name: str) -> None:
        return None

    async def apply_service(self, service: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        if self.service_answer is not None:
            raise self.service_answer
        answer = copy.deepcopy(service)
        answer["metadata"] |= {"uid": f"svc-{service['metadata']['name']}", "resourceVersion": "1"}
        return answer

    async def delete_service(self, namespace: str, name: str) -> None:
        return None

    async def patch_llamamodel_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses[name] = status

    async def post_event(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def pod_log_tail(self, namespace: str, name: str, container: str, lines: int = 1) -> str:
        self.log_reads.append((name, container, lines))
        tail = self.logs.get((name, container), ApiError(404, "NotFound", "no such container"))
        if isinstance(tail, ApiError):
            raise tail
        return tail


def node(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"node-{name}", "resourceVersion": "1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def held(body: dict[str, Any]) -> dict[str, Any]:
    """The server Pod of a LlamaModel, as the API server holds it."""
    pod = render_children(parse_llamamodel(body), CONFIG).pod
    pod["metadata"] |= {"uid": f"pod-{body['metadata']['name']}", "resourceVersion": "5"}
    return pod


def setup(*bodies: dict[str, Any], pods: tuple[dict[str, Any], ...] = ()) -> tuple[FakeApi, Reconciler]:
    api = FakeApi()
    cache = ClusterCache(api, None, CONFIG.gpu_count_label, lambda kind, change: None)  # type: ignore[arg-type]
    for name in ("node-a", "node-b"):
        cache.nodes.put(node(name))
    for body in bodies:
        cache.llamamodels[0].put(body)
    for pod in pods:
        cache.pods[0].put(pod)
    return api, Reconciler(api, cache, CONFIG)  # type: ignore[arg-type]


def lm(name: str, uid: str, node: str, gpu: int, version: int = 1) -> dict[str, Any]:
    body = llamamodel(name=name, uid=uid, nodeName=node, gpu={"gpuId": gpu})
    body["metadata"] |= {"resourceVersion": str(version), "creationTimestamp": "2026-01-01T00:00:00Z"}
    return body


def test_a_llamamodel_moved_while_it_waited_for_its_old_nodes_lock_is_decided_on_the_new_node() -> None:
    """y waits for node-b's lock (x holds it, creating its Pod); meanwhile y is moved to node-a's
    gpu0, which holder's server holds. Before, y was decided with node-b's Pods, so it saw gpu0
    free and got a second server on holder's GPU."""
    holder, x = lm("holder", "u-holder", "node-a", 0), lm("x", "u-x", "node-b", 0)
    y = lm("y", "u-y", "node-b", 1)
    api, reconciler = setup(holder, x, y, pods=(held(holder),))

    async def main() -> None:
        api.hold["x-"] = asyncio.Event()
        creating_x = asyncio.create_task(reconciler.reconcile("default", "x"))
        await asyncio.sleep(0.05)
        deciding_y = asyncio.create_task(reconciler.reconcile("default", "y"))
        await asyncio.sleep(0.05)
        moved = lm("y", "u-y", "node-a", 0, version=2)
        reconciler.cache.llamamodels[0].put(moved)
        api.hold["x-"].set()
        await asyncio.gather(creating_x, deciding_y)

    asyncio.run(main())
    assert [name.split("-")[0] for name in api.created] == ["x"]
    assert api.statuses["y"]["phase"] == Phase.WAITING.value
    assert api.statuses["y"]["message"] == "gpu0 on node-a is held by default/holder"


def test_a_create_without_an_answer_is_reported_and_holds_its_gpus_until_read() -> None:
    """x's create is done but its answer lost (and the watch has not brought the Pod): x's status
    says so and keeps the slot claimed; y, deciding next on the node, first reads whether the Pod
    exists, finds it, and waits for it."""
    x, y = lm("x", "u-x", "node-a", 0), lm("y", "u-y", "node-a", 0)
    api, reconciler = setup(x, y)

    async def main() -> None:
        api.lose_answers = True
        try:
            await reconciler.reconcile("default", "x")
        except ActionFailed as exc:
            assert "ReadTimeout" in str(exc)
        else:
            raise AssertionError("a lost answer is a failure to retry")
        api.lose_answers = False
        await reconciler.reconcile("default", "y")

    asyncio.run(main())
    said = api.statuses["x"]
    assert (said["phase"], said["conditions"][-1]["reason"]) == ("Pending", "Retrying")
    assert said["message"].startswith("could not create pod x-") and said["message"].endswith("trying again")
    assert [c["status"] for c in said["conditions"] if c["type"] == "SlotAvailable"] == ["True"]
    assert [name.split("-")[0] for name in api.created] == ["x"]  # y created nothing
    assert api.statuses["y"]["phase"] == Phase.WAITING.value
    assert reconciler.cache.pods_on("node-a")[0]["metadata"]["name"].startswith("x-")


def test_a_write_to_an_object_gone_meanwhile_is_tried_again_not_refused() -> None:
    """A 404 on a write says the cache was behind (the Service went, or never came of a create the
    server took as a conflict): the next try meets the cluster as it is, so the status says
    Retrying, not Refused."""
    x = lm("x", "u-x", "node-a", 0)
    api, reconciler = setup(x)
    api.service_answer = ApiError(404, "NotFound", 'services "llama-node-a-gpu0" not found')

    async def main() -> None:
        try:
            await reconciler.reconcile("default", "x")
        except ActionFailed:
            return
        raise AssertionError("a 404 on a write is a failure to retry")

    asyncio.run(main())
    said = api.statuses["x"]
    assert said["conditions"][-1]["reason"] == "Retrying" and said["message"].endswith("trying again")


def fetching(body: dict[str, Any]) -> dict[str, Any]:
    """The server Pod of a LlamaModel with a source while its init container fetches the file."""
    pod = held(body)
    pod["status"] = {
        "phase": "Pending",
        "initContainerStatuses": [{"name": "fetch", "state": {"running": {"startedAt": "x"}}}],
        "containerStatuses": [{"name": "llama-server", "state": {"waiting": {"reason": "PodInitializing"}}}],
    }
    return pod


def test_a_running_fetchs_progress_is_read_from_its_log_into_the_status() -> None:
    source = {"url": "https://x.io/m.gguf", "sha256": "ab" * 32}
    body = llamamodel(name="src", uid="u-src", nodeName="node-a", model={"source": source})
    body["metadata"] |= {"resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"}
    pod = fetching(body)
    api, reconciler = setup(body, pods=(pod,))
    name = pod["metadata"]["name"]
    api.logs[name, "fetch"] = "43 % of 4.9 GiB\n"
    asyncio.run(reconciler.reconcile("default", "src"))
    assert api.log_reads == [(name, "fetch", 1)]
    assert api.statuses["src"]["phase"] == Phase.DOWNLOADING.value
    assert (
        api.statuses["src"]["message"]
        == f"pod {name} is fetching the model into the models volume: 43 % of 4.9 GiB"
    )

    api.logs[name, "fetch"] = ApiError(502, "BadGateway", "the node's kubelet does not answer")
    asyncio.run(reconciler.reconcile("default", "src"))  # no figure, no failure: Downloading all the same
    assert api.statuses["src"]["message"] == f"pod {name} is fetching the model into the models volume"


def test_no_log_is_read_but_a_running_fetchs() -> None:
    body = lm("plain", "u-plain", "node-a", 0)
    api, reconciler = setup(body, pods=(held(body),))
    asyncio.run(reconciler.reconcile("default", "plain"))
    assert api.log_reads == []
