"""Telling every replica that a key or an account changed, so that its caches forget it at once.

With Redis configured, a change is published on `<prefix>changes` as `key:<hash>` or `account:<id>`, and
every gateway process listens there. A listener that loses Redis clears its caches when it reconnects (it
may have missed changes meanwhile). Without Redis nothing is published: each process's cache age bound is
then what bounds how late another process sees a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

KEY, ACCOUNT = "key", "account"
# How a listener is told of a change: (kind, id), or (None, None) for "forget everything".
OnChange = Callable[[str | None, str | None], None]

log = logging.getLogger(__name__)


def channel(prefix: str) -> str:
    return prefix + "changes"


class Changes:
    """Publishes this process's changes; `listen` applies everyone's (its own included, harmlessly)."""

    RETRY_SECONDS = 1.0

    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._task: asyncio.Task[None] | None = None

    async def publish(self, kind: str, ident: str) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.publish(channel(self.prefix), f"{kind}:{ident}")
        except (RedisError, OSError):
            # Others then see the change within their cache's age bound, as without Redis.
            log.warning("could not tell other replicas that %s %s changed", kind, ident[:12])

    def listen(self, on_change: OnChange) -> None:
        if self.redis is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(self.redis, on_change))

    async def _listen(self, redis: Redis, on_change: OnChange) -> None:
        first = True
        while True:
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel(self.prefix))
                if not first:
                    on_change(None, None)  # changes may have been missed while Redis was away
                first = False
                async for message in pubsub.listen():
                    data = message.get("data")
                    if isinstance(data, bytes):
                        kind, _, ident = data.decode("utf-8", "replace").partition(":")
                        on_change(kind, ident)
            except (RedisError, OSError):
                log.warning("listening for changes on Redis failed; retrying", exc_info=True)
                first = False
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(self.RETRY_SECONDS)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
