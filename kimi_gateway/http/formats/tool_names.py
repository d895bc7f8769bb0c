"""Responses tools as Kimi takes them: flat function tools.

Codex groups each MCP server's tools in a `namespace` tool (`mcp__<server>__`), and its calls come back with
`name` and `namespace` apart. Kimi (as every chat-completions backend) knows only function names: the
namespaced ones are flattened to unique names for the model and split again in the reply. The Responses
`web_search` tool (Codex sends it by default) is run by the gateway (core/toolloop.py) where a search
backend is set up; where none is, it is left out, as `tool_search` always is, the response saying so in
`X-Gateway-Adapted`, unless the request asks for strictness (`provider.require_parameters`), which gets a
400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimi_gateway.errors import invalid_request
from kimi_gateway.schema.server_tools import ServerTool, mcp_tool

# Hosted tools a client sends by default: run by the gateway where it can, else dropped rather than failing
# the request.
_SEARCH = frozenset(
    {"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"}
)
_DROPPABLE = _SEARCH | {"tool_search"}


def _file_search(tool: dict[str, Any], where: str) -> ServerTool:
    """`{"type": "file_search", "vector_store_ids": [...], "max_num_results": n}`: the stores are checked
    (the account's own) when the model searches them."""
    ids = tool.get("vector_store_ids")
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, str) and i for i in ids)
        or len(ids) > 16
    ):
        raise invalid_request(
            "file_search needs vector_store_ids: 1 to 16 ids", param=f"{where}.vector_store_ids"
        )
    count = tool.get("max_num_results")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50):
        raise invalid_request("max_num_results must be 1 to 50", param=f"{where}.max_num_results")
    return ServerTool("file_search", "file_search", max_results=count, vector_store_ids=tuple(ids))


def flat_name(namespace: str | None, name: str) -> str:
    if not namespace:
        return name
    return namespace + name if namespace.endswith("_") else f"{namespace}__{name}"


@dataclass(slots=True)
class ChatTools:
    functions: list[dict[str, Any]] = field(default_factory=list)  # chat tools
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    dropped: list[str] = field(default_factory=list)  # tool types left out
    server: list[ServerTool] = field(default_factory=list)  # run by the gateway

    @classmethod
    def of(cls, tools: list[dict[str, Any]] | None, strict: bool, searches: bool = False) -> ChatTools:
        """`searches`: this gateway has a web search backend."""
        out = cls()
        for i, tool in enumerate(tools or ()):
            kind = tool.get("type")
            if kind == "namespace" and isinstance(tool.get("name"), str):
                for j, inner in enumerate(tool.get("tools") or ()):
                    out._function(inner, f"tools[{i}].tools[{j}]", tool["name"])
            elif kind in _SEARCH and (searches or strict):
                given = tool.get("filters")
                filters: dict[str, Any] = given if isinstance(given, dict) else {}
                allowed = filters.get("allowed_domains") or ()
                blocked = filters.get("blocked_domains") or ()
                if not all(isinstance(d, str) for d in (*allowed, *blocked)):
                    raise invalid_request(
                        "domain filters must be lists of domains", param=f"tools[{i}].filters"
                    )
                out.server.append(
                    ServerTool("web_search", "web_search", None, tuple(allowed), tuple(blocked))
                )
            elif kind == "file_search":
                out.server.append(_file_search(tool, f"tools[{i}]"))
            elif kind == "mcp":
                out.server.append(mcp_tool(tool, f"tools[{i}]"))
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
