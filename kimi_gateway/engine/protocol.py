"""What the gateway and its engine process say to each other: one JSON object per line over a socket pair.

Both sides import this module; neither imports the other's. The gateway sends `start` (a request for a
job), `count` (a prompt's size) and `cancel`; the engine answers `ready` once its model is loaded, then per
job `accepted` or `rejected` (a 4xx the request earned, such as a prompt over the context), the job's
`text` and `finish` per choice, and last `done`, `error` or `expired` (not started in time): every accepted
or cancelled job ends with exactly one of those, which is how the gateway knows the job has left the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from kimi_gateway.errors import APIError


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine process runs its model ([engine] in the config), given to it as it starts."""

    max_context: int = 8192  # per sequence; the model's trained context when smaller
    n_threads: int | None = None  # generation; None: all cores
    n_threads_batch: int | None = None  # prompt reading; None: all cores
    n_batch: int = 512  # most tokens in one step
    flash_attn: bool = True
    parallel: int = 4  # sequences served at once
    kv_cells: int | None = None  # the KV cache's size in tokens across sequences; None: 2 x max_context
    prefill_chunk: int = 64  # prompt tokens read a step while others wait (twice that alone)
    queue_timeout: float | None = 30.0  # a job not started within this many seconds is refused
    # No step takes this long (the longest, n_batch tokens deep in the context, takes seconds): one that
    # does is stuck inside llama.cpp, and the watchdog ends the process.
    step_timeout: float = 120.0

    @classmethod
    def decode(cls, data: dict[str, Any]) -> EngineSettings:
        return cls(**data)


# gateway -> engine
START, COUNT, CANCEL = "start", "count", "cancel"
# engine -> gateway
READY, ACCEPTED, REJECTED, COUNTED = "ready", "accepted", "rejected", "counted"
TEXT, FINISH, DONE, ERROR = "text", "finish", "done", "error"
EXPIRED = "expired"  # a job that could not start within the queue timeout (instead of done/error)


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
