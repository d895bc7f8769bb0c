"""What the server-side tools reach outside the gateway, on loopback: a search backend speaking SearXNG's,
Brave's, Tavily's and Exa's JSON APIs, and a site of pages to fetch (HTML, plain text, a PDF). Both record
what they were asked. And a scripted model that researches: it searches, fetches the first result, and
answers citing it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.upstream import Answer, Fault

ARTICLE = """<!doctype html><html><head><title>Kimi K2.5 release notes</title></head><body>
<nav><a href="/">Home</a> | <a href="/blog">Blog</a> | <a href="/about">About</a></nav>
<article><h1>Kimi K2.5 release notes</h1>
<p>Kimi K2.5 is a native multimodal agentic model. It was trained on about 15 trillion mixed visual and
text tokens and reads images and video as well as text.</p>
<p>Its agent swarm mode splits a task among up to one hundred sub-agents working in parallel, which the
release notes credit with a large gain on wide search benchmarks.</p>
</article><footer>Copyright 2026 Example Org. All rights reserved.</footer></body></html>"""


@dataclass
class WebSite:
    """A search backend and a site of pages, one aiohttp server on loopback, in a thread of its own."""

    results: list[dict[str, str]] = field(default_factory=list)  # what a search finds (url, title, snippet)
    searches: list[dict[str, Any]] = field(default_factory=list)  # (backend, query, headers)
    fetched: list[str] = field(default_factory=list)  # paths of pages fetched
    search_delay: float = 0.0
    search_status: int = 200

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def page(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def reset(self) -> None:
        self.results = [
            {
                "url": self.page("/kimi-k25"),
                "title": "Kimi K2.5 release notes",
                "snippet": "A multimodal model.",
            },
            {"url": "https://example.org/other", "title": "Another page", "snippet": "Something else."},
        ]
        self.searches.clear()
        self.fetched.clear()
        self.search_delay = 0.0
        self.search_status = 200

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/search", self._searxng)
        app.router.add_get("/res/v1/web/search", self._brave)
        app.router.add_post("/tavily/search", self._tavily)
        app.router.add_post("/exa/search", self._exa)
        app.router.add_get("/kimi-k25", self._article)
        app.router.add_get("/notes.txt", self._text)
        app.router.add_get("/missing", self._missing)
        app.router.add_get("/long", self._long)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.reset()
        ready.set()
        self._loop.run_forever()
        # Stopped: its connections' handlers end before the loop closes (no "Task was destroyed" at exit).
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _searched(self, backend: str, query: str, request: web.Request) -> web.Response | None:
        self.searches.append({"backend": backend, "query": query, "headers": dict(request.headers)})
        if self.search_delay:
            await asyncio.sleep(self.search_delay)
        if self.search_status != 200:
            return web.json_response({"error": "no"}, status=self.search_status)
        return None

    async def _searxng(self, request: web.Request) -> web.Response:
        failed = await self._searched("searxng", request.query.get("q", ""), request)
        if failed is not None:
            return failed
        assert request.query.get("format") == "json"
        found = [
            {"url": r["url"], "title": r["title"], "content": r["snippet"], "engine": "fake"}
            for r in self.results
        ]
        return web.json_response({"query": request.query["q"], "results": found, "answers": []})

    async def _brave(self, request: web.Request) -> web.Response:
        failed = await self._searched("brave", request.query.get("q", ""), request)
        if failed is not None:
            return failed
        found = [{"url": r["url"], "title": r["title"], "description": r["snippet"]} for r in self.results]
        return web.json_response({"type": "search", "web": {"results": found}})

    async def _tavily(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._searched("tavily", body.get("query", ""), request)
        if failed is not None:
            return failed
        found = [
            {"url": r["url"], "title": r["title"], "content": r["snippet"], "score": 0.9}
            for r in self.results
        ]
        return web.json_response({"query": body["query"], "results": found, "response_time": 0.1})

    async def _exa(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._searched("exa", body.get("query", ""), request)
        if failed is not None:
            return failed
        found = [
            {"id": r["url"], "url": r["url"], "title": r["title"], "text": r["snippet"]} for r in self.results
        ]
        return web.json_response({"results": found, "resolvedSearchType": "neural"})

    async def _article(self, request: web.Request) -> web.Response:
        self.fetched.append(request.path)
        return web.Response(text=ARTICLE, content_type="text/html")

    async def _text(self, request: web.Request) -> web.Response:
        self.fetched.append(request.path)
        return web.Response(
            text="Plain notes: Kimi Linear uses a hybrid linear attention.", content_type="text/plain"
        )

    async def _long(self, request: web.Request) -> web.Response:
        self.fetched.append(request.path)
        paragraphs = "".join(f"<p>Paragraph {i}: {'kimi ' * 40}</p>" for i in range(200))
        return web.Response(
            text=f"<html><head><title>Long</title></head><body><article>{paragraphs}</article></body></html>",
            content_type="text/html",
        )

    async def _missing(self, request: web.Request) -> web.Response:
        self.fetched.append(request.path)
        return web.Response(status=404, text="not here")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m.get("role") == "tool"]


def _last_search_url(results: list[dict[str, Any]]) -> str | None:
    """The first URL of the latest search among the tool results given back."""
    url = None
    for message in results:
        try:
            data = json.loads(message["content"])
        except ValueError:
            continue
        if data.get("results"):
            url = data["results"][0]["url"]
    return url


@dataclass
class Researcher:
    """Plays a model offered web tools: searches for the user's question, fetches the first result when it
    can, then answers naming the URL it read. `always_search`: it never stops searching (for the bounds)."""

    fetch: bool = True
    always_search: bool = False
    searches: int = 1

    def __call__(self, body: dict[str, Any]) -> Answer:
        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        results = _tool_messages(body)
        question = "kimi"
        for message in reversed(body["messages"]):
            if message.get("role") == "user":
                content = message["content"]
                if isinstance(content, list):  # parts: their text
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                question = content.removeprefix("Perform a web search for the query: ")
                break
        if "web_search" in tools and (self.always_search or len(results) < self.searches):
            query = f"{question} #{len(results) + 1}" if self.always_search else question
            return Answer(
                reasoning="I should search.",
                content="Let me look that up.",
                tool_calls=[("web_search", json.dumps({"query": query}))],
                finish="tool_calls",
            )
        first_url = _last_search_url(results)
        fetched = any('"content"' in m["content"] and '"truncated"' in m["content"] for m in results)
        if self.fetch and "web_fetch" in tools and first_url and not fetched:
            return Answer(
                content="",
                tool_calls=[("web_fetch", json.dumps({"url": first_url}))],
                finish="tool_calls",
            )
        if first_url:
            return Answer(content=f"Kimi K2.5 is a multimodal agentic model (source: {first_url}).")
        return Answer(content="I found nothing.")


@dataclass
class ClaudeCodeSearch:
    """Plays the model behind Claude Code's WebSearch: in the main conversation it calls `WebSearch`, then
    answers with the links the tool gave back; in the search's own request (where the gateway offers its
    `web_search` function) it searches and sums up, as `Researcher` does."""

    query: str
    final: str = "Here is what I found: {links}"

    def __call__(self, body: dict[str, Any]) -> Answer:
        import re

        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        if "web_search" in tools:
            return Researcher(fetch=False)(body)
        # Claude Code ends its conversation with a system message: the turn is the last other role's.
        last = next((m["role"] for m in reversed(body.get("messages") or ()) if m["role"] != "system"), None)
        if last not in ("user", "tool") or not ({"WebSearch", "ToolSearch"} & tools):
            return Answer(content="Kimi test session")  # a side request: a title, a summary
        if "WebSearch" not in tools:
            # Claude Code 2.1 defers WebSearch: its schema is loaded with ToolSearch first.
            return Answer(
                content="",
                tool_calls=[("ToolSearch", json.dumps({"query": "select:WebSearch", "max_results": 1}))],
                finish="tool_calls",
            )
        results = [m for m in _tool_messages(body) if "select:" not in str(m.get("content"))]
        searched = any("Web search results" in str(m.get("content")) for m in _tool_messages(body))
        if not searched:
            return Answer(
                reasoning="The user wants a search.",
                content="",
                tool_calls=[("WebSearch", json.dumps({"query": self.query}))],
                finish="tool_calls",
            )
        text = " ".join(
            m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]) for m in results
        )
        links = sorted(set(re.findall(r"https?://[^\s\"'\)\]>,]+", text)))
        return Answer(content=self.final.format(links=" ".join(links)))


@dataclass
class FileReader:
    """Plays a model offered file_search: searches the user's files for their question, then answers
    naming the file and quoting the passage it found."""

    def __call__(self, body: dict[str, Any]) -> Answer:
        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        results = _tool_messages(body)
        question = next((m["content"] for m in reversed(body["messages"]) if m.get("role") == "user"), "")
        if isinstance(question, list):
            question = " ".join(p.get("text", "") for p in question if isinstance(p, dict))
        if "file_search" in tools and not results:
            return Answer(
                content="",
                tool_calls=[("file_search", json.dumps({"query": question}))],
                finish="tool_calls",
            )
        found = json.loads(results[-1]["content"]).get("results") if results else None
        if not found:
            return Answer(content="Your files do not say.")
        top = found[0]
        return Answer(content=f"According to {top['filename']}: {top['text']}")


@dataclass
class OrderAgent:
    """Plays a model offered an MCP server's tools: looks the order up with the tool named `*__lookup_order`,
    then answers with what the tool returned."""

    order_id: str = "A1"

    def __call__(self, body: dict[str, Any]) -> Answer:
        tools = [t["function"]["name"] for t in body.get("tools") or ()]
        lookup = next((name for name in tools if name.endswith("__lookup_order")), None)
        results = _tool_messages(body)
        if lookup is not None and not results:
            return Answer(
                content="",
                tool_calls=[(lookup, json.dumps({"order_id": self.order_id}))],
                finish="tool_calls",
            )
        if results:
            return Answer(content=f"The tool says: {results[-1]['content']}")
        return Answer(content="No order tools.")


@dataclass
class Swarmer:
    """Plays a model in a swarm run. As the orchestrator (offered `create_agents`): asks for one agent per
    entry of `tasks`, then, given their reports, answers with a line per agent. As a sub-agent: searches
    for its instructions, then answers naming the first URL, taking `delay` seconds to start each answer
    (so that agents running at once overlap). A sub-agent whose instructions contain "FAIL" meets a
    provider that fails (500)."""

    tasks: tuple[str, ...] = ("alpha", "beta", "gamma")
    delay: float = 0.4
    orchestrator_calls: int = 0
    agent_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Answer | Fault:
        tools = {t["function"]["name"] for t in body.get("tools") or ()}
        results = _tool_messages(body)
        if "create_agents" in tools:
            with self._lock:
                self.orchestrator_calls += 1
            if not results:
                tasks = [
                    {
                        "name": name,
                        "instructions": f"Find out about {name}" + (" FAIL" if name == "gamma" else ""),
                    }
                    for name in self.tasks
                ]
                return Answer(
                    reasoning="This splits into parts.",
                    content="",
                    tool_calls=[("create_agents", json.dumps({"tasks": tasks}))],
                    finish="tool_calls",
                )
            reports = json.loads(results[-1]["content"]).get("agents", [])
            lines = [f"{r['name']}: {r['status']}" for r in reports]
            return Answer(content="Swarm summary. " + "; ".join(lines))
        with self._lock:
            self.agent_calls += 1
        task = next(m["content"] for m in body["messages"] if m.get("role") == "user")
        if "FAIL" in task:
            return Fault("status", 500)
        if "web_search" in tools and not results:
            return Answer(
                content="",
                tool_calls=[("web_search", json.dumps({"query": task}))],
                finish="tool_calls",
                first_delay=self.delay,
            )
        url = _last_search_url(results)
        return Answer(content=f"Findings on {task}: see {url}.", first_delay=self.delay)
