"""The work queue: a key at most once queued and once in work, worked again when changed meanwhile,
retried after a failure."""

from __future__ import annotations

import asyncio

from llamacontroller.kube.workqueue import WorkQueue


def test_a_key_added_many_times_is_worked_on_once_and_again_if_added_during_its_work():
    seen: list[str] = []

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def work(key: str) -> None:
            seen.append(key)
            if len(seen) == 1:
                started.set()
                await release.wait()

        queue = WorkQueue(work, workers=4)
        queue.start()
        for _ in range(3):
            queue.add("default/a")
        await started.wait()
        queue.add("default/a")  # a change while it is worked on: once more afterwards
        queue.add("default/a")
        release.set()
        while not queue.idle:
            await asyncio.sleep(0.01)
        await queue.stop()

    asyncio.run(main())
    assert seen == ["default/a", "default/a"]


def test_a_failure_is_tried_again():
    tries: list[str] = []

    async def main() -> None:
        async def work(key: str) -> None:
            tries.append(key)
            if len(tries) < 3:
                raise ConnectionError("the API server is away")

        queue = WorkQueue(work, workers=1, retry_first=0.02)
        queue.start()
        queue.add("default/a")
        while len(tries) < 3 or not queue.idle:
            await asyncio.sleep(0.01)
        await queue.stop()

    asyncio.run(main())
    assert tries == ["default/a"] * 3
