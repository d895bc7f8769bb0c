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
