"""What the gateway and its engine process say to each other: one JSON object per line over a socket pair.

Both sides import this module; neither imports the other's. The gateway sends `start` (a request for a
job), `count` (a prompt's size) and `cancel`; the engine answers `ready` once its model is loaded, then per
job `accepted` or `rejected` (a 4xx the request earned, such as a prompt over the context), the job's `text`
and `finish` per choice, and last `done` or `error`: every accepted or cancelled job ends with exactly one
of those, which is how the gateway knows the job has left the engine's queue.
"""

from __future__ import annotations

from typing import Any

import orjson

from kimi_gateway.errors import APIError

# gateway -> engine
START, COUNT, CANCEL = "start", "count", "cancel"
# engine -> gateway
READY, ACCEPTED, REJECTED, COUNTED = "ready", "accepted", "rejected", "counted"
TEXT, FINISH, DONE, ERROR = "text", "finish", "done", "error"


def encode(frame: dict[str, Any]) -> bytes:
    # orjson escapes newlines inside strings, so a frame is always exactly one line.
    return orjson.dumps(frame) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(line)
    return frame


def error_frame(job: int, error: APIError) -> dict[str, Any]:
    return {
        "t": REJECTED,
        "id": job,
        "status": error.status,
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": error.code,
        "headers": error.headers,
    }


def error_from(frame: dict[str, Any]) -> APIError:
    return APIError(
        frame["status"],
        frame["message"],
        type=frame["type"],
        param=frame["param"],
        code=frame["code"],
        headers=frame["headers"],
    )
