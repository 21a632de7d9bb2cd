"""The kubelet against the real control plane: Pods run as processes, probed, restarted, deleted,
scheduled by the real scheduler, and nodes lost to the real node-lifecycle controller."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from llamacontroller.demo_model import write_demo_model
from tests.cluster.cluster import LocalCluster
from tests.cluster.fixtures import TEST_IMAGE
from tests.cluster.kubeletapi import KUBELET_PORT

T = TypeVar("T")
HTTP_PORT = 8080
GOLDEN_GPU0 = Path(__file__).resolve().parents[1] / "unit" / "golden" / "gpu0.yaml"


def eventually(check: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """``check()``'s first truthy value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what or 'true'} after {timeout:.0f} s: last {last!r}")
        time.sleep(0.1)
        last = check()
    return last


def python_container(script: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "args": ["-u", "-c", textwrap.dedent(script)], **extra}


def http_server(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": TEST_IMAGE,
        "args": ["-m", "http.server", str(HTTP_PORT), "--bind", "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": HTTP_PORT}],
        **extra,
    }


def pod_body(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }


class Pods:
    """The Pods of one test's namespace, as plain dicts."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(self.core.create_namespaced_pod(self.namespace, body))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(self.core.read_namespaced_pod(name, self.namespace))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def container(self, name: str, container: str) -> dict[str, Any]:
        statuses = self.status(name).get("containerStatuses") or []
        return next((s for s in statuses if s["name"] == container), {})

    def condition(self, name: str, kind: str) -> str | None:
        conditions = self.status(name).get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == kind), None)

    def ready(self, name: str) -> bool:
        return self.condition(name, "Ready") == "True"

    def delete(self, name: str, grace: int | None = None) -> None:
        self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=grace)


@pytest.fixture
def pods(kube_api: client.ApiClient, namespace: str) -> Pods:
    return Pods(kube_api, namespace)


def node_address(kube_api: client.ApiClient, node: str) -> str:
    found = client.CoreV1Api(kube_api).read_node(node)
    return next(a.address for a in found.status.addresses if a.type == "InternalIP")


def get_url(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def serving(url: str) -> bool:
    """The URL answers 200 (a server that is not listening yet is not an error)."""
    try:
        return get_url(url) == 200
    except OSError:
        return False


def test_a_pod_runs_and_becomes_ready_through_its_probes(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    container = http_server(
        startupProbe=probe, readinessProbe=probe, livenessProbe={**probe, "failureThreshold": 2}
    )
    pods.create(pod_body("web", [container], nodeName="node-a"))

    eventually(lambda: pods.ready("web"), what="Ready")
    status = pods.status("web")
    assert status["phase"] == "Running"
    assert status["hostIP"] == node_address(kube_api, "node-a")
    assert status["podIP"] != status["hostIP"] and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["startTime"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
        "PodScheduled": "True",
    }
    web = pods.container("web", "web")
    assert web["state"]["running"]["startedAt"]
    assert (web["ready"], web["started"], web["restartCount"]) == (True, True, 0)
    assert web["containerID"].startswith("local://") and web["imageID"].startswith(
        "test.local/python@sha256:"
    )
    assert get_url(f"http://{status['podIP']}:{HTTP_PORT}/") == 200  # the Pod's IP is reachable from here


def test_two_pods_on_one_node_bind_the_same_port(cluster: LocalCluster, pods: Pods) -> None:
    for name in ("one", "two"):
        pods.create(pod_body(name, [http_server()], nodeName="node-b"))
    eventually(lambda: pods.ready("one") and pods.ready("two"), what="both Ready")
    ips = {pods.status(name)["podIP"] for name in ("one", "two")}
    assert len(ips) == 2
    for ip in ips:
        eventually(lambda ip=ip: serving(f"http://{ip}:{HTTP_PORT}/"), what=f"{ip} serving")


def test_env_expansion_field_refs_and_a_completed_pod(cluster: LocalCluster, pods: Pods) -> None:
    script = """
        import os, sys
        print("greeting", os.environ["GREETING"], sys.argv[1])
        print("pod", os.environ["POD_NAME"], os.environ["POD_IP"])
    """
    container = python_container(script)
    container["args"].append("$(GREETING)-arg")
    container["env"] = [
        {"name": "NAME", "value": "world"},
        {"name": "GREETING", "value": "hello-$(NAME)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    pods.create(pod_body("once", [container], restartPolicy="Never", nodeName="node-a"))

    eventually(lambda: pods.status("once").get("phase") == "Succeeded", what="Succeeded")
    terminated = pods.container("once", "main")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    output = cluster.container_log(pods.namespace, "once", "main")
    assert "greeting hello-world hello-world-arg" in output
    assert f"pod once {pods.status('once')['podIP']}" in output
    assert pods.condition("once", "Ready") == "False"


def test_a_crashing_container_goes_into_crash_loop_back_off(cluster: LocalCluster, pods: Pods) -> None:
    script = """
        import sys
        for line in range(100):
            print(f"line {line}")
        print("fatal: the model file is missing")
        sys.exit(3)
    """
    container = python_container(script, terminationMessagePolicy="FallbackToLogsOnError")
    pods.create(pod_body("crash", [container], nodeName="node-a"))

    def backing_off() -> dict[str, Any]:
        status = pods.container("crash", "main")
        waiting = (status.get("state") or {}).get("waiting") or {}
        return status if waiting.get("reason") == "CrashLoopBackOff" and status["restartCount"] >= 2 else {}

    status = eventually(backing_off, what="in CrashLoopBackOff after 2 restarts")
    assert "back-off" in status["state"]["waiting"]["message"]
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    message = last["message"]
    assert message.endswith("fatal: the model file is missing\n") or message.endswith(
        "fatal: the model file is missing"
    )
    assert len(message.splitlines()) <= 80 and "line 19\n" not in message
    assert pods.status("crash")["phase"] == "Running"
    assert pods.condition("crash", "Ready") == "False"
    first = pods.container("crash", "main")["restartCount"]
    eventually(lambda: pods.container("crash", "main")["restartCount"] > first, what="restarting again")


def test_a_failing_liveness_probe_restarts_the_container(cluster: LocalCluster, pods: Pods) -> None:
    liveness = {"httpGet": {"path": "/", "port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    pods.create(
        pod_body(
            "unhealthy",
            [http_server(livenessProbe=liveness)],
            nodeName="node-b",
            terminationGracePeriodSeconds=3,
        )
    )

    status = eventually(
        lambda: (s := pods.container("unhealthy", "web")).get("restartCount", 0) >= 1 and s, what="restarted"
    )
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 143  # SIGTERM: Python's default handler ends the server
    assert last["reason"] == "Error"


def test_graceful_delete_sends_sigterm_then_the_pod_is_gone(cluster: LocalCluster, pods: Pods) -> None:
    script = """
        import signal, sys, time
        def stop(signum, frame):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("waiting", flush=True)
        time.sleep(600)
    """
    pods.create(pod_body("polite", [python_container(script)], nodeName="node-a"))
    eventually(lambda: pods.ready("polite"), what="Ready")
    eventually(lambda: "waiting" in cluster.container_log(pods.namespace, "polite", "main"), what="running")

    began = time.monotonic()
    pods.delete("polite", grace=30)
    eventually(lambda: pods.get("polite") is None, what="deleted")
    assert time.monotonic() - began < 10  # gone when its process exited, not at the deadline
    assert "got SIGTERM" in cluster.container_log(pods.namespace, "polite", "main")


def test_a_container_that_ignores_sigterm_is_killed_at_the_deadline(
    cluster: LocalCluster, pods: Pods
) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(600)
    """
    pods.create(pod_body("stubborn", [python_container(script)], nodeName="node-b"))
    eventually(
        lambda: "ignoring" in cluster.container_log(pods.namespace, "stubborn", "main"), what="running"
    )

    began = time.monotonic()
    pods.delete("stubborn", grace=3)
    eventually(lambda: pods.get("stubborn") is None, what="deleted")
    assert 3 <= time.monotonic() - began < 10


def test_the_scheduler_places_a_pod_by_node_affinity(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]}
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    pods.create(pod_body("placed", [http_server()], affinity=affinity, runtimeClassName="nvidia"))

    eventually(lambda: pods.ready("placed"), what="Ready")
    pod = pods.get("placed")
    assert pod is not None and pod["spec"]["nodeName"] == "node-b"
    assert pod["status"]["hostIP"] == node_address(kube_api, "node-b")


def test_the_api_server_refuses_an_unknown_runtime_class(cluster: LocalCluster, pods: Pods) -> None:
    with pytest.raises(ApiException) as refused:
        pods.create(pod_body("nowhere", [http_server()], runtimeClassName="missing"))
    assert refused.value.status == 403 and "RuntimeClass" in refused.value.body


def test_the_models_folder_is_mounted_read_only_at_its_path(cluster: LocalCluster, pods: Pods) -> None:
    models = cluster.options.models_dir
    assert models is not None
    (models / "tiny.gguf").write_text("GGUF stand-in\n")
    script = """
        print(open("/models/tiny.gguf").read().strip())
        try:
            open("/models/new", "w")
        except OSError as error:
            print("write refused:", error.errno)
    """
    container = python_container(
        script, volumeMounts=[{"name": "models", "mountPath": "/models", "readOnly": True}]
    )
    volumes = [{"name": "models", "hostPath": {"path": "/srv/models"}}]
    pods.create(pod_body("reader", [container], volumes=volumes, restartPolicy="Never", nodeName="node-a"))

    eventually(lambda: pods.status("reader").get("phase") == "Succeeded", what="Succeeded")
    output = cluster.container_log(pods.namespace, "reader", "main")
    assert "GGUF stand-in" in output and "write refused: 30" in output  # EROFS
    assert not (models / "new").exists()


def test_service_names_resolve_to_ready_pods_in_the_client_namespace(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    web = pods.create(
        {
            **pod_body("backend", [http_server(readinessProbe=probe)], nodeName="node-b"),
            "metadata": {"name": "backend", "labels": {"app": "backend"}},
        }
    )
    assert web["metadata"]["labels"] == {"app": "backend"}
    service = {
        "metadata": {"name": "backend"},
        "spec": {
            "selector": {"app": "backend"},
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http"}],
        },
    }
    client.CoreV1Api(kube_api).create_namespaced_service(pods.namespace, service)
    host = f"backend.{pods.namespace}.svc"
    try:
        eventually(lambda: host in cluster.hosts_file.read_text(), what=f"{host} in the hosts file")
    except AssertionError as error:
        slices = cluster.kubectl("get", "endpointslices", "-n", pods.namespace, "-o", "yaml").stdout
        raise AssertionError(
            f"{error}\nhosts:\n{cluster.hosts_file.read_text()}\nPod: {pods.status('backend')}\n{slices}"
        ) from error
    assert pods.status("backend")["podIP"] in cluster.hosts_file.read_text()

    url = f"http://{host}:{HTTP_PORT}/"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).status)"
    done = subprocess.run(
        cluster.client_command(["python3", "-c", fetch]), capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "200", done.stderr


def test_a_lost_node_becomes_unknown_and_its_pods_keep_running(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    pods.create(pod_body("survivor", [http_server()], nodeName="node-b"))
    eventually(lambda: pods.ready("survivor"), what="Ready")
    ip = pods.status("survivor")["podIP"]

    def ready_condition() -> str:
        node = core.read_node("node-b")
        return next(c.status for c in node.status.conditions if c.type == "Ready")

    cluster.lose_node("node-b")
    try:
        eventually(lambda: ready_condition() == "Unknown", timeout=30, what="node-b Unknown")
        eventually(
            lambda: (
                "node.kubernetes.io/unreachable"
                in {t.key for t in core.read_node("node-b").spec.taints or []}
            ),
            what="node-b tainted unreachable",
        )
        assert get_url(f"http://{ip}:{HTTP_PORT}/") == 200  # the processes go on
        # ... but its kubelet API is out of reach with the node.
        assert cluster.kubectl("logs", "-n", pods.namespace, "survivor", check=False).returncode != 0
    finally:
        cluster.recover_node("node-b")
    eventually(lambda: ready_condition() == "True", timeout=30, what="node-b Ready again")
    eventually(lambda: pods.ready("survivor"), timeout=30, what="the Pod Ready again")
    assert '"GET / HTTP/1.1" 200' in cluster.kubectl("logs", "-n", pods.namespace, "survivor").stdout


def golden_children(namespace: str, node: str, model_file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator's Pod and Service for a gpu0 slot (the unit tests' golden file), in ``namespace``
    on ``node`` with ``model_file`` from the models volume; without the owner, which is not here."""
    pod, service = yaml.safe_load_all(GOLDEN_GPU0.read_text())
    for child in (pod, service):
        child["metadata"]["namespace"] = namespace
        child["metadata"].pop("ownerReferences")
    term = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    term["nodeSelectorTerms"][0]["matchFields"][0]["values"] = [node]
    args = pod["spec"]["containers"][0]["args"]
    args[args.index("--model") + 1] = f"/models/{model_file}"
    return pod, service


def test_the_operators_pod_serves_the_model_through_its_service(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    assert cluster.options.models_dir is not None
    write_demo_model(cluster.options.models_dir / "demo.gguf")
    cluster.create_models_claim(pods.namespace)
    pod, service = golden_children(pods.namespace, "node-a", "demo.gguf")
    pods.create(pod)
    client.CoreV1Api(kube_api).create_namespaced_service(pods.namespace, service)
    name = pod["metadata"]["name"]

    try:
        eventually(lambda: pods.ready(name), timeout=60, what="the llama-server Pod Ready")
    except AssertionError as error:
        logs = {
            c: cluster.container_log(pods.namespace, name, c)[-2000:] for c in ("llama-server", "adapter")
        }
        raise AssertionError(f"{error}\n{pods.status(name)}\n{logs}") from error
    assert pods.get(name)["spec"]["nodeName"] == "node-a"  # type: ignore[index]
    url = f"http://{service['metadata']['name']}.{pods.namespace}.svc:11434/api/tags"
    eventually(
        lambda: url.split("/")[2].split(":")[0] in cluster.hosts_file.read_text(), what="the Service named"
    )
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    done = subprocess.run(
        cluster.client_command([sys.executable, "-c", fetch]), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert [m["name"] for m in json.loads(done.stdout)["models"]] == ["qwen2.5-coder:7b"]


def test_an_image_outside_the_table_cannot_be_pulled(cluster: LocalCluster, pods: Pods) -> None:
    container = {"name": "main", "image": "registry.example/unknown:1"}
    pods.create(pod_body("unpullable", [container], nodeName="node-a"))

    def waiting() -> dict[str, Any]:
        return (pods.container("unpullable", "main").get("state") or {}).get("waiting") or {}

    eventually(lambda: waiting().get("reason") == "ErrImagePull", what="ErrImagePull")
    assert "registry.example/unknown:1" in waiting()["message"]
    assert pods.status("unpullable")["phase"] == "Pending"


def test_a_containers_cgroup_names_its_pod_as_the_kubelets_cgroupfs_driver_does(
    cluster: LocalCluster, pods: Pods, namespace: str
) -> None:
    """What the project's node agent reads to tell whose a process is (llamacontroller.nodeagent.cgroup)."""
    from llamacontroller.nodeagent.cgroup import pod_uid_of
    from tests.cluster import cgroups

    assert cgroups.available(), "no cgroups on this machine: the tests' kubelet runs as root"
    script = """
        import os, time
        print(os.getpid(), open("/proc/self/cgroup").read().replace(chr(10), "|"), flush=True)
        time.sleep(60)
    """
    uid = pods.create(pod_body("cg", [python_container(script)], nodeName="node-a"))["metadata"]["uid"]
    line = eventually(lambda: cluster.container_log(namespace, "cg", "main").strip(), what="its cgroup")
    cgroup = line.split(" ", 1)[1].replace("|", "\n")
    assert f"/kubepods/pod{uid}/main" in cgroup
    assert pod_uid_of(cgroup) == uid
    pods.delete("cg", grace=0)
    folder = cgroups.root() / f"pod{uid}"  # type: ignore[operator]
    eventually(lambda: not folder.exists(), what="its cgroup removed with the pod")


def test_init_containers_run_in_order_each_to_success_before_the_containers(
    cluster: LocalCluster, pods: Pods, tmp_path: Path
) -> None:
    marker, trail = tmp_path / "failed-once", tmp_path / "trail"
    first = f"""
        import os, pathlib, sys, time
        pathlib.Path("{trail}").open("a").write("first\\n")
        if not os.path.exists("{marker}"):
            open("{marker}", "w").close()
            print("error: the first run fails")
            sys.exit(2)
        time.sleep(1.5)
    """
    second = f"""
        import pathlib
        pathlib.Path("{trail}").open("a").write("second\\n")
    """
    main = f"""
        import pathlib, time
        pathlib.Path("{trail}").open("a").write("main\\n")
        time.sleep(60)
    """
    init = [
        python_container(first, name="first", terminationMessagePolicy="FallbackToLogsOnError"),
        python_container(second, name="second"),
    ]
    pods.create(pod_body("initialized", [python_container(main)], initContainers=init, nodeName="node-a"))

    def init_status(name: str) -> dict[str, Any]:
        statuses = pods.status("initialized").get("initContainerStatuses") or []
        return next((s for s in statuses if s["name"] == name), {})

    def first_running_again() -> bool:
        status = init_status("first")
        return "running" in (status.get("state") or {}) and status.get("restartCount") == 1

    eventually(first_running_again, what="the first init container running again after its failure")
    status = pods.status("initialized")
    assert status["phase"] == "Pending"
    assert pods.condition("initialized", "Initialized") == "False"
    assert pods.container("initialized", "main")["state"] == {"waiting": {"reason": "PodInitializing"}}
    failed = init_status("first")["lastState"]["terminated"]
    assert (failed["exitCode"], failed["message"].strip()) == (2, "error: the first run fails")

    eventually(
        lambda: "running" in pods.container("initialized", "main").get("state", {}), what="main running"
    )
    eventually(lambda: trail.read_text() == "first\nfirst\nsecond\nmain\n", what="each in its turn")
    assert [s["name"] for s in pods.status("initialized")["initContainerStatuses"]] == ["first", "second"]
    for name in ("first", "second"):
        assert init_status(name)["state"]["terminated"]["reason"] == "Completed"
    assert pods.condition("initialized", "Initialized") == "True"
    assert pods.status("initialized")["phase"] == "Running"


def test_env_from_a_secret_is_read_by_the_node_and_a_missing_one_is_a_config_error(
    cluster: LocalCluster, pods: Pods
) -> None:
    core = pods.core
    core.create_namespaced_secret(
        pods.namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "hf_s3cret"}}
    )
    container = python_container('import os; print("token", os.environ["TOKEN"])')
    container["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]
    pods.create(pod_body("with-secret", [container], restartPolicy="Never", nodeName="node-a"))
    eventually(lambda: pods.status("with-secret").get("phase") == "Succeeded", what="Succeeded")
    assert "token hf_s3cret" in cluster.container_log(pods.namespace, "with-secret", "main")

    missing = python_container("print('never')")
    missing["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "nothing", "key": "token"}}}]
    pods.create(pod_body("without-secret", [missing], restartPolicy="Never", nodeName="node-a"))

    def config_error() -> dict[str, Any]:
        waiting = (pods.container("without-secret", "main").get("state") or {}).get("waiting") or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else {}

    assert (
        eventually(config_error, what="CreateContainerConfigError")["message"] == 'secret "nothing" not found'
    )


def kubelet_get(cluster: LocalCluster, node: str, path: str, client_cert: str | None) -> httpx.Response:
    """A request to the node's kubelet API, its serving certificate verified against the cluster's
    CA, with the named client certificate of the cluster's PKI (None: without one)."""
    assert cluster.control_plane is not None and cluster.control_plane.pki is not None
    pki = cluster.control_plane.pki
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client_cert:
        context.load_cert_chain(pki.directory / f"{client_cert}.crt", pki.directory / f"{client_cert}.key")
    kubelet = cluster.kubelet(node)
    assert kubelet.api is not None
    with httpx.Client(verify=context, trust_env=False, timeout=10) as http:
        return http.get(f"https://{kubelet.address}:{kubelet.api.port}{path}")


def test_kubectl_logs_reads_a_containers_runs_through_the_kubelet_api(
    cluster: LocalCluster, pods: Pods, kube_api: client.ApiClient
) -> None:
    setup = python_container('print("setup: models in place")', name="setup")
    script = """
        import os, sys, time
        first = not os.path.exists("ran-once")
        open("ran-once", "a").close()
        run = "first" if first else "second"
        for line in range(5):
            print(f"{run} run, line {line}")
        if first:
            sys.exit(1)
        time.sleep(3600)
    """
    pods.create(pod_body("talker", [python_container(script)], initContainers=[setup], nodeName="node-a"))
    eventually(
        lambda: (s := pods.container("talker", "main")).get("restartCount") == 1 and "running" in s["state"],
        what="running again after its first run failed",
    )
    logs = ["logs", "-n", pods.namespace, "talker"]
    current = eventually(lambda: "line 4" in (out := cluster.kubectl(*logs, "-c", "main").stdout) and out)
    assert current == "".join(f"second run, line {n}\n" for n in range(5))
    assert current == cluster.container_log(pods.namespace, "talker", "main")
    assert (
        cluster.kubectl(*logs, "-c", "main", "--tail=2").stdout == "second run, line 3\nsecond run, line 4\n"
    )
    assert cluster.kubectl(*logs, "-c", "main", "--limit-bytes=10").stdout == "second run"
    assert cluster.kubectl(*logs, "-c", "main", "--previous").stdout == "".join(
        f"first run, line {n}\n" for n in range(5)
    )
    assert cluster.kubectl(*logs, "-c", "setup").stdout == "setup: models in place\n"
    refused = cluster.kubectl(*logs, "-c", "setup", "--previous", check=False)
    assert 'previous terminated container "setup" in pod "talker" not found' in refused.stderr
    untimed = cluster.kubectl(*logs, "-c", "main", "--timestamps", check=False)
    assert untimed.returncode != 0 and "does not record when each line was written" in untimed.stderr

    # The API server found the kubelet where the Node says, and proved who it was.
    node = client.CoreV1Api(kube_api).read_node("node-a")
    kubelet = cluster.kubelet("node-a")
    assert kubelet.api is not None and node.status.daemon_endpoints.kubelet_endpoint.port == kubelet.api.port
    assert kubelet.api.port == KUBELET_PORT

    # The kubelet API answers the API server's kubelet client only, and 404 what it does not run.
    path = f"/containerLogs/{pods.namespace}/talker/main?tailLines=1"
    answer = kubelet_get(cluster, "node-a", path, "apiserver-kubelet-client")
    assert (answer.status_code, answer.text) == (200, "second run, line 4\n")
    assert kubelet_get(cluster, "node-a", path, None).status_code == 401
    forbidden = kubelet_get(cluster, "node-a", path, "admin")
    assert forbidden.status_code == 403 and "user=admin" in forbidden.text
    unknown = kubelet_get(
        cluster, "node-a", f"/containerLogs/{pods.namespace}/talker/nope", "apiserver-kubelet-client"
    )
    assert (unknown.status_code, unknown.text) == (404, 'container "nope" not found in pod "talker"')
    elsewhere = kubelet_get(cluster, "node-b", path, "apiserver-kubelet-client")
    assert (elsewhere.status_code, elsewhere.text) == (404, 'pod "talker" does not exist')


def test_kubectl_logs_follow_streams_a_run_until_it_ends(cluster: LocalCluster, pods: Pods) -> None:
    script = """
        import sys, time
        for tick in range(8):
            print(f"tick {tick}")
            time.sleep(0.4)
        print("done")
    """
    pods.create(pod_body("ticker", [python_container(script)], restartPolicy="Never", nodeName="node-b"))
    eventually(lambda: "tick 0" in cluster.container_log(pods.namespace, "ticker", "main"), what="ticking")
    began = time.monotonic()
    followed = cluster.kubectl("logs", "-n", pods.namespace, "ticker", "-f")
    assert followed.stdout.endswith("tick 7\ndone\n"), followed.stdout
    assert followed.stdout == cluster.container_log(pods.namespace, "ticker", "main")
    assert time.monotonic() - began > 1.0  # it waited for the lines written after it asked
