"""The pure pieces: stop matching, the tool envelope parser, error parameter paths, endpoint statistics,
the SSE reader, the journal's group commit, ids."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP
from pathlib import Path
from typing import Any

import pytest

from kimi_gateway.accounts.cache import RefreshingCache
from kimi_gateway.accounts.journal import Journal, read_folder
from kimi_gateway.accounts.pricing import cost_nano, nano_per_token
from kimi_gateway.catalog import Pricing
from kimi_gateway.catalog.listing import usd_per_token
from kimi_gateway.engine.stops import StopMatcher
from kimi_gateway.engine.toolcalls import EnvelopeParser
from kimi_gateway.http.validation import param_path
from kimi_gateway.ids import new_id
from kimi_gateway.providers.events import Delta
from kimi_gateway.providers.normalize import ChunkNormalizer
from kimi_gateway.providers.sse import sse_data
from kimi_gateway.stats.endpoints import DAY, EndpointStats


def _feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            return out, True
    return out + matcher.flush(), False


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello ", "wor", "ld"], ["world"], ("Hello ", True)),
        (["ab", "c<", "/s", ">tail"], ["</s>"], ("abc", True)),
        (["no stop ", "here"], ["zzz"], ("no stop here", False)),
        (["wo", "rk"], ["world"], ("work", False)),  # a held-back prefix that never completes is released
        (["x", "STOP", "y"], ["STOP", "x"], ("", True)),
        (["text"], [], ("text", False)),
    ],
)
def test_stop_matcher(pieces: list[str], stops: list[str], expected: tuple[str, bool]) -> None:
    assert _feed_all(StopMatcher(stops), pieces) == expected


def test_envelope_parser_streams_response_text_across_escapes() -> None:
    raw = json.dumps({"response": 'He said "hi" \\ then 😀 and \u00e9'})
    for size in (1, 2, 3, 7):
        parser = EnvelopeParser()
        out = "".join(parser.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        assert out == 'He said "hi" \\ then 😀 and \u00e9'
        assert parser.tool_calls() is None


def test_envelope_parser_surrogate_pairs_escaped() -> None:
    raw = json.dumps({"response": "smile 😀"}, ensure_ascii=True)
    parser = EnvelopeParser()
    out = "".join(parser.feed(ch) for ch in raw)
    assert out == "smile 😀"


def test_envelope_parser_tool_calls() -> None:
    raw = '{ "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}'
    parser = EnvelopeParser()
    assert "".join(parser.feed(ch) for ch in raw) == ""
    assert parser.tool_calls() == [{"name": "f", "arguments": {"a": 1}}]


def test_envelope_parser_truncated_tool_calls() -> None:
    parser = EnvelopeParser()
    parser.feed('{"tool_calls": [{"name": "f", "argu')
    assert parser.tool_calls() is None


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("messages", 0, "user", "content"), "messages[0].content"),
        (("messages", 2, "user", "content", "list[...]", 1, "text", "text"), "messages[2].content[1].text"),
        (("response_format", "json_schema", "json_schema", "name"), "response_format.json_schema.name"),
        (("max_tokens",), "max_tokens"),
    ],
)
def test_param_path(loc: tuple[int | str, ...], path: str) -> None:
    assert param_path(loc) == path


@pytest.mark.parametrize(
    ("usd", "text"), [(0.6, "0.0000006"), (3.0, "0.000003"), (0.15, "0.00000015"), (0.0, "0")]
)
def test_per_token_prices(usd: float, text: str) -> None:
    assert usd_per_token(usd) == text


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_endpoint_stats_windows_forget_old_figures_and_stay_bounded() -> None:
    clock = _Clock()
    stats = EndpointStats(clock, random.Random(7))
    for i in range(400):
        stats.record("p", "m", i % 4 != 0, ttft_ms=float(i % 10), tokens_per_second=50.0)
    assert stats.uptime("p", "m", 300) == 75.0
    # The median comes from a uniform sample of the bucket's figures, not from all 300 of them.
    assert 3.0 <= (stats.p50_ttft_ms("p", "m") or 0) <= 6.0
    assert stats.p50_throughput("p", "m") == 50.0
    assert stats.requests("p", "m", DAY) == 400

    clock.now += 600  # ten minutes of nothing but successes
    for _ in range(100):
        stats.record("p", "m", True, ttft_ms=100.0)
    assert stats.uptime("p", "m", 300) == 100.0  # the failures fell out of the 5-minute window
    assert stats.uptime("p", "m", 1800) == 80.0  # 400 of 500 in the 30-minute one
    clock.now += 2.0  # medians are cached for a second
    assert stats.p50_ttft_ms("p", "m") is not None

    clock.now += 3600  # an hour later, the day still counts everything
    assert stats.uptime("p", "m", 300) is None
    assert stats.uptime("p", "m", DAY) == 80.0
    assert stats.p50_ttft_ms("p", "m") is None

    clock.now += DAY
    assert stats.requests("p", "m", DAY) == 0

    # A day of steady traffic keeps a fixed number of buckets, however many requests it holds.
    for _ in range(3000):
        clock.now += 30
        for _ in range(5):
            stats.record("p", "m", True, ttft_ms=1.0)
    series = stats._series[("p", "m")]
    assert len(series.fine) <= 181 and len(series.coarse) <= 289
    assert all(len(b.ttft.values) <= 32 for b in series.fine)


def test_rate_limited_attempts_do_not_count_against_uptime() -> None:
    stats = EndpointStats(_Clock())
    stats.record("p", "m", True)
    stats.record("p", "m", False, rate_limited=True)
    assert stats.uptime("p", "m", 300) == 100.0
    assert stats.requests("p", "m", 300) == 2


async def _pieces(reads: list[bytes]) -> AsyncIterator[bytes]:
    for read in reads:
        yield read


async def _events(reads: list[bytes]) -> list[bytes]:
    return [data async for batch in sse_data(_pieces(reads)) for data in batch]


@pytest.mark.parametrize(
    "reads",
    [
        [b'data: {"a":1}\n\ndata: {"b":2}\n\n'],
        [b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n'],
        [b'data: {"a":1}\r', b"\n\r", b'\ndata: {"b":2}\r\n', b"\r\n"],  # CRLF split across reads
        [b": keep-alive\n\ndata: {", b'"a":1}\n\nevent: x\ndata:{"b":2}\n\n'],
        [b'data: {"a":1}\n\ndata: {"b":2}'],  # the last event without its blank line
    ],
)
def test_sse_reader_splits_events_however_the_bytes_arrive(reads: list[bytes]) -> None:
    assert asyncio.run(_events(reads)) == [b'{"a":1}', b'{"b":2}']


def test_sse_reader_joins_multiline_data() -> None:
    assert asyncio.run(_events([b"data: one\ndata: two\n\n"])) == [b"one\ntwo"]


def test_journal_group_commits_then_runs_what_waited_for_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        segment = next(journal.folder.glob("*.jsonl"))
        seen: list[int] = []
        for i in range(3):
            journal.append({"op": "hold", "id": i})
        # A settlement must not move before its record is in the file.
        journal.after_write(lambda: seen.append(segment.read_bytes().count(b"\n")))
        assert segment.read_bytes() == b""  # still waiting for the end of this turn
        await asyncio.sleep(0)
        assert seen == [3]
        assert read_folder(journal.folder) == [{"op": "hold", "id": i} for i in range(3)]
        journal.after_write(lambda: seen.append(-1))  # nothing pending: still runs, next turn
        await asyncio.sleep(0)
        assert seen == [3, -1]
        journal.append({"op": "close", "id": 0})
        old = journal.rotate()  # writes what is waiting into the old segment first
        assert old == [segment]
        assert segment.read_bytes().count(b"\n") == 4
        journal.close(remove=True)
        assert not journal.folder.exists()

    asyncio.run(scenario())


def test_ids_are_unique_and_prefixed() -> None:
    ids = {new_id("chatcmpl-") for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i.startswith("chatcmpl-") and len(i) == len("chatcmpl-") + 28 for i in ids)


def test_refreshing_cache_has_a_hard_age_bound_and_renews_ahead_of_it() -> None:
    async def scenario() -> None:
        clock = _Clock()
        calls: list[str] = []
        gate = asyncio.Event()
        version = {"k": 1}

        async def load(key: str) -> int:
            calls.append(key)
            await gate.wait()
            if version[key] < 0:
                raise RuntimeError("database away")
            return version[key]

        cache: RefreshingCache[str, int] = RefreshingCache(
            load, ttl=5.0, max_entries=3, clock=clock, stale_grace=30.0
        )
        waiting = [asyncio.ensure_future(cache.get("k")) for _ in range(32)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*waiting) == [1] * 32
        assert calls == ["k"]  # 32 concurrent misses, one load

        # Past half its ttl, an entry is still served at once while one renewal runs behind it.
        gate.clear()
        version["k"] = 2
        clock.now += 3
        assert await cache.get("k") == 1
        await asyncio.sleep(0)
        assert await cache.get("k") == 1
        assert calls == ["k", "k"]
        gate.set()
        await asyncio.sleep(0.01)
        assert await cache.get("k") == 2

        # Past its ttl, nothing stale is served: the request waits for the fresh figure.
        gate.clear()
        version["k"] = 5
        clock.now += 6
        late = asyncio.ensure_future(cache.get("k"))
        await asyncio.sleep(0.01)
        assert not late.done()
        gate.set()
        assert await late == 5

        # The database away: the old figure is served within the grace (without a load per request for
        # a second), and refused after it.
        version["k"] = -1
        clock.now += 6
        assert await cache.get("k") == 5
        loads = len(calls)
        assert await cache.get("k") == 5 and len(calls) == loads
        clock.now += 31
        with pytest.raises(RuntimeError):
            await cache.get("k")

        gate.clear()
        version["k"] = 3
        renewal = asyncio.ensure_future(cache.get("k"))  # a load starts, reading 3 ...
        await asyncio.sleep(0)
        cache.drop("k")  # ... but this process changed the key meanwhile
        version["k"] = 4
        gate.set()
        await renewal
        assert await cache.get("k") == 4  # what the old load read was not kept

        for key in ("a", "b", "c"):
            version[key] = 0
            await cache.get(key)
        assert len(cache._entries) == 3  # bounded: the oldest went

    asyncio.run(scenario())


def test_integer_cost_arithmetic_matches_decimal() -> None:
    def reference(p: Pricing, prompt: int, cached: int, completion: int) -> int:
        cached = min(max(cached, 0), prompt)
        total = (
            (prompt - cached) * nano_per_token(p.input)
            + cached * nano_per_token(p.cached)
            + completion * nano_per_token(p.output)
        )
        return int(total.to_integral_value(ROUND_HALF_UP))

    rng = random.Random(3)
    # Whole pico-dollar prices take the integer path; the last ones (more than 6 decimals) the Decimal one.
    prices = [0.0, 0.15, 0.6, 2.5, 3.0, 17.0, 0.0001234, 0.3333333, 0.1234567891, 1e-7]
    for _ in range(20_000):
        p = Pricing(
            input=rng.choice(prices), cached_input=rng.choice([*prices, None]), output=rng.choice(prices)
        )
        tokens = (rng.randrange(10**6), rng.randrange(10**6), rng.randrange(10**6))
        assert cost_nano(p, *tokens) == reference(p, *tokens), (p, tokens)


def _random_chunks(rng: random.Random) -> list[dict[str, Any]]:
    """A stream's chunks in several providers' dialects: mostly plain text on choice 0 (the fast path's
    case), mixed with reasoning, tool calls, a second choice, usage inside a choice, and a finish."""
    chunks: list[dict[str, Any]] = []
    for i in range(rng.randrange(1, 30)):
        kind = rng.choice(["text", "text", "text", "empty", "reasoning", "details", "tool", "index1", "role"])
        delta: dict[str, Any]
        choice: dict[str, Any] = {"index": 0}
        if kind == "text":
            delta = {"content": rng.choice(["a", "bc", " d", "é", "\n"])}
        elif kind == "empty":
            delta = {"content": ""}
        elif kind == "role":
            delta = {"role": "assistant", "content": "r"}
        elif kind == "reasoning":
            delta = {rng.choice(["reasoning", "reasoning_content"]): "think "}
        elif kind == "details":
            delta = {"reasoning_details": [{"type": "reasoning.text", "text": "t"}]}
        elif kind == "tool":
            delta = {
                "tool_calls": [{"index": 0, "id": f"c{i}", "function": {"name": "f", "arguments": "{}"}}]
            }
        else:
            choice["index"] = 1
            delta = {"content": "other"}
        choice["delta"] = delta
        chunks.append({"choices": [choice]})
    last: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": rng.choice(["stop", "length"])}
    if rng.random() < 0.5:
        last["usage"] = {"prompt_tokens": 3, "completion_tokens": 4}
        chunks.append({"choices": [last]})
    else:
        chunks.append({"choices": [last]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
    return chunks


def _canonical(events: list[Any]) -> list[Any]:
    """Events with consecutive text-only deltas of one choice merged: the fast path joins text that came
    in one read, which a client receives at the same moment either way."""
    out: list[Any] = []
    for event in events:
        text_only = (
            isinstance(event, Delta) and event.content and event.reasoning is None and not event.tool_calls
        )
        previous = out[-1] if out else None
        if (
            text_only
            and isinstance(previous, Delta)
            and previous.index == event.index
            and previous.content
            and previous.reasoning is None
            and not previous.tool_calls
        ):
            out[-1] = Delta(previous.index, previous.content + event.content)
        else:
            out.append(
                Delta(event.index, event.content, event.reasoning, event.tool_calls) if text_only else event
            )
    return out


def test_normalizer_fast_path_agrees_with_the_general_one() -> None:
    rng = random.Random(11)
    for _ in range(500):
        chunks = _random_chunks(rng)
        fast, slow = ChunkNormalizer("p"), ChunkNormalizer("p")
        fast_events: list[Any] = []
        slow_events: list[Any] = []
        # The fast path takes a read's raw payloads; the general path one parsed chunk at a time.
        reads = [chunks[i : i + 3] for i in range(0, len(chunks), 3)]
        for read in reads:
            fast.feed_data(
                [json.dumps(c).encode() for c in read] + [b"[DONE]"][: rng.random() < 0.1], fast_events
            )
            for chunk in read:
                slow.feed(chunk, slow_events)
        assert _canonical(fast_events) == _canonical(slow_events), chunks
        assert fast.usage == slow.usage and fast.finished == slow.finished


def _reference_sse(body: bytes) -> list[bytes]:
    """The SSE spec's event parsing, line by line over the whole body: each event's data lines joined."""
    events: list[bytes] = []
    data: list[bytes] | None = None
    for line in body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if line == b"":
            if data is not None:
                events.append(b"\n".join(data))
            data = None
        elif line.startswith(b"data:"):
            value = line[5:]
            data = [*(data or []), value[1:] if value.startswith(b" ") else value]
    if data is not None:
        events.append(b"\n".join(data))
    return events


def test_sse_reader_fast_path_agrees_with_the_spec_on_any_split() -> None:
    rng = random.Random(5)
    for _ in range(500):
        blocks = []
        for i in range(rng.randrange(1, 12)):
            kind = rng.choice(["one", "one", "one", "multi", "comment", "event", "nospace"])
            if kind == "one":
                blocks.append(b'data: {"n": %d}' % i)
            elif kind == "multi":
                blocks.append(b"data: first %d\ndata: second" % i)
            elif kind == "comment":
                blocks.append(b": PROCESSING")
            elif kind == "event":
                blocks.append(b"event: message\nid: %d\ndata: x%d" % (i, i))
            else:
                blocks.append(b"data:tight%d" % i)
        newline = rng.choice([b"\n", b"\r\n"])
        body = b"".join(block.replace(b"\n", newline) + newline + newline for block in blocks)
        cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randrange(0, 6))))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]

        async def read(pieces: list[bytes] = pieces) -> list[bytes]:
            async def source() -> AsyncIterator[bytes]:
                for piece in pieces:
                    yield piece

            return [data async for batch in sse_data(source()) for data in batch]

        assert asyncio.run(read()) == _reference_sse(body), pieces


def test_a_huge_palette_image_with_transparency_is_shrunk_in_strips() -> None:
    """7999 x 7999, palette with a transparent colour (63 KB of PNG): converted whole to RGBA it held 256 MB
    more (577 MB peak over the process, measured); shrunk a strip at a time, about the decoded palette."""
    import subprocess
    import sys

    script = (
        "import io, resource\n"
        "from PIL import Image\n"
        "from kimi_gateway.media.images import load_image\n"
        "im = Image.new('P', (7999, 7999), 0); im.putpalette([0, 0, 0, 255, 0, 0] * 128)\n"
        "buf = io.BytesIO(); im.save(buf, 'PNG', transparency=0); raw = buf.getvalue(); del im\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "picture = load_image(raw, 4_000_000, 64_000_000)\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024\n"
        "print(picture.image.mode, picture.image.size[0], picture.image.size[1], int(grown))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    mode, width, height, grown = out.split()
    assert mode == "RGBA" and int(width) * int(height) <= 4_000_000
    assert int(grown) < 300, out


def test_reasoning_memory_is_per_account_and_bounded() -> None:
    from kimi_gateway.core.replay import ReasoningMemory

    memory = ReasoningMemory(max_bytes=1600)
    memory.keep("alice", ["call_1", "call_2"], "r" * 90)
    assert memory.find("alice", "call_2") == "r" * 90
    assert memory.find("bob", "call_1") is None  # never across accounts
    for i in range(20):
        memory.keep("alice", [f"later_{i}"], "x" * 90)
    assert memory.find("alice", "call_1") is None  # the oldest went first
    assert memory.find("alice", "later_19") == "x" * 90
    expired = ReasoningMemory(seconds=-1.0)
    expired.keep("alice", ["call_1"], "r")
    assert expired.find("alice", "call_1") is None


def test_openrouter_hears_that_thinking_is_off() -> None:
    # The gateway turns thinking off for a request (a forced tool choice, a turn without its reasoning);
    # OpenRouter's switch is `reasoning.enabled`, and it must be sent, or the model goes on thinking.
    from kimi_gateway.catalog import load_catalog
    from kimi_gateway.providers.base import Endpoint
    from kimi_gateway.providers.wire.openrouter import OpenRouterStyle
    from kimi_gateway.schema.chat import ChatCompletionRequest

    card = load_catalog().get("kimi-k2.5")
    endpoint = Endpoint(
        provider="orouter",
        provider_name="OpenRouter",
        model=card.id,
        upstream_model="moonshotai/kimi-k2.5",
        pricing=card.pricing,
        context_length=card.context_length,
        supported_parameters=frozenset(),
        input_modalities=frozenset({"text"}),
    )
    style = OpenRouterStyle()
    base = {"model": card.id, "messages": [{"role": "user", "content": "Hi"}]}
    off = ChatCompletionRequest.model_validate({**base, "thinking": {"type": "disabled"}})
    assert style.build_body(off, endpoint, card, frozenset())["reasoning"] == {"enabled": False}
    default = ChatCompletionRequest.model_validate(base)
    assert "reasoning" not in style.build_body(default, endpoint, card, frozenset())
    effort = ChatCompletionRequest.model_validate({**base, "reasoning": {"effort": "low"}})
    assert style.build_body(effort, endpoint, card, frozenset())["reasoning"] == {"effort": "low"}
