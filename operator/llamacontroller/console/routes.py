"""The console's routes on the gateway's app, under ``/ui``: pages, the parts they refresh, the
login, and the writes (each checked for a session, a CSRF token and the settings' permission)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from llamacontroller.config import OperatorConfig
from llamacontroller.console import pages
from llamacontroller.console.forms import FormError, LoadForm, llamamodel_of, preview, switch_patch
from llamacontroller.console.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    Access,
    Viewer,
    csrf_matches,
    new_csrf,
    parse_cookies,
    set_cookie,
)
from llamacontroller.console.source import ConsoleSource, WriteError
from llamacontroller.console.traffic import Traffic, TrafficMeter
from llamacontroller.console.view import build_view, model_view
from llamacontroller.kube.api import ApiError
from llamacontroller.serving.metrics import METRICS
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Answer, Response
from llamacontroller.serving.web.router import Router
from llamacontroller.slot_table import slot_table
from llamacontroller.slots import gpu_count_of

log = logging.getLogger(__name__)

PREFIX = "/ui"
WRONG_KEY_DELAY = 1.0  # seconds before a wrong key is answered: guessing stays slow
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null`
    "Cache-Control": "no-store",
}
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


class Refused(Exception):
    """A request the console answers with a plain page and a status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def html(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(text.encode(), status, "text/html; charset=utf-8", SECURITY_HEADERS | (headers or {}))


def redirect(to: str, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", 303, "text/plain", SECURITY_HEADERS | {"Location": to} | (headers or {}))


def form_fields(request: Request) -> dict[str, str]:
    parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _secure(request: Request) -> bool:
    return request.scope.get("scheme") == "https" or request.header(b"x-forwarded-proto") == "https"


def same_origin(request: Request) -> bool:
    """A browser's POST names the page's origin; another site's (or ``null``) is refused. A client
    that sends no Origin (curl) is judged by its cookies and token alone."""
    origin, host = request.header(b"origin"), request.header(b"host")
    return origin is None or (host is not None and origin.split("://", 1)[-1] == host)


def off_routes(router: Router) -> None:
    """Without a console key or a trusted header, /ui says that the console is off (404)."""

    async def off(request: Request) -> Answer:
        return html(pages.off_page(), 404)

    router.add("GET", PREFIX, off)


class Console:
    def __init__(self, access: Access, source: ConsoleSource, config: OperatorConfig) -> None:
        self.access = access
        self.source = source
        self.config = config
        self._wrong_keys = asyncio.Lock()
        self.meter = TrafficMeter()
        package = resources.files("llamacontroller.console") / "static"
        self.static = {name: (package / name).read_bytes() for name in STATIC}

    def add_routes(self, router: Router) -> None:
        add = router.add
        add("GET", PREFIX, self._page(self.board))
        add("GET", f"{PREFIX}/login", self.login_form)
        add("POST", f"{PREFIX}/login", self.login)
        add("POST", f"{PREFIX}/logout", self._write(self.logout, needs_writes=False))
        add("GET", f"{PREFIX}/part/board", self._part(self.board_part))
        add("GET", f"{PREFIX}/lm/{{ref}}", self._page(self.detail))
        add("GET", f"{PREFIX}/part/lm/{{ref}}", self._part(self.detail_part))
        add("GET", f"{PREFIX}/load", self._page(self.load_form))
        add("POST", f"{PREFIX}/load", self._write(self.load))
        add("POST", f"{PREFIX}/unload", self._write(self.unload))
        add("POST", f"{PREFIX}/switch", self._write(self.switch))
        add("GET", f"{PREFIX}/static/{{file}}", self.static_file)

    # Who asks

    def viewer(self, request: Request) -> Viewer | None:
        cookies = parse_cookies(request.header(b"cookie"))
        headers = {}
        if self.access.user_header:
            value = request.header(self.access.user_header.encode())
            headers = {self.access.user_header: value or ""}
        return self.access.viewer(cookies, headers)

    def _csrf(self, request: Request) -> tuple[str, dict[str, str]]:
        """The page's CSRF token: the cookie's, or a new one with the header that sets it."""
        current = parse_cookies(request.header(b"cookie")).get(CSRF_COOKIE)
        if current:
            return current, {}
        token = new_csrf()
        return token, {"Set-Cookie": set_cookie(CSRF_COOKIE, token, secure=_secure(request))}

    def _page(
        self, handler: Callable[[Request, Viewer, str], Awaitable[str]]
    ) -> Callable[[Request], Awaitable[Answer]]:
        async def page(request: Request) -> Answer:
            viewer = self.viewer(request)
            if viewer is None:
                return redirect(f"{PREFIX}/login")
            csrf, cookie = self._csrf(request)
            try:
                return html(await handler(request, viewer, csrf), headers=cookie)
            except Refused as exc:
                return self._refusal(exc.status, str(exc))
            except ApiError as exc:
                return self._refusal(502, f"the Kubernetes API: {exc}")

        return page

    def _part(
        self, handler: Callable[[Request, str], Awaitable[str]]
    ) -> Callable[[Request], Awaitable[Answer]]:
        async def part(request: Request) -> Answer:
            if self.viewer(request) is None:
                return html("signed out", 401)  # the page's script goes to the login page
            csrf = parse_cookies(request.header(b"cookie")).get(CSRF_COOKIE, "")
            try:
                return html(await handler(request, csrf))
            except Refused as exc:
                return html(pages.e(exc), exc.status)
            except ApiError as exc:
                return html(f"<p class=error>the Kubernetes API: {pages.e(exc)}</p>", 502)

        return part

    def _write(
        self,
        handler: Callable[[Request, Viewer, dict[str, str]], Awaitable[Answer]],
        needs_writes: bool = True,
    ) -> Callable[[Request], Awaitable[Answer]]:
        """A write: a session, the same origin, its CSRF token, and writes on in the settings."""

        async def write(request: Request) -> Answer:
            viewer = self.viewer(request)
            if viewer is None:
                return html(pages.login_page("Sign in first."), 401)
            if not same_origin(request):
                return self._refusal(403, "refused: the request comes from another site")
            fields = form_fields(request)
            if not csrf_matches(
                parse_cookies(request.header(b"cookie")).get(CSRF_COOKIE), fields.get(CSRF_FIELD)
            ):
                log.warning(
                    "console: a write to %s without its CSRF token refused (%s)", request.path, request.remote
                )
                return self._refusal(
                    403, "refused: the form's CSRF token is missing or wrong; reload the page"
                )
            if needs_writes and not self.access.writes:
                return self._refusal(403, "refused: writes are off in this console's settings")
            try:
                return await handler(request, viewer, fields)
            except (Refused, WriteError) as exc:
                status = exc.status if isinstance(exc, Refused) else 409
                return self._refusal(status, str(exc))

        return write

    def _refusal(self, status: int, message: str) -> Response:
        body = (
            f"<main class=narrow><p class=error role=alert id=refused>{pages.e(message)}</p>"
            "<p><a href=/ui>back</a></p></main>"
        )
        return html(pages.document("LlamaController console: refused", body), status)

    # Sign in and out

    async def login_form(self, request: Request) -> Answer:
        if self.viewer(request) is not None:
            return redirect(PREFIX)
        if self.access.key is None:  # only the proxy signs people in, and it named nobody
            message = (
                f"Sign in through the proxy in front of this console (it sets {self.access.user_header})."
            )
            return self._refusal(401, message)
        return html(pages.login_page())

    async def login(self, request: Request) -> Answer:
        if self.access.key is None:
            return redirect(PREFIX)
        if not same_origin(request):  # no signing in from another site's form either
            return self._refusal(403, "refused: the request comes from another site")
        given = form_fields(request).get("key", "")
        if not self.access.key_matches(given):
            log.warning("console: a wrong console key from %s", request.remote)
            # One wrong key answered per second and process, however many are sent at once; the
            # right key never waits for them.
            async with self._wrong_keys:
                await asyncio.sleep(WRONG_KEY_DELAY)
            return html(pages.login_page("That is not the console key."), 401)
        session, cookie = self.access.new_session()
        log.info("console: session %s signed in from %s", session, request.remote)
        secure = _secure(request)
        headers = {"Set-Cookie": set_cookie(SESSION_COOKIE, cookie, secure=secure)}
        response = redirect(PREFIX, headers)
        # A second Set-Cookie: the App writes headers from a dict, so the CSRF cookie is set on the
        # first page instead (Console._csrf).
        return response

    async def logout(self, request: Request, viewer: Viewer, fields: dict[str, str]) -> Answer:
        log.info("console: session %s signed out", viewer.session)
        return redirect(
            f"{PREFIX}/login",
            {"Set-Cookie": set_cookie(SESSION_COOKIE, "", secure=_secure(request), max_age=0)},
        )

    # Pages and parts

    async def _view(self) -> Any:
        return build_view(
            self.source.llamamodels(), await self.source.nodes(), self.config, await self.source.agents()
        )

    def _traffic(self, request: Request) -> dict[str, Traffic]:
        metrics = request.app.state.get(METRICS)
        return self.meter.observe(metrics.registry, time.monotonic()) if metrics is not None else {}

    async def board(self, request: Request, viewer: Viewer, csrf: str) -> str:
        view, traffic = await self._view(), self._traffic(request)
        where, writes = self.source.where, self.access.writes
        return pages.board_page(view, datetime.now(UTC), viewer, csrf, where, writes, traffic)

    async def board_part(self, request: Request, csrf: str) -> str:
        view, traffic = await self._view(), self._traffic(request)
        return pages.board(view, datetime.now(UTC), self.access.writes, csrf, traffic)

    def _find(self, ref: str) -> dict[str, Any]:
        namespace, _, name = ref.partition("/")
        for lm in self.source.llamamodels():
            meta = lm["metadata"]
            if meta.get("namespace") == namespace and meta.get("name") == name:
                return lm
        raise Refused(404, f"no LlamaModel {ref}")

    async def _gpu_count(self, node: str | None) -> int:
        found = next((n for n in await self.source.nodes() if n["metadata"]["name"] == node), None)
        return gpu_count_of(found, self.config.gpu_count_label) or self.config.gpus_per_node

    async def _slots(self, node: str | None) -> list[str]:
        return list(slot_table(await self._gpu_count(node), self.config.ports))

    async def detail_part(self, request: Request, csrf: str) -> str:
        lm = self._find(request.match_info["ref"])
        events = await self.source.events(lm)
        try:
            log_text, problem = await self.source.log_tail(lm), None
        except ApiError as exc:  # the node's kubelet out of reach, say: the rest of the page stands
            log_text, problem = None, f"the log cannot be read through the API: {exc}"
        return pages.detail(model_view(lm), events, log_text, datetime.now(UTC), problem)

    async def detail(self, request: Request, viewer: Viewer, csrf: str) -> str:
        lm = self._find(request.match_info["ref"])
        view = model_view(lm)
        part = await self.detail_part(request, csrf)
        return pages.detail_page(
            view, part, await self._slots(view.node), viewer, csrf, self.source.where, self.access.writes
        )

    async def _load_page(self, form: LoadForm, viewer: Viewer, csrf: str, **extra: Any) -> str:
        nodes = sorted(
            {n["metadata"]["name"] for n in await self.source.nodes()}
            | {n.name for n in (await self._view()).nodes}
        )
        slots = await self._slots(form.node or None)
        return pages.load_page(
            form, nodes, slots, self.source.model_files(), viewer, csrf, self.source.where, **extra
        )

    async def load_form(self, request: Request, viewer: Viewer, csrf: str) -> str:
        if not self.access.writes:
            raise Refused(403, "writes are off in this console's settings")
        namespaces = Counter(lm["metadata"].get("namespace", "default") for lm in self.source.llamamodels())
        namespace = namespaces.most_common(1)[0][0] if namespaces else "default"  # where the others are
        form = LoadForm(namespace=namespace, node=self.config.default_node or "")
        return await self._load_page(form, viewer, csrf)

    # Writes

    async def load(self, request: Request, viewer: Viewer, fields: dict[str, str]) -> Answer:
        form = LoadForm.from_fields(fields)
        csrf = fields[CSRF_FIELD]
        gpu_count = await self._gpu_count(form.node)
        try:
            body = llamamodel_of(form, gpu_count)
            agent = (await self.source.agents()).get(form.node) if self.source.models_dir is None else None
            shown = preview(body, self.config, gpu_count, self.source.models_dir, agent)
        except FormError as exc:
            return html(await self._load_page(form, viewer, csrf, error=str(exc)), 422)
        if fields.get("action") != "apply":
            return html(await self._load_page(form, viewer, csrf, preview=shown))
        actor = viewer.describe(request.remote)
        try:
            await self.source.create(body, actor)
        except WriteError as exc:
            return html(await self._load_page(form, viewer, csrf, preview=shown, error=str(exc)), 409)
        log.info("console: %s loaded %s/%s", actor, form.namespace, form.name)
        return redirect(PREFIX)

    def _writable(self, fields: dict[str, str]) -> dict[str, Any]:
        lm = self._find(fields.get("ref", ""))
        owner = model_view(lm).gitops
        if owner:
            raise Refused(409, f"{fields['ref']} is applied from Git by {owner}: change it there")
        return lm

    async def unload(self, request: Request, viewer: Viewer, fields: dict[str, str]) -> Answer:
        lm = self._writable(fields)
        actor = viewer.describe(request.remote)
        await self.source.delete(lm, actor)
        log.info("console: %s unloaded %s", actor, fields["ref"])
        return redirect(PREFIX)

    async def switch(self, request: Request, viewer: Viewer, fields: dict[str, str]) -> Answer:
        lm = self._writable(fields)
        node = (lm.get("spec") or {}).get("nodeName") or self.config.default_node
        try:
            patch = switch_patch(
                fields.get("slot", ""), fields.get("ctx_size", ""), await self._gpu_count(node)
            )
        except FormError as exc:
            raise Refused(422, str(exc)) from exc
        seen, now = fields.get("generation", ""), str(lm["metadata"].get("generation") or "")
        if seen and now and seen != now:  # the spec changed since the page was built (not its status)
            raise Refused(
                409, f"{fields['ref']} was changed meanwhile (generation {seen} -> {now}): look again"
            )
        actor = viewer.describe(request.remote)
        await self.source.patch(lm, patch, actor)
        log.info("console: %s switched %s to %s", actor, fields["ref"], fields.get("slot"))
        return redirect(f"{PREFIX}/lm/{fields['ref']}")

    async def static_file(self, request: Request) -> Answer:
        name = request.match_info["file"]
        if name not in self.static:
            return html("not found", 404)
        return Response(
            self.static[name],
            200,
            STATIC[name],
            {"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )
