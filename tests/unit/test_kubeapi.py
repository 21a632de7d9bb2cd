"""KubeApi's manners with an API server that throttles, stalls and breaks its watches.

The API server here is a fake (an httpx.MockTransport, an external system): each test scripts its
answers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from llamacontroller.kube.api import THROTTLE_RETRIES, ApiError, KubeApi, retry_after
from llamacontroller.kube.informer import Informer

Handler = Callable[[httpx.Request], Any]


def api_on(handler: Handler, timeout: float = 0.5) -> KubeApi:
    transport = httpx.MockTransport(handler)
    return KubeApi(httpx.AsyncClient(base_url="http://api", transport=transport), timeout=timeout)


def status(code: int, reason: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"kind": "Status", "code": code, "reason": reason, "message": reason.lower()}
    return httpx.Response(code, json=body, headers=headers or {})


def answer(code: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(code, headers=headers)


@pytest.mark.parametrize(
    ("code", "headers", "wait"),
    [
        (429, {"Retry-After": "2"}, 2.0),
        (429, {}, 1.0),  # throttled without saying for how long: a second
        (429, {"Retry-After": "3600"}, 30.0),  # never longer than RETRY_AFTER_MAX
        (429, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),  # a date in the past: at once
        (503, {"Retry-After": "4"}, 4.0),
        (503, {}, None),  # unavailable, without asking to come back: an error like any other
        (500, {"Retry-After": "4"}, None),
        (200, {}, None),
    ],
)
def test_retry_after_is_what_the_server_asked(code: int, headers: dict[str, str], wait: float | None) -> None:
    assert retry_after(answer(code, headers)) == wait


def test_a_throttled_call_is_tried_again_after_retry_after() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) < 3:
            return status(429, "TooManyRequests", {"Retry-After": "0.2"})
        return httpx.Response(201, json={"metadata": {"name": "x"}})

    async def main() -> dict[str, Any] | None:
        return await api_on(handler).patch_llamamodel_status("ns", "x", {"phase": "Ready"})

    assert asyncio.run(main()) == {"metadata": {"name": "x"}}
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.2 and seen[2] - seen[1] >= 0.2  # it waited as asked


def test_a_call_throttled_for_ever_fails_after_a_bounded_number_of_tries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return status(429, "TooManyRequests", {"Retry-After": "0"})

    async def main() -> None:
        await api_on(handler).patch_llamamodel_status("ns", "x", {})

    with pytest.raises(ApiError) as raised:
        asyncio.run(main())
    assert raised.value.status == 429 and len(seen) == THROTTLE_RETRIES + 1


def test_a_server_error_is_not_tried_again_by_the_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return status(500, "InternalError")

    with pytest.raises(ApiError) as raised:
        asyncio.run(api_on(handler).patch_llamamodel_status("ns", "x", {}))
    assert raised.value.status == 500 and len(seen) == 1  # the work queue retries, with backoff


class BrokenStream(httpx.AsyncByteStream):
    """A watch's body: some events, then the connection breaks (a reset)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield json.dumps(event).encode() + b"\n"
        raise httpx.ReadError("connection reset by peer")


def pod(uid: str, version: int) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "resourceVersion": str(version)}}


def test_a_watch_reset_mid_stream_is_an_api_error_after_its_events() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=BrokenStream([{"type": "ADDED", "object": pod("a", 2)}]))

    events: list[dict[str, Any]] = []

    async def main() -> None:
        async for event in api_on(handler).watch_objects("/api/v1/pods", "1", {}):
            events.append(event)

    with pytest.raises(ApiError) as raised:
        asyncio.run(main())
    assert raised.value.status == 0 and events == [{"type": "ADDED", "object": pod("a", 2)}]


def test_a_watch_whose_headers_do_not_come_fails_within_the_timeout() -> None:
    """The events of a watch may be minutes apart, but its headers come at once: a stalled watch
    is given up after the ordinary timeout, not after the watch's own (minutes)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    async def main() -> float:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ApiError):
            async for _ in api_on(handler, timeout=0.2).watch_objects("/api/v1/pods", "1", {}):
                pass
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(main()) < 2


def test_an_informer_lives_through_a_reset_watch_and_lists_again() -> None:
    """Before, a reset watch raised an httpx error that the informer did not expect: its task died
    and the cache stood still for good."""
    lists = [([pod("a", 1)], "1"), ([pod("a", 1), pod("b", 3)], "3")]
    listed: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("watch") == "true":
            if len(listed) == 1:
                return httpx.Response(200, stream=BrokenStream([]))
            return httpx.Response(200, json={"type": "BOOKMARK", "object": pod("", 4)})
        items, version = lists[min(len(listed), len(lists) - 1)]
        listed.append(1)
        return httpx.Response(200, json={"items": items, "metadata": {"resourceVersion": version}})

    async def main() -> Informer:
        informer = Informer(api_on(handler), "/api/v1/pods", lambda change: None)
        task = asyncio.create_task(informer.run())
        for _ in range(100):
            if "b" in informer.store:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        return informer

    informer = asyncio.run(main())
    assert set(informer.store) == {"a", "b"} and len(listed) >= 2
