"""Responses tools as Kimi takes them: flat function tools.

Codex groups each MCP server's tools in a `namespace` tool (`mcp__<server>__`), and its calls come back with
`name` and `namespace` apart. Kimi (as every chat-completions backend) knows only function names: the
namespaced ones are flattened to unique names for the model and split again in the reply. Tools the gateway
does not run yet (the Responses `web_search` Codex sends by default, `tool_search`) are left out, the
response saying so in `X-Gateway-Adapted`, unless the request asks for strictness
(`provider.require_parameters`), which gets the 400 it used to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimi_gateway.errors import invalid_request

# Hosted tools a client sends by default that are not served yet: dropped rather than failing the request.
_DROPPABLE = frozenset({"web_search", "web_search_preview", "tool_search"})


def flat_name(namespace: str | None, name: str) -> str:
    if not namespace:
        return name
    return namespace + name if namespace.endswith("_") else f"{namespace}__{name}"


@dataclass(slots=True)
class ChatTools:
    functions: list[dict[str, Any]] = field(default_factory=list)  # chat tools
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    dropped: list[str] = field(default_factory=list)  # tool types left out

    @classmethod
    def of(cls, tools: list[dict[str, Any]] | None, strict: bool) -> ChatTools:
        out = cls()
        for i, tool in enumerate(tools or ()):
            kind = tool.get("type")
            if kind == "namespace" and isinstance(tool.get("name"), str):
                for j, inner in enumerate(tool.get("tools") or ()):
                    out._function(inner, f"tools[{i}].tools[{j}]", tool["name"])
            elif kind in _DROPPABLE and not strict:
                out.dropped.append(str(kind))
            else:
                out._function(tool, f"tools[{i}]", None)
        return out

    def _function(self, tool: dict[str, Any], where: str, namespace: str | None) -> None:
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(tool.get("name"), str)
        ):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise invalid_request(
                f"only function tools are supported, not '{kind}': Kimi models have no built-in tools here",
                param=where,
                code="unsupported_tool",
            )
        name = flat_name(namespace, tool["name"])
        if any(f["function"]["name"] == name for f in self.functions):
            raise invalid_request(
                f"two tools are named '{name}' once namespaces are flattened for the model: rename one",
                param=where,
                code="duplicate_tool_name",
            )
        if namespace:
            self.namespaced[name] = (namespace, tool["name"])
        function = {k: tool[k] for k in ("description", "parameters", "strict") if tool.get(k) is not None}
        self.functions.append({"type": "function", "function": {"name": name, **function}})

    def call_fields(self, flat: str) -> dict[str, str]:
        """A call's `name` (and `namespace`) as the client named the tool."""
        found = self.namespaced.get(flat)
        return {"name": flat} if found is None else {"name": found[1], "namespace": found[0]}

    @property
    def adaptations(self) -> tuple[str, ...]:
        return tuple(f"dropped_tool:{kind}" for kind in dict.fromkeys(self.dropped))
