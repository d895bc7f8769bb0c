"""Checks on a request's tools, as Moonshot makes them: each violation is a 400 naming its path."""

from __future__ import annotations

import re

from kimi_gateway.errors import invalid_request
from kimi_gateway.schema.chat import AssistantMessage, ChatCompletionRequest, ResponseFormatJSONObject

MAX_TOOLS = 128
# OpenAI's rule; a model family may be stricter (`min_tool_name` in the catalog's rules).
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def check_partial(request: ChatCompletionRequest) -> None:
    """Partial Mode: only the last message may be a partial assistant message, and not with json_object."""
    last = len(request.messages) - 1
    for i, message in enumerate(request.messages):
        if isinstance(message, AssistantMessage) and message.partial:
            if i != last:
                raise invalid_request(
                    "only the last message may be a partial assistant message", param=f"messages[{i}].partial"
                )
            if isinstance(request.response_format, ResponseFormatJSONObject):
                raise invalid_request(
                    "partial mode cannot be combined with response_format json_object",
                    param="response_format",
                )


def check_tools(request: ChatCompletionRequest) -> None:
    tools = request.tools or []
    if request.tool_choice == "required" and not tools:
        raise invalid_request(
            "tool_choice 'required' needs at least one tool in 'tools'", param="tool_choice"
        )
    if len(tools) > MAX_TOOLS:
        raise invalid_request(f"too many tools: {len(tools)}, at most {MAX_TOOLS} are allowed", param="tools")
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        name = tool.function.name
        if not TOOL_NAME.match(name):
            raise invalid_request(
                f"invalid tool name '{name}': it must match ^[a-zA-Z0-9_-]{{1,64}}$",
                param=f"tools[{i}].function.name",
            )
        if name in seen:
            raise invalid_request(
                f"duplicate tool name '{name}' (also tools[{seen[name]}])", param=f"tools[{i}].function.name"
            )
        seen[name] = i
        parameters = tool.function.parameters
        if parameters is not None and parameters.get("type") != "object":
            raise invalid_request(
                "the root of a tool's parameters must be of type object",
                param=f"tools[{i}].function.parameters.type",
            )
