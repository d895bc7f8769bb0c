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


# What a job produces, in order: `Text` and `Finished` per choice, then exactly one ending (`JobDone`,
# `JobFailed` or `Expired`). The engine's worker emits these, the child writes them as frames, the
# supervisor reads them back into the job's inbox and the local provider turns them into events: one
# definition for every hop.


@dataclass(frozen=True, slots=True)
class Text:
    index: int  # the choice
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    index: int  # the choice
    reason: str  # stop, length
    produced: int  # completion tokens of the choice
    matched: str | None  # the stop string that ended it


@dataclass(frozen=True, slots=True)
class JobDone:
    prompt: int  # prompt tokens
    cached: int  # of them, read from the prefix cache


@dataclass(frozen=True, slots=True)
class JobFailed:
    message: str
    crashed: bool = False  # the engine process died (never sent: the supervisor notes it)


@dataclass(frozen=True, slots=True)
class Expired:
    message: str  # not started within the queue timeout


JobMessage = Text | Finished | JobDone | JobFailed | Expired
ENDINGS = (JobDone, JobFailed, Expired)


def job_frame(job: int, message: JobMessage) -> dict[str, Any]:
    """A job's message as its frame (short keys: a frame per token)."""
    if type(message) is Text:
        return {"t": TEXT, "id": job, "i": message.index, "s": message.text}
    if type(message) is Finished:
        return {
            "t": FINISH,
            "id": job,
            "i": message.index,
            "r": message.reason,
            "n": message.produced,
            "m": message.matched,
        }
    if type(message) is JobDone:
        return {"t": DONE, "id": job, "prompt": message.prompt, "cached": message.cached}
    if type(message) is Expired:
        return {"t": EXPIRED, "id": job, "message": message.message}
    assert type(message) is JobFailed
    return {"t": ERROR, "id": job, "message": message.message}


def job_message(frame: dict[str, Any]) -> JobMessage | None:
    """A frame as the job's message; None for a frame that is not one (accepted, rejected, counted)."""
    kind = frame["t"]
    if kind == TEXT:
        return Text(frame["i"], frame["s"])
    if kind == FINISH:
        return Finished(frame["i"], frame["r"], frame["n"], frame["m"])
    if kind == DONE:
        return JobDone(frame["prompt"], frame["cached"])
    if kind == ERROR:
        return JobFailed(frame["message"])
    if kind == EXPIRED:
        return Expired(frame["message"])
    return None


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
