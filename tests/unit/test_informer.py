"""The Informer: a list, then a watch; a relist whose difference becomes changes; the operator's own
writes held until the watch catches up, never replaced by an older version.

The API server here is a fake (``ScriptedApi``, an external system): each list answers the objects
and version it is given, each watch plays the events it is given, then ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llamacontroller.kube.api import ApiError
from llamacontroller.kube.informer import Change, Informer


def obj(uid: str, version: int, **status: Any) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "resourceVersion": str(version)}, "status": status}


class ScriptedApi:
    """A fake Kubernetes API: the answers of successive lists and watches, in order."""

    def __init__(
        self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[list[dict[str, Any]]]
    ) -> None:
        self.lists = lists
        self.watches = watches
        self.listed = 0

    async def list_objects(self, path: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        self.listed += 1
        if not self.lists:
            await asyncio.Event().wait()  # no more lists: the informer waits here
        return self.lists.pop(0)

    async def watch_objects(
        self, path: str, version: str, params: dict[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        events = self.watches.pop(0) if self.watches else [{"type": "ERROR", "object": {}}]
        for event in events:
            yield event
            await asyncio.sleep(0)


def run_until(api: ScriptedApi, lists_seen: int) -> tuple[Informer, list[Change]]:
    changes: list[Change] = []
    informer = Informer(api, "/api/v1/pods", changes.append)  # type: ignore[arg-type]

    async def main() -> None:
        task = asyncio.create_task(informer.run())
        while api.listed < lists_seen or api.lists:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    return informer, changes


def test_a_list_then_the_watch_events():
    api = ScriptedApi(
        lists=[([obj("a", 1)], "1")],
        watches=[[
            {"type": "ADDED", "object": obj("b", 2)},
            {"type": "MODIFIED", "object": obj("a", 3, phase="Running")},
            {"type": "DELETED", "object": obj("b", 4)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "5"}}},
        ]],
    )  # fmt: skip
    informer, changes = run_until(api, 1)
    assert informer.store == {"a": obj("a", 3, phase="Running")}
    assert [(c.old is None, c.new is None) for c in changes] == [(True, False)] * 2 + [
        (False, False),
        (False, True),
    ]


def test_a_relist_says_what_went_away_meanwhile():
    """The watch expires (410); the new list lacks b: b's deletion is a change like any other."""
    api = ScriptedApi(
        lists=[([obj("a", 1), obj("b", 2)], "2"), ([obj("a", 1)], "9")],
        watches=[[{"type": "ERROR", "object": {"code": 410}}]],
    )
    informer, changes = run_until(api, 2)
    assert set(informer.store) == {"a"}
    assert changes[-1] == Change(obj("b", 2), None)


def test_the_operators_own_write_survives_a_list_older_than_it():
    """A Pod the operator just created (version 12) is not in a list taken at version 10: it is
    still there, so no second server can be granted its GPU."""
    api = ScriptedApi(lists=[([], "5"), ([], "10")], watches=[[{"type": "ERROR", "object": {"code": 410}}]])
    changes: list[Change] = []
    informer = Informer(api, "/api/v1/pods", changes.append)  # type: ignore[arg-type]

    async def main() -> None:
        task = asyncio.create_task(informer.run())
        await informer.synced.wait()
        informer.put(obj("mine", 12))
        while api.lists:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert "mine" in informer.store


def test_an_older_version_never_replaces_a_newer_one():
    api = ScriptedApi(lists=[([obj("a", 7, phase="Running")], "7")], watches=[])
    informer, _ = run_until(api, 1)
    informer.put(obj("a", 6, phase="Pending"))  # a write's answer that the watch overtook
    assert informer.store["a"]["status"] == {"phase": "Running"}
    informer.put(obj("a", 8, phase="Succeeded"))
    assert informer.store["a"]["status"] == {"phase": "Succeeded"}


def test_a_write_answered_after_the_deletion_event_does_not_bring_the_object_back():
    """A status patch answered (version 8) after the watch said the object is gone (version 9): a
    deleted object stays deleted, or the operator would create a server for a LlamaModel that is no
    more, again and again."""
    api = ScriptedApi(lists=[([obj("a", 7)], "7")], watches=[[{"type": "DELETED", "object": obj("a", 9)}]])
    informer, changes = run_until(api, 1)
    assert changes[-1] == Change(obj("a", 7), None)
    informer.put(obj("a", 8, phase="Loading"))
    assert informer.store == {} and len(changes) == 2


class AbsentApi(ScriptedApi):
    """A fake API server that does not serve the kind (its CRD is not installed): 404 to a list."""

    async def list_objects(self, path: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        self.listed += 1
        raise ApiError(404, "NotFound", "the server could not find the requested resource")


def test_an_optional_kind_that_is_not_served_counts_as_empty_and_synced():
    informer = Informer(AbsentApi([], []), "/apis/x/v1/things", lambda change: None, optional=True)  # type: ignore[arg-type]
    informer.store["old"] = obj("old", 1)

    async def main() -> bool:
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 1)
        task.cancel()
        return informer.synced.is_set()

    assert asyncio.run(main()) and informer.store == {}
    required = Informer(AbsentApi([], []), "/apis/x/v1/things", lambda change: None)  # type: ignore[arg-type]

    async def waits() -> bool:
        task = asyncio.create_task(required.run())
        await asyncio.sleep(0.1)
        task.cancel()
        return required.synced.is_set()

    assert not asyncio.run(waits())
