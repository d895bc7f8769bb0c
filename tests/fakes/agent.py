"""A scripted model that plays a coding agent: it calls the tools the client offers, one step at a time,
decided from the conversation it is sent (not from a fixed order), so that a real agent client's own
side requests (titles, summaries, quota checks) get plain answers and its task goes on.

The task: write a file, then run a shell command that reads it, then answer. Tool names and argument shapes
follow each client's own tools: Claude Code's `Write` and `Bash`, Codex's `shell`/`exec_command` and
`apply_patch`, or any `write_file`/`run` pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.upstream import Answer

FINAL = "Done: the file is written and its size counted."


@dataclass
class CodingTask:
    file: str  # the file to write, relative to the client's working directory
    text: str  # what goes in it
    count_into: str  # the file the shell command writes the byte count to

    def __call__(self, body: dict[str, Any]) -> Answer:
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or ()}
        messages = body["messages"]
        results = [m for m in messages if m.get("role") == "tool"]
        if not tools or _role_of_last(messages) not in ("user", "tool"):
            return Answer(content="Kimi test session")  # a side request: a title, a summary
        steps = [self._write, self._shell]
        done = len(results)
        if done < len(steps):
            call = steps[done](tools)
            if call is not None:
                name, arguments = call
                return Answer(
                    reasoning=f"Step {done + 1}: call {name}.",
                    content="",
                    tool_calls=[(name, json.dumps(arguments))],
                    finish="tool_calls",
                )
        return Answer(reasoning="All steps are done.", content=FINAL)

    def _write(self, tools: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if "Write" in tools:  # Claude Code
            return "Write", {"file_path": self.file, "content": self.text}
        command = f"printf '%s' '{self.text}' > {self.file}"
        return self._shell_call(tools, command)

    def _shell(self, tools: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        return self._shell_call(tools, f"wc -c < {self.file} > {self.count_into}")

    @staticmethod
    def _shell_call(tools: dict[str, Any], command: str) -> tuple[str, dict[str, Any]] | None:
        if "Bash" in tools:  # Claude Code
            return "Bash", {"command": command, "description": "Run the step"}
        if "exec_command" in tools:  # Codex
            return "exec_command", {"cmd": command}
        if "shell" in tools:  # Codex, older
            return "shell", {"command": ["bash", "-lc", command]}
        return None


def _role_of_last(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "system":
            return str(message.get("role"))
    return ""


@dataclass
class ToolCaller:
    """Plays an agent model for frameworks: each offered tool not yet called in the conversation is called
    once (in the order offered), with arguments made from its schema; then the answer. Asked for JSON
    (`response_format` json_schema), the answer is a value of the schema."""

    answer: str = "It is sunny in Paris."

    def __call__(self, body: dict[str, Any]) -> Answer:
        called = {
            call["function"]["name"]
            for message in body["messages"]
            if message.get("role") == "assistant"
            for call in message.get("tool_calls") or ()
        }
        for tool in body.get("tools") or ():
            function = tool["function"]
            if function["name"] not in called:
                arguments = example(function.get("parameters") or {"type": "object"})
                return Answer(
                    reasoning=f"I will call {function['name']}.",
                    content="",
                    tool_calls=[(function["name"], json.dumps(arguments))],
                    finish="tool_calls",
                )
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt["json_schema"].get("schema") or {"type": "object"}
            return Answer(reasoning="Now the JSON.", content=json.dumps(example(schema, schema)))
        if fmt.get("type") == "json_object":
            # The schema, if any, is in the prompt (as the AI SDK's openai-compatible provider puts it).
            # With no schema given, what a model asked for "the weather as JSON" writes.
            schema = _schema_in(body["messages"])
            value = example(schema, schema) if schema else {"city": "Paris", "celsius": 21}
            return Answer(reasoning="Now the JSON.", content=json.dumps(value))
        return Answer(reasoning="I have what I need.", content=self.answer)


def _schema_in(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first JSON schema written into a message's text."""
    decoder = json.JSONDecoder()
    for message in messages:
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content or ()]
        for text in texts:
            start = text.find("{")
            while start >= 0:
                try:
                    found, _ = decoder.raw_decode(text, start)
                except ValueError:
                    found = None
                if isinstance(found, dict) and "properties" in found:
                    return found
                start = text.find("{", start + 1)
    return None


def example(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A value of `schema`, plausible enough for the frameworks' validation."""
    root = root if root is not None else schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example((root.get("$defs") or root.get("definitions") or {})[name], root)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example(schema[key][0], root)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example(sub, root) for name, sub in properties.items()}
    if kind == "array":
        return [example(schema.get("items") or {"type": "string"}, root)]
    if kind == "integer":
        return 21
    if kind == "number":
        return 21.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "Paris"
