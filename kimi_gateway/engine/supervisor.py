"""The gateway's side of an engine process: started on the first request for its model (or at start-up
with `[engine] preload`), stopped after `idle_seconds` without work, started again after it dies.

The gateway never imports llama.cpp: a crash in it (a SIGSEGV, an abort) ends the engine process, not the
gateway. Jobs in flight then end with an error their clients see (a 503 before the first byte, which lets
the router try another provider; an error chunk after it), and the next request starts a new process.

The bound on jobs in flight (served at once, plus waiting) lives here, so an overloaded model answers 503 +
Retry-After without a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kimi_gateway.engine import protocol
from kimi_gateway.errors import APIError, UpstreamError, overloaded

log = logging.getLogger(__name__)

STOPPED, STARTING, RUNNING, STOPPING, FAILED = "stopped", "starting", "running", "stopping", "failed"
# How long a model may take to load before the start counts as failed, and how long requests are then
# refused at once before the next try.
LOAD_TIMEOUT = 300.0
START_BACKOFF = 5.0
PROVIDER = "Local (llama.cpp)"


@dataclass(eq=False)
class RemoteJob:
    """One job on the engine: what it sends arrives in `inbox` as protocol.py's job messages."""

    id: int
    accepted: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    inbox: asyncio.Queue[protocol.JobMessage] = field(default_factory=asyncio.Queue)


def engine_failed(message: str) -> UpstreamError:
    """The engine died serving: retryable, so before the first byte the router moves the request on, as
    for any failing provider. Not counted against the local provider's health: a crash is most likely one
    request's doing (or a kill), and a new engine serves the next request; counted, three such requests
    opened the circuit and every tenant's local requests got 503 for 30 s."""
    return UpstreamError(503, message, provider=PROVIDER, retryable=True, counts_against_provider=False)


def start_failed(message: str, retry_after: int | None = None) -> APIError:
    """The model could not be loaded. Not counted against the local provider's health: that is one model's
    file or settings, and the provider's other models serve on."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return APIError(503, message, type="server_error", code="engine_unavailable", headers=headers)


class EngineProcess:
    def __init__(
        self,
        model_id: str,
        path: Path,
        settings: protocol.EngineSettings,
        *,
        max_queue: int,
        retry_after: int,
        idle_seconds: float | None,
        log_level: str = "info",
    ) -> None:
        self.model_id = model_id
        self.path = path
        self.max_context = settings.max_context
        self.parallel = settings.parallel
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.idle_seconds = idle_seconds
        self._settings = orjson.dumps(
            {"model": model_id, "path": str(path), "log_level": log_level, "engine": asdict(settings)}
        ).decode()
        self.state = STOPPED
        self.n_ctx = 0
        self.pid: int | None = None
        self.starts = 0
        self._jobs: dict[int, RemoteJob] = {}
        self._counts: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._failed_at: float | None = None  # when the last start failed (a crash later is no failed start)
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        # Tasks held until they finish (a task only weakly referenced may be collected mid-way).
        self._background: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Start the process unless it runs. Concurrent callers wait for the same start, and a caller that
        leaves does not stop it. After a start that failed, callers are refused for START_BACKOFF seconds
        rather than each trying (and waiting for) another."""
        if self.state == RUNNING:
            return
        if self._stopping is not None and not self._stopping.done():
            # Stopping after idling: a new process starts once the old one is gone, never beside it.
            await asyncio.shield(self._stopping)
        if self.state == RUNNING:
            return
        if self._starting is None or self._starting.done():
            if self._failed_at is not None:
                wait = START_BACKOFF - (time.monotonic() - self._failed_at)
                if wait > 0:
                    raise start_failed(
                        f"The local model '{self.model_id}' failed to start; next try in {wait:.0f} s.",
                        retry_after=max(1, round(wait)),
                    )
            self._starting = asyncio.get_running_loop().create_task(self._start())
            # Retrieved here, so a failed start whose callers all left is not reported as unretrieved.
            self._starting.add_done_callback(lambda task: task.cancelled() or task.exception())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        self.state = STARTING
        try:
            await asyncio.wait_for(self._spawn(), LOAD_TIMEOUT)
        except BaseException as exc:
            self.state = FAILED
            self._failed_at = time.monotonic()
            await self._kill()
            if isinstance(exc, APIError | asyncio.CancelledError):
                raise
            log.exception("the engine process did not start", extra={"fields": {"model": self.model_id}})
            raise start_failed(f"The local model '{self.model_id}' could not be started.") from None
        self.state = RUNNING
        self._failed_at = None
        self.starts += 1

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kimi_gateway.engine.child",
                self._settings,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C reaches the gateway, which then closes the engine
                # after the requests in flight; the engine never dies first.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.pid = self._proc.pid
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=64 * 1024 * 1024)
        first = await reader.readline()
        if not first:
            raise start_failed(f"The engine process for '{self.model_id}' exited while loading.")
        frame = protocol.decode(first)
        if frame["t"] != protocol.READY:
            # The reason (a path, a library's words) is for the operator's log, not for clients.
            log.error(
                "the local model failed to load",
                extra={"fields": {"model": self.model_id, "reason": frame.get("message")}},
            )
            raise start_failed(f"The local model '{self.model_id}' failed to load.")
        self.n_ctx = frame["n_ctx"]
        log.info(
            "engine process started",
            extra={"fields": {"model": self.model_id, "pid": self.pid, "n_ctx": self.n_ctx}},
        )
        self._reader_task = asyncio.create_task(self._read(reader))

    async def stop(self) -> None:
        """Close the channel (the process exits when it reads the end), then wait for it."""
        if self.state == RUNNING:
            self.state = STOPPING
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._writer is not None:
            self._writer.close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader_task is not None:
            await self._reader_task
        self._reset(STOPPED)

    async def _kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await self._proc.wait()
        self._writer = None
        self._proc = None
        self.pid = None

    def _reset(self, state: str) -> None:
        self.state = state
        self._writer = None
        self._proc = None
        self._reader_task = None
        self.pid = None

    # ---- jobs ------------------------------------------------------------------------------------------

    async def submit(
        self, request: dict[str, Any], defaults: dict[str, Any], request_id: str | None
    ) -> RemoteJob:
        """Send a job; returns once the engine accepted it (raises the 4xx it refused it with)."""
        if len(self._jobs) >= self.parallel + self.max_queue:
            raise overloaded(
                f"The local model '{self.model_id}' is busy: {len(self._jobs) - self.parallel} requests "
                "are already waiting. Retry after the Retry-After interval.",
                self.retry_after,
            )
        await self.ensure()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        job = RemoteJob(next(self._ids))
        frame = {"t": protocol.START, "id": job.id, "request": request, "defaults": defaults}
        if request_id is not None:
            frame["request_id"] = request_id
        self._jobs[job.id] = job
        try:
            self._send(frame)
            await job.accepted
        except asyncio.CancelledError:
            # The client left while the engine was reading the request: it may still be accepted, so it is
            # cancelled there too; its last frame frees its place in the queue.
            job.accepted.add_done_callback(lambda f: f.cancelled() or f.exception())
            self.cancel(job)
            raise
        except BaseException:
            self._release(job.id)
            raise
        return job

    def cancel(self, job: RemoteJob) -> None:
        if job.id in self._jobs and self._writer is not None and not self._writer.is_closing():
            self._send({"t": protocol.CANCEL, "id": job.id})

    async def count(self, request: dict[str, Any]) -> int:
        await self.ensure()
        ident = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._counts[ident] = future
        self._send({"t": protocol.COUNT, "id": ident, "request": request})
        try:
            return await future
        finally:
            self._counts.pop(ident, None)
            self._maybe_idle()

    def _send(self, frame: dict[str, Any]) -> None:
        if self._writer is None or self._writer.is_closing():
            raise engine_failed(f"The engine process for '{self.model_id}' is not running.")
        self._writer.write(protocol.encode(frame))

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "inflight": len(self._jobs),
            "parallel": self.parallel,
            "max_queue": self.max_queue,
        }

    # ---- what the engine sends -------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._dispatch(protocol.decode(line))
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            self._ended()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame["t"]
        ident = frame["id"]
        if kind == protocol.COUNTED or (kind == protocol.REJECTED and ident in self._counts):
            future = self._counts.get(ident)
            if future is not None and not future.done():
                if kind == protocol.COUNTED:
                    future.set_result(frame["n"])
                else:
                    future.set_exception(protocol.error_from(frame))
            return
        job = self._jobs.get(ident)
        if job is None:
            return  # a job whose client left and that was already forgotten
        message = protocol.job_message(frame)
        if message is not None:
            job.inbox.put_nowait(message)
            if isinstance(message, protocol.ENDINGS):
                self._release(ident)
        elif kind == protocol.ACCEPTED:
            if not job.accepted.done():
                job.accepted.set_result(frame["prompt"])
        elif kind == protocol.REJECTED:
            if not job.accepted.done():
                job.accepted.set_exception(protocol.error_from(frame))
            self._release(ident)

    def _release(self, ident: int) -> None:
        self._jobs.pop(ident, None)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._jobs or self._counts or self.idle_seconds is None or self.state != RUNNING:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_seconds, self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        self._idle = None
        if not self._jobs and not self._counts and self.state == RUNNING:
            log.info("engine process stopped after idling", extra={"fields": {"model": self.model_id}})
            self._stopping = asyncio.get_running_loop().create_task(self.stop())
            self._hold(self._stopping)

    def _hold(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ended(self) -> None:
        """The channel closed: the process exited (asked to, or died). Everything in flight ends now."""
        proc = self._proc
        crashed = self.state == RUNNING and (self._writer is None or not self._writer.is_closing())
        if crashed:
            code = proc.returncode if proc is not None else None
            log.error(
                "engine process died",
                extra={"fields": {"model": self.model_id, "pid": self.pid, "returncode": code}},
            )
        message = f"The engine process for '{self.model_id}' stopped while serving this request."
        for job in self._jobs.values():
            if not job.accepted.done():
                job.accepted.set_exception(engine_failed(message))
            else:
                job.inbox.put_nowait(protocol.JobFailed(message, crashed=True))
        for future in self._counts.values():
            if not future.done():
                future.set_exception(engine_failed(message))
        self._jobs.clear()
        if self._writer is not None:
            self._writer.close()
        if proc is not None and crashed:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, 9)  # its socket closed but it lives on: it is of no use any more
            self._hold(asyncio.get_running_loop().create_task(proc.wait()))  # reaped, not a zombie
        self._reset(FAILED if crashed else STOPPED)
