"""The reasoning of the tool-call turns the gateway served, kept so that it can be given back.

Kimi with thinking on refuses an earlier assistant tool-call turn that comes back without its
`reasoning_content`, and many clients drop it when they replay a conversation (the AI SDK's `openai` chat
provider, openai-agents' chat models, LlamaIndex, instructor). The gateway made those turns: it keeps each
one's reasoning by account and call (id, name and arguments), and restores it when the turn comes back
bare (never across accounts). The memory is this process's, bounded in bytes and in time; a turn it does
not hold (another replica served it, a restart, evicted) is adapted otherwise (catalog/rules.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson

from kimi_gateway.providers.events import Delta
from kimi_gateway.schema.chat import ToolCall


def call_key(call_id: str, name: str, arguments: str) -> str:
    """A served call, as a replay names it. Kimi's call ids repeat across conversations
    (`functions.get_weather:0`): the name and the arguments (compact, keys sorted, so a client's
    re-encoding still matches) tell one conversation's call from another's."""
    with suppress(orjson.JSONDecodeError):
        arguments = orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS).decode()
    return f"{call_id}\x00{name}\x00{arguments}"


@dataclass(slots=True)
class _Kept:
    reasoning: str
    until: float


class ReasoningMemory:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, seconds: float = 86_400.0) -> None:
        self.max_bytes = max_bytes
        self.seconds = seconds
        self._kept: OrderedDict[tuple[str | None, str], _Kept] = OrderedDict()
        self._bytes = 0

    def keep(self, account: str | None, calls: list[str], reasoning: str) -> None:
        """`calls`: the turn's calls, each as `call_key` names it."""
        if not reasoning or not calls or len(reasoning) > self.max_bytes // 16:
            return
        until = time.monotonic() + self.seconds
        for call in calls:
            key = (account, call)
            old = self._kept.pop(key, None)
            if old is not None:
                self._bytes -= len(old.reasoning)
            self._kept[key] = _Kept(reasoning, until)
            self._bytes += len(reasoning)
        while self._bytes > self.max_bytes and self._kept:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= len(dropped.reasoning)

    def find(self, account: str | None, call: str) -> str | None:
        kept = self._kept.get((account, call))
        if kept is None or kept.until < time.monotonic():
            return None
        return kept.reasoning


@dataclass(slots=True)
class TurnNote:
    """One response's first choice, as it streams: its reasoning and its calls."""

    memory: ReasoningMemory
    account: str | None
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [id, name, arguments]

    def add(self, delta: Delta) -> None:
        if delta.index != 0:
            return
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
        for call in delta.tool_calls or ():
            slot = self.calls.setdefault(call.index, ["", "", ""])
            if call.id:
                slot[0] = call.id
            if call.name:
                slot[1] += call.name
            slot[2] += call.arguments

    def keep(self) -> None:
        calls = [call_key(*slot) for slot in self.calls.values()]
        self.memory.keep(self.account, calls, "".join(self.reasoning))

    def keep_message(self, message: Mapping[str, Any]) -> None:
        """The same, from a whole completion's first message."""
        calls = [
            call_key(call["id"], call["function"]["name"], call["function"]["arguments"])
            for call in message.get("tool_calls") or ()
        ]
        self.memory.keep(self.account, calls, message.get("reasoning_content") or "")


def served_call(call: ToolCall) -> str:
    """A replayed call, as `call_key` names it."""
    return call_key(call.id, call.function.name, call.function.arguments)
