"""Upstream chat-completion chunks, in any provider's dialect, to normalized events.

Reasoning may arrive as `reasoning_content` (Moonshot, SGLang, NIM), `reasoning` (OpenRouter, vLLM) or
`reasoning_details`; usage at the top level or inside the final choice (Moonshot); cached tokens under
`prompt_tokens_details` or as a top-level `cached_tokens` (Moonshot). Raw Kimi markers in `content` are parsed
when the style says the server leaves them there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from kimi_gateway.errors import UpstreamError
from kimi_gateway.providers.events import Delta, Done, Event, Finish, ToolCallDelta, Usage
from kimi_gateway.providers.rawtext import REASONING, TOOLS, RawOutputParser, RawToolCall

_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "error": "error",
}


def normalize_finish(native: str) -> str:
    return _FINISH.get(native.lower(), "stop")


def usage_from(raw: dict[str, Any]) -> Usage:
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens")
    if cached is None:
        cached = raw.get("cached_tokens")
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(cached or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


_REASONING_KEYS = frozenset({"reasoning_content", "reasoning", "reasoning_details"})
_SLOW_DELTA_KEYS = _REASONING_KEYS | {"tool_calls"}


def _reasoning_text(delta: dict[str, Any]) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    details = delta.get("reasoning_details")
    if isinstance(details, list):
        texts = [str(d["text"]) for d in details if isinstance(d, dict) and isinstance(d.get("text"), str)]
        return "".join(texts) or None
    return None


@dataclass(slots=True)
class _ChoiceState:
    parser: RawOutputParser | None
    next_tool_index: int = 0
    native_tool_calls: bool = False
    finish: str | None = None
    tool_ids: dict[int, str] = field(default_factory=dict)


class ChunkNormalizer:
    def __init__(
        self,
        provider: str,
        *,
        raw_output: bool = False,
        start_in_reasoning: bool = False,
        exclude_reasoning: bool = False,
    ) -> None:
        self._provider = provider
        self._raw = raw_output
        self._start_in_reasoning = start_in_reasoning
        self._exclude = exclude_reasoning
        self._choices: dict[int, _ChoiceState] = {}
        self.usage: Usage | None = None
        self.finished = False
        self._text: Delta | None = None  # the last text-only delta made inline, which the next may extend

    def _state(self, index: int) -> _ChoiceState:
        state = self._choices.get(index)
        if state is None:
            parser = RawOutputParser(self._start_in_reasoning) if self._raw else None
            state = self._choices[index] = _ChoiceState(parser)
        return state

    def feed_data(self, batch: list[bytes], events: list[Event]) -> None:
        """Parses one network read's SSE payloads ([DONE] skipped) and appends their events to `events`.

        Runs once per upstream chunk, so the common chunk (choice 0 carrying only text, or nothing) is
        handled inline here, with no call and few lookups; anything else goes through `feed`. Text that
        arrived in the same read as the text before it extends that delta: the client gets it at the same
        moment either way, in one chunk rather than many.
        """
        loads = orjson.loads
        plain = not self._raw  # raw output needs its marker parser on every piece of text
        for data in batch:
            if data == b"[DONE]":
                continue
            chunk = loads(data)
            choices = chunk.get("choices")
            if plain and type(choices) is list and len(choices) == 1 and not chunk.get("usage"):
                choice = choices[0]
                delta = choice.get("delta")
                if (
                    type(delta) is dict
                    and not choice.get("index")
                    and not choice.get("finish_reason")
                    and not choice.get("usage")
                    and not chunk.get("error")
                    and _SLOW_DELTA_KEYS.isdisjoint(delta)
                ):
                    content = delta.get("content")
                    if content and type(content) is str:
                        last = self._text
                        if last is not None and events and events[-1] is last:
                            last.content += content  # type: ignore[operator]
                        else:
                            self._text = Delta(0, content)
                            events.append(self._text)
                    continue
            self.feed(chunk, events)

    def feed(self, chunk: dict[str, Any], events: list[Event]) -> None:
        """Appends one parsed chunk's events to `events`, in any provider's dialect."""
        if chunk.get("error"):
            self._raise(chunk["error"])
        for choice in chunk.get("choices") or ():
            index = choice.get("index") or 0
            if type(index) is not int:
                index = int(index)
            state = self._choices.get(index) or self._state(index)
            delta = choice.get("delta") or choice.get("message")
            if delta is None and "text" in choice:
                delta = {"content": choice["text"]}  # the legacy completions API's chunks
            if delta:
                self._delta(index, state, delta, events)
            if choice.get("usage"):  # Moonshot puts usage inside the final choice
                self.usage = usage_from(choice["usage"])
            native = choice.get("finish_reason")
            if native:
                self._finish(index, state, native, events, choice.get("stop_reason"))
        if chunk.get("usage"):
            self.usage = usage_from(chunk["usage"])

    def _raise(self, error: Any) -> None:
        message = error.get("message", "upstream error") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        raise UpstreamError(
            502,
            f"{self._provider}: {message}",
            provider=self._provider,
            retryable=True,
            upstream_status=code if isinstance(code, int) else None,
        )

    def _finish(
        self, index: int, state: _ChoiceState, native: str, events: list[Event], stop: Any = None
    ) -> None:
        state.finish = native
        if state.parser is not None:
            self._parsed(index, state, state.parser.flush(), events)
        reason = normalize_finish(native)
        if reason == "stop" and state.parser is not None and state.parser.saw_tool_calls:
            reason = "tool_calls"
        # vLLM and SGLang name the stop string that matched in `stop_reason` (a token id is an int).
        matched = stop if isinstance(stop, str) and reason == "stop" else None
        events.append(Finish(index=index, reason=reason, native_reason=native, stop_sequence=matched))
        self.finished = True

    def _delta(self, index: int, state: _ChoiceState, delta: dict[str, Any], events: list[Event]) -> None:
        reasoning = None if _REASONING_KEYS.isdisjoint(delta) else _reasoning_text(delta)
        if reasoning and not self._exclude:
            events.append(Delta(index=index, reasoning=reasoning))
        if reasoning and state.parser is not None:
            # The server separated reasoning itself: its content holds no reasoning to look for.
            state.parser.mode = "content" if state.parser.mode == REASONING else state.parser.mode
        calls = delta.get("tool_calls")
        if calls:
            state.native_tool_calls = True
            out = []
            for position, call in enumerate(calls):
                fn = call.get("function") or {}
                # A streamed call says its index; a whole message's calls are in order.
                if call.get("index") is not None:
                    position = int(call["index"])
                state.next_tool_index = max(state.next_tool_index, position + 1)
                out.append(
                    ToolCallDelta(
                        index=position,
                        id=call.get("id"),
                        name=fn.get("name"),
                        arguments=fn.get("arguments") or "",
                    )
                )
            events.append(Delta(index=index, tool_calls=out))
        content = delta.get("content")
        if content and isinstance(content, str):
            if state.parser is None:
                events.append(Delta(index=index, content=content))
            else:
                self._parsed(index, state, state.parser.feed(content), events)

    def _parsed(
        self, index: int, state: _ChoiceState, parts: list[tuple[str, str | RawToolCall]], events: list[Event]
    ) -> None:
        for kind, value in parts:
            if isinstance(value, RawToolCall):
                call = ToolCallDelta(
                    index=state.next_tool_index, id=value.id, name=value.name, arguments=value.arguments
                )
                state.next_tool_index += 1
                events.append(Delta(index=index, tool_calls=[call]))
            elif kind == REASONING:
                if not self._exclude:
                    events.append(Delta(index=index, reasoning=value))
            elif kind != TOOLS:
                events.append(Delta(index=index, content=value))

    def done(self, model: str) -> Done:
        return Done(usage=self.usage or Usage(), provider=self._provider, model=model)
