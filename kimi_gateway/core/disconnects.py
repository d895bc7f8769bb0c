"""Noticing that a client went away while its answer is still being produced, and stopping the work.

The core is told how to notice by a `Gone`: a coroutine function that returns once the client has gone
(HTTP makes one from the ASGI `receive`).

A watcher task per request costs more than most answers from a fast upstream take, so one is started only
for answers still running after `WATCH_AFTER_SECONDS`. A disconnect before then is queued by the server, so
the watcher sees it the moment it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

WATCH_AFTER_SECONDS = 0.5

# Returns once the client has gone (and not before).
Gone = Callable[[], Awaitable[None]]


async def _cancel_on_disconnect(gone: Gone, task: asyncio.Task[object]) -> None:
    await gone()
    task.cancel()


class DisconnectWatch:
    """Within `with DisconnectWatch(gone) as watch:`, a disconnect cancels the current task.

    The caller catches the `CancelledError`; `watch.fired` tells a disconnect from any other cancellation
    (a shutdown), and `watch.absorb()` then undoes the cancellation so the request can end quietly.
    """

    def __init__(self, gone: Gone, after: float = WATCH_AFTER_SECONDS) -> None:
        self._gone = gone
        self._after = after
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None

    def __enter__(self) -> DisconnectWatch:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._after, self._start)
        return self

    def _start(self) -> None:
        assert self._task is not None
        self._watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(self._gone, self._task))

    @property
    def fired(self) -> bool:
        watcher = self._watcher
        return watcher is not None and watcher.done() and not watcher.cancelled()

    def absorb(self) -> None:
        assert self._task is not None
        self._task.uncancel()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
