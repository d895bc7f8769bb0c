"""Prefix-cache stickiness: send a conversation back to the provider that holds its cached prefix.

A conversation is known by `session_id`, else `prompt_cache_key`, else a hash of the account, the model and
its first system and first non-system messages. It sticks for `ttl` seconds after its last success, and only
to providers that price cached input below fresh input. With an explicit key it sticks after any success;
without one, only once a cache hit shows the provider really holds the prefix (OpenRouter's rules).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from kimi_gateway.schema.chat import ChatCompletionRequest, SystemMessage

_MAX_ENTRIES = 100_000


def named_conversation(request: ChatCompletionRequest) -> str | None:
    """The conversation's name, if the client gave one."""
    return request.session_id or request.prompt_cache_key


def conversation_key(request: ChatCompletionRequest, account: str = "anonymous") -> str:
    """The conversation's key: its name if the client gave one, else a hash of how it began."""
    name = named_conversation(request)
    if name:
        return f"{account}\x00{request.model}\x00{name}"
    system = next((m for m in request.messages if isinstance(m, SystemMessage)), None)
    first = next((m for m in request.messages if not isinstance(m, SystemMessage)), None)
    digest = hashlib.blake2b(digest_size=16)
    for part in (account, request.model, system and repr(system.content), first and repr(first.content)):
        digest.update(str(part).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class Stickiness:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        provider, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return provider

    def stick(self, key: str, provider: str) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            now = self._clock()
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
        self._entries[key] = (provider, self._clock() + self.ttl)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
