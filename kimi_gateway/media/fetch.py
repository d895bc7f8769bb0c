"""Fetching user-supplied URLs without letting them reach our own network.

Each host name is resolved once; every address it resolves to must be public, and the connection goes to
the address that was checked (aiohttp connects to what the resolver returns), which defeats DNS
rebinding. IP literals, including the integer, hex and octal IPv4 spellings, are checked before any
connection. Redirects are followed by hand, each target checked again. Bodies are capped while they stream.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from kimi_gateway.errors import APIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)
_REDIRECTS = {301, 302, 303, 307, 308}


class Refused(Exception):
    """A URL the gateway will not fetch; the message is safe to show (no resolved addresses)."""


def public(address: IPAddress) -> bool:
    """Only globally routable unicast addresses: not loopback, private, link-local (cloud metadata lives
    there), CGNAT, multicast, reserved or unspecified; IPv4 embedded in IPv6 is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return public(embedded)
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64: the last 32 bits are IPv4
            return public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a host string names literally, in any spelling the C resolver would accept."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:  # inet_aton takes 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 alike
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, allow_hosts: frozenset[str]) -> None:
        self.allow_hosts = allow_hosts

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise Refused("the image URL's host name does not resolve") from None
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if host not in self.allow_hosts and not public(address):
                raise Refused("the image URL's host resolves to a non-public address")
            results.append(
                {
                    "hostname": host,
                    "host": str(address),
                    "port": int(sockaddr[1]),
                    "family": fam,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return results

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int
    connect_seconds: float
    total_seconds: float
    max_redirects: int
    allow_hosts: frozenset[str]


class Fetcher:
    """Its own HTTP client, apart from the upstream one: upstreams may rightly be private hosts."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PublicOnlyResolver(self.limits.allow_hosts), limit=32, use_dns_cache=False
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise Refused("only http and https URLs are fetched")
        host = parts.hostname
        if not host:
            raise Refused("the URL has no host")
        if parts.username or parts.password:
            raise Refused("URLs with credentials are not fetched")
        allowed = host in self.limits.allow_hosts or (
            parts.netloc.rsplit("@", 1)[-1] in self.limits.allow_hosts
        )
        literal = literal_address(host)
        if literal is not None and not allowed and not public(literal):
            raise Refused("the URL points at a non-public address")

    async def fetch(self, url: str) -> bytes:
        """The body at `url`, or `Refused` saying why not."""
        limits = self.limits
        timeout = aiohttp.ClientTimeout(total=limits.total_seconds, sock_connect=limits.connect_seconds)
        try:
            async with asyncio.timeout(limits.total_seconds):
                for _ in range(limits.max_redirects + 1):
                    self.check(url)
                    async with self._client().get(url, allow_redirects=False, timeout=timeout) as response:
                        if response.status in _REDIRECTS and "location" in response.headers:
                            url = urljoin(url, response.headers["location"])
                            continue
                        if response.status != 200:
                            raise Refused(f"the URL answered HTTP {response.status}")
                        return await _read_capped(response, limits.max_bytes)
                raise Refused(f"more than {limits.max_redirects} redirects")
        except TimeoutError:
            raise Refused(f"the download took longer than {limits.total_seconds:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.__cause__, Refused) or isinstance(exc.os_error, Refused):
                raise Refused(str(exc.os_error)) from None
            raise Refused("the URL's host could not be reached") from None
        except aiohttp.ClientError:
            raise Refused("the download failed") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    length = response.content_length
    if length is not None and length > max_bytes:
        raise Refused(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise Refused(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def refused(where: str, why: Refused) -> APIError:
    return APIError(400, f"{where}: cannot fetch this URL: {why}.", param=where, code="invalid_image_url")
