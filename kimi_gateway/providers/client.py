"""The one pooled HTTP client every upstream adapter shares.

aiohttp rather than httpx here: under concurrency httpcore's pool scans every connection per request, and
this is the hot path. The session needs a running loop, so it opens in the app's lifespan.
"""

from __future__ import annotations

import aiohttp


class UpstreamClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=1000, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        # No client-wide timeout: each request sets its own connect and idle limits.
        # No cookie jar: cookies one upstream response sets must never ride along on another user's
        # request, and skipping the jar saves its work on every request.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the upstream client is not open")
        return self._session
