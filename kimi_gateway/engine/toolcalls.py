"""Tool calling on models without a native tool format.

The model is told about the tools in its system prompt and its output is constrained by a grammar to one
JSON envelope: `{"tool_calls": [{"name": ..., "arguments": {...}}]}`, or, when `tool_choice` is "auto",
`{"response": "..."}` for a plain answer. The same design as llama.cpp's generic tool-call handler.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from kimi_gateway.schema.chat import NamedToolChoice, Tool, ToolChoice

MODE_NONE = "none"
MODE_AUTO = "auto"  # the model chooses: a tool call or a plain answer
MODE_CALL = "call"  # the model must call a tool


NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def tool_mode(tools: list[Tool] | None, choice: ToolChoice | None) -> str:
    if not tools or choice == "none":
        return MODE_NONE
    if choice is None or choice == "auto":
        return MODE_AUTO
    return MODE_CALL


def selected_tools(tools: list[Tool], choice: ToolChoice | None) -> list[Tool]:
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return tools


def envelope_schema(tools: list[Tool], mode: str, parallel: bool) -> dict[str, Any]:
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                # No parameters (OpenAI allows it: a function of no arguments): exactly `{}`.
                "arguments": t.function.parameters or NO_ARGUMENTS,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    array: dict[str, Any] = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}}
    array["minItems"] = 1
    if not parallel:
        array["maxItems"] = 1
    call_envelope = {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if mode == MODE_CALL:
        return call_envelope
    answer_envelope = {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
        "additionalProperties": False,
    }
    return {"anyOf": [call_envelope, answer_envelope]}


def system_prompt(tools: list[Tool], mode: str) -> str:
    # Wording matters for small models: this phrasing was measured to make SmolLM2-135M call a relevant
    # tool under "auto" and answer in text once a tool result is in the conversation.
    specs = [
        {
            "name": t.function.name,
            "description": t.function.description or "",
            "parameters": t.function.parameters or {"type": "object", "properties": {}},
        }
        for t in tools
    ]
    lines = ["Tools:", orjson.dumps(specs).decode()]
    if mode == MODE_AUTO:
        lines.append(
            "Always prefer calling a tool, unless a tool result already answers the request. "
            'Reply with JSON: {"tool_calls": [{"name": ..., "arguments": {...}}]} to call a tool, '
            'or {"response": "..."} when no tool fits.'
        )
    else:
        lines.append('Call a tool. Reply with JSON: {"tool_calls": [{"name": ..., "arguments": {...}}]}')
    return "\n".join(lines)


def history_calls(tool_calls: list[tuple[str, str]]) -> str:
    """Render an assistant turn's earlier tool calls.

    As prose, not as the envelope: small models copy a previous envelope verbatim and loop on the same
    call, while prose lets them move on to answering from the tool result.
    """
    return " ".join(f"I called {name} with {arguments}." for name, arguments in tool_calls)


def tool_result(name: str, content: str) -> str:
    return f"{name} returned: {content}"


def history_answer(text: str) -> str:
    return orjson.dumps({"response": text}).decode()


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)


_KEY = re.compile(r'\s*\{\s*"(tool_calls|response)"\s*:\s*')


@dataclass
class EnvelopeParser:
    """Reads the envelope as it streams in.

    A `response` string is decoded and released as it arrives; tool calls are released once the envelope
    is complete (the grammar guarantees it parses, unless generation was cut short).
    """

    buffer: str = ""
    kind: str | None = None
    _pos: int = 0  # where the undecoded part of the response string starts
    _in_string: bool = False
    _done: bool = False
    _calls: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, text: str) -> str:
        """Add generated text; return any answer text that can be released now."""
        self.buffer += text
        if self.kind is None:
            match = _KEY.match(self.buffer)
            if match is None:
                return ""
            self.kind = match.group(1)
            self._pos = match.end()
        if self.kind != "response" or self._done:
            return ""
        return self._decode_string()

    def _decode_string(self) -> str:
        out: list[str] = []
        buf, i = self.buffer, self._pos
        if not self._in_string:
            while i < len(buf) and buf[i] in " \t\n":
                i += 1
            if i >= len(buf):
                self._pos = i
                return ""
            i += 1  # the opening quote
            self._in_string = True
        while i < len(buf):
            ch = buf[i]
            if ch == '"':
                self._done = True
                i += 1
                break
            if ch == "\\":
                if i + 1 >= len(buf):
                    break
                if buf[i + 1] == "u":
                    # A surrogate pair arrives as two escapes and must be decoded together.
                    width = 6
                    if i + 6 <= len(buf) and 0xD800 <= int(buf[i + 2 : i + 6], 16) < 0xDC00:
                        width = 12
                    if i + width > len(buf):
                        break
                    out.append(json.loads(f'"{buf[i : i + width]}"'))
                    i += width
                    continue
                out.append(json.loads(f'"{buf[i : i + 2]}"'))
                i += 2
                continue
            out.append(ch)
            i += 1
        self._pos = i
        return "".join(out)

    def tool_calls(self) -> list[dict[str, Any]] | None:
        """The calls, once the whole envelope is in; None when it is not a (complete) tool-call envelope."""
        if self.kind != "tool_calls":
            return None
        try:
            envelope = json.loads(self.buffer)
        except ValueError:
            return None
        calls = envelope.get("tool_calls") if isinstance(envelope, dict) else None
        if not isinstance(calls, list):
            return None
        return [c for c in calls if isinstance(c, dict) and isinstance(c.get("name"), str)]
