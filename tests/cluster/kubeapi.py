"""A small asyncio client of the Kubernetes API (httpx) for the kubelets and the Service stand-in.

It speaks JSON, strategic merge patches and watches; ``Reflector`` lists, then watches from the
list's resourceVersion, and lists again when the API answers 410 Gone (or the stream breaks), telling
its consumer what changed in between as ordinary events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
WATCH_TIMEOUT_SECONDS = 240  # the API server ends each watch after this; the reflector resumes it


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and who we are: a client certificate or a bearer token."""

    server: str
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class ApiError(Exception):
    """A non-2xx answer: the HTTP status and the API's Status reason and message."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        self.reason = parsed.get("reason", "") if isinstance(parsed, dict) else ""
        self.message = parsed.get("message", body) if isinstance(parsed, dict) else body
        super().__init__(f"{status} {self.reason}: {self.message}")


class KubeClient:
    """JSON requests to one API server with one identity."""

    def __init__(self, credentials: Credentials, user_agent: str) -> None:
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self._http = httpx.AsyncClient(
            base_url=credentials.server,
            verify=credentials.ssl_context(),
            headers=headers,
            timeout=httpx.Timeout(30.0),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        response = await self._http.request(method, path, content=content, params=params, headers=headers)
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        return response.json() if response.content else {}

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: dict[str, Any], content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return await self.request("PATCH", path, body, content_type=content_type)

    async def delete(self, path: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **(options or {})}
        return await self.request("DELETE", path, body)

    async def watch(
        self, path: str, params: Mapping[str, str], resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events after ``resource_version`` (bookmarks included) until the server ends
        the stream. An ERROR event is raised as ApiError (410 when the version is too old)."""
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
        }
        timeout = httpx.Timeout(30.0, read=WATCH_TIMEOUT_SECONDS + 30.0)
        async with self._http.stream("GET", path, params=query, timeout=timeout) as response:
            if response.status_code >= 300:
                raise ApiError(response.status_code, (await response.aread()).decode(errors="replace"))
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(int(status.get("code") or 500), json.dumps(status))
                yield event


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]


class Reflector:
    """Keeps ``store`` equal to the objects at ``path`` (with ``params`` such as a fieldSelector) and
    calls ``on_event(type, object)`` for every change: ADDED, MODIFIED, DELETED."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_event: EventHandler,
        params: Mapping[str, str] | None = None,
        retry_delay: float = 0.5,
    ) -> None:
        self.client = client
        self.path = path
        self.params = dict(params or {})
        self.on_event = on_event
        self.retry_delay = retry_delay
        self.store: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.lists = 0  # how often it listed: once, plus once per expired version

    async def run(self, resource_version: str | None = None) -> None:
        """Lists and watches until cancelled; with ``resource_version`` (kept from an earlier run),
        watches from there first and lists only if the API says that version is gone."""
        if resource_version is not None:
            self.synced.set()
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist()
                    self.synced.set()
                async for event in self.client.watch(self.path, self.params, resource_version):
                    resource_version = await self._apply(event) or resource_version
            except ApiError as error:
                if error.status == 410:
                    resource_version = None  # too old: list again, then watch from there
                    continue
                log.warning("watch %s: %s", self.path, error)
                await asyncio.sleep(self.retry_delay)
            except (httpx.HTTPError, json.JSONDecodeError) as error:
                log.debug("watch %s broke: %r", self.path, error)
                await asyncio.sleep(self.retry_delay)
            except Exception:  # a consumer's bug must not end the watch: say so, then list again
                log.exception("watch %s: an event handler failed; listing again", self.path)
                resource_version = None
                await asyncio.sleep(self.retry_delay)

    async def _relist(self) -> str:
        listed = await self.client.get(self.path, self.params)
        self.lists += 1
        fresh = {object_key(item): item for item in listed.get("items") or []}
        for key in list(self.store):
            if key not in fresh:
                await self.on_event("DELETED", self.store.pop(key))
        for key, item in fresh.items():
            known = self.store.get(key)
            self.store[key] = item
            if known is None:
                await self.on_event("ADDED", item)
            elif known["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                await self.on_event("MODIFIED", item)
        return str(listed["metadata"]["resourceVersion"])

    async def _apply(self, event: dict[str, Any]) -> str | None:
        kind, obj = event["type"], event["object"]
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return version
        key = object_key(obj)
        if kind == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        await self.on_event(kind, obj)
        return version
