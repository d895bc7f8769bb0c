"""The floor under the gateway's overhead: a pass-through on the gateway's own server and upstream client.

Same uvicorn setup, same `UpstreamClient` and SSE reader, and the same work per chunk that cannot be
skipped (parsing each event's JSON; joining the content for a non-streaming client), but no validation,
routing, normalization, accounting or statistics. What the gateway adds above this is the cost of its own
logic; what this adds above a direct call is the cost of any Python proxy on this stack. Measured in the
same run as the gateway, it also shows how fast the machine is that day.

Run: python -m bench.floor UPSTREAM_PORT PORT
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import uvicorn

from kimi_gateway.providers.client import Target, UpstreamClient
from kimi_gateway.providers.sse import sse_data

Scope = dict[str, Any]


class Floor:
    def __init__(self, upstream_port: int) -> None:
        self.client = UpstreamClient()
        self.target = Target.post(
            f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
            {"Content-Type": "application/json", "Accept": "text/event-stream"},
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await self.client.open()
                await send({"type": "lifespan.startup.complete"})
            await self.client.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        stream = bool(request.get("stream"))
        request["stream"] = True
        response = await self.client.post(self.target, orjson.dumps(request), 5.0, 30.0)
        if stream:
            headers = [(b"content-type", b"text/event-stream")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for batch in sse_data(response.reads()):
                out = []
                for data in batch:
                    if data != b"[DONE]":
                        orjson.loads(data)
                        out.append(b"data: " + data + b"\n\n")
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        parts: list[str] = []
        async for batch in sse_data(response.reads()):
            for data in batch:
                if data != b"[DONE]":
                    for choice in orjson.loads(data).get("choices") or ():
                        parts.append((choice.get("delta") or {}).get("content") or "")
        completion = orjson.dumps({"choices": [{"index": 0, "message": {"content": "".join(parts)}}]})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(completion))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": completion})


if __name__ == "__main__":
    uvicorn.run(
        Floor(int(sys.argv[1])),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
