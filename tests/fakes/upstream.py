"""Fake upstream providers on 127.0.0.1, speaking each provider's wire format, with faults on command.

Written on raw asyncio streams rather than a web framework so faults are real at the socket level:
connection resets, streams cut mid-way, hangs, slow chunks. Tests script what the next requests get.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPENROUTER_COMMENT = b": OPENROUTER PROCESSING\n\n"


@dataclass
class Answer:
    """One logical answer, rendered in whichever dialect the fake speaks."""

    content: str = "Hello from the fake."
    reasoning: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    finish: str = "stop"
    prompt_tokens: int = 20
    completion_tokens: int = 12
    cached_tokens: int = 0
    chunk_delay: float = 0.0  # seconds between chunks
    burst: bool = False  # every event in one write, as a fast server's buffered output arrives
    first_delay: float = 0.0  # seconds before the response starts
    cut_after: int | None = None  # drop the connection after this many chunks, before [DONE]
    error_after: int | None = None  # OpenRouter-style error chunk after this many chunks
    vl_markers: bool = False  # Kimi-VL Thinking writes ◁think▷…◁/think▷
    stop_sequence: str | None = None  # vLLM and SGLang name the stop string that matched (`stop_reason`)


@dataclass
class Fault:
    kind: str  # "status", "hang", "reset", "empty", "malformed", "processing"
    status: int = 500
    message: str = "Internal server error"
    retry_after: float | None = None


Behaviour = Answer | Fault


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    path: str = "/v1/chat/completions"


class FakeUpstream:
    def __init__(
        self,
        style: str,
        *,
        api_key: str = "test-upstream-key",
        display: str = "Fake",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.style = style
        self._ssl = ssl_context  # moonshot | openrouter | openai | vllm | vllm-parsed | sglang
        self.api_key = api_key
        self.display = display
        self.default: Behaviour = Answer()
        # Plays a model: answers each request from what it holds (tests/fakes/agent.py), once the script
        # is spent. Off (None), the default answers.
        self.agent: Callable[[dict[str, Any]], Behaviour] | None = None
        self._script: list[Behaviour] = []
        self.requests: list[Received] = []
        self.disconnects = 0
        # Like a provider's prefix cache: a conversation seen before reports cached prompt tokens.
        self.prefix_cache = False
        self._seen_prefixes: set[str] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    # ---- control, from the test ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.disconnects = 0
            self._seen_prefixes.clear()
            self.default = Answer()
            self.agent = None

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_for_disconnects(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnects >= count:
                return True
            time.sleep(0.02)
        return False

    # ---- the server ------------------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        # A provider's server queues a burst of connections (uvicorn's backlog is 2048, nginx's 511). With
        # asyncio's default of 100, 500 requests through two replicas overflowed this fake's queue while
        # the test's own client held the GIL: dropped SYNs, retried after 1 s, met the 1 s connect timeout.
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self._ssl, backlog=2048)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def _next(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            agent = self.agent
        return agent(body) if agent is not None else self.default

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._handle(lines[0], headers, body, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(
        self,
        request_line: str,
        headers: dict[str, str],
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        method, path, _ = request_line.split(" ", 2)
        # The legacy completions API: every style but Moonshot's, which documents none.
        text = path.endswith("/completions") and not path.endswith("/chat/completions")
        served = path.endswith("/chat/completions") or (text and self.style != "moonshot")
        if method != "POST" or not served:
            await self._json(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        if headers.get("authorization") != f"Bearer {self.api_key}":
            await self._json(writer, 401, self._error_body(401, "Invalid Authentication"))
            return True
        body = json.loads(raw)
        with self._lock:
            self.requests.append(Received(headers, body, time.monotonic(), path))
        behaviour = self._next(body)
        if isinstance(behaviour, Fault):
            return await self._fault(behaviour, reader, writer)
        if behaviour.first_delay and await self._client_left(reader, behaviour.first_delay):
            self.disconnects += 1
            return False
        return await self._stream(behaviour, body, reader, writer, text)

    # ---- faults ------------------------------------------------------------------------------------------

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        if self.style == "openrouter":
            return {
                "error": {"code": status, "message": message, "metadata": {"provider_name": self.display}}
            }
        if self.style == "moonshot":
            kind = "rate_limit_reached_error" if status == 429 else "server_error"
            return {"error": {"message": message, "type": kind}}
        return {"error": {"message": message, "type": "server_error", "code": status}, "object": "error"}

    async def _fault(self, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if fault.kind == "status":
            extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            await self._json(writer, fault.status, self._error_body(fault.status, fault.message), extra)
            return True
        if fault.kind == "reset":
            writer.transport.abort()
            return False
        if fault.kind == "malformed":  # valid JSON of the wrong shape
            await self._start_stream(writer)
            await self._send(writer, b'data: {"choices": "not a list"}\n\n')
            await self._send(writer, b"data: [DONE]\n\n")
            await self._send(writer, b"")
            return True
        if fault.kind == "empty":  # headers, then the connection drops with no event at all
            await self._start_stream(writer)
            writer.transport.abort()
            return False
        if fault.kind == "processing":  # headers, then keep-alive comments and never an event
            await self._start_stream(writer)
            try:
                while not await self._client_left(reader, 0.2):
                    await self._send(writer, b": PROCESSING\n\n")
            except ConnectionError:
                pass
            self.disconnects += 1
            return False
        # hang: never answer; notice when the client gives up
        if await self._client_left(reader, 300):
            self.disconnects += 1
        return False

    async def _client_left(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except TimeoutError:
            return False
        return data == b""

    # ---- responses -------------------------------------------------------------------------------------

    async def _json(
        self, writer: asyncio.StreamWriter, status: int, payload: Any, extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        for k, v in (extra or {}).items():
            head += f"{k}: {v}\r\n"
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()

    async def _start_stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _stream(
        self,
        answer: Answer,
        body: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        text: bool = False,
    ) -> bool:
        await self._start_stream(writer)
        events = self.render_text(answer, body) if text else self.render(answer, body)
        sent = 0
        try:
            if self.style == "openrouter":
                await self._send(writer, OPENROUTER_COMMENT)
            if answer.burst:
                await self._send(writer, b"".join(events))
                events = []
            for event in events:
                if answer.cut_after is not None and sent >= answer.cut_after:
                    writer.transport.abort()
                    return False
                if answer.error_after is not None and sent >= answer.error_after:
                    await self._send(writer, b"data: " + json.dumps(self._error_chunk()).encode() + b"\n\n")
                    await self._send(writer, b"")
                    return True
                if answer.chunk_delay and sent and await self._client_left(reader, answer.chunk_delay):
                    self.disconnects += 1
                    return False
                await self._send(writer, event)
                sent += 1
            await self._send(writer, b"")  # the last chunk of the chunked body
        except ConnectionError:
            self.disconnects += 1
            return False
        return True

    def _error_chunk(self) -> dict[str, Any]:
        return {
            "id": "gen-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "moonshotai/kimi-k2-thinking",
            "provider": self.display,
            "error": {"code": 502, "message": "Provider disconnected", "metadata": {"error_type": "server"}},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }

    # ---- dialects ----------------------------------------------------------------------------------------

    def render(self, answer: Answer, body: dict[str, Any]) -> list[bytes]:
        model = body.get("model", "")
        if self.prefix_cache:
            prefix = json.dumps(body.get("messages", [])[:2], sort_keys=True)
            cached = answer.prompt_tokens - 4 if prefix in self._seen_prefixes else 0
            self._seen_prefixes.add(prefix)
            answer = Answer(**{**answer.__dict__, "cached_tokens": cached})
        created = int(time.time())
        cid = "gen-1767358919-fake" if self.style == "openrouter" else "chatcmpl-fake"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if self.style == "openrouter":
                data["provider"] = self.display
            data.update(extra)
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
            if self.style == "openrouter":
                c["native_finish_reason"] = finish
            return c

        out = [chunk([delta({"role": "assistant", "content": ""})])]
        raw = self.style in {"vllm", "sglang"}
        pieces = _pieces
        if raw:
            # A server without parsers: the template opened <think>, the rest is raw model text.
            text = ""
            if answer.reasoning:
                text += (
                    f"◁think▷{answer.reasoning}◁/think▷"
                    if answer.vl_markers
                    else answer.reasoning + "</think>"
                )
            text += answer.content
            if answer.tool_calls:
                text += "<|tool_calls_section_begin|>"
                for i, (name, args) in enumerate(answer.tool_calls):
                    text += (
                        f"<|tool_call_begin|>functions.{name}:{i}<|tool_call_argument_begin|>{args}"
                        "<|tool_call_end|>"
                    )
                text += "<|tool_calls_section_end|>"
            out += [chunk([delta({"content": p})]) for p in pieces(text)]
        else:
            field_name = {"openrouter": "reasoning", "vllm-parsed": "reasoning"}.get(
                self.style, "reasoning_content"
            )
            for p in pieces(answer.reasoning):
                d: dict[str, Any] = {field_name: p}
                if self.style == "openrouter":
                    d.update(
                        content="",
                        reasoning_details=[
                            {"type": "reasoning.text", "text": p, "format": "unknown", "index": 0}
                        ],
                    )
                out.append(chunk([delta(d)]))
            out += [chunk([delta({"content": p})]) for p in pieces(answer.content)]
            for i, (name, args) in enumerate(answer.tool_calls):
                call_id = f"functions.{name}:{i}"  # Kimi's native ids, passed through by the hosts
                first = {
                    "index": i,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                out.append(chunk([delta({"tool_calls": [first]})]))
                for p in pieces(args):
                    out.append(chunk([delta({"tool_calls": [{"index": i, "function": {"arguments": p}}]})]))
        usage: dict[str, Any] = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        if self.style == "moonshot":
            usage["cached_tokens"] = answer.cached_tokens  # Moonshot's own field, no prompt_tokens_details
            final = delta({}, answer.finish)
            final["usage"] = usage  # ...and usage inside the final choice
            out.append(chunk([final]))
        else:
            usage["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens}
            if self.style == "openrouter":
                usage["cost"] = 0.0001
                usage["completion_tokens_details"] = {"reasoning_tokens": 0}
            final = delta({}, answer.finish)
            if self.style in {"vllm", "vllm-parsed", "sglang"}:
                final["stop_reason"] = answer.stop_sequence
            out.append(chunk([final]))
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        if include_usage or self.style == "openrouter":
            out.append(chunk([], usage=usage))
        out.append(b"data: [DONE]\n\n")
        return out

    def render_text(self, answer: Answer, body: dict[str, Any]) -> list[bytes]:
        """The legacy completions API's stream: `text` pieces, the finish, usage if asked, [DONE]."""

        def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
            choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            if finish and self.style in {"vllm", "vllm-parsed", "sglang"}:
                choice["stop_reason"] = answer.stop_sequence
            data = {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [choice] if finish is not None or text else [],
                **extra,
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        out = [chunk(p) for p in _pieces(answer.content)]
        out.append(chunk("", answer.finish))
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        if (body.get("stream_options") or {}).get("include_usage") or self.style == "openrouter":
            out.append(chunk("", usage=usage))
        out.append(b"data: [DONE]\n\n")
        return out


def _pieces(text: str) -> list[str]:
    """Split text at uneven places, so markers and escapes land across chunk boundaries."""
    rng = random.Random(len(text))
    out, i = [], 0
    while i < len(text):
        step = rng.randint(1, 7)
        out.append(text[i : i + step])
        i += step
    return out
