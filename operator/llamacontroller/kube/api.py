"""Every call the operator makes to the Kubernetes API, in one place.

An async client (httpx) speaking plain JSON, with the credentials of a kubeconfig or of the Pod's
service account as the `kubernetes` package resolves them. One module means one list to read for the
RBAC role, and one place to look when a call misbehaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from llamacontroller.errors import UserError
from llamacontroller.kube.metrics import ApiObserver, metered_hooks
from llamacontroller.llamanode import NODE_PLURAL
from llamacontroller.render.names import LABEL_OWNER_UID
from llamacontroller.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
LLAMAMODELS = f"/apis/{GROUP}/{VERSION}"
LEASES = "/apis/coordination.k8s.io/v1"
LLAMANODES = f"{LLAMAMODELS}/{NODE_PLURAL}"
TIMEOUT = 30.0  # seconds a call may take (a watch: to answer its headers) before it counts as failed
THROTTLE_RETRIES = 5  # a call the server throttles (429, 503 with Retry-After) is tried this often again
LOG_TIMEOUT_SECONDS = 5.0  # a log tail (the progress of a model fetch) is skipped when slower
RETRY_AFTER_MAX = 30.0  # seconds: the longest Retry-After honoured


class ApiError(RuntimeError):
    """A refusal of the API server, with its status code and its own message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason


class NoCluster(UserError):
    """No credentials for a Kubernetes API server, or none answers where they point."""


def _credentials() -> Any:
    """The `kubernetes` package's Configuration: in-cluster when in a Pod, else the kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        reason = " ".join(str(exc).split())
        raise NoCluster(f"no Kubernetes credentials (kubeconfig {where}, or in-cluster): {reason}") from exc
    return configuration


class _Auth(httpx.Auth):
    """Bearer tokens that may rotate (projected service-account tokens, exec plugins)."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        hook = self.configuration.refresh_api_key_hook
        if hook is not None:
            hook(self.configuration)
        token = self.configuration.get_api_key_with_prefix(
            "BearerToken"
        ) or self.configuration.get_api_key_with_prefix("authorization")
        if token:
            request.headers["Authorization"] = token
        yield request


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    if configuration.host.startswith("http://"):
        return False
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def retry_after(response: httpx.Response) -> float | None:
    """How long the server asks the client to wait before trying the call again: a 429, or a 503 that
    says so (``Retry-After``, seconds or an HTTP date); None when it did not ask."""
    header = response.headers.get("Retry-After")
    if response.status_code != 429 and not (response.status_code == 503 and header):
        return None
    try:
        seconds = float(header) if header else 1.0
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header or "").timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _unreachable(what: str, exc: BaseException) -> ApiError:
    """A call without an answer (refused, reset, timed out): it may or may not have been carried out."""
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return ApiError(0, "Unreachable", f"{what}: {detail}")


def items_of(listed: dict[str, Any] | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (listed or {}).get("items") or []
    return items


class KubeApi:
    """The operator's calls, each named for what it does to which resource."""

    def __init__(self, client: httpx.AsyncClient, timeout: float = TIMEOUT) -> None:
        self.client = client
        self.timeout = timeout

    @classmethod
    def from_environment(
        cls,
        user_agent: str = "llamacontroller",
        timeout: float = TIMEOUT,
        observe: ApiObserver | None = None,
    ) -> KubeApi:
        """``observe``: told of every call (verb, resource, status, seconds), for the metrics."""
        configuration = _credentials()
        client = httpx.AsyncClient(
            base_url=configuration.host,
            verify=_ssl_context(configuration),
            event_hooks=metered_hooks(observe) if observe is not None else None,
            auth=_Auth(configuration),
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
        )
        return cls(client, timeout)

    async def close(self) -> None:
        await self.client.aclose()

    async def check_reachable(self, timeout: float = 10.0) -> None:
        """Raises NoCluster unless the API server answers ``/version`` (any authenticated client may)."""
        server = str(self.client.base_url).rstrip("/")
        attempts = 3  # an answer lost on the way may pass; a refused connection is an answer
        for attempt in range(1, attempts + 1):
            try:
                response = await self.client.get("/version", timeout=timeout)
            except httpx.HTTPError as exc:
                lost = isinstance(exc, httpx.ReadError | httpx.ReadTimeout | httpx.RemoteProtocolError)
                if lost and attempt < attempts:
                    continue
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise NoCluster(f"the Kubernetes API server at {server} cannot be reached: {reason}") from exc
            break
        if response.status_code in (401, 403):
            raise NoCluster(
                f"the Kubernetes API server at {server} refuses these credentials "
                f"({response.status_code} {response.reason_phrase})"
            )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        missing_ok: bool = False,
        exists_ok: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any] | None:
        headers = {"Content-Type": content_type} if body is not None else {}
        limit = httpx.Timeout(timeout or self.timeout)
        for attempt in range(THROTTLE_RETRIES + 1):
            started = time.monotonic()
            try:
                response = await self.client.request(
                    method, path, params=params, json=body, headers=headers, timeout=limit
                )
            except httpx.HTTPError as exc:  # unreachable, timed out: one kind of failure for the callers
                log.debug("%s %s: %s", method, path, type(exc).__name__)
                raise _unreachable(f"{method} {path}", exc) from exc
            elapsed = 1000 * (time.monotonic() - started)
            log.debug("%s %s: %d (%.0f ms)", method, path, response.status_code, elapsed)
            wait = retry_after(response)
            if wait is None or attempt == THROTTLE_RETRIES:
                break
            # Throttled: the server did nothing and says when to come back (client-go does the same).
            log.debug("%s %s: trying again in %.1f s (Retry-After)", method, path, wait)
            await asyncio.sleep(wait)
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 409 and exists_ok:
            return None
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {"reason": response.reason_phrase, "message": response.text}
            raise ApiError(response.status_code, status.get("reason", ""), status.get("message", ""))
        answer: dict[str, Any] = response.json()
        return answer

    # Reading: lists and watches (kube/informer.py keeps what they say)

    async def list_objects(self, path: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        """The objects of a collection and the list's resourceVersion, to watch from."""
        result = await self._call("GET", path, params=params) or {}
        return items_of(result), result.get("metadata", {}).get("resourceVersion", "")

    async def watch_objects(
        self, path: str, resource_version: str, params: dict[str, str], timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events after `resource_version` until the server ends the stream (bookmarks keep
        the version fresh). An expired version comes as an ERROR event (410): the caller lists again."""
        query = params | {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        # The headers must come within the ordinary timeout (the API server sends them at once); the
        # events may be minutes apart (bookmarks come about every minute), up to timeoutSeconds.
        timeout = httpx.Timeout(self.timeout, read=timeout_seconds + self.timeout)
        log.debug("WATCH %s from %s", path, resource_version)
        request = self.client.build_request("GET", path, params=query, timeout=timeout)
        try:
            response = await asyncio.wait_for(self.client.send(request, stream=True), self.timeout)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise _unreachable(f"WATCH {path}", exc) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(response.status_code, response.reason_phrase, response.text)
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)
        except httpx.HTTPError as exc:  # reset, cut short: the caller resumes or lists again
            raise _unreachable(f"WATCH {path}", exc) from exc
        finally:
            await response.aclose()

    # LlamaModels

    async def patch_llamamodel_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (the operator never writes to spec); the object as it
        is now, None if it is gone."""
        path = f"{LLAMAMODELS}/namespaces/{namespace}/{PLURAL}/{name}/status"
        return await self._call(
            "PATCH", path, body={"status": status}, content_type=MERGE_PATCH, missing_ok=True
        )

    # LlamaNodes (the node agent's: nodeagent/agent.py)

    async def get_llamanode(self, name: str) -> dict[str, Any] | None:
        return await self._call("GET", f"{LLAMANODES}/{name}", missing_ok=True)

    async def create_llamanode(self, llamanode: dict[str, Any]) -> dict[str, Any] | None:
        """The created LlamaNode; None when it exists already (409)."""
        return await self._call("POST", LLAMANODES, body=llamanode, exists_ok=True)

    async def patch_llamanode_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the object as it is now, None if it is gone."""
        path = f"{LLAMANODES}/{name}/status"
        return await self._call(
            "PATCH", path, body={"status": status}, content_type=MERGE_PATCH, missing_ok=True
        )

    # Leases (one operator acts at a time: kube/leader.py)

    # Each takes a `timeout` of its own: the lease's calls must be answered well within the lease.

    async def get_lease(
        self, namespace: str, name: str, timeout: float | None = None
    ) -> dict[str, Any] | None:
        path = f"{LEASES}/namespaces/{namespace}/leases/{name}"
        return await self._call("GET", path, missing_ok=True, timeout=timeout)

    async def create_lease(
        self, namespace: str, lease: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The created Lease; None when another process created it first (409)."""
        path = f"{LEASES}/namespaces/{namespace}/leases"
        return await self._call("POST", path, body=lease, exists_ok=True, timeout=timeout)

    async def replace_lease(
        self, namespace: str, lease: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The Lease as written; None when another process wrote it since it was read (409)."""
        path = f"{LEASES}/namespaces/{namespace}/leases/{lease['metadata']['name']}"
        return await self._call("PUT", path, body=lease, exists_ok=True, timeout=timeout)

    # Events

    async def post_event(
        self, involved: dict[str, Any], kind: str, reason: str, message: str, now: str
    ) -> None:
        """A Kubernetes Event on the LlamaModel: `kubectl describe lm` tells its story."""
        meta = involved["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": involved.get("kind", "LlamaModel"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "llamacontroller"},
            "reportingComponent": "llamacontroller",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)

    # Pods

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The created Pod. Idempotent for the same owner: a Pod of the same (hash-derived) name and
        owner UID is the same server (returned as it is). One of the same name but another owner
        (a predecessor of the same name, still terminating) is a conflict (409), never a success."""
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods"
        created = await self._call("POST", path, body=pod, exists_ok=True)
        if created is not None:
            return created
        existing = await self.find_pod(meta["namespace"], meta["name"])
        if existing is None:
            raise ApiError(409, "Conflict", f"pod {meta['name']}: a conflict, but no pod of that name exists")
        owner = existing["metadata"].get("labels", {}).get(LABEL_OWNER_UID)
        if owner != meta["labels"][LABEL_OWNER_UID]:
            raise ApiError(
                409, "AlreadyExists", f"pod {meta['name']} exists and belongs to another owner ({owner})"
            )
        return existing

    async def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod as the API server holds it now, None if there is none (a list by name: the role
        grants no get on Pods)."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        found = items_of(await self._call("GET", path, params={"fieldSelector": f"metadata.name={name}"}))
        return found[0] if found else None

    async def pod_log_tail(self, namespace: str, name: str, container: str, lines: int = 1) -> str:
        """The last lines of a container's log, as `kubectl logs --tail` reads them (the API server
        asks the node's kubelet). Raises ApiError when it cannot say within LOG_TIMEOUT_SECONDS: a
        log is news, not worth waiting for."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/log"
        params = {"container": container, "tailLines": str(lines)}
        limit = httpx.Timeout(min(LOG_TIMEOUT_SECONDS, self.timeout))
        try:
            response = await self.client.get(path, params=params, timeout=limit)
        except httpx.HTTPError as exc:
            raise _unreachable(f"GET {path}", exc) from exc
        log.debug("GET %s: %d", path, response.status_code)
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.reason_phrase, response.text[:200])
        return response.text

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod as it is now (terminating), or None when it is gone already."""
        answer = await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", missing_ok=True)
        return answer if answer is not None and answer.get("kind") == "Pod" else None

    # Services

    async def apply_service(self, service: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        """Create the slot's Service, or bring an existing one (a previous holder's, or one made by
        hand) to the wanted shape: selector and ports replaced whole (a merge patch could not drop a
        stale key), labels and annotations added to. The Service as it is now."""
        meta = service["metadata"]
        if existing is None:
            created = await self._call(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/services", body=service, exists_ok=True
            )
            if created is not None:
                return created
            path = f"/api/v1/namespaces/{meta['namespace']}/services"
            found = await self._call("GET", path, params={"fieldSelector": f"metadata.name={meta['name']}"})
            existing = (items_of(found) or [{"metadata": {}}])[0]
        have = existing["metadata"]
        patch = [
            {"op": "add", "path": "/spec/selector", "value": service["spec"]["selector"]},
            {"op": "add", "path": "/spec/ports", "value": service["spec"]["ports"]},
            {"op": "add", "path": "/metadata/labels", "value": (have.get("labels") or {}) | meta["labels"]},
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": (have.get("annotations") or {}) | meta["annotations"],
            },
            {"op": "add", "path": "/metadata/ownerReferences", "value": meta.get("ownerReferences", [])},
        ]
        path = f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}"
        patched = await self._call("PATCH", path, body=patch, content_type=JSON_PATCH)
        assert patched is not None
        return patched

    async def delete_service(self, namespace: str, name: str) -> None:
        await self._call("DELETE", f"/api/v1/namespaces/{namespace}/services/{name}", missing_ok=True)

    # The console (console/source.py): what a person looks at and asks for, through the API only.

    async def create_llamamodel(self, body: dict[str, Any]) -> dict[str, Any]:
        """The created LlamaModel; an existing one of the name is a 409 for the caller to say."""
        path = f"{LLAMAMODELS}/namespaces/{body['metadata']['namespace']}/{PLURAL}"
        created = await self._call("POST", path, body=body)
        assert created is not None
        return created

    async def patch_llamamodel_spec(
        self, namespace: str, name: str, spec: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch a LlamaModel's spec, only if it is still at ``resource_version`` (else 409:
        someone changed it since the person looked)."""
        path = f"{LLAMAMODELS}/namespaces/{namespace}/{PLURAL}/{name}"
        patch = {"metadata": {"resourceVersion": resource_version}, "spec": spec}
        patched = await self._call("PATCH", path, body=patch, content_type=MERGE_PATCH)
        assert patched is not None
        return patched

    async def delete_llamamodel(self, namespace: str, name: str, uid: str) -> None:
        """Delete the LlamaModel of that UID (not a newer one of the same name); gone already is fine."""
        path = f"{LLAMAMODELS}/namespaces/{namespace}/{PLURAL}/{name}"
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        await self._call("DELETE", path, body=options, missing_ok=True)

    async def events_of(self, namespace: str, uid: str, limit: int = 200) -> list[dict[str, Any]]:
        """The Events about one object (by UID), as `kubectl describe` shows them."""
        path = f"/api/v1/namespaces/{namespace}/events"
        params = {"fieldSelector": f"involvedObject.uid={uid}", "limit": str(limit)}
        return items_of(await self._call("GET", path, params=params))

    async def list_nodes(self) -> list[dict[str, Any]]:
        return items_of(await self._call("GET", "/api/v1/nodes"))

    async def list_llamanodes(self) -> list[dict[str, Any]]:
        """The node agents' LlamaNodes (cluster-scoped); none when the kind is not served (404)."""
        return items_of(await self._call("GET", f"{LLAMAMODELS}/llamanodes", missing_ok=True))

    async def pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int = 64 << 10
    ) -> str | None:
        """The last lines of a container's log, as `kubectl logs --tail` reads them; None when the Pod
        or its container is gone (or has not started)."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        params = {"container": container, "tailLines": str(tail_lines), "limitBytes": str(limit_bytes)}
        try:
            response = await self.client.get(path, params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise _unreachable(f"GET {path}", exc) from exc
        log.debug("GET %s: %d", path, response.status_code)
        if response.status_code in (400, 404):  # no such Pod, or its container is not running yet
            return None
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.reason_phrase, response.text[:200])
        return response.text
