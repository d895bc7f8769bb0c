"""Anthropic's Messages API (POST /v1/messages), as the `anthropic` SDK and Claude Code speak it.

The request becomes the gateway's chat request here; the response is rendered by `anthropic_events`.
Where Anthropic's format has no counterpart the translation says what it does instead:
- `temperature` is scaled by 0.6, as Moonshot's own Anthropic endpoint does, so a client moved from there
  to here samples the same way;
- a trailing assistant turn (Anthropic's prefill) becomes Moonshot's Partial Mode: the reply continues it;
- `thinking` blocks given back become the turn's reasoning (Kimi refuses a thinking tool-call turn without
  it); `redacted_thinking` has no counterpart and is dropped;
- `cache_control` markers are accepted and dropped (Kimi's providers cache prefixes on their own), and name
  the conversation for prefix-cache stickiness, as does Claude Code's session header;
- `budget_tokens` is not passed on: Kimi's switch is on or off.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.errors import APIError, invalid_request
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.formats.anthropic_events import MessageStream, error_response, message_body, replayed
from kimi_gateway.http.formats.base import FormatContext, WireFormat
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.http.validation import anthropic_validation_error, validation_error
from kimi_gateway.ids import new_id
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.schema import anthropic as a
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.schema.server_tools import ServerTool, mcp_function_name, mcp_tool

# Moonshot's Anthropic endpoint samples at 0.6 x the requested temperature (Kimi-K2's README, §4).
TEMPERATURE_SCALE = 0.6
PATHS = ("/v1/messages", "/anthropic/v1/messages")


class MessagesFormat(WireFormat):
    __slots__ = ("request",)

    request: a.MessagesRequest

    async def parse(
        self, request: Request, context: FormatContext, account: str | None
    ) -> ChatCompletionRequest:
        self.request = await parse_body(
            request, a.MessagesRequest, context.max_body_bytes, anthropic_validation_error
        )
        return to_chat(self.request, _session(request))

    def new_id(self) -> str:
        return new_id("msg_")

    async def render(self, completion: CompletionBody, meta: GenerationOutcome) -> Response:
        return ORJSONResponse(message_body(completion, meta.stop_sequence, meta.tools))

    def encoder(self, meta: GenerationOutcome) -> MessageStream:
        return MessageStream(meta)

    def error(self, exc: APIError) -> Response:
        return error_response(exc)


def _session(request: Request) -> str | None:
    session = request.headers.get("x-claude-code-session-id")
    return session[:256] if session else None


# ---- the request, in chat form -------------------------------------------------------------------------


def to_chat(request: a.Prompt, session: str | None = None) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": request.model, "messages": _messages(request)}
    if request.provider is not None:
        body["provider"] = request.provider
    if request.models is not None:
        body["models"] = request.models
    if request.agent is not None:
        body["agent"] = request.agent
    server: list[ServerTool] = []
    if isinstance(request, a.MessagesRequest):
        server.extend(_mcp_servers(request))
    if request.tools:
        functions = []
        for i, tool in enumerate(request.tools):
            found = _server_tool(tool, i)
            if found is _ALREADY:
                continue  # an MCP toolset: read with `mcp_servers`
            if found is not None:
                server.append(found)
            else:
                functions.append(_tool(tool, i))
        if functions:
            body["tools"] = functions
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = _tool_choice(choice)
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    if request.thinking is not None:
        body["thinking"] = {"type": "disabled" if request.thinking.type == "disabled" else "enabled"}
    if isinstance(request, a.MessagesRequest):
        body["max_tokens"] = request.max_tokens
        body["stream"] = request.stream
        if request.temperature is not None:
            body["temperature"] = round(request.temperature * TEMPERATURE_SCALE, 6)
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.top_k is not None:
            body["top_k"] = request.top_k
        if request.stop_sequences:
            body["stop"] = request.stop_sequences
        if request.metadata is not None and request.metadata.user_id:
            body["user"] = request.metadata.user_id
        fmt = request.output_config.format if request.output_config is not None else None
        fmt = fmt or request.output_format
        if fmt is not None:
            # The answer's text block holds the JSON, as Anthropic's does.
            spec = {"name": "output", "schema": fmt.schema_, "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
    if session:
        body["session_id"] = session
    else:
        cached = _cached_prefix_key(request)
        if cached:
            body["prompt_cache_key"] = cached
    try:
        chat = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    chat.server_tools = server
    return chat


def _cached_prefix_key(request: a.Prompt) -> str | None:
    """The client marked a prefix for caching: its system prompt and tools name the conversation."""
    system = request.system
    marked = isinstance(system, list) and any(b.cache_control for b in system)
    marked = marked or any(t.cache_control for t in request.tools or ())
    if not marked:
        return None
    digest = hashlib.blake2b(digest_size=12)
    digest.update(orjson.dumps(_system_text(system)))
    digest.update(orjson.dumps([t.name for t in request.tools or ()]))
    return "cc-" + digest.hexdigest()


# Claude Code opens its system prompt with a line naming its version and a value that changes with every
# request: sent on, it would make every prompt's first bytes new and defeat the providers' prefix caches.
_BILLING_LINE = "x-anthropic-billing-header:"


def _system_text(system: str | list[a.TextBlock] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system if not block.text.startswith(_BILLING_LINE))


def _messages(request: a.Prompt) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _system_text(request.system)
    if system:
        out.append({"role": "system", "content": system})
    last = len(request.messages) - 1
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if message.role == "user":
            out.extend(_user_turn(message.content, where))
            continue
        if message.role == "system":
            # A system message in the conversation (Claude Code sends them): one in chat too, in place.
            out.append({"role": "system", "content": _system_content(message.content, where)})
            continue
        turns = _assistant_turns(message.content, where, prefill=i == last)
        turn = turns[0]
        if out and out[-1]["role"] == "assistant" and turn["role"] == "assistant":
            _merge(
                out[-1], turn
            )  # Anthropic merges adjacent turns of one role: [thinking, text] + [tool_use]
        else:
            out.append(turn)
        out.extend(turns[1:])
    return out


def _system_content(content: str | list[a.ContentBlock], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, a.TextBlock):
            raise invalid_request(
                f"{where}.content.{j}: a system message holds text blocks only, not '{block.type}'",
                param=f"{where}.content[{j}]",
            )
        texts.append(block.text)
    return "\n\n".join(texts)


def _merge(into: dict[str, Any], turn: dict[str, Any]) -> None:
    if turn.get("content"):
        into["content"] = (into.get("content") or "") + turn["content"]
    if turn.get("reasoning_content"):
        into["reasoning_content"] = (into.get("reasoning_content") or "") + turn["reasoning_content"]
    if turn.get("tool_calls"):
        into.setdefault("tool_calls", []).extend(turn["tool_calls"])
    into["partial"] = bool(turn.get("partial")) and not into.get("tool_calls")


def _user_turn(content: str | list[a.ContentBlock], where: str) -> list[dict[str, Any]]:
    """Tool results first (each answers a call of the turn before), then the user's own blocks."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(block, a.ToolResultBlock):
            text, images = _tool_result(block, at)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts.extend(images)  # a tool message holds text only: its images follow as the user's
        elif isinstance(block, a.TextBlock | a.ImageBlock | a.DocumentBlock):
            parts.append(_part(block, at))
        else:
            raise invalid_request(f"a user turn cannot hold a '{block.type}' block", param=at)
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _tool_result(block: a.ToolResultBlock, where: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.content
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for k, item in enumerate(content):
            if isinstance(item, a.TextBlock):
                texts.append(item.text)
            else:
                images.append(_part(item, f"{where}.content[{k}]"))
        text = "\n".join(texts)
    # Chat has no error flag on a tool message: the model reads it in the text.
    return (f"Error: {text}" if block.is_error else text), images


def _part(block: a.TextBlock | a.ImageBlock | a.DocumentBlock, where: str) -> dict[str, Any]:
    if isinstance(block, a.TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, a.ImageBlock):
        image = block.source
        if isinstance(image, a.Base64Source):
            url = f"data:{image.media_type};base64,{image.data}"
            return {"type": "image_url", "image_url": {"url": url}}
        if isinstance(image, a.URLSource):
            return {"type": "image_url", "image_url": {"url": image.url}}
        raise invalid_request(
            "images by file_id are not supported: send them as base64 or a URL", param=f"{where}.source"
        )
    source = block.source
    title = block.title or "document"
    if isinstance(source, a.TextSource | a.ContentSource):
        inner = source.data if isinstance(source, a.TextSource) else source.content
        text = inner if isinstance(inner, str) else "\n".join(b.text for b in inner)
        return {"type": "text", "text": f"{block.title}\n\n{text}" if block.title else text}
    if isinstance(source, a.Base64Source):
        data = f"data:{source.media_type};base64,{source.data}"
        return {"type": "file", "file": {"filename": title, "file_data": data}}
    if isinstance(source, a.FileSource):  # an id from this gateway's POST /v1/files
        return {"type": "file", "file": {"filename": title, "file_id": source.file_id}}
    raise invalid_request(
        "documents by URL are not supported: send the PDF as base64, or upload it with POST /v1/files "
        "and send its file_id",
        param=f"{where}.source",
    )


def _assistant_turns(content: str | list[a.ContentBlock], where: str, prefill: bool) -> list[dict[str, Any]]:
    """An assistant message in chat form. One that holds server-side tool calls given back (web search,
    web fetch) becomes the turns the tool loop made: the call, its result as a tool message, the rest."""
    if isinstance(content, str) or not any(isinstance(b, a.ServerToolResultBlock) for b in content):
        return [_assistant_turn(content, where, prefill)]
    turns: list[dict[str, Any]] = []
    pending: list[a.ContentBlock] = []
    for block in content:
        if isinstance(block, a.ServerToolResultBlock):
            turns.append(_assistant_turn(pending, where, prefill=False))
            turns.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": replayed(block)})
            pending = []
        else:
            pending.append(block)
    if pending:
        turns.append(_assistant_turn(pending, where, prefill))
    return turns


def _assistant_turn(content: str | list[a.ContentBlock], where: str, prefill: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if isinstance(content, str):
        message["content"] = content
        message["partial"] = prefill
        return message
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        if isinstance(block, a.TextBlock):
            texts.append(block.text)
        elif isinstance(block, a.ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, a.ToolUseBlock | a.ServerToolUseBlock):
            name = block.name
            if isinstance(block, a.ServerToolUseBlock) and block.type == "mcp_tool_use":
                name = mcp_function_name(block.server_name or "", block.name)  # as the model knows it
            function = {"name": name, "arguments": orjson.dumps(block.input).decode()}
            calls.append({"id": block.id, "type": "function", "function": function})
        elif not isinstance(block, a.RedactedThinkingBlock):
            raise invalid_request(
                f"an assistant turn cannot hold a '{block.type}' block", param=f"{where}.content[{j}]"
            )
    message["content"] = "".join(texts) if texts or not calls else None
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    elif prefill and texts:
        message["partial"] = True
    return message


_ALREADY = ServerTool("mcp", "")  # marks a tool read elsewhere (an MCP toolset)


def _mcp_servers(request: a.MessagesRequest) -> list[ServerTool]:
    """The MCP connector: `mcp_servers` (URL and token), each with the `mcp_toolset` that names it (which
    tools are on); a toolset naming no listed server names one of the operator's. No approvals: the
    connector runs the calls, as Anthropic's does."""
    toolsets = {
        t.mcp_server_name: t for t in request.tools or () if t.type == "mcp_toolset" and t.mcp_server_name
    }
    out = []
    listed = set()
    for i, definition in enumerate(request.mcp_servers or ()):
        listed.add(definition.name)
        entry: dict[str, Any] = {
            "server_label": definition.name,
            "server_url": definition.url,
            "require_approval": "never",
        }
        if definition.authorization_token:
            entry["authorization"] = definition.authorization_token
        toolset = toolsets.get(definition.name)
        if toolset is not None and toolset.configs is not None:
            default_on = (toolset.default_config or {}).get("enabled", True)
            if not default_on:
                entry["allowed_tools"] = [n for n, c in toolset.configs.items() if c.get("enabled")]
        out.append(mcp_tool(entry, f"mcp_servers.{i}"))
    for name in toolsets:
        if name not in listed:
            out.append(mcp_tool({"server_label": name, "require_approval": "never"}, "tools"))
    return out


def _server_tool(tool: a.Tool, i: int) -> ServerTool | None:
    """Anthropic's web search and web fetch (any dated version), which the gateway runs, and MCP
    toolsets (taken with `mcp_servers`); None for a client tool."""
    if tool.type == "mcp_toolset":
        return _ALREADY
    kind = tool.type or ""
    if not kind.startswith(("web_search_", "web_fetch_")):
        return None
    if tool.allowed_domains and tool.blocked_domains:
        raise invalid_request(
            "use either allowed_domains or blocked_domains, not both", param=f"tools.{i}.allowed_domains"
        )
    return ServerTool(
        "web_search" if kind.startswith("web_search_") else "web_fetch",
        tool.name,
        max_uses=tool.max_uses,
        allowed_domains=tuple(tool.allowed_domains or ()),
        blocked_domains=tuple(tool.blocked_domains or ()),
        citations=kind.startswith("web_search_") or bool((tool.citations or {}).get("enabled")),
    )


def _tool(tool: a.Tool, i: int) -> dict[str, Any]:
    if tool.input_schema is None or tool.type not in (None, "custom"):
        raise invalid_request(
            f"the tool '{tool.name}' is one of Anthropic's server tools ({tool.type}), which Kimi models do "
            "not have: give it as a client tool with an input_schema",
            param=f"tools[{i}]",
            code="unsupported_tool",
        )
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: a.ToolChoice) -> Any:
    if choice.type == "tool":
        if not choice.name:
            raise invalid_request("tool_choice of type 'tool' needs a 'name'", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]
