"""The media pool's bounds, in-process: one request's budget across its jobs, and the decoding allowance
shared fairly between accounts."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kimi_gateway.media.workers import Budget, MediaPool, OverBudget


def _burn(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


def test_one_budget_counts_the_cpu_of_every_job_of_a_request() -> None:
    budget = Budget(0.3)

    def job() -> None:
        budget.start()
        try:
            _burn(0.2)
            budget.check()
        finally:
            budget.stop()

    with ThreadPoolExecutor(1) as first, ThreadPoolExecutor(1) as second:
        first.submit(job).result()  # 0.2 s: within 0.3
        with pytest.raises(OverBudget, match=r"more than 0\.3 s"):
            second.submit(job).result()  # another thread, 0.4 s in all
    assert 0.39 < budget.spent() < 0.6


def test_a_document_keeps_its_own_limit_inside_its_requests() -> None:
    request = Budget(0.1)
    document = Budget(10.0, request)
    document.start()
    try:
        _burn(0.15)
        with pytest.raises(OverBudget, match=r"more than 0\.1 s"):
            document.check()  # within its own 10 s, not within the request's
        request.cancelled.set()
        with pytest.raises(OverBudget, match="cancelled"):
            Budget(10.0, request).check()  # the request's flag stops its documents too
    finally:
        document.stop()


def test_a_cancelled_caller_stops_its_running_job_and_its_queued_ones() -> None:
    async def main() -> None:
        pool = MediaPool(workers=2, per_account=1, document_seconds=5, request_seconds=60, megapixels=64)
        budget = pool.budget()
        checks: list[str] = []

        def looping() -> None:
            while True:
                try:
                    budget.check()
                except OverBudget:
                    checks.append("stopped")
                    raise
                time.sleep(0.01)

        running = asyncio.create_task(pool.run("a", looping, budget))
        queued = asyncio.create_task(pool.run("a", lambda: checks.append("ran"), budget))
        await asyncio.sleep(0.2)
        running.cancel()  # as the client leaving cancels its request
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(OverBudget):
            await queued  # never started
        await asyncio.sleep(0.1)
        assert checks == ["stopped"]
        pool.close()

    asyncio.run(main())


def test_an_accounts_queued_images_hold_none_of_the_decoding_allowance() -> None:
    # Three 20 MP images of one account and one of another, 64 MP allowed at once. The account decodes
    # one at a time; before, its two waiting images held 40 MP too and the other account waited on them.
    async def main() -> None:
        pool = MediaPool(workers=4, per_account=1, document_seconds=5, request_seconds=60, megapixels=64)
        release = threading.Event()
        started: list[str] = []

        def decode(name: str) -> str:
            started.append(name)
            release.wait(5)
            return name

        mine = [
            asyncio.create_task(pool.run("a", lambda name=f"a{i}": decode(name), pixels=20_000_000))
            for i in range(3)
        ]
        await asyncio.sleep(0.1)
        other = asyncio.create_task(pool.run("b", lambda: decode("b"), pixels=20_000_000))
        await asyncio.sleep(0.3)
        assert started == ["a0", "b"]
        release.set()
        assert await asyncio.gather(*mine, other) == ["a0", "a1", "a2", "b"]
        pool.close()

    asyncio.run(main())


def test_a_cancelled_job_keeps_its_accounts_turn_until_its_thread_is_done() -> None:
    # A decode does not check the budget: cancelled, it runs to its end. Before, the account's turn was
    # given back at once, so a client leaving and coming back ran two decodes at a time.
    async def main() -> None:
        pool = MediaPool(workers=2, per_account=1, document_seconds=5, request_seconds=60, megapixels=64)
        events: list[str] = []

        def decode() -> None:
            events.append("decode started")
            time.sleep(0.4)
            events.append("decode ended")

        first = asyncio.create_task(pool.run("a", decode, pool.budget()))
        await asyncio.sleep(0.1)
        first.cancel()
        second = asyncio.create_task(pool.run("a", lambda: events.append("next started"), pool.budget()))
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert events == ["decode started", "decode ended", "next started"]
        pool.close()

    asyncio.run(main())
