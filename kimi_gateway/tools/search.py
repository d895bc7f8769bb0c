"""Web search backends: SearXNG (self-hosted, the default), Brave, Tavily and Exa, each asked in its own
API's shape and answered as the gateway's `SearchResults`.

The backend is the operator's, configured by URL and key ([tools.web_search]): it may be on a private
address, so it is reached by a client of its own, not the fetcher that guards user-supplied URLs.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import aiohttp
import orjson

from kimi_gateway.config import WebSearchConfig
from kimi_gateway.schema.server_tools import Source

# A backend's answer is read up to this much: any search API's page of results is far smaller.
MAX_ANSWER_BYTES = 4 * 1024 * 1024

DEFAULT_URLS = {
    "brave": "https://api.search.brave.com/res/v1/web/search",
    "tavily": "https://api.tavily.com/search",
    "exa": "https://api.exa.ai/search",
}


class SearchFailed(Exception):
    """The backend could not answer; `code` is the tool error's (unavailable, too_many_requests)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SearchBackend(Protocol):
    async def search(
        self,
        session: aiohttp.ClientSession,
        query: str,
        count: int,
        allowed: tuple[str, ...],
        blocked: tuple[str, ...],
    ) -> list[Source]: ...


async def _json(response: aiohttp.ClientResponse, name: str) -> Any:
    if response.status == 429:
        raise SearchFailed("too_many_requests", f"{name} is rate limiting the gateway's searches")
    if response.status != 200:
        raise SearchFailed("unavailable", f"{name} answered HTTP {response.status}")
    body = await response.content.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES:
        raise SearchFailed("unavailable", f"{name}'s answer is too large")
    try:
        return orjson.loads(body)
    except ValueError:
        raise SearchFailed("unavailable", f"{name} did not answer JSON") from None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sources(results: Any, snippet: str, age: str) -> list[Source]:
    """A backend's result list as sources: each result a JSON object with `url` and `title`, its snippet
    and its date under the backend's own names; anything else, or a URL that is not http(s), left out."""
    out = []
    for r in results if isinstance(results, list) else ():
        url = r.get("url") if isinstance(r, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            date = r.get(age)
            out.append(
                Source(
                    url,
                    _text(r.get("title")) or url,
                    _text(r.get(snippet)),
                    date if isinstance(date, str) else None,
                )
            )
    return out


class SearXNG:
    """`GET /search?q=...&format=json` (the instance must list `json` in `search.formats`)."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url.rstrip("/") + "/search"

    async def search(
        self,
        session: aiohttp.ClientSession,
        query: str,
        count: int,
        allowed: tuple[str, ...],
        blocked: tuple[str, ...],
    ) -> list[Source]:
        params = {"q": query, "format": "json", "safesearch": "1"}
        async with session.get(self.url, params=params) as response:
            if response.status == 403:
                raise SearchFailed("unavailable", "SearXNG refused JSON: add json to its search.formats")
            data = await _json(response, "SearXNG")
        results = data.get("results") if isinstance(data, dict) else None
        return _sources(results, "content", "publishedDate")


class Brave:
    """`GET /res/v1/web/search` with `X-Subscription-Token`."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    async def search(
        self,
        session: aiohttp.ClientSession,
        query: str,
        count: int,
        allowed: tuple[str, ...],
        blocked: tuple[str, ...],
    ) -> list[Source]:
        headers = {"X-Subscription-Token": self.key, "Accept": "application/json"}
        params = {"q": query[:400], "count": str(min(count, 20))}
        async with session.get(self.url, params=params, headers=headers) as response:
            data = await _json(response, "Brave Search")
        web = data.get("web") if isinstance(data, dict) else None
        results = web.get("results") if isinstance(web, dict) else None
        return _sources(results, "description", "page_age")


class Tavily:
    """`POST /search` with a bearer key; domain filters go to the API."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    async def search(
        self,
        session: aiohttp.ClientSession,
        query: str,
        count: int,
        allowed: tuple[str, ...],
        blocked: tuple[str, ...],
    ) -> list[Source]:
        body: dict[str, Any] = {"query": query, "max_results": count, "search_depth": "basic"}
        if allowed:
            body["include_domains"] = list(allowed)
        if blocked:
            body["exclude_domains"] = list(blocked)
        headers = {"Authorization": f"Bearer {self.key}"}
        async with session.post(self.url, json=body, headers=headers) as response:
            data = await _json(response, "Tavily")
        results = data.get("results") if isinstance(data, dict) else None
        return _sources(results, "content", "published_date")


class Exa:
    """`POST /search` with `x-api-key`; camelCase keys; the text of each result asked for, capped."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    async def search(
        self,
        session: aiohttp.ClientSession,
        query: str,
        count: int,
        allowed: tuple[str, ...],
        blocked: tuple[str, ...],
    ) -> list[Source]:
        body: dict[str, Any] = {
            "query": query,
            "numResults": count,
            "type": "auto",
            "contents": {"text": {"maxCharacters": 1000}},
        }
        if allowed:
            body["includeDomains"] = list(allowed)
        elif blocked:  # Exa takes one or the other
            body["excludeDomains"] = list(blocked)
        async with session.post(self.url, json=body, headers={"x-api-key": self.key}) as response:
            data = await _json(response, "Exa")
        results = data.get("results") if isinstance(data, dict) else None
        return _sources(results, "text", "publishedDate")


def backend_of(config: WebSearchConfig) -> SearchBackend | None:
    """The configured backend, or None when web search is not set up (SearXNG without a URL, or a hosted
    API without its key): requests offering web search are then refused with a 400 that says so."""
    if config.backend == "searxng":
        return SearXNG(config.base_url) if config.base_url else None
    key = os.environ.get(config.api_key_env or "", "") if config.api_key_env else ""
    if not key:
        return None
    url = config.base_url or DEFAULT_URLS[config.backend]
    kinds: dict[str, type[Brave] | type[Tavily] | type[Exa]] = {"brave": Brave, "tavily": Tavily, "exa": Exa}
    return kinds[config.backend](url, key)
