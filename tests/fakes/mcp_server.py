"""A real MCP server, built with the official `mcp` SDK and served over Streamable HTTP on loopback (in a
thread of its own): an orders service with one tool. It counts its calls and keeps the headers it saw."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send


class OrdersServer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = MCPServer("orders")

        @server.tool()
        def lookup_order(order_id: str) -> str:
            """Look up an order's status by its id."""
            self.calls.append({"order_id": order_id})
            return f"Order {order_id}: shipped on 2026-12-01, arriving 2026-12-04."

        @server.tool()
        def cancel_order(order_id: str) -> str:
            """Cancel an order."""
            self.calls.append({"cancel": order_id})
            return f"Order {order_id} cancelled."

        app = self._recording(server.streamable_http_app())
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _recording(self, app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)

        return recorded

    def reset(self) -> None:
        self.calls.clear()
        self.headers.clear()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
