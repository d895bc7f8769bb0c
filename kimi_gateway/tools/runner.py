"""Runs one server-side tool call: its input checked, its time bounded, its result cut to what a model is
given. Per-request state (how many uses are left) is the tool loop's (core/toolloop.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from kimi_gateway.config import MediaConfig, ToolsConfig
from kimi_gateway.errors import APIError
from kimi_gateway.media.fetch import Fetcher, FetchLimits
from kimi_gateway.media.files import FileStore
from kimi_gateway.media.ocr import OCR
from kimi_gateway.media.workers import Budget, MediaPool
from kimi_gateway.money import nano
from kimi_gateway.schema.server_tools import (
    AgentsOutput,
    FetchedPage,
    FileHit,
    FileResults,
    McpOutput,
    SearchResults,
    ServerTool,
    ToolError,
    ToolKind,
    ToolOutput,
)
from kimi_gateway.storage.vector_stores import VectorStores
from kimi_gateway.tools.base import domain_matches
from kimi_gateway.tools.fetch import fetch_page
from kimi_gateway.tools.mcp import Mcp, McpFailed
from kimi_gateway.tools.search import SearchBackend, SearchFailed, backend_of

MAX_QUERY_CHARS = 500
MAX_URL_CHARS = 2048


class Tools:
    """The gateway's server-side tools, configured once ([tools])."""

    def __init__(
        self,
        config: ToolsConfig,
        media: MediaConfig,
        pool: MediaPool,
        ocr: OCR,
        stores: VectorStores,
        files: FileStore,
    ) -> None:
        self.config = config
        self.stores, self.files = stores, files
        self.search_backend: SearchBackend | None = backend_of(config.web_search)
        self.fetcher = Fetcher(
            FetchLimits(
                max_bytes=config.web_fetch.max_bytes,
                connect_seconds=media.fetch_connect_seconds,
                total_seconds=config.max_tool_seconds,
                max_redirects=media.max_redirects,
                allow_hosts=frozenset(media.allow_hosts),
            )
        )
        self.pool, self.ocr = pool, ocr
        self.mcp = Mcp(config.mcp, config.max_tool_seconds, frozenset(media.allow_hosts))
        self._session: aiohttp.ClientSession | None = None
        self.prices: dict[ToolKind, int] = {
            "web_search": nano(config.web_search.price_per_call),
            "web_fetch": nano(config.web_fetch.price_per_page),
            "file_search": nano(config.file_search.price_per_call),
            "mcp": 0,  # MCP calls cost their tokens only, as on OpenAI
            "agents": 0,  # a swarm's sub-agents cost their own model and tool calls (core/swarm.py)
        }

    def unavailable(self, kind: ToolKind) -> str | None:
        """Why this gateway cannot offer the tool, or None."""
        if kind == "web_search" and self.search_backend is None:
            backend = self.config.web_search.backend
            if backend == "searxng":
                return "web search is not set up on this gateway ([tools.web_search] base_url of a SearXNG)"
            return f"web search is not set up on this gateway (the {backend} key is missing)"
        if kind == "web_fetch" and not self.config.web_fetch.enabled:
            return "web fetch is off on this gateway ([tools.web_fetch] enabled = false)"
        return None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.max_tool_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": "kimi-gateway"})
        return self._session

    async def run(self, tool: ServerTool, arguments: str, account: str | None, budget: Budget) -> ToolOutput:
        """The call's result; never raises for what the call itself did wrong (that is a ToolError)."""
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            return ToolError("invalid_tool_input", "the arguments are not JSON")
        if not isinstance(args, dict):
            return ToolError("invalid_tool_input", "the arguments are not a JSON object")
        try:
            async with asyncio.timeout(self.config.max_tool_seconds):
                if tool.kind == "web_search":
                    return await self._search(tool, args)
                if tool.kind == "file_search":
                    return await self._file_search(tool, args, account)
                if tool.kind == "mcp":
                    return await self._mcp(tool, args)
                return await self._fetch(tool, args, account, budget)
        except TimeoutError:
            return ToolError("unavailable", f"the tool took longer than {self.config.max_tool_seconds:g} s")

    async def _search(self, tool: ServerTool, args: dict[str, object]) -> ToolOutput:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolError("invalid_tool_input", "give the search a non-empty `query`")
        if len(query) > MAX_QUERY_CHARS:
            return ToolError("query_too_long", f"the query is over {MAX_QUERY_CHARS} characters")
        backend = self.search_backend
        if backend is None:
            return ToolError("unavailable", "web search is not set up on this gateway")
        count = tool.max_results or self.config.web_search.max_results
        allowed = tool.allowed_domains + tuple(self.config.allowed_domains)
        blocked = tool.blocked_domains + tuple(self.config.blocked_domains)
        try:
            found = await backend.search(self._client(), query.strip(), count, allowed, blocked)
        except SearchFailed as failed:
            return ToolError(failed.code, str(failed))
        except aiohttp.ClientError as exc:
            return ToolError("unavailable", f"the search backend could not be reached ({type(exc).__name__})")
        kept = [
            s
            for s in found
            if (host := urlsplit(s.url).hostname or "")
            and (not allowed or domain_matches(host, allowed))
            and not domain_matches(host, blocked)
        ]
        return SearchResults(query.strip(), tuple(kept[:count]))

    async def _file_search(
        self, tool: ServerTool, args: dict[str, object], account: str | None
    ) -> ToolOutput:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return ToolError("invalid_tool_input", "give the search a non-empty `query`")
        if len(query) > MAX_QUERY_CHARS:
            return ToolError("query_too_long", f"the query is over {MAX_QUERY_CHARS} characters")
        count = tool.max_results or self.config.file_search.max_results
        try:
            found = await self.stores.search(account, list(tool.vector_store_ids), query, count)
        except APIError as exc:
            return ToolError("invalid_tool_input", exc.message)
        names: dict[str, str] = {}
        hits = []
        for hit in found:
            if hit.file_id not in names:
                try:
                    names[hit.file_id] = (await self.files.get(account, hit.file_id)).filename
                except APIError:
                    names[hit.file_id] = hit.file_id  # deleted meanwhile
            hits.append(FileHit(hit.file_id, names[hit.file_id], hit.score, hit.chunk, hit.attributes))
        return FileResults(query.strip(), tuple(hits))

    async def _mcp(self, tool: ServerTool, args: dict[str, Any]) -> ToolOutput:
        server = tool.mcp
        if server is None or tool.mcp_tool is None:
            return ToolError("invalid_tool_input", "not an MCP tool")
        try:
            return await self.mcp.call(server, tool.mcp_tool, args, self.config.max_result_bytes)
        except McpFailed as failed:
            return ToolError("unavailable", str(failed))

    async def _fetch(
        self, tool: ServerTool, args: dict[str, object], account: str | None, budget: Budget
    ) -> ToolOutput:
        url = args.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return ToolError("invalid_tool_input", "give the fetch an http(s) `url`")
        if len(url) > MAX_URL_CHARS:
            return ToolError("url_too_long", f"the URL is over {MAX_URL_CHARS} characters")
        host = urlsplit(url).hostname or ""
        allowed = tool.allowed_domains + tuple(self.config.allowed_domains)
        blocked = tool.blocked_domains + tuple(self.config.blocked_domains)
        if (allowed and not domain_matches(host, allowed)) or domain_matches(host, blocked):
            return ToolError("url_not_allowed", f"{host} is not among the domains this request may fetch")
        page = await fetch_page(self.fetcher, self.pool, self.ocr, account, url, budget)
        if isinstance(page, FetchedPage):
            # Room left for the JSON around the text (URL, title): the model gets whole JSON.
            limit = self.config.max_result_bytes - 512 - len(page.url) - len((page.title or "").encode())
            encoded = page.text.encode()
            if len(encoded) > limit:
                text = encoded[:limit].decode("utf-8", errors="ignore")
                page = FetchedPage(page.url, page.title, text, page.media_type, page.retrieved_at, True)
        return page

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.fetcher.close()


def model_text(output: ToolOutput, max_bytes: int) -> str:
    """What the model is given as the call's result: JSON, cut to `max_bytes`."""
    if isinstance(output, SearchResults):
        data: object = {
            "query": output.query,
            "results": [
                {
                    "title": s.title,
                    "url": s.url,
                    "snippet": s.snippet,
                    **({"page_age": s.page_age} if s.page_age else {}),
                }
                for s in output.sources
            ],
        }
    elif isinstance(output, FileResults):
        data = {
            "query": output.query,
            "results": [
                {"file_id": h.file_id, "filename": h.filename, "score": h.score, "text": h.text}
                for h in output.hits
            ],
        }
    elif isinstance(output, McpOutput):
        text = output.text if not output.is_error else f"Error: {output.text}"
        return text.encode()[:max_bytes].decode("utf-8", "ignore")
    elif isinstance(output, AgentsOutput):
        # Each answer was cut to its own bound already (core/swarm.py): the list is never cut here.
        data = {
            "agents": [
                {
                    "name": r.name,
                    "status": r.status,
                    **({"answer": r.answer} if r.answer else {}),
                    **({"error": r.error} if r.error else {}),
                }
                for r in output.reports
            ]
        }
        return orjson.dumps(data).decode()
    elif isinstance(output, FetchedPage):
        data = {
            "url": output.url,
            "title": output.title,
            "content": output.text,
            "truncated": output.truncated,
        }
    else:
        data = {"error": output.code, "message": output.message}
    text = orjson.dumps(data).decode()
    if len(text.encode()) > max_bytes and isinstance(output, SearchResults) and output.sources:
        # Fewer results rather than broken JSON.
        return model_text(SearchResults(output.query, output.sources[:-1]), max_bytes)
    if len(text.encode()) > max_bytes and isinstance(output, FileResults) and output.hits:
        return model_text(FileResults(output.query, output.hits[:-1]), max_bytes)
    return text if len(text.encode()) <= max_bytes else text.encode()[:max_bytes].decode("utf-8", "ignore")
