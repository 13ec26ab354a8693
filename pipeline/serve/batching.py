"""Micro-batching: requests that arrive together share one forward pass.

A request puts its drafts on a queue and awaits a future. One collector task takes the
first waiting request, keeps taking more until `window_s` has passed since it or
`max_posts` drafts are in hand, and hands the lot to the model thread (a single-thread
executor, so the event loop never waits on a forward pass). While a pass runs, new
requests queue up and form the next batch, so under load batches grow by themselves and
at concurrency 1 a request waits at most the window.

Requests are merged only when it cannot change a score: the run's task says its posts
are scored independently (`Task.scores_independent`: no window over the scored posts) and
their post ids do not collide; otherwise each goes through alone. A request that fails
in a merged pass is retried alone, so one bad request never fails another.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class _Job:
    drafts: list[Any]
    future: asyncio.Future
    ids: set[str] = field(default_factory=set)


class MicroBatcher:
    """Groups `submit`ted draft lists into passes of `score(list of groups) -> list of row lists`."""

    def __init__(self, score: Callable[[list[list[Any]]], list[list[dict[str, Any]]]], executor: ThreadPoolExecutor,
                 window_s: float = 0.005, max_posts: int = 64, merge: bool = True) -> None:
        self.score = score  # runs in the model thread
        self.executor = executor  # the model thread
        self.window_s = window_s  # how long the first request of a batch waits for company
        self.max_posts = max_posts  # drafts in one pass at most (a larger request goes alone)
        self.merge = merge  # False: every request alone (posts scored together interact)
        self.passes = 0  # forward passes run
        self.batched = 0  # requests served
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None or self._queue is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def submit(self, drafts: list[Any]) -> list[dict[str, Any]]:
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        job = _Job(drafts, asyncio.get_running_loop().create_future(), {d.post_id for d in drafts})
        await self._queue.put(job)
        return await job.future

    async def _collect(self) -> None:
        assert self._queue is not None
        held: _Job | None = None
        while True:
            first = held if held is not None else await self._queue.get()
            held = None
            batch, ids, n = [first], set(first.ids), len(first.drafts)
            deadline = time.monotonic() + self.window_s
            while self.merge and n < self.max_posts:
                left = deadline - time.monotonic()
                try:
                    job = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if n + len(job.drafts) > self.max_posts or ids & job.ids:
                    held = job  # starts the next batch
                    break
                batch.append(job)
                ids |= job.ids
                n += len(job.drafts)
            await self._run(batch)
            for _ in batch:
                self._queue.task_done()

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.score, [j.drafts for j in batch])
            self.passes += 1
        except Exception as e:  # noqa: BLE001 - handed to the request(s) that caused it
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(e)
                return
            for j in batch:  # find the culprit: each alone
                await self._run([j])
            return
        self.batched += len(batch)
        for j, rows in zip(batch, results):
            if not j.future.done():
                j.future.set_result(rows)

    def stats(self) -> dict[str, Any]:
        return {"passes": self.passes, "requests": self.batched, "window_ms": self.window_s * 1000,
                "max_posts": self.max_posts, "merge": self.merge}
