"""A Pod on a test node: its sandbox (a network namespace), its containers as local processes, their
probes and restarts, its status, and its graceful deletion. The kubelet runs one per Pod.

A container is started as
``setpriv --pdeathsig KILL -- ip netns exec <pod namespace> [unshare --mount ... mount --bind] <argv>``:
the kernel kills it if the agent's thread dies, it joins the Pod's cgroup (``kubepods/pod<uid>/
<container>``, cgroups.py: nothing limited, but ``/proc/<pid>/cgroup`` names its Pod as on a real
node), it sees the Pod's network only, and the folders the
agent maps (the models volume) appear at their mountPath inside a private mount namespace (the
mountPath is created on this machine, empty, if missing). Its output goes to
``<state>/pods/<namespace>_<name>_<uid>/<container>/<restart>.log``, the kubelet's layout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from tests.cluster import cgroups
from tests.cluster.images import ImageNotFound, ImageTable, command_line, expand
from tests.cluster.kubeapi import STRATEGIC_MERGE_PATCH, ApiError, KubeClient
from tests.cluster.network import ClusterNetwork, NetworkError, PodNetwork, netns_exec
from tests.cluster.podstatus import ContainerRecord, PodFacts, now_rfc3339, pod_status, status_patch
from tests.cluster.probes import ProbeTiming, run_probe

log = logging.getLogger(__name__)

# Absolute paths: a container's own PATH must not decide which launcher runs.
DIE_WITH_AGENT = (shutil.which("setpriv") or "/usr/bin/setpriv", "--pdeathsig", "KILL", "--")
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
MOUNT = shutil.which("mount") or "/usr/bin/mount"
SH = "/bin/sh"
TERMINATION_MESSAGE_LINES = 80  # the kubelet's limits for FallbackToLogsOnError
TERMINATION_MESSAGE_BYTES = 2048
MINIMUM_GRACE_SECONDS = 2  # the kubelet never kills with less
DEFAULT_GRACE_SECONDS = 30
# Bind-mounts each (source, mountPath, ro|rw) triple, then becomes the container's program.
MOUNT_SCRIPT = (
    f'while [ "$1" != -- ]; do {MOUNT} --bind "$1" "$2" || exit 126; '
    f'if [ "$3" = ro ]; then {MOUNT} -o remount,bind,ro "$2" || exit 126; fi; shift 3; done; '
    'shift; exec "$@"'
)


@dataclass
class KubeletSettings:
    """How a kubelet runs Pods. The kubelet's backoff is 10 s doubling to 300 s; tests shorten it."""

    images: ImageTable
    state_dir: Path
    mounts: Mapping[str, Path] = field(default_factory=dict)  # mountPath -> folder on this machine
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0  # a run this long forgets earlier crashes
    base_env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    )


class NodeContext(Protocol):
    """What a Pod needs from its kubelet."""

    name: str
    index: int
    address: str
    client: KubeClient
    network: ClusterNetwork
    settings: KubeletSettings
    api_server: tuple[str, int]

    async def wait_connected(self) -> None: ...

    def is_connected(self) -> bool: ...


class ContainerConfigError(ValueError):
    """The container's spec asks for something the kubelet cannot provide."""


def backoff_delay(restart: int, base: float, maximum: float) -> float:
    """Seconds before restart number ``restart`` (1-based): the first restart is immediate, then
    base, 2 x base, ... up to ``maximum`` (the kubelet's CrashLoopBackOff)."""
    if restart <= 1:
        return 0.0
    return min(base * 2 ** (restart - 2), maximum)


def termination_message(log_path: Path) -> str:
    """The kubelet's FallbackToLogsOnError message: the last 80 lines, at most the last 2 KiB."""
    try:
        with log_path.open("rb") as log_file:
            log_file.seek(max(0, log_path.stat().st_size - 64 * 1024))
            data = log_file.read()
    except FileNotFoundError:
        return ""
    lines = data.splitlines(keepends=True)[-TERMINATION_MESSAGE_LINES:]
    return b"".join(lines)[-TERMINATION_MESSAGE_BYTES:].decode(errors="replace")


def exit_code(returncode: int) -> int:
    """A process's exit status as a container runtime reports it: 128 + signal when signalled."""
    return 128 - returncode if returncode < 0 else returncode


def field_value(pod: Mapping[str, Any], path: str, facts: Mapping[str, str]) -> str:
    """A ``fieldRef`` of the downward API."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": facts.get("podIP", ""),
        "status.hostIP": facts.get("hostIP", ""),
    }
    if path in simple:
        return str(simple[path])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise ContainerConfigError(f"fieldRef {path!r} is not supported by the kubelet")


def secret_refs(container: Mapping[str, Any]) -> set[str]:
    """The Secrets the container's env reads (``secretKeyRef``), by name."""
    return {
        var["valueFrom"]["secretKeyRef"]["name"]
        for var in container.get("env") or []
        if "secretKeyRef" in (var.get("valueFrom") or {})
    }


def secret_value(
    ref: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any] | None], pod: str
) -> str | None:
    """A ``secretKeyRef``'s value (None: an optional one that is missing), as the kubelet resolves
    it; a missing Secret or key that is not optional is a CreateContainerConfigError."""
    secret = secrets.get(ref["name"])
    data = (secret or {}).get("data") or {}
    if ref["key"] in data:
        return base64.b64decode(data[ref["key"]]).decode(errors="replace")
    if ref.get("optional"):
        return None
    if secret is None:
        raise ContainerConfigError(f'secret "{ref["name"]}" not found')
    raise ContainerConfigError(f"couldn't find key {ref['key']} in Secret {pod}/{ref['name']}")


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    base: Mapping[str, str],
    facts: Mapping[str, str],
    secrets: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, str]:
    """The process environment: the base, then the container's ``env`` in order (values may refer to
    earlier variables as ``$(NAME)``; ``secretKeyRef`` from ``secrets``, the Secrets it names, read
    by the node). ``envFrom`` and ConfigMap references are refused."""
    if container.get("envFrom"):
        raise ContainerConfigError("envFrom is not supported by the kubelet")
    env = dict(base)
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value", "")), env)
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = field_value(pod, var["valueFrom"]["fieldRef"]["fieldPath"], facts)
        elif "secretKeyRef" in var["valueFrom"]:
            value = secret_value(var["valueFrom"]["secretKeyRef"], secrets or {}, namespace)
            if value is not None:
                env[var["name"]] = value
        else:
            source = next(iter(var["valueFrom"]), "?")
            raise ContainerConfigError(
                f"env {var['name']}: valueFrom.{source} is not supported by the kubelet"
            )
    return env


class ContainerRunner:
    """One container: starts its process (again, per the restart policy and backoff), runs its
    probes, and keeps its ContainerRecord."""

    def __init__(
        self, pod: PodWorker, spec: Mapping[str, Any], init: bool = False, waiting: str = ""
    ) -> None:
        self.pod = pod
        self.spec = spec
        self.init = init  # an init container: runs to completion, restarted only when it fails
        self.name: str = spec["name"]
        self.record = ContainerRecord(name=self.name, image=spec.get("image", ""))
        if waiting:
            self.record.waiting_reason = waiting
        self.process: asyncio.subprocess.Process | None = None
        self.kill_requested = asyncio.Event()
        self.finished = False  # exited and will not run again

    # -- the restart loop -------------------------------------------------------------------------

    async def run(self) -> None:
        runs = 0
        last_end = 0.0
        streak = 0  # crashes since the last long run: drives the backoff
        loop = asyncio.get_running_loop()
        while not self.pod.stopping:
            delay = backoff_delay(streak, self.pod.settings.backoff_base, self.pod.settings.backoff_max)
            remaining = delay - (loop.time() - last_end)
            if runs and remaining > 0:
                self._waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={self.name} pod={self.pod.describe()}",
                )
                if await self.pod.sleep_unless_stopping(remaining):
                    return
            try:
                argv, env = self._command(await self._secrets())
            except ImageNotFound as error:
                self._waiting("ErrImagePull", str(error))
                await self.pod.stop_requested.wait()
                return
            except ContainerConfigError as error:
                self._waiting("CreateContainerConfigError", str(error))
                if await self.pod.sleep_unless_stopping(self.pod.settings.backoff_base):
                    return
                continue
            except Exception as error:  # e.g. no llama-server for the image: said, then retried
                log.warning("%s/%s cannot be created: %r", self.pod.describe(), self.name, error)
                self._waiting("CreateContainerError", repr(error))
                if await self.pod.sleep_unless_stopping(self.pod.settings.backoff_base):
                    return
                continue
            self.record.restart_count = runs
            started = loop.time()
            await self._run_once(argv, env, runs)
            runs += 1
            last_end = loop.time()
            streak = 1 if last_end - started >= self.pod.settings.backoff_reset else streak + 1
            if self.pod.stopping or not self._restarts():
                self.finished = True
                self.pod.changed()
                return

    def _restarts(self) -> bool:
        policy = self.pod.spec.get("restartPolicy", "Always")
        if self.init:  # the kubelet restarts a failed init container unless the policy is Never
            return policy != "Never" and self.record.exit_code != 0
        return policy == "Always" or (policy == "OnFailure" and self.record.exit_code != 0)

    @property
    def succeeded(self) -> bool:
        return self.record.state == "terminated" and self.record.exit_code == 0

    def _waiting(self, reason: str, message: str = "") -> None:
        record = self.record
        if record.state == "terminated":
            record.last_terminated = record.terminated_status()
        record.state, record.waiting_reason, record.waiting_message = "waiting", reason, message
        record.ready = record.started = False
        self.pod.changed()

    async def _secrets(self) -> dict[str, dict[str, Any] | None]:
        """The Secrets the env names, read with the node's credentials as the kubelet reads them
        (the Node authorizer lets a node read what its Pods reference); None: not there."""
        found: dict[str, dict[str, Any] | None] = {}
        for name in sorted(secret_refs(self.spec)):
            try:
                found[name] = await self.pod.node.client.get(
                    f"/api/v1/namespaces/{self.pod.namespace}/secrets/{name}"
                )
            except ApiError as error:
                if error.status != 404:
                    raise
                found[name] = None
        return found

    def _command(self, secrets: Mapping[str, Mapping[str, Any] | None]) -> tuple[list[str], dict[str, str]]:
        image = self.pod.settings.images.resolve(self.record.image)
        base = {**self.pod.base_env(), **image.env}
        env = container_env(self.pod.pod, self.spec, base, self.pod.env_facts(), secrets)
        return command_line(self.spec, image, env), env

    def log_path(self, run: int) -> Path:
        return self.pod.directory / self.name / f"{run}.log"

    def _launcher(self, argv: list[str]) -> list[str]:
        """The container's process: in the Pod's namespace, with the mapped folders mounted."""
        binds: list[str] = []
        for mount in self.spec.get("volumeMounts") or []:
            source = self.pod.settings.mounts.get(mount["mountPath"])
            if source is not None:
                Path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
                binds += [str(source), mount["mountPath"], "ro" if mount.get("readOnly") else "rw"]
        if binds:
            argv = [
                UNSHARE,
                "--mount",
                "--propagation",
                "private",
                "--",
                SH,
                "-c",
                MOUNT_SCRIPT,
                "mount",
                *binds,
                "--",
                *argv,
            ]
        if self.pod.sandbox is not None:
            argv = netns_exec(self.pod.sandbox.namespace, argv)
        cgroup = cgroups.container_cgroup(
            self.pod.uid, self.name
        )  # first: the Pod's cgroup, as the kubelet's
        return [*DIE_WITH_AGENT, *cgroups.join_command(cgroup, SH), *argv]

    async def _run_once(self, argv: list[str], env: dict[str, str], run: int) -> None:
        record = self.record
        log_path = self.log_path(run)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if record.state == "terminated":
            record.last_terminated = record.terminated_status()
        self.kill_requested.clear()
        try:
            with log_path.open("ab") as log_file:
                self.process = await asyncio.create_subprocess_exec(
                    *self._launcher(argv),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=self._working_dir(),
                    start_new_session=True,
                )
        except OSError as error:
            self._start_failed(str(error))
            return
        record.state = "running"
        record.container_id = f"local://{uuid.uuid4().hex}"
        record.started_at = now_rfc3339()
        record.ever_ran = True
        record.ready = False
        record.started = False
        record.waiting_reason = record.waiting_message = ""
        if self.pod.stopping:
            self.kill_requested.set()  # the Pod began stopping while this process started
        self.pod.changed()
        probes = asyncio.create_task(self._probe(), name=f"probes {self.name}")
        try:
            await self._wait_exit()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
        returncode = self.process.returncode if self.process.returncode is not None else -9
        self._kill_group(signal.SIGKILL)  # what the main process left behind dies with the container
        record.state = "terminated"
        record.exit_code = exit_code(returncode)
        record.finished_at = now_rfc3339()
        record.terminated_reason = "Completed" if record.exit_code == 0 else "Error"
        record.terminated_message = ""
        if record.exit_code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            record.terminated_message = termination_message(log_path)
        record.ready = record.started = False
        self.pod.changed()

    def _start_failed(self, message: str) -> None:
        """The process could not be started at all: a run that ended at once (the kubelet's
        StartError, exit code 128)."""
        record = self.record
        record.state, record.exit_code, record.terminated_reason = "terminated", 128, "StartError"
        record.started_at = record.finished_at = now_rfc3339()
        record.terminated_message = message
        record.ready = record.started = False
        self.pod.changed()

    def _working_dir(self) -> str:
        wanted = self.spec.get("workingDir")
        if wanted and Path(wanted).is_dir():
            return str(wanted)
        return str(self.pod.directory)

    async def _wait_exit(self) -> None:
        """Until the process exits; a kill request (probe failure, deletion) stops it with the grace
        period: SIGTERM, then SIGKILL at the deadline."""
        assert self.process is not None
        exited = asyncio.create_task(self.process.wait())
        killed = asyncio.create_task(self.kill_requested.wait())
        try:
            await asyncio.wait({exited, killed}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self._terminate(exited)
            await exited
        finally:
            killed.cancel()

    async def _terminate(self, exited: asyncio.Task[int]) -> None:
        self._kill_group(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        while not exited.done():
            if loop.time() - begun >= self.kill_grace:
                self._kill_group(signal.SIGKILL)
                break
            await asyncio.wait({exited}, timeout=0.05)

    kill_grace: float = DEFAULT_GRACE_SECONDS

    def kill(self, grace: float) -> None:
        """Stops the current run with ``grace`` seconds between SIGTERM and SIGKILL."""
        self.kill_grace = grace
        self.kill_requested.set()

    def _kill_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    # -- probes -----------------------------------------------------------------------------------

    async def _probe(self) -> None:
        record = self.record
        startup = self.spec.get("startupProbe")
        if startup and not await self._until_threshold(startup, "Startup"):
            self.kill(self._probe_grace(startup))
            return
        record.started = True
        readiness = self.spec.get("readinessProbe")
        if not readiness:
            record.ready = True
        self.pod.changed()
        tasks = []
        if readiness:
            tasks.append(self._readiness(readiness))
        liveness = self.spec.get("livenessProbe")
        if liveness:
            tasks.append(self._liveness(liveness))
        await asyncio.gather(*tasks)

    async def _attempt(self, probe: Mapping[str, Any]) -> bool:
        pod_ip = self.pod.pod_ip
        result = await run_probe(
            probe, self.spec, pod_ip, self.pod.sandbox.namespace if self.pod.sandbox else None
        )
        if not result.success:
            log.debug("%s/%s probe failed: %s", self.pod.describe(), self.name, result.message)
        return result.success

    async def _until_threshold(self, probe: Mapping[str, Any], kind: str) -> bool:
        """Startup: True at the first success, False after failureThreshold failures in a row."""
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            if await self._attempt(probe):
                return True
            failures += 1
            if failures >= timing.failure_threshold:
                log.info("%s/%s: %s probe failed %d times", self.pod.describe(), self.name, kind, failures)
                return False
            await asyncio.sleep(timing.period)

    async def _readiness(self, probe: Mapping[str, Any]) -> None:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        successes = failures = 0
        while True:
            if await self._attempt(probe):
                successes, failures = successes + 1, 0
                if not self.record.ready and successes >= timing.success_threshold:
                    self.record.ready = True
                    self.pod.changed()
            else:
                successes, failures = 0, failures + 1
                if self.record.ready and failures >= timing.failure_threshold:
                    self.record.ready = False
                    self.pod.changed()
            await asyncio.sleep(timing.period)

    async def _liveness(self, probe: Mapping[str, Any]) -> None:
        if not await self._until_failed(probe):
            return
        log.info("%s/%s: liveness probe failed, restarting", self.pod.describe(), self.name)
        self.kill(self._probe_grace(probe))

    async def _until_failed(self, probe: Mapping[str, Any]) -> bool:
        timing = ProbeTiming.of(probe)
        await asyncio.sleep(timing.initial_delay)
        failures = 0
        while True:
            failures = 0 if await self._attempt(probe) else failures + 1
            if failures >= timing.failure_threshold:
                return True
            await asyncio.sleep(timing.period)

    def _probe_grace(self, probe: Mapping[str, Any]) -> float:
        seconds = probe.get("terminationGracePeriodSeconds")
        if seconds is None:
            seconds = self.pod.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        return max(float(seconds), MINIMUM_GRACE_SECONDS)


class PodWorker:
    """Runs one Pod bound to the node, from its sandbox to its final delete."""

    def __init__(self, node: NodeContext, pod: dict[str, Any]) -> None:
        self.node = node
        self.settings = node.settings
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.spec: dict[str, Any] = pod["spec"]
        self.directory = self.settings.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.init_containers = [
            ContainerRunner(self, spec, init=True) for spec in self.spec.get("initContainers") or []
        ]
        after_init = "PodInitializing" if self.init_containers else ""
        self.containers = [
            ContainerRunner(self, spec, waiting=after_init) for spec in self.spec.get("containers") or []
        ]
        self.sandbox: PodNetwork | None = None
        self.pod_ip = ""
        self.start_time = ""
        self.terminal = False
        self.stop_requested = asyncio.Event()
        self.removed = False  # gone from the API: nothing to write any more
        self._dirty = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._written: dict[str, Any] | None = None
        self._conditions: list[dict[str, Any]] = list((pod.get("status") or {}).get("conditions") or [])

    def describe(self) -> str:
        """The kubelet's way to name a Pod in messages: name_namespace(uid)."""
        return f"{self.name}_{self.namespace}({self.uid})"

    @property
    def stopping(self) -> bool:
        return self.stop_requested.is_set()

    def changed(self) -> None:
        self._dirty.set()

    def base_env(self) -> dict[str, str]:
        """What every container of the Pod gets before its own variables, as in a cluster: the
        host name and the API server's address."""
        host, port = self.node.api_server
        return {
            **self.settings.base_env,
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
        }

    def env_facts(self) -> dict[str, str]:
        return {"podIP": self.pod_ip, "hostIP": self.node.address}

    async def sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleeps; True if the Pod began stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), seconds)
        return self.stopping

    # -- updates from the API ---------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.stop_requested.set()
            self._shorten_grace(self.grace_seconds())  # a second delete may shorten the period

    def gone(self) -> None:
        """The Pod was removed from the API (force delete, or our own final delete)."""
        self.removed = True
        self.stop_requested.set()
        self._shorten_grace(MINIMUM_GRACE_SECONDS)

    def _shorten_grace(self, grace: float) -> None:
        for container in self.containers:
            if container.kill_requested.is_set():
                container.kill_grace = min(container.kill_grace, grace)

    def grace_seconds(self) -> float:
        meta = self.pod["metadata"]
        seconds = meta.get("deletionGracePeriodSeconds")
        if seconds is None:
            seconds = self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        return max(float(seconds), MINIMUM_GRACE_SECONDS)

    # -- the Pod's life ---------------------------------------------------------------------------

    async def run(self) -> None:
        publisher = asyncio.create_task(self._publish_loop(), name=f"status {self.describe()}")
        runners: list[asyncio.Task[None]] = []
        try:
            if not self.stopping and await self._make_sandbox() and await self._initialize():
                runners = [asyncio.create_task(c.run(), name=f"container {c.name}") for c in self.containers]
                for runner in runners:
                    runner.add_done_callback(log_failure)
                await self.stop_requested.wait()
            await self._stop_containers(runners)
            self.terminal = True
            self.changed()
            await self._flush_status()
        finally:
            publisher.cancel()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(publisher, *runners, return_exceptions=True)
            await self._remove_sandbox()
            cgroups.remove_pod_cgroups(self.uid)
        if not self.removed:
            await self._final_delete()

    async def _initialize(self) -> bool:
        """The init containers in order, each to its success (a failed one is restarted with the
        backoff, unless the policy is Never) before the next; False if the Pod stops first, or an
        init container failed for good (the Pod then waits for its deletion)."""
        for container in self.init_containers:
            runner = asyncio.create_task(container.run(), name=f"init container {container.name}")
            runner.add_done_callback(log_failure)
            stopped = asyncio.create_task(self.stop_requested.wait())
            try:
                await asyncio.wait({runner, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not runner.done():  # the Pod stops while it runs: stopped as any container
                    container.kill(MINIMUM_GRACE_SECONDS if self.removed else self.grace_seconds())
                    await asyncio.gather(runner, return_exceptions=True)
            finally:
                stopped.cancel()
                runner.cancel()
            if self.stopping or not container.succeeded:
                await self.stop_requested.wait()
                return False
        return True

    async def shutdown(self) -> None:
        """The agent stops: every container is stopped now (2 s grace), without API writes."""
        self.removed = True
        self.stop_requested.set()

    async def _make_sandbox(self) -> bool:
        """The Pod's network namespace (none for hostNetwork); retried until it exists or the Pod
        stops. False if the Pod stopped first."""
        if self.spec.get("hostNetwork"):
            self.pod_ip = self.node.address
        while not self.pod_ip:
            try:
                self.sandbox = await asyncio.to_thread(self.node.network.add_pod, self.node.index, self.uid)
            except NetworkError as error:
                log.warning("%s: no sandbox yet: %s", self.describe(), error)
                if await self.sleep_unless_stopping(1.0):
                    return False
                continue
            self.pod_ip = self.sandbox.address
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start_time = now_rfc3339()
        self.changed()
        return True

    async def _remove_sandbox(self) -> None:
        if self.sandbox is not None:
            sandbox, self.sandbox = self.sandbox, None
            await asyncio.to_thread(self.node.network.remove_pod, self.node.index, sandbox)

    async def _stop_containers(self, runners: list[asyncio.Task[None]]) -> None:
        grace = MINIMUM_GRACE_SECONDS if self.removed else self.grace_seconds()
        for container in [*self.init_containers, *self.containers]:
            container.kill(grace)
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        facts = PodFacts(
            sandbox_ready=bool(self.pod_ip) and not self.terminal,
            terminal=self.terminal,
            pod_ip=self.pod_ip,
            host_ip=self.node.address,
            start_time=self.start_time,
            previous_conditions=self._conditions,
        )
        return pod_status(
            self.spec.get("restartPolicy", "Always"),
            [c.record for c in self.containers],
            facts,
            [c.record for c in self.init_containers],
        )

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.02)  # coalesce the changes of one moment into one write
            await self._flush_status()

    async def _reachable(self) -> bool:
        """Waits until the node can reach the API; False if the Pod is dropped meanwhile."""
        while not self.node.is_connected():
            if self.removed:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.node.wait_connected(), 0.5)
        return not self.removed

    async def _flush_status(self) -> None:
        """Writes the status if it changed (and the node can reach the API); retries on errors.
        One write at a time, so that an older status never lands after a newer one."""
        async with self._write_lock:
            await self._write_status()

    async def _write_status(self) -> None:
        while self._dirty.is_set() and await self._reachable():
            self._dirty.clear()
            status = self.status()
            if status == self._written:
                return
            try:
                await self.node.client.patch(
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                    status_patch(self.uid, status),
                    STRATEGIC_MERGE_PATCH,
                )
            except ApiError as error:
                if error.status in (404, 409):
                    log.debug("%s: status not written, the Pod is gone: %s", self.describe(), error)
                    self.gone()
                    return
                log.warning("%s: status write failed: %s", self.describe(), error)
                self._dirty.set()
                await asyncio.sleep(0.5)
                continue
            except httpx.HTTPError as error:
                log.warning("%s: status write failed: %r", self.describe(), error)
                self._dirty.set()
                await asyncio.sleep(0.5)
                continue
            self._written = status
            self._conditions = status["conditions"]

    def resend(self) -> None:
        """After the node reconnects: write the status again, whatever was written before."""
        self._written = None
        self.changed()

    async def _final_delete(self) -> None:
        """As the kubelet: once the containers are gone, remove the object (grace 0, UID precondition)."""
        if not await self._reachable():
            return
        with contextlib.suppress(ApiError, httpx.HTTPError):
            await self.node.client.delete(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )


def log_failure(task: asyncio.Task[Any]) -> None:
    """A done-callback: an agent's background task must not fail silently."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
