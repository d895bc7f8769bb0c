"""A fast mock OpenAI-compatible upstream for benchmarks: raw asyncio on uvloop, keep-alive, no framework.

Non-streaming requests get one JSON body; streaming ones get 20 content chunks, a finish chunk, a usage
chunk and [DONE]. Run: python -m bench.mock_upstream PORT
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import uvloop

CHUNKS = 20


def spawn(port: int) -> subprocess.Popen[bytes]:
    """The mock in a process of its own, listening on `port` (give it half a second to start)."""
    return subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(port)])


def _chunk(payload: dict[str, object]) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _stream_body(model: str) -> bytes:
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model}
    parts = [_chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    for i in range(CHUNKS):
        delta = {"content": f"token{i} "}
        parts.append(_chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    parts.append(_chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}
    parts.append(_chunk({**base, "choices": [], "usage": usage}))
    done = b"data: [DONE]\n\n"
    parts.append(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
    return b"".join(parts)


def _json_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello " * 10},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
        }
    )


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    cache: dict[tuple[bool, str], bytes] = {}
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = orjson.loads(await reader.readexactly(length))
            stream, model = bool(body.get("stream")), str(body.get("model", ""))
            response = cache.get((stream, model))
            if response is None:
                if stream:
                    response = STREAM_HEAD + _stream_body(model)
                else:
                    payload = _json_body(model)
                    response = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                        + payload
                    )
                cache[(stream, model)] = response
            writer.write(response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
