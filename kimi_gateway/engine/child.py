"""The engine process: one local model, loaded here so that llama.cpp's memory and its crashes stay out of
the gateway. Started by engine/supervisor.py as `python -m kimi_gateway.engine.child SETTINGS FD`, it talks
over the socket FD (engine/protocol.py) and exits when the gateway closes it (or dies).

Requests are read on the main thread (building a job: template, tokenizer, grammar); the model's worker
thread generates; both write frames, under one lock.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from kimi_gateway.engine import jobs, protocol
from kimi_gateway.engine.worker import Job, LocalModel, Sink
from kimi_gateway.errors import APIError
from kimi_gateway.logs import LOG_LEVEL_ENV, setup_logging
from kimi_gateway.schema.chat import ChatCompletionRequest

log = logging.getLogger(__name__)


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, frame: dict[str, Any]) -> None:
        data = protocol.encode(frame)
        with self._lock:
            self._sock.sendall(data)

    def sink(self, job: int, ended: Callable[[int], object]) -> Sink:
        send = self.send

        def emit(message: protocol.JobMessage) -> None:
            if type(message) is not protocol.Text and type(message) is not protocol.Finished:
                ended(job)  # the job's last message: the gateway can no longer cancel it
            send(protocol.job_frame(job, message))

        return emit


def count(model: LocalModel, channel: Channel, job_id: int, request: ChatCompletionRequest) -> None:
    try:
        channel.send({"t": protocol.COUNTED, "id": job_id, "n": jobs.counted_tokens(model, request)})
    except APIError as error:
        channel.send(protocol.error_frame(job_id, error))
    except Exception as exc:
        log.exception("the engine could not count a prompt")
        channel.send(protocol.error_frame(job_id, APIError(500, f"engine error: {type(exc).__name__}")))


def serve(model: LocalModel, channel: Channel, frames: Any) -> None:
    # The jobs the gateway may still cancel: from acceptance to their last message.
    running: dict[int, Job] = {}
    # Token counts run on a thread of their own: a large one never holds up the next request's start.
    counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-count")

    def ended(job_id: int) -> object:
        return running.pop(job_id, None)

    for line in frames:
        frame = protocol.decode(line)
        kind, job_id = frame["t"], frame["id"]
        if kind == protocol.CANCEL:
            job = running.get(job_id)
            if job is not None:
                job.cancel()
            continue
        try:
            request = ChatCompletionRequest.model_validate(frame["request"])
            if kind == protocol.COUNT:
                counter.submit(count, model, channel, job_id, request)
                continue
            job = jobs.build(model, request, frame["defaults"], channel.sink(job_id, ended))
        except APIError as error:
            channel.send(protocol.error_frame(job_id, error))
            continue
        except Exception as exc:  # a request this code did not expect: refuse it, keep serving the others
            log.exception("the engine could not take a request")
            channel.send(protocol.error_frame(job_id, APIError(500, f"engine error: {type(exc).__name__}")))
            continue
        job.request_id = frame.get("request_id")
        running[job_id] = job
        channel.send({"t": protocol.ACCEPTED, "id": job_id, "prompt": len(job.tokens)})
        model.submit(job)


def main() -> None:
    settings = orjson.loads(sys.argv[1])
    setup_logging(os.environ.get(LOG_LEVEL_ENV) or settings.get("log_level", "info"))
    # llama.cpp's own messages (context sizes, loader notes) are for its developers: errors only.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    sock = socket.socket(fileno=int(sys.argv[2]))
    model = LocalModel(
        settings["model"], Path(settings["path"]), protocol.EngineSettings.decode(settings["engine"])
    )
    channel = Channel(sock)
    try:
        model.load()
    except Exception as exc:
        log.exception("the local model could not be loaded")
        channel.send({"t": protocol.ERROR, "id": 0, "message": f"{type(exc).__name__}: {exc}"})
        return
    channel.send({"t": protocol.READY, "id": 0, "n_ctx": model.n_ctx, "vocab": model.vocab_size()})
    try:
        serve(model, channel, sock.makefile("rb"))
    except (ConnectionError, OSError):
        pass  # the gateway went away: nothing is left to serve
    finally:
        model.close()


if __name__ == "__main__":
    main()
