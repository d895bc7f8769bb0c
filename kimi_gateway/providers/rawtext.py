"""Parsing raw Kimi model output, for vLLM and SGLang servers started without reasoning or tool parsers.

Reasoning comes as `<think>…</think>` (K2 family) or `◁think▷…◁/think▷` (Kimi-VL Thinking); tool calls as
the K2 section tokens. The parser is incremental: a marker split across chunks still parses, and no marker
text reaches `content`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = ("<think>", "◁think▷")
THINK_CLOSE = ("</think>", "◁/think▷")
SECTION_BEGIN = ("<|tool_calls_section_begin|>", "<|tool_call_section_begin|>")
SECTION_END = ("<|tool_calls_section_end|>", "<|tool_call_section_end|>")
CALL_END = "<|tool_call_end|>"

_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(?P<id>[^<]+:\d+)\s*<\|tool_call_argument_begin\|>\s*(?P<args>.*?)\s*<\|tool_call_end\|>",
    re.DOTALL,
)

CONTENT, REASONING, TOOLS = "content", "reasoning", "tools"


@dataclass(slots=True)
class RawToolCall:
    id: str
    name: str
    arguments: str


def tool_name(call_id: str) -> str:
    # `functions.get_weather:0` -> `get_weather` (vLLM's reading of the id).
    return call_id.split(":")[0].split(".")[-1]


def _held_back(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that could be the start of one of `markers`."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:k]):
                best = k
                break
    return best


class RawOutputParser:
    def __init__(self, start_in_reasoning: bool = False) -> None:
        self.mode = REASONING if start_in_reasoning else CONTENT
        self._pending = ""
        self._at_start = True
        self.saw_tool_calls = False

    def feed(self, text: str) -> list[tuple[str, str | RawToolCall]]:
        self._pending += text
        out: list[tuple[str, str | RawToolCall]] = []
        while self._step(out):
            pass
        return out

    def flush(self) -> list[tuple[str, str | RawToolCall]]:
        out: list[tuple[str, str | RawToolCall]] = []
        if self._pending and self.mode != TOOLS:
            out.append((self.mode, self._pending))
        self._pending = ""
        return out

    def _step(self, out: list[tuple[str, str | RawToolCall]]) -> bool:
        """Consume what can be decided now; True if another step may make progress."""
        text = self._pending
        if not text:
            return False
        if self.mode == TOOLS:
            return self._tools(out)
        if self._at_start and self.mode == REASONING:
            # A reasoning model's template may or may not have printed the opening tag itself.
            for opener in THINK_OPEN:
                if opener.startswith(text) and text != opener:
                    return False
                if text.startswith(opener):
                    text = self._pending = text[len(opener) :]
                    break
        self._at_start = False
        ends = (THINK_OPEN + SECTION_BEGIN) if self.mode == CONTENT else (THINK_CLOSE + SECTION_BEGIN)
        first, marker = -1, ""
        for candidate in ends:
            at = text.find(candidate)
            if at != -1 and (first == -1 or at < first):
                first, marker = at, candidate
        if first == -1:
            hold = _held_back(text, ends)
            emit = text[: len(text) - hold] if hold else text
            if emit:
                out.append((self.mode, emit))
            self._pending = text[len(emit) :]
            return False
        if first:
            out.append((self.mode, text[:first]))
        self._pending = text[first + len(marker) :]
        if marker in SECTION_BEGIN:
            self.mode = TOOLS
            self.saw_tool_calls = True
        elif marker in THINK_OPEN:
            self.mode = REASONING
        else:
            self.mode = CONTENT
        return True

    def _tools(self, out: list[tuple[str, str | RawToolCall]]) -> bool:
        text = self._pending
        end_at, end_marker = -1, ""
        for candidate in SECTION_END:
            at = text.find(candidate)
            if at != -1:
                end_at, end_marker = at, candidate
                break
        section = text if end_at == -1 else text[:end_at]
        consumed = 0
        for match in _CALL.finditer(section):
            call_id = match.group("id").strip()
            out.append((TOOLS, RawToolCall(call_id, tool_name(call_id), match.group("args"))))
            consumed = match.end()
        if end_at == -1:
            self._pending = text[consumed:]
            return False
        self._pending = text[end_at + len(end_marker) :]
        self.mode = CONTENT
        return True
