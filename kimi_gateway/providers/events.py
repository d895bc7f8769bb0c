"""The normalized events every provider adapter emits, whatever its wire format.

The HTTP layer turns these into OpenAI chunks or a whole completion; accounting reads `Done.usage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Delta:
    index: int = 0
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclass(slots=True)
class Finish:
    index: int
    reason: str
    native_reason: str | None = None
    stop_sequence: str | None = None  # the stop string that ended the choice, where the provider says


@dataclass(slots=True)
class Done:
    usage: Usage = field(default_factory=Usage)
    provider: str = ""
    model: str = ""
    # Set only by the tool loop (core/toolloop.py), whose usage sums several model calls at their own
    # endpoints' prices: the cost already counted. Providers leave it None: their usage is priced.
    cost_nano: int | None = None


Event = Delta | Finish | Done
