"""The server-side tools as the model is offered them (functions), and the domain lists' matching. The
tools' data types (what a request offers, what a call returns, the loop's events) are the request
schema's (schema/server_tools.py): the formats render them.
"""

from __future__ import annotations

from typing import Any

from kimi_gateway.schema.server_tools import ServerTool, ToolKind

# The functions the model sees. Kimi's own `$web_search` builtin is Moonshot's: other providers are
# offered these plain functions (names stay the format's: `web_search`, `web_fetch`).
FUNCTIONS: dict[ToolKind, dict[str, Any]] = {
    "web_search": {
        "description": (
            "Search the web. Returns results with their title, URL and a snippet. Use it for anything "
            "recent or that you are not sure of, then cite the URLs you used."
        ),
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to search for."}},
            "required": ["query"],
        },
    },
    "file_search": {
        "description": (
            "Search the files the user uploaded (their text, by keywords). Returns the passages that match "
            "best, each with its file's name. Use it for anything the user's documents may answer."
        ),
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "Keywords to look for."}},
            "required": ["query"],
        },
    },
    "agents": {
        "description": (
            "Split the task among sub-agents that work on their parts in parallel, each with the same "
            "server-side tools as you (web search, fetch, ...) but unable to create agents. Give each a "
            "short name and complete, self-contained instructions: they see nothing of this conversation. "
            "Returns each agent's final answer (or why it has none); then write the answer yourself."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "description": "A short name for the agent."},
                            "instructions": {"type": "string", "description": "Its whole task."},
                        },
                        "required": ["name", "instructions"],
                    },
                }
            },
            "required": ["tasks"],
        },
    },
    "web_fetch": {
        "description": (
            "Fetch a web page or PDF by its URL and return its readable text. Use it to read a page "
            "found by a search, or one the user named."
        ),
        "parameters": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The page's full http(s) URL."}},
            "required": ["url"],
        },
    },
}


def function_tool(tool: ServerTool) -> dict[str, Any]:
    """The tool as the model is offered it: an OpenAI function."""
    spec = FUNCTIONS[tool.kind]
    return {"type": "function", "function": {"name": tool.name, **spec}}


def domain_matches(host: str, domains: tuple[str, ...]) -> bool:
    """Whether `host` is one of `domains` or under one (`example.com` matches `docs.example.com`). Entries
    may carry a scheme or a path: only their host counts."""
    host = host.lower().rstrip(".")
    for entry in domains:
        name = entry.lower().split("://", 1)[-1].split("/", 1)[0].rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        if host == name or host.endswith("." + name):
            return True
    return False
