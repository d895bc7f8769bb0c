"""Graceful shutdown, as a replica behind a load balancer needs it.

On SIGTERM the replica first says it is going (`/ready` answers 503 "draining") while still serving, for
`[server] drain_seconds`, so that a load balancer or Kubernetes stops sending it requests; then the
server's own graceful shutdown runs: the listener closes, requests and streams in flight go on until
`[server] shutdown_seconds`, and those still running then end with an in-band `server_shutting_down`
error (http/replies.py); the lifespan's end writes every record and charge before the process exits.

uvicorn owns the signal handlers: its handler is wrapped here, not replaced, so a second signal (or
SIGINT) still stops the server at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from kimi_gateway.logs import event

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    """Whether this replica is going, and the SIGTERM handler that says so before stopping."""

    def __init__(self, drain_seconds: float) -> None:
        self.drain_seconds = drain_seconds
        self.draining = False
        self._stop: Handler | None = None

    def install(self) -> None:
        """Wrap the server's SIGTERM handler (only in the main thread: a gateway run inside another
        program's thread leaves signals to it)."""
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if not callable(current):
            return  # no server handler to defer to: the default action stays
        self._stop = current
        loop = asyncio.get_running_loop()

        def on_term(sig: int, frame: FrameType | None) -> None:
            if self.draining or self.drain_seconds <= 0:
                self.draining = True
                current(sig, frame)  # a second SIGTERM, or no drain: the graceful shutdown begins now
                return
            self.draining = True
            # From a signal handler: the loop is told thread-safely, and stops the server later; the log
            # line is written from the loop too (a handler that interrupted a write must not write).
            loop.call_soon_threadsafe(loop.call_later, self.drain_seconds, current, sig, None)
            loop.call_soon_threadsafe(self._said)

        signal.signal(signal.SIGTERM, on_term)

    def _said(self) -> None:
        event("draining", level=logging.WARNING, seconds=self.drain_seconds)
