"""Admission and release of one request: a rate-limit slot and a credit hold, taken and given back together.

`SeparateAdmission` asks the limiter, then the holds. `RedisAdmission` does both in one Lua script, and
settles the hold and frees the slot in another; each script takes a whole batch of requests (every one
admitted or finishing at that moment) in one command: the redis client's own per-command cost dominated
the accounted hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from kimi_gateway.accounts.holds import HoldRequest, ReservingHolds, Shortfall
from kimi_gateway.accounts.holds_redis import (
    hold_args,
    seed,
    settle_args,
)
from kimi_gateway.accounts.holds_redis import shortfall as parse_shortfall
from kimi_gateway.accounts.ledger import Ledger
from kimi_gateway.accounts.scripts import script
from kimi_gateway.limits import Decision, Limiter, Window
from kimi_gateway.limits.redis import (
    decision,
    limit_args,
    release_args,
)


class Admission(Protocol):
    async def admit(
        self, slot: str, bucket: str, concurrency: int, windows: Sequence[Window], hold: HoldRequest
    ) -> Decision | Shortfall:
        """The limiter's decision (refused, or admitted with the hold placed), or the hold's shortfall
        (nothing taken)."""
        ...

    async def top_up(self, hold: HoldRequest) -> Shortfall | None:
        """Grow the open hold `hold.hold_id` by `hold.amount` (a request found larger than estimated at
        admission, once its media was read), or say why it does not fit (the hold stays as it was)."""
        ...

    def finish(self, slot: str, bucket: str, account_id: str, key_hash: str | None, cost: int) -> None:
        """Settle the hold named `slot` at `cost` and free the slot. Synchronous: each backend either does
        it in this process or queues it for its next batch, so finishing costs no task."""
        ...

    async def close(self) -> None: ...


class SeparateAdmission:
    def __init__(self, limiter: Limiter, holds: ReservingHolds) -> None:
        self.limiter = limiter
        self.holds = holds

    async def admit(
        self, slot: str, bucket: str, concurrency: int, windows: Sequence[Window], hold: HoldRequest
    ) -> Decision | Shortfall:
        verdict = await self.limiter.acquire(slot, bucket, concurrency, windows)
        if not verdict.allowed:
            return verdict
        try:
            short = await self.holds.reserve(hold)
        except BaseException:
            self.limiter.release(slot, bucket)
            raise
        if short is not None:
            self.limiter.release(slot, bucket)
            return short
        return verdict

    async def top_up(self, hold: HoldRequest) -> Shortfall | None:
        return self.holds.top_up(hold)

    def finish(self, slot: str, bucket: str, account_id: str, key_hash: str | None, cost: int) -> None:
        try:
            self.holds.settle_now(slot, account_id, key_hash, cost)
        finally:
            self.limiter.release(slot, bucket)

    async def close(self) -> None:
        await self.limiter.close()


log = logging.getLogger(__name__)


class RedisAdmission:
    RETRY_SECONDS = 0.5
    CLOSE_SECONDS = 5.0

    def __init__(
        self, redis: Redis, ledger: Ledger, prefix: str, hold_seconds: float, slot_seconds: float
    ) -> None:
        self.redis = redis
        self.ledger = ledger
        self.prefix = prefix
        self.hold_ms = int(hold_seconds * 1000)
        self.slot_ms = int(slot_seconds * 1000)
        self._admit = Pipelined(redis, script("admit.lua"))
        self._finish = Pipelined(redis, script("finish.lua"))
        # Rare (media larger than estimated): not batched.
        self._top_up = redis.register_script(script("top_up.lua"))
        self._pending: list[list[bytes]] = []
        self._sender: asyncio.Task[None] | None = None

    async def admit(
        self, slot: str, bucket: str, concurrency: int, windows: Sequence[Window], hold: HoldRequest
    ) -> Decision | Shortfall:
        args = [
            limit_args(self.prefix, slot, bucket, concurrency, windows, self.slot_ms),
            hold_args(self.prefix, hold, self.hold_ms),
        ]
        for _ in range(3):
            result = await self._admit.call(args, on_orphan=lambda r: self._orphaned(r, slot, bucket, hold))
            status = int(result[0])
            if status in (0, 1):
                return decision(result)
            if status == 2:
                return parse_shortfall(result)
            await seed(self.redis, self.ledger, self.prefix, status, hold)
        raise RuntimeError("could not seed the balance in Redis")

    async def top_up(self, hold: HoldRequest) -> Shortfall | None:
        result = await self._top_up(args=[hold_args(self.prefix, hold, self.hold_ms)])
        return parse_shortfall(result) if int(result[0]) == 2 else None

    def _orphaned(self, result: Any, slot: str, bucket: str, hold: HoldRequest) -> None:
        # Admitted, but the request was cancelled before it heard so: give the slot and hold back.
        if isinstance(result, list) and result and int(result[0]) == 1:
            self._queue_finish(slot, bucket, hold.account_id, hold.key_hash, 0)

    def finish(self, slot: str, bucket: str, account_id: str, key_hash: str | None, cost: int) -> None:
        # Queued, and sent with every other finish of this moment in one batch. The journal already
        # holds the settlement, so a crash before the batch goes out is settled again at recovery.
        self._queue_finish(slot, bucket, account_id, key_hash, cost)

    def _queue_finish(self, slot: str, bucket: str, account_id: str, key_hash: str | None, cost: int) -> None:
        self._pending.append(
            [
                settle_args(self.prefix, slot, account_id, key_hash, cost),
                release_args(self.prefix, slot, bucket),
            ]
        )
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._finish.run(batch)
                except ResponseError as exc:  # the script failed: sending it again would fail again
                    log.error("%d settlement(s) refused by Redis: %s", len(batch), exc)
                except (RedisError, OSError):
                    log.exception("settling %d request(s) in Redis failed; retrying", len(batch))
                    self._pending = batch + self._pending
                    await asyncio.sleep(self.RETRY_SECONDS)
        finally:
            self._sender = None

    async def close(self) -> None:
        if self._sender is not None:
            # Bounded: with Redis away, shutdown must not hang. The ledger still gets every charge.
            done, _ = await asyncio.wait((self._sender,), timeout=self.CLOSE_SECONDS)
            if not done:
                log.warning(
                    "Redis unreachable at shutdown: %d settlement(s) not applied there (the ledger has them)",
                    len(self._pending),
                )
                self._sender.cancel()


class Pipelined:
    """One batched script (admit.lua, finish.lua), called by many requests at once: the calls made while
    one batch is out go together in the next, as one EVALSHA (no per-call round trip or command)."""

    def __init__(self, redis: Redis, source: str) -> None:
        self.redis = redis
        self.script = redis.register_script(source)
        self._queue: list[tuple[list[bytes], asyncio.Future[Any], Callable[[Any], None] | None]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, args: list[bytes], on_orphan: Callable[[Any], None] | None = None) -> Any:
        """The script's answer; `on_orphan` gets it instead if the caller was cancelled meanwhile."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future, on_orphan))
        if self._sender is None:
            self._sender = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await self.run([args for args, _, _ in batch])
                except Exception as exc:
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future, on_orphan), result in zip(batch, results, strict=True):
                    if future.done():  # the caller was cancelled
                        if on_orphan is not None:
                            on_orphan(result)
                    else:
                        future.set_result(result)
        finally:
            self._sender = None

    async def run(self, calls: list[list[bytes]]) -> list[Any]:
        """Every call's answer, in order. Each call's arguments are JSON documents; the batch is their
        array of arrays. A batch refused with NOSCRIPT (Redis restarted and lost its script cache) ran
        nothing, so it is sent again after a load."""
        payload = b"[" + b",".join(b"[" + b",".join(args) + b"]" for args in calls) + b"]"
        try:
            results: list[Any] = await self.redis.evalsha(self.script.sha, 0, payload)
        except NoScriptError:
            await self.redis.script_load(self.script.script)
            results = await self.redis.evalsha(self.script.sha, 0, payload)
        return results
