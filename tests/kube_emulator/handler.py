"""The kmock handler that serves the emulated Kubernetes API over HTTP.

Requests are parsed into ``kmock.Request`` objects (so kmock's DSL filters work on them), matched
first against reactions that tests add for fault injection (``emu['post /api/v1/...'] << 500``),
and otherwise served by the emulated store. kmock's request history is trimmed to a short tail so
that each request costs the same however many came before (see ``request_history_tail``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from multidict import CIMultiDict

from . import discovery, protobuf, tables
from .audit import AuditRecord, RecordLog
from .controllers import Controllers
from .errors import ApiError, bad_request, method_not_allowed, resource_not_found, unsupported_media_type
from .openapi import OpenAPIPublisher
from .resources import Registry, ResourceDef
from .routing import ApiPath, is_watch, k8s_verb, kmock_action, parse_api_path, truthy, wanted_form
from .selectors import SelectorError, make_matcher
from .store import PATCH_TYPES, DeleteOptions, Store, Watcher

logger = logging.getLogger(__name__)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_JSON = "application/json"
CLIENT_CLOSED = 499  # the status recorded for requests that the client abandoned (as nginx logs them)
_FIELD_VALIDATIONS = ("Ignore", "Warn", "Strict")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = _JSON
    for warning in warnings or ():
        headers.add("Warning", "299 - " + json.dumps(warning))
    return aiohttp.web.Response(body=_dumps(obj), status=status, headers=headers)


def error_response(error: ApiError) -> aiohttp.web.Response:
    response = json_response(error.status(), status=error.code)
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


@attrs.define(kw_only=True, eq=False)
class KubeEmulator(kmock.RawHandler):
    """A faithful-enough Kubernetes API server on top of kmock's request handling and DSL."""

    pod_termination_seconds: float = 0.2
    history_size: int = 20_000
    request_history_tail: int | None = 64
    aggregated_discovery: bool = True
    controller_delay: float = 0.02

    registry: Registry = attrs.field(factory=Registry, init=False)
    store: Store = attrs.field(init=False)
    controllers: Controllers = attrs.field(init=False)
    audit_log: RecordLog = attrs.field(factory=RecordLog, init=False)
    event_log: RecordLog = attrs.field(factory=RecordLog, init=False)
    _openapi: OpenAPIPublisher = attrs.field(init=False)
    _inflight: set[kmock.Request] = attrs.field(factory=set, init=False)
    _reaction_served: set[kmock.Request] = attrs.field(factory=set, init=False)
    _audited: set[int] = attrs.field(factory=set, init=False)
    _watch_count: int = attrs.field(default=0, init=False)
    _stopping: bool = attrs.field(default=False, init=False)
    _request_count: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.store = Store(
            self.registry,
            history_size=self.history_size,
            pod_termination_seconds=self.pod_termination_seconds,
            event_log=self.event_log,
        )
        self.controllers = Controllers(self.store, delay=self.controller_delay)
        self._openapi = OpenAPIPublisher(self.registry)
        namespaces = self.registry.get("", "v1", "namespaces")
        assert namespaces is not None
        for name in INITIAL_NAMESPACES:
            self.store.create(namespaces, None, {"metadata": {"name": name}})

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop_streams(self) -> None:
        """Close every open watch and stop background work (before the HTTP server shuts down)."""
        self._stopping = True
        self.controllers.stop()
        self.store.cancel_timers()
        self.store.close_watchers()

    async def __aexit__(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        self.stop_streams()
        await super().__aexit__(exc_type, exc_value, tb)

    @property
    def open_watches(self) -> int:
        return self._watch_count

    @property
    def retained_requests(self) -> int:
        """How many requests kmock currently keeps in its history (bounded by the trimming)."""
        return len(self._requests)

    @property
    def request_count(self) -> int:
        return self._request_count

    # --- kmock integration -------------------------------------------------------------------------

    def _trim_history(self) -> None:
        """Keep kmock's history short: the last requests, the in-flight ones (still being matched),
        and the latest ones that test reactions served (so that ``[:1]``-style reactions stay spent)."""
        tail = self.request_history_tail
        if tail is None or len(self._requests) <= 2 * tail + len(self._inflight):
            return
        older = self._requests[:-tail]
        served = [r for r in older if r in self._reaction_served][-tail:]
        keep = [r for r in older if r in self._inflight or r in served]
        self._requests[:] = keep + self._requests[-tail:]
        self._reaction_served.intersection_update(self._requests)

    async def _parse(self, raw: aiohttp.web.BaseRequest) -> tuple[kmock.Request, ApiPath | None, str | None]:
        body = await raw.read()
        text = body.decode("utf-8", errors="replace")
        data: Any = None
        if body:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
        params = dict(raw.query)
        api = parse_api_path(raw.path)
        verb = k8s_verb(raw.method, api, params) if api is not None else None
        resource = (
            kmock.resource(api.group, api.version, api.plural) if api is not None and api.plural else None
        )
        request = kmock.Request(
            id=self._request_count,
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=params,
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=text,
            data=data,
            action=kmock_action(verb),
            resource=resource,
            namespace=api.namespace if api else None,
            name=api.name if api else None,
            subresource=api.subresource if api else None,
        )
        return request, api, verb

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        arrived = time.monotonic()
        self._trim_history()
        request, api, verb = await self._parse(raw_request)
        self._request_count += 1
        self._requests.append(request)
        self._inflight.add(request)
        status = 500
        try:
            response = await self._handle(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client went away before the response was complete
            raise
        except Exception as exc:
            if self._errors:
                self._errors[-1].append(exc)
            logger.exception(
                "The kube emulator failed to serve %s %s", raw_request.method, raw_request.path_qs
            )
            return await self._render_error(exc)
        finally:
            self._inflight.discard(request)
            if id(request) in self._audited:
                self._audited.discard(id(request))
            else:
                self._audit(request, api, verb, status, arrived)
            logger.info(
                "%s %s -> %s (%s)",
                raw_request.method,
                raw_request.path_qs,
                status,
                request.headers.get("Accept", ""),
            )

    def _audit(
        self, request: kmock.Request, api: ApiPath | None, verb: str | None, status: int, arrived: float
    ) -> None:
        self.audit_log.append(
            AuditRecord(
                seq=self.audit_log.next_seq(),
                time=arrived,
                method=str(request.method.value),
                verb=verb,
                group=api.group if api else None,
                version=api.version if api else None,
                resource=api.plural if api else None,
                subresource=api.subresource if api else None,
                namespace=api.namespace if api else None,
                name=api.name if api else None,
                user_agent=request.headers.get("User-Agent", ""),
                status=status,
                path=request.url.path,
            )
        )

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # reactions added by tests (fault injection) take priority
            try:
                response = await super()._handle(request)
            except NotImplementedError:
                pass
            else:
                self._reaction_served.add(request)
                return response
        return await self._emulate(request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiError):
            return error_response(exc)
        return json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"Internal error occurred: {exc!r}",
                "reason": "InternalError",
                "details": {"causes": [{"message": traceback.format_exc()}]},
                "code": 500,
            },
            status=500,
        )

    async def _stream_error(self, exc: Exception, raw_response: aiohttp.web.StreamResponse) -> None:
        event = {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": repr(exc),
                "reason": "InternalError",
                "code": 500,
            },
        }
        await raw_response.write(_dumps(event) + b"\n")

    # --- emulation ---------------------------------------------------------------------------------

    async def _emulate(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        try:
            api = parse_api_path(request.url.path)
            if api is None:
                return self._serve_non_resource(request)
            if api.plural is None:
                return self._serve_discovery(request, api)
            rd = self.registry.get(api.group, api.version, api.plural)
            if rd is None:
                raise resource_not_found()
            if (
                rd.namespaced
                and api.namespace is None
                and api.name is not None
                and api.plural != "namespaces"
            ):
                raise resource_not_found()
            if not rd.namespaced and api.namespace is not None:
                raise resource_not_found()
            if api.subresource is not None and api.subresource not in rd.subresources:
                raise resource_not_found()
            if is_watch(str(request.method.value), api, dict(request.params)):
                return await self._serve_watch(request, rd, api)
            return self._serve_resource(request, rd, api)
        except ApiError as error:
            return error_response(error)

    def _serve_non_resource(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip("/") or "/"
        if str(request.method.value) != "GET":
            return aiohttp.web.Response(status=404, text="404 page not found\n")
        if path == "/version":
            return json_response(discovery.SERVER_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/openapi/v3":
            return json_response(self._openapi.index())
        if path.startswith("/openapi/v3/"):
            document = self._openapi.document(path[len("/openapi/v3/") :])
            if document is None:
                return aiohttp.web.Response(status=404, text="404 page not found\n")
            return aiohttp.web.Response(body=document, content_type=_JSON)
        accept = request.headers.get("Accept", "")
        if path in ("/api", "/apis"):
            version = discovery.wants_aggregated(accept) if self.aggregated_discovery else None
            if version is not None:
                body = discovery.aggregated(self.registry, core=path == "/api", version=version)
                content_type = discovery.AGGREGATED_V2 if version == "v2" else discovery.AGGREGATED_V2BETA1
                return aiohttp.web.Response(body=_dumps(body), headers={"Content-Type": content_type})
            if path == "/api":
                return json_response(discovery.api_versions(f"{request.url.host}:{request.url.port}"))
            return json_response(discovery.api_group_list(self.registry))
        if path.startswith("/apis/") and path.count("/") == 2:
            group = discovery.api_group(self.registry, path[len("/apis/") :])
            if group is None:
                return error_response(resource_not_found())
            return json_response(group)
        if path == "/":
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3", "/readyz", "/version"]
            for group, versions in self.registry.groups():
                paths.append(f"/apis/{group}")
                paths.extend(f"/apis/{group}/{version}" for version in versions)
            return json_response({"paths": sorted(paths)})
        return aiohttp.web.Response(status=404, text="404 page not found\n")

    def _serve_discovery(self, request: kmock.Request, api: ApiPath) -> aiohttp.web.StreamResponse:
        if str(request.method.value) != "GET":
            raise method_not_allowed("the server does not allow this method on the requested resource")
        if api.group == "" and api.version != "v1":
            raise resource_not_found()
        body = discovery.api_resource_list(self.registry, api.group, api.version)
        if body is None:
            raise resource_not_found()
        return json_response(body)

    # --- resources ---------------------------------------------------------------------------------

    def _params(self, request: kmock.Request) -> dict[str, str]:
        return {key: str(value) for key, value in request.params.items()}

    def _dry_run(self, params: dict[str, str], body: Any = None) -> bool:
        values = [params["dryRun"]] if "dryRun" in params else []
        if isinstance(body, dict) and isinstance(body.get("dryRun"), list):
            values += body["dryRun"]
        for value in values:
            if value != "All":
                raise ApiError(
                    400, "BadRequest", f'dryRun: Unsupported value: "{value}": supported values: "All"'
                )
        return bool(values)

    def _field_validation(self, params: dict[str, str]) -> str:
        value = params.get("fieldValidation") or "Warn"
        if value not in _FIELD_VALIDATIONS:
            raise bad_request(
                f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", "Strict", "Warn"'
            )
        return value

    def _body(self, request: kmock.Request, *, patch: bool = False) -> Any:
        content_type = (request.headers.get("Content-Type") or _JSON).split(";")[0].strip().lower()
        if patch:
            if content_type not in PATCH_TYPES:
                return content_type, None  # the store answers 415 for it
            return content_type, self._decode_body(request, "application/json")
        if content_type == "application/vnd.kubernetes.protobuf":
            return protobuf.decode(request.body) if request.body else None
        if content_type not in ("application/json", "application/yaml", ""):
            raise unsupported_media_type(
                content_type, ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
            )
        return self._decode_body(request, content_type)

    def _decode_body(self, request: kmock.Request, content_type: str) -> Any:
        if not request.body:
            return None
        try:
            if content_type in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(request.text)
            return json.loads(request.text)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    def _matcher(self, params: dict[str, str]) -> Any:
        try:
            return make_matcher(params.get("labelSelector"), params.get("fieldSelector"))
        except SelectorError as exc:
            raise bad_request(str(exc)) from exc

    def _serve_resource(
        self, request: kmock.Request, rd: ResourceDef, api: ApiPath
    ) -> aiohttp.web.StreamResponse:
        method = str(request.method.value)
        params = self._params(request)
        namespace = api.namespace
        if rd.plural == "namespaces" or not rd.namespaced:
            namespace = None
        store = self.store
        if method == "GET":
            form = wanted_form(request.headers.get("Accept", ""))
            if api.name is None:
                # A missing namespace lists as empty, as on the real server (no error).
                items = store.list(rd, namespace, self._matcher(params))
                return self._render_list(rd, items, form, params)
            obj = store.get(rd, namespace, api.name)
            return self._render_one(rd, obj, form, params)
        if method == "POST":
            if api.name is not None:
                raise method_not_allowed("the server does not allow this method on the requested resource")
            if rd.namespaced and namespace is None:
                raise method_not_allowed("the server does not allow this method on the requested resource")
            body = self._body(request)
            result = store.create(
                rd,
                namespace,
                body,
                dry_run=self._dry_run(params),
                field_validation=self._field_validation(params),
            )
            return json_response(store.present(rd, result.obj), status=201, warnings=result.warnings)
        if method == "PUT" and api.name is not None:
            body = self._body(request)
            result = store.update(
                rd,
                namespace,
                api.name,
                body,
                subresource=api.subresource,
                dry_run=self._dry_run(params),
                field_validation=self._field_validation(params),
            )
            return json_response(result.obj, warnings=result.warnings)
        if method == "PATCH" and api.name is not None:
            content_type, body = self._body(request, patch=True)
            result = store.patch(
                rd,
                namespace,
                api.name,
                content_type,
                body,
                subresource=api.subresource,
                dry_run=self._dry_run(params),
                field_validation=self._field_validation(params),
            )
            return json_response(result.obj, warnings=result.warnings)
        if method == "DELETE":
            body = self._body(request)
            options = self._delete_options(params, body)
            if api.name is None:
                if rd.namespaced and namespace is None:
                    raise method_not_allowed(
                        "the server does not allow this method on the requested resource"
                    )
                deleted = store.delete_collection(rd, namespace, self._matcher(params), options)
                return json_response(
                    {
                        "apiVersion": rd.api_version,
                        "kind": rd.list_kind,
                        "metadata": {"resourceVersion": str(store.resource_version)},
                        "items": deleted,
                    }
                )
            obj, gone = store.delete(rd, namespace, api.name, options)
            if gone and not store.returns_deleted_object(rd):
                return json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            key: val
                            for key, val in (
                                ("name", api.name),
                                ("group", rd.group),
                                ("kind", rd.plural),
                                ("uid", obj["metadata"].get("uid")),
                            )
                            if val
                        },
                    }
                )
            return json_response(obj)
        raise method_not_allowed("the server does not allow this method on the requested resource")

    def _delete_options(self, params: dict[str, str], body: Any) -> DeleteOptions:
        body = body if isinstance(body, dict) else {}
        grace: Any = params.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        try:
            grace = int(grace) if grace is not None else None
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from exc
        policy = params.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = params.get("orphanDependents", body.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if truthy(str(orphan)) else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(
                f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                f'"Background", "Foreground", "Orphan"'
            )
        return DeleteOptions(
            grace_period=grace,
            propagation=policy,
            preconditions=body.get("preconditions"),
            dry_run=self._dry_run(params, body),
        )

    def _render_one(
        self, rd: ResourceDef, obj: dict[str, Any], form: str, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        if form == "Table":
            return json_response(
                tables.table(
                    rd,
                    [obj],
                    obj["metadata"].get("resourceVersion", ""),
                    include_object=params.get("includeObject") or "Metadata",
                )
            )
        if form == "PartialObjectMetadata":
            return json_response(tables.partial_metadata(obj))
        return json_response(obj)

    def _render_list(
        self, rd: ResourceDef, items: list[dict[str, Any]], form: str, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        rv = str(self.store.resource_version)
        if form == "Table":
            return json_response(
                tables.table(rd, items, rv, include_object=params.get("includeObject") or "Metadata")
            )
        if form == "PartialObjectMetadata":
            return json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "items": [tables.partial_metadata(obj) for obj in items],
                }
            )
        return json_response(
            {
                "apiVersion": rd.api_version,
                "kind": rd.list_kind,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    # --- watching ----------------------------------------------------------------------------------

    async def _serve_watch(
        self, request: kmock.Request, rd: ResourceDef, api: ApiPath
    ) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        params = self._params(request)
        matcher = self._matcher(params)
        namespace = None if (rd.plural == "namespaces" or not rd.namespaced) else api.namespace
        name = api.name
        timeout: float | None = None
        if params.get("timeoutSeconds"):
            try:
                timeout = float(params["timeoutSeconds"])
            except ValueError as exc:
                raise bad_request(f"invalid timeoutSeconds: {params['timeoutSeconds']!r}") from exc
        bookmarks = truthy(params.get("allowWatchBookmarks"))
        send_initial = truthy(params.get("sendInitialEvents"))
        form = wanted_form(request.headers.get("Accept", ""))
        include_object = params.get("includeObject") or "Metadata"
        if self._stopping:
            raise ApiError(503, "ServiceUnavailable", "the kube emulator is shutting down")
        watcher: Watcher | None = None
        error: ApiError | None = None
        try:
            watcher, initial = self.store.watch(
                rd, namespace, name, matcher, params.get("resourceVersion"), send_initial
            )
        except ApiError as exc:
            if exc.code != 410:
                raise
            error, initial = exc, []

        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": _JSON, "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        await response.prepare(raw)
        self._audited.add(id(request))
        api_for_audit = parse_api_path(request.url.path)
        self._audit(request, api_for_audit, "watch", 200, time.monotonic())
        self._watch_count += 1
        first = True

        async def send(event_type: str, obj: dict[str, Any]) -> None:
            nonlocal first
            if form == "Table" and event_type not in ("ERROR", "BOOKMARK"):
                rv = obj["metadata"].get("resourceVersion", "")
                obj = tables.table(rd, [obj], rv, include_object=include_object, with_columns=first)
                first = False
            elif event_type not in ("ERROR", "BOOKMARK"):
                obj = self.store.present(rd, obj)
            await response.write(_dumps({"type": event_type, "object": obj}) + b"\n")

        def bookmark(initial_end: bool = False) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return {"kind": rd.kind, "apiVersion": rd.api_version, "metadata": meta}

        try:
            if error is not None:
                await send("ERROR", error.status())
                await response.write_eof()
                return response
            assert watcher is not None
            for event_type, obj in initial:
                await send(event_type, obj)
            if send_initial and bookmarks:
                await send("BOOKMARK", bookmark(initial_end=True))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            timed_out = False
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    timed_out = True
                    break
                if event is None:
                    break
                seen = watcher.translate(event)
                if seen is not None:
                    await send(*seen)
            if timed_out and bookmarks:
                await send("BOOKMARK", bookmark())
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._watch_count -= 1
            if watcher is not None:
                self.store.unwatch(watcher)
        return response
