"""Fetching user-supplied URLs without letting them reach our own network.

The URL is normalized once, by the library the HTTP client itself uses (yarl: IDNA/UTS-46, so that 127.0.0.1
written in full-width or circled digits, or with ideographic full stops, becomes the 127.0.0.1 it connects
to), and that normalized URL is both what is checked and what is fetched: no parser differential between
the check and the client.
Then two checks, either of which alone would refuse an internal address:
- before connecting: an IP literal (in any spelling the C resolver accepts) must be public, and a host name
  goes through a resolver that refuses it unless every address it resolves to is public; the connection
  goes to the address checked (no DNS rebinding);
- at connect time: the socket factory sees the exact address the client is about to connect to, literals
  included, and refuses a non-public one before any byte is sent.
Redirects are followed by hand, each target normalized and checked again. Bodies are capped while they
stream. Every refusal about where a URL points reads the same, so the API is no port-scan oracle.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from kimi_gateway.errors import APIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)
_REDIRECTS = {301, 302, 303, 307, 308}


class Refused(Exception):
    """A URL the gateway will not fetch; the message is safe to show (no resolved addresses)."""


# One message for every refusal about where a URL points (scheme, host, resolution, address, connection):
# an attacker learns nothing about which internal hosts or ports exist.
NOT_PUBLIC = "it must be a public http(s) URL that the gateway can reach"


class BlockedAddress(OSError):
    """Raised by the socket factory: the connection was about to go to a non-public address."""


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


def _host_part(entry: str) -> str:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> the host, as URLs spell it (v6 without brackets)."""
    if entry.startswith("["):
        return entry[1 : entry.index("]")] if "]" in entry else entry
    host, sep, port = entry.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else entry


class PublicOnlyResolver(AbstractResolver):
    def __init__(self, allow_hosts: frozenset[str], allowed_addresses: set[IPAddress]) -> None:
        self.allow_hosts = allow_hosts
        self.allowed_addresses = allowed_addresses  # what allow-listed names resolved to

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror:
            raise Refused(NOT_PUBLIC) from None
        allowed = host in self.allow_hosts
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if allowed:
                self.allowed_addresses.add(address)
            elif not public(address):
                raise Refused(NOT_PUBLIC)
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


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    url: str  # normalized, after redirects: what was checked and fetched
    content_type: str = ""  # as the server named it


def normalized(url: str) -> URL:
    """The URL as the HTTP client will use it: parsed once, host IDNA-encoded (Unicode digits, full-width
    and ideographic dots folded), default port dropped."""
    try:
        parsed = URL(url)
        parsed.raw_host  # noqa: B018  (IDNA encoding happens here and may refuse the name)
    except (ValueError, UnicodeError):
        raise Refused(NOT_PUBLIC) from None
    return parsed


class Fetcher:
    """Its own HTTP client, apart from the upstream one: upstreams may rightly be private hosts."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None
        # An entry may name a port ("10.0.0.5:8080"): the URL check matches it whole; resolving and
        # connecting know only the host, so they are given the host part (before, such an entry passed the
        # first check and was refused when connecting).
        self._hosts = frozenset(_host_part(entry) for entry in limits.allow_hosts)
        self._allowed_addresses: set[IPAddress] = {
            a for h in self._hosts if (a := literal_address(h)) is not None
        }

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PublicOnlyResolver(self._hosts, self._allowed_addresses),
                limit=32,
                use_dns_cache=False,
                socket_factory=self._socket,
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    def _socket(self, info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        """The last word before connecting: the exact address, whatever spelling or path led here."""
        family, kind, proto, _, sockaddr = info
        address = ipaddress.ip_address(str(sockaddr[0]))
        if not public(address) and address not in self._allowed_addresses:
            raise BlockedAddress(NOT_PUBLIC)
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setblocking(False)
        return sock

    def check(self, url: URL) -> None:
        if url.scheme not in ("http", "https"):
            raise Refused(NOT_PUBLIC)
        host = url.raw_host
        if not host:
            raise Refused(NOT_PUBLIC)
        if url.raw_user or url.raw_password:
            raise Refused("URLs with credentials are not fetched")
        allowed = host in self.limits.allow_hosts or url.raw_authority in self.limits.allow_hosts
        literal = literal_address(host)
        if literal is not None and not allowed and not public(literal):
            raise Refused(NOT_PUBLIC)

    async def fetch_url(self, url: str) -> Fetched:
        """The body at `url` and the normalized URL it came from, or `Refused` saying why not."""
        limits = self.limits
        timeout = aiohttp.ClientTimeout(total=limits.total_seconds, sock_connect=limits.connect_seconds)
        target = normalized(url)
        try:
            async with asyncio.timeout(limits.total_seconds):
                for _ in range(limits.max_redirects + 1):
                    self.check(target)
                    async with self._client().get(target, allow_redirects=False, timeout=timeout) as response:
                        if response.status in _REDIRECTS and "location" in response.headers:
                            target = target.join(normalized(response.headers["location"]))
                            continue
                        if response.status != 200:
                            raise Refused(f"the URL answered HTTP {response.status}")
                        body = await _read_capped(response, limits.max_bytes)
                        return Fetched(body, str(target), response.headers.get("content-type", ""))
                raise Refused(f"more than {limits.max_redirects} redirects")
        except TimeoutError:
            raise Refused(f"the download took longer than {limits.total_seconds:g} s") from None
        except (aiohttp.ClientConnectorError, UnicodeError, ValueError):
            # UnicodeError, ValueError: a host the client cannot encode (a percent-encoded label, say)
            raise Refused(NOT_PUBLIC) from None
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
