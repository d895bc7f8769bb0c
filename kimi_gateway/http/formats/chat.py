"""OpenAI chat completions: the gateway's own shape, so nothing is translated."""

from __future__ import annotations

from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.core.generation import ResponseEvent, priced_usage, reasoning_details
from kimi_gateway.errors import APIError, invalid_request
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.formats.base import FormatContext, WireFormat
from kimi_gateway.http.replies import FastJSONResponse
from kimi_gateway.http.sse import DONE_LINE, KEEPALIVE, sse_line
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.providers.events import Delta, Done, Finish, ToolCallDelta
from kimi_gateway.schema.chat import (
    BuiltinFunction,
    ChatCompletionRequest,
    McpToolEntry,
    OpenRouterServerTool,
    Tool,
)
from kimi_gateway.schema.completion import ChunkBody, CompletionBody, chunk_body, completion_id
from kimi_gateway.schema.server_tools import (
    AgentsOutput,
    FetchedPage,
    FileResults,
    SearchResults,
    ServerTool,
    ToolError,
    ToolResult,
    ToolUse,
    mcp_tool,
    openrouter_tool,
    server_tool_usage,
    url_citations,
    web_plugin,
)


class ChatFormat(WireFormat):
    __slots__ = ("include_usage",)

    def __init__(self) -> None:
        self.include_usage = False

    async def parse(
        self, request: Request, context: FormatContext, account: str | None
    ) -> ChatCompletionRequest:
        body = await parse_body(request, ChatCompletionRequest, context.max_body_bytes)
        if body.raw_prompt is not None:
            raise APIError(
                400, "Unrecognized request argument supplied: raw_prompt", code="unknown_parameter"
            )
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.tools or body.__pydantic_extra__:  # where server tools may be named at all
            body.server_tools = _server_tools(body)
        return body

    def new_id(self) -> str:
        return completion_id()

    async def render(self, completion: CompletionBody, outcome: GenerationOutcome) -> Response:
        return FastJSONResponse(completion)

    def encoder(self, outcome: GenerationOutcome) -> ChatStream:
        return ChatStream(outcome, self.include_usage)


def _server_tools(body: ChatCompletionRequest) -> list[ServerTool]:
    """OpenRouter's server tools among the functions (taken out of `tools`), and its web plugin."""
    found: list[ServerTool] = []
    # Typed as functions only (what everything after this reads); here they may not be yet.
    tools: list[object] = list(body.tools or ())
    if any(type(t) is not Tool for t in tools):
        kept = []
        for i, tool in enumerate(tools):
            if isinstance(tool, OpenRouterServerTool):
                found.append(openrouter_tool(tool.model_dump(), f"tools[{i}]"))
            elif isinstance(tool, McpToolEntry):
                entry = tool.model_dump()
                if entry.setdefault("require_approval", "never") != "never":
                    raise invalid_request(
                        "MCP approvals need the Responses API: give require_approval 'never' here",
                        param=f"tools[{i}].require_approval",
                    )
                found.append(mcp_tool(entry, f"tools[{i}]"))
            elif isinstance(tool, BuiltinFunction):
                if tool.function.name != "$web_search":
                    raise invalid_request(
                        f"unknown builtin function '{tool.function.name}': only $web_search is run",
                        param=f"tools[{i}].function.name",
                    )
                body.builtin_tools = [tool.model_dump()]
            else:
                kept.append(tool)
        body.tools = cast(list[Tool], kept) or None
        if not kept:
            body.model_fields_set.discard("tools")  # so no `"tools": null` goes upstream
    plugins = (body.model_extra or {}).get("plugins")
    if plugins is not None:
        if not isinstance(plugins, list):
            raise invalid_request("plugins must be a list", param="plugins")
        for i, plugin in enumerate(plugins):
            if isinstance(plugin, dict) and plugin.get("id") == "web":
                found.append(web_plugin(plugin, f"plugins[{i}]"))
    return found


_MARK: dict[str, Any] = {"\x00": 0}  # stands in for the one choice, to cut a serialized chunk around it
_MARK_JSON = orjson.dumps(_MARK)


class ChatStream:
    """OpenAI's chunk sequence: role chunk, deltas, finish chunk, optional usage chunk, [DONE]."""

    __slots__ = ("_frame", "finishes", "include_usage", "outcome", "started", "text")

    keepalive = KEEPALIVE

    def __init__(self, outcome: GenerationOutcome, include_usage: bool) -> None:
        self.outcome, self.include_usage = outcome, include_usage
        self.started: set[int] = {0}
        self.finishes: list[Finish] = []
        self._frame: tuple[tuple[str, str | None], bytes, bytes] | None = None
        # The answer's text, kept only when server-side tools run: their citations point into it.
        self.text: list[str] = []

    def _chunk(self, choices: list[dict[str, Any]]) -> ChunkBody:
        outcome = self.outcome
        return chunk_body(outcome.id, outcome.created, outcome.model, choices, outcome.provider)

    def _chunk_event(self, choice: dict[str, Any]) -> bytes:
        """`sse_line(self._chunk([choice]))`, with what every chunk shares serialized once."""
        key = (self.outcome.model, self.outcome.provider)
        if self._frame is None or self._frame[0] != key:
            head, _, tail = sse_line(self._chunk([_MARK])).partition(_MARK_JSON)
            self._frame = (key, head, tail)
        _, head, tail = self._frame
        return head + orjson.dumps(choice) + tail

    def opening(self) -> list[bytes]:
        return [sse_line(self._chunk([_role_choice(0)]))]

    def encode(self, batch: list[ResponseEvent], out: list[bytes]) -> None:
        started = self.started
        for event in batch:
            if isinstance(event, Delta):
                out.append(self._chunk_event(_delta_choice(event, started)))
                if event.content and self.outcome.tools is not None and event.index == 0:
                    self.text.append(event.content)
            elif isinstance(event, Finish):
                # Held until usage is known: Moonshot's stream carries usage in the final choice.
                self.finishes.append(event)
            elif isinstance(event, Done):
                out.extend(self._closing_chunks(event))
            elif isinstance(event, ToolUse | ToolResult):
                # What the gateway's tools do, as it happens (the playground shows it); chat has no
                # field for it, and clients keep or ignore a delta's unknown fields.
                delta = {"server_tool": _activity(event)}
                out.append(
                    self._chunk_event({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})
                )

    def _closing_chunks(self, done: Done) -> list[bytes]:
        """The finish chunks, the last one carrying usage, and the usage-only chunk if the client asked.
        After server-side tools ran, the first finish chunk's delta carries the answer's `annotations`
        (url_citation), and usage the calls made."""
        usage = priced_usage(done.usage, self.outcome)
        tools = self.outcome.tools
        if tools is not None:
            usage["server_tool_use"] = server_tool_usage(tools)
        out = []
        finishes = self.finishes
        for i, finish in enumerate(finishes):
            delta: dict[str, Any] = {}
            if tools is not None and finish.index == 0:
                delta["annotations"] = url_citations("".join(self.text), tools.sources)
            choice = {
                "index": finish.index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish.reason,
                "native_finish_reason": finish.native_reason,
            }
            if i == len(finishes) - 1:
                choice["usage"] = usage
            out.append(sse_line(self._chunk([choice])))
        finishes.clear()
        if self.include_usage:
            body = self._chunk([])
            body["usage"] = usage
            out.append(sse_line(body))
        return out

    def failure(self, exc: APIError) -> bytes:
        """A final chunk carrying the error, as OpenRouter sends it."""
        body = self._chunk(
            [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "error"}]
        )
        error: dict[str, Any] = {"code": exc.status, "message": exc.message}
        if exc.metadata:
            error["metadata"] = exc.metadata
        return sse_line({**body, "error": error})

    async def closing(self, failed: bool) -> bytes:
        return DONE_LINE


def _activity(event: ToolUse | ToolResult) -> dict[str, Any]:
    """A server-side call or its result, in brief: what it asked, what it found."""
    tool = event.tool
    shown: dict[str, Any] = {"id": event.id, "type": tool.kind, "name": tool.mcp_tool or tool.name}
    if isinstance(event, ToolUse):
        shown["status"] = "running"
        shown["input"] = event.input
        return shown
    output = event.output
    shown["status"] = "failed" if isinstance(output, ToolError) else "done"
    if isinstance(output, ToolError):
        shown["error"] = output.message
    elif isinstance(output, SearchResults):
        shown["results"] = [{"title": s.title, "url": s.url} for s in output.sources]
    elif isinstance(output, FetchedPage):
        shown["results"] = [{"title": output.title or output.url, "url": output.url}]
    elif isinstance(output, FileResults):
        shown["results"] = [{"title": h.filename, "file_id": h.file_id} for h in output.hits]
    elif isinstance(output, AgentsOutput):
        shown["run_id"] = output.run_id
        shown["agents"] = [
            {"name": r.name, "status": r.status, **({"error": r.error} if r.error else {})}
            for r in output.reports
        ]
    return shown


def _role_choice(index: int) -> dict[str, Any]:
    return {
        "index": index,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }


def _tool_calls(calls: list[ToolCallDelta]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"index": call.index, "function": {"arguments": call.arguments}}
        if call.id is not None:
            item["id"] = call.id
            item["type"] = "function"
        if call.name is not None:
            item["function"]["name"] = call.name
        out.append(item)
    return out


def _delta_choice(event: Delta, started: set[int]) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if event.index not in started:
        started.add(event.index)
        delta["role"] = "assistant"
    if event.content is not None:
        delta["content"] = event.content
    if event.reasoning is not None:
        # OpenRouter's names, and Moonshot's for clients written against it.
        delta["reasoning"] = event.reasoning
        delta["reasoning_content"] = event.reasoning
        delta["reasoning_details"] = reasoning_details(event.reasoning)
    if event.tool_calls:
        delta["tool_calls"] = _tool_calls(event.tool_calls)
    return {"index": event.index, "delta": delta, "logprobs": None, "finish_reason": None}
