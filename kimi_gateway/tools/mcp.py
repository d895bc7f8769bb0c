"""Remote MCP servers, reached over Streamable HTTP with the official `mcp` SDK: their tools listed for the
model, and its calls run on them.

A server named by a request (the Responses API's `mcp` tool with a `server_url`) is reached only at public
addresses, checked when the connection is made (each address the name resolves to, the one connected to
being one of them: no DNS rebinding), as image URLs are; a server the operator configured
(`[tools.mcp.servers.NAME]`) may be private. The headers a client passes (its tokens) go to the server and
nowhere else: they are not logged, stored or echoed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from kimi_gateway.config import McpConfig
from kimi_gateway.media.fetch import NOT_PUBLIC, literal_address, public
from kimi_gateway.schema.server_tools import McpOutput, McpServer

# The SDK's HTTP client logs every request with its URL at INFO: a URL may carry a token.
logging.getLogger("httpx2").setLevel(logging.WARNING)
logging.getLogger("mcp").setLevel(logging.WARNING)

if TYPE_CHECKING:
    import httpcore2
    import httpx2
    from mcp import Client

# The SDK (with its HTTP client and protocol types: some 300 modules, 55,000 objects the collector then
# walks) is imported on first use: most gateways never reach an MCP server.

MAX_TOOLS = 64  # tools taken from one server (the rest are left out)
MAX_SCHEMA_BYTES = 16 * 1024  # one tool's input schema


class McpFailed(Exception):
    """The server could not be reached or answered with a protocol error; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class McpTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None


def _public_only(allow: bool, allow_hosts: frozenset[str]) -> httpcore2.AsyncNetworkBackend:
    """A network backend that connects only to public addresses: every address the host resolves to
    must be public, and the connection goes to one of those (not a second resolution)."""
    import httpcore2

    class PublicOnly(httpcore2.AsyncNetworkBackend):
        """Connects only to public addresses: every address the host resolves to must be public, and the
        connection goes to one of those (not a second resolution)."""

        def __init__(self, allow: bool, allow_hosts: frozenset[str]) -> None:
            self._inner = httpcore2.AnyIOBackend()
            self._allow = allow
            self._hosts = allow_hosts  # as written in URLs: "host" or "host:port" ([media] allow_hosts)

        async def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore2.AsyncNetworkStream:
            target = host
            if not self._allow and host not in self._hosts and f"{host}:{port}" not in self._hosts:
                literal = literal_address(host)
                if literal is not None:
                    addresses = [literal]
                else:
                    loop = asyncio.get_running_loop()
                    try:
                        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    except OSError:
                        raise httpcore2.ConnectError(NOT_PUBLIC) from None
                    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
                if not addresses or not all(public(a) for a in addresses):
                    raise httpcore2.ConnectError(NOT_PUBLIC)
                target = str(addresses[0])
            return await self._inner.connect_tcp(
                target, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            )

        async def connect_unix_socket(
            self,
            path: str,
            timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore2.AsyncNetworkStream:
            raise httpcore2.ConnectError("unix sockets are not used")

        async def sleep(self, seconds: float) -> None:
            await self._inner.sleep(seconds)

    return PublicOnly(allow, allow_hosts)


def _http_client(server: McpServer, seconds: float, allow_hosts: frozenset[str]) -> httpx2.AsyncClient:
    import httpcore2
    import httpx2

    transport = httpx2.AsyncHTTPTransport()
    # The transport's pool, rebuilt on the checking backend (httpx2 takes no backend of its own).
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpcore2.default_ssl_context(),
        network_backend=_public_only(server.private_ok, allow_hosts),
        max_connections=4,
    )
    return httpx2.AsyncClient(
        transport=transport,
        headers=server.headers,
        timeout=httpx2.Timeout(seconds),
        follow_redirects=False,
    )


class Mcp:
    def __init__(self, config: McpConfig, seconds: float, allow_hosts: frozenset[str] = frozenset()) -> None:
        self.config, self.seconds, self.allow_hosts = config, seconds, allow_hosts

    def configured(self, label: str) -> McpServer | None:
        """The operator's server of that name, with its headers from the environment."""
        spec = self.config.servers.get(label)
        if spec is None:
            return None
        headers = {}
        for name, variable in spec.headers_env.items():
            value = os.environ.get(variable)
            if value:
                headers[name] = value
        allowed = tuple(spec.allowed_tools) if spec.allowed_tools is not None else None
        return McpServer(label, spec.url, headers, allowed, spec.require_approval, private_ok=True)

    def _client(self, server: McpServer) -> Client:
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        if not server.url:
            raise McpFailed(f"no MCP server named '{server.label}' is configured on this gateway")
        client = _http_client(server, self.seconds, self.allow_hosts)
        transport = streamable_http_client(server.url, http_client=client)
        return Client(transport, mode="legacy", read_timeout_seconds=self.seconds, cache=None)

    async def list_tools(self, server: McpServer) -> list[McpTool]:
        try:
            async with asyncio.timeout(self.seconds), self._client(server) as client:
                listed = await client.list_tools()
        except (TimeoutError, Exception) as exc:
            raise McpFailed(_why(exc)) from None
        tools = []
        for tool in listed.tools:
            if server.allowed_tools is not None and tool.name not in server.allowed_tools:
                continue
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object"}
            if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
                continue
            annotations = tool.annotations.model_dump(exclude_none=True) if tool.annotations else None
            tools.append(McpTool(tool.name, tool.description or "", schema, annotations))
            if len(tools) == MAX_TOOLS:
                break
        return tools

    async def call(
        self, server: McpServer, name: str, arguments: dict[str, Any], max_bytes: int
    ) -> McpOutput:
        try:
            async with asyncio.timeout(self.seconds), self._client(server) as client:
                result = await client.call_tool(name, arguments)
        except (TimeoutError, Exception) as exc:
            raise McpFailed(_why(exc)) from None
        texts = []
        for block in result.content:
            text = getattr(block, "text", None)
            texts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
        if not texts and result.structured_content is not None:
            texts.append(orjson.dumps(result.structured_content).decode())
        output = "\n".join(texts)
        encoded = output.encode()
        if len(encoded) > max_bytes:
            output = encoded[:max_bytes].decode("utf-8", "ignore")
        return McpOutput(output, bool(result.is_error))


def _leaves(exc: BaseException) -> list[BaseException]:
    """The failures inside the task groups the SDK runs (an ExceptionGroup's leaves, and their causes)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    found = [exc]
    if exc.__cause__ is not None:
        found.extend(_leaves(exc.__cause__))
    return found


def _why(exc: BaseException) -> str:
    """What a client may be told of a failure: no addresses, no headers."""
    leaves = _leaves(exc)
    refused = next((leaf for leaf in leaves if NOT_PUBLIC in str(leaf)), None)
    if refused is not None:
        return f"the MCP server's URL is refused: {NOT_PUBLIC}"
    import httpx2

    status = next((leaf for leaf in leaves if isinstance(leaf, httpx2.HTTPStatusError)), None)
    if status is not None:
        return f"the MCP server answered HTTP {status.response.status_code}"
    exc = leaves[0]
    if isinstance(exc, TimeoutError):
        return "the MCP server did not answer in time"
    text = str(exc)
    if NOT_PUBLIC in text:
        return f"the MCP server's URL is refused: {NOT_PUBLIC}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"the MCP server answered HTTP {exc.response.status_code}"
    return f"the MCP server could not be used ({type(exc).__name__})"
