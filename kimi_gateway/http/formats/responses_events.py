"""The generation, as OpenAI's Responses API answers: one response object, or its semantic event stream.

The stream follows the order the `openai` SDK's stream helper relies on: `response.created` first; each
output item announced (`output_item.added`, and `content_part.added` for text) before its deltas; every
event numbered by `sequence_number` from 0; `response.completed` (or `.incomplete`) with the whole
response last. A failure after the status line is an `error` event and `response.failed`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from kimi_gateway.core.generation import ResponseEvent
from kimi_gateway.errors import APIError
from kimi_gateway.http.formats.item_ids import ItemIds
from kimi_gateway.http.formats.tool_names import ChatTools, flat_name
from kimi_gateway.ids import new_id
from kimi_gateway.money import usd
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.providers.events import Delta, Done
from kimi_gateway.schema import responses_api as r
from kimi_gateway.schema.server_tools import (
    AgentsOutput,
    ApprovalRequest,
    FileResults,
    McpListing,
    McpOutput,
    SearchResults,
    ToolError,
    ToolResult,
    ToolTally,
    ToolUse,
    mcp_function_name,
    url_citations,
)
from kimi_gateway.storage.responses import Kept, NewResponse, ResponseStore
from kimi_gateway.tools.runner import model_text

log = logging.getLogger(__name__)

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class Conversation:
    """One request's conversation: what it was given, what it continues, and where its answer is kept
    (with `store`): as the next link of the chain it continues (storage/responses.py)."""

    __slots__ = ("account", "ids", "items", "messages", "previous", "request", "store", "tools")

    def __init__(
        self,
        request: r.ResponsesRequest,
        items: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        previous: Kept | None,
        store: ResponseStore,
        account: str | None,
        tools: ChatTools,
        ids: ItemIds,
    ) -> None:
        self.request, self.items, self.messages, self.previous = request, items, messages, previous
        self.store, self.account, self.tools, self.ids = store, account, tools, ids

    async def keep(self, response: dict[str, Any]) -> None:
        """Store the response (with `store`). A failure to store is logged, not the client's: the answer
        was made and charged, so it is still sent; only a later `previous_response_id` will miss it."""
        if not self.request.store or response["status"] == "failed":
            return
        turn = [*self.messages, *server_turns(response["output"]), assistant_turn(response["output"])]
        try:
            await self.store.save(self.account, NewResponse(response, self.items, turn, self.previous))
        except Exception:
            log.warning(
                "a response could not be stored", exc_info=True, extra={"fields": {"id": response["id"]}}
            )


def server_turns(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls the gateway ran for the model (searches, MCP calls), as the turns it saw them in: kept
    with the conversation, so a later `previous_response_id` continues with them."""
    turns: list[dict[str, Any]] = []
    for item in output:
        kind = item["type"]
        if kind == "mcp_call":
            name = mcp_function_name(item.get("server_label") or "", item.get("name") or "")
            arguments, result = (
                item.get("arguments") or "{}",
                item.get("output") or f"Error: {item.get('error')}",
            )
        elif kind == "web_search_call":
            action = item.get("action") or {}
            name, arguments = "web_search", orjson.dumps({"query": action.get("query", "")}).decode()
            result = orjson.dumps(
                {"results": [{"url": s["url"]} for s in action.get("sources") or ()]}
            ).decode()
        elif kind == "file_search_call":
            name, arguments = (
                "file_search",
                orjson.dumps({"query": " ".join(item.get("queries") or ())}).decode(),
            )
            result = orjson.dumps({"results": item.get("results") or []}).decode()
        else:
            continue
        call = {"id": item["id"], "type": "function", "function": {"name": name, "arguments": arguments}}
        turns.append({"role": "assistant", "content": None, "tool_calls": [call]})
        turns.append({"role": "tool", "tool_call_id": item["id"], "content": str(result)})
    return turns


def assistant_turn(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The output items as one chat assistant message: what a later `previous_response_id` continues.
    Text and reasoning split by a call are joined, in order."""
    turn: dict[str, Any] = {"role": "assistant", "content": None}
    texts: list[str] = []
    reasoning: list[str] = []
    for item in output:
        if item["type"] == "reasoning":
            reasoning.extend(s["text"] for s in item["summary"])
        elif item["type"] == "message":
            texts.extend(part["text"] for part in item["content"])
        elif item["type"] == "function_call":
            call = {"name": flat_name(item.get("namespace"), item["name"]), "arguments": item["arguments"]}
            turn.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": call}
            )
    if texts:
        turn["content"] = "".join(texts)
    if reasoning:
        turn["reasoning_content"] = "".join(reasoning)
    return turn


def search_call(
    use: ToolUse, result: ToolResult | None, item_id: str, include: list[str] | None = None
) -> dict[str, Any]:
    """A server-side call as the Responses API's item: `file_search_call`, or `web_search_call` (a fetch
    as its `open_page` action). A file search's hits are listed with `include:
    ["file_search_call.results"]`. An MCP call is an `mcp_call`."""
    if use.tool.kind in ("mcp", "agents"):  # a swarm's create_agents: an mcp_call of the gateway's
        return mcp_call(use, result, item_id)
    if use.tool.kind == "file_search":
        status = "in_progress"
        if result is not None:
            status = "failed" if isinstance(result.output, ToolError) else "completed"
        item: dict[str, Any] = {
            "type": "file_search_call",
            "id": item_id,
            "status": status,
            "queries": [use.input.get("query", "")],
            "results": None,
        }
        listed = "file_search_call.results" in (include or ())
        if result is not None and isinstance(result.output, FileResults) and listed:
            item["results"] = [
                {
                    "file_id": h.file_id,
                    "filename": h.filename,
                    "score": h.score,
                    "text": h.text,
                    "attributes": h.attributes,
                }
                for h in result.output.hits
            ]
        return item
    if use.tool.kind == "web_fetch":
        action: dict[str, Any] = {"type": "open_page", "url": use.input.get("url")}
    else:
        action = {"type": "search", "query": use.input.get("query", "")}
    if result is None:
        status = "in_progress"
    else:
        status = "failed" if isinstance(result.output, ToolError) else "completed"
        if isinstance(result.output, SearchResults):
            action["sources"] = [{"type": "url", "url": s.url} for s in result.output.sources]
    return {"type": "web_search_call", "id": item_id, "status": status, "action": action}


def mcp_call(use: ToolUse, result: ToolResult | None, item_id: str) -> dict[str, Any]:
    server = use.tool.mcp
    label = server.label if server is not None else ("swarm" if use.tool.kind == "agents" else "")
    item: dict[str, Any] = {
        "type": "mcp_call",
        "id": item_id,
        "server_label": label,
        "name": use.tool.mcp_tool or use.tool.name,
        "arguments": orjson.dumps(use.input).decode(),
        "output": None,
        "error": None,
        "status": "in_progress" if result is None else "completed",
        "approval_request_id": None,
    }
    if result is not None:
        output = result.output
        if isinstance(output, AgentsOutput):
            item["output"] = model_text(output, 1 << 30)
        elif isinstance(output, McpOutput) and not output.is_error:
            item["output"] = output.text
        elif isinstance(output, McpOutput):
            item["error"] = {
                "type": "mcp_tool_execution_error",
                "content": [{"type": "text", "text": output.text}],
            }
            item["status"] = "failed"
        else:
            message = output.message if isinstance(output, ToolError) else "failed"
            item["error"] = {"type": "mcp_protocol_error", "code": -32000, "message": message}
            item["status"] = "failed"
    return item


def mcp_list_tools(listing: McpListing, item_id: str) -> dict[str, Any]:
    return {
        "type": "mcp_list_tools",
        "id": item_id,
        "server_label": listing.label,
        "tools": list(listing.tools),
        "error": listing.error,
    }


def approval_request(asked: ApprovalRequest) -> dict[str, Any]:
    server = asked.tool.mcp
    return {
        "type": "mcp_approval_request",
        "id": asked.id,
        "server_label": server.label if server is not None else "",
        "name": asked.tool.mcp_tool or asked.tool.name,
        "arguments": asked.arguments,
    }


_PREFIXES = {"file_search": "fs_", "mcp": "mcp_", "agents": "mcp_"}


def item_prefix(use: ToolUse) -> str:
    return _PREFIXES.get(use.tool.kind, "ws_")


def search_items(
    tools: ToolTally | None, ids: ItemIds, include: list[str] | None = None
) -> list[dict[str, Any]]:
    """Every server-side item of the response (tools listed, calls made, approvals asked), in order."""
    if tools is None:
        return []
    results = {item.id: item for item in tools.activity if isinstance(item, ToolResult)}
    out = []
    for item in tools.activity:
        if isinstance(item, ToolUse):
            out.append(search_call(item, results.get(item.id), ids.next(item_prefix(item)), include))
        elif isinstance(item, McpListing):
            out.append(mcp_list_tools(item, ids.next("mcpl_")))
        elif isinstance(item, ApprovalRequest):
            out.append(approval_request(item))
    return out


def flat_citations(text: str, tools: ToolTally | None) -> list[dict[str, Any]]:
    """The answer's sources as the Responses API's annotations: `url_citation` (flat) for the web, and
    `file_citation` for each file a search found (at the answer's mention of its name, else its end)."""
    if tools is None:
        return []
    out = [{"type": "url_citation", **c["url_citation"]} for c in url_citations(text, tools.sources)]
    seen: set[str] = set()
    for hit in tools.files:
        if hit.file_id in seen:
            continue
        seen.add(hit.file_id)
        at = text.find(hit.filename)
        out.append(
            {
                "type": "file_citation",
                "file_id": hit.file_id,
                "filename": hit.filename,
                "index": at + len(hit.filename) if at >= 0 else len(text),
            }
        )
    return out


def _shown_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The request's tools as the response echoes (and stores) them: an MCP tool's headers and token are
    the client's secrets for its server, never shown or kept."""
    shown = []
    for tool in tools or ():
        if tool.get("type") == "mcp" and ("headers" in tool or "authorization" in tool):
            tool = {k: v for k, v in tool.items() if k not in ("headers", "authorization")}
        shown.append(tool)
    return shown


def _usage(meta: GenerationOutcome) -> dict[str, Any] | None:
    used = meta.usage
    if used is None:
        return None
    usage: dict[str, Any] = {
        "input_tokens": used.prompt_tokens,
        "input_tokens_details": {"cached_tokens": used.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": used.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": used.reasoning_tokens},
        "total_tokens": used.prompt_tokens + used.completion_tokens,
    }
    if meta.cost_nano is not None:
        usage["cost"] = usd(meta.cost_nano)
    return usage


def response_object(
    request: r.ResponsesRequest,
    meta: GenerationOutcome,
    output: list[dict[str, Any]],
    status: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    incomplete = _INCOMPLETE.get(meta.finish_reason or "")
    if status is None:
        status = "incomplete" if incomplete else "completed"
    choice = request.tool_choice
    text = request.text.model_dump(mode="json", by_alias=True, exclude_none=True) if request.text else None
    return {
        "id": meta.id,
        "object": "response",
        "created_at": meta.created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete and status == "incomplete" else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning.model_dump(mode="json")
        if request.reasoning
        else {"effort": None, "summary": None},
        "store": request.store,
        "temperature": request.temperature,
        "text": text or {"format": {"type": "text"}},
        "tool_choice": (choice if isinstance(choice, str) or choice is None else choice.model_dump())
        or "auto",
        "tools": _shown_tools(request.tools),
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": _usage(meta) if status != "in_progress" else None,
        "user": request.user,
        "provider": meta.provider_name,
        **({"agent_run_id": meta.agent_run} if meta.agent_run is not None else {}),
    }


class ResponseStream:
    """Normalized events → the Responses API's semantic events."""

    keepalive = b": keep-alive\n\n"

    def __init__(self, meta: GenerationOutcome, conversation: Conversation) -> None:
        self.meta, self.conversation = meta, conversation
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item receiving deltas
        self.calls: dict[int, int] = {}  # tool call index -> output index
        self.searches: dict[str, tuple[int, ToolUse]] = {}  # server-side call id -> (output index, call)
        self.started = time.time()

    def _event(self, kind: str, **fields: Any) -> bytes:
        # Serialized at once: items keep changing, and each event carries the item as it is now.
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(self.conversation.request, self.meta, self.output, status, error)

    def opening(self) -> list[bytes]:
        response = self._response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _add(self, item: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        self.output.append(item)
        index = len(self.output) - 1
        announced = {**item, "status": "in_progress"} if item["type"] != "reasoning" else item
        out.append(self._event("response.output_item.added", output_index=index, item=announced))
        self.open = item
        return index

    def _close(self, out: list[bytes]) -> None:
        item = self.open
        if item is None:
            return
        self.open = None
        index = len(self.output) - 1
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            part = item["summary"][0]
            out.append(
                self._event("response.reasoning_summary_text.done", **at, summary_index=0, text=part["text"])
            )
            out.append(
                self._event("response.reasoning_summary_part.done", **at, summary_index=0, part=dict(part))
            )
        elif item["type"] == "message":
            part = item["content"][0]
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[]
                )
            )
            out.append(self._event("response.content_part.done", **at, content_index=0, part=dict(part)))
        out.append(self._event("response.output_item.done", output_index=index, item=item))

    def _cite(self, out: list[bytes]) -> None:
        """The answer's citations, once its text is whole: on its last message's text part."""
        item = self.open
        if self.meta.tools is None or item is None or item["type"] != "message":
            return
        part = item["content"][0]
        index = len(self.output) - 1
        for k, annotation in enumerate(flat_citations(part["text"], self.meta.tools)):
            part["annotations"].append(annotation)
            out.append(
                self._event(
                    "response.output_text.annotation.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    annotation_index=k,
                    annotation=annotation,
                )
            )

    def _finish_calls(self, out: list[bytes]) -> None:
        """Function calls end together, once the model is done (their arguments may still grow till then)."""
        for index in self.calls.values():
            item = self.output[index]
            if item["status"] == "completed":
                continue
            item["status"] = "completed"
            at = {"item_id": item["id"], "output_index": index}
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    **at,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))

    def encode(self, batch: list[ResponseEvent], out: list[bytes]) -> None:
        for event in batch:
            if isinstance(event, Delta):
                if event.index != 0:
                    continue  # one answer per response
                if event.reasoning:
                    item = self.open
                    if item is None or item["type"] != "reasoning":
                        item = {"type": "reasoning", "id": self.conversation.ids.next("rs_"), "summary": []}
                        index = self._add(item, out)
                        part: dict[str, Any] = {"type": "summary_text", "text": ""}
                        item["summary"].append(part)
                        out.append(
                            self._event(
                                "response.reasoning_summary_part.added",
                                item_id=item["id"],
                                output_index=index,
                                summary_index=0,
                                part=dict(part),
                            )
                        )
                    item["summary"][0]["text"] += event.reasoning
                    out.append(
                        self._event(
                            "response.reasoning_summary_text.delta",
                            item_id=item["id"],
                            output_index=len(self.output) - 1,
                            summary_index=0,
                            delta=event.reasoning,
                        )
                    )
                if event.content:
                    item = self.open
                    if item is None or item["type"] != "message":
                        item = {
                            "type": "message",
                            "id": self.conversation.ids.next("msg_"),
                            "role": "assistant",
                            "status": "in_progress",
                            "content": [],
                        }
                        index = self._add(item, out)
                        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                        item["content"].append(part)
                        out.append(
                            self._event(
                                "response.content_part.added",
                                item_id=item["id"],
                                output_index=index,
                                content_index=0,
                                part=dict(part),
                            )
                        )
                    item["content"][0]["text"] += event.content
                    out.append(
                        self._event(
                            "response.output_text.delta",
                            item_id=item["id"],
                            output_index=len(self.output) - 1,
                            content_index=0,
                            delta=event.content,
                            logprobs=[],
                        )
                    )
                for call in event.tool_calls or ():
                    index = self.calls.get(call.index, -1)
                    if index < 0:
                        item = {
                            "type": "function_call",
                            "id": self.conversation.ids.next("fc_"),
                            "call_id": call.id or new_id("call_"),
                            **self.conversation.tools.call_fields(call.name or ""),
                            "arguments": "",
                            "status": "in_progress",
                        }
                        index = self.calls[call.index] = self._add(item, out)
                        self.open = None  # calls stay open until the end (see _finish_calls)
                    item = self.output[index]
                    if call.arguments:
                        item["arguments"] += call.arguments
                        out.append(
                            self._event(
                                "response.function_call_arguments.delta",
                                item_id=item["id"],
                                output_index=index,
                                delta=call.arguments,
                            )
                        )
            elif isinstance(event, Done):
                self._cite(out)
                self._close(out)
                self._finish_calls(out)
            elif isinstance(event, ToolUse):
                item = search_call(event, None, self.conversation.ids.next(item_prefix(event)))
                index = self._add(item, out)
                self.open = None  # a call item is no message: it closes when its result comes
                self.searches[event.id] = (index, event)
                at = {"item_id": item["id"], "output_index": index}
                kind = item["type"]
                out.append(self._event(f"response.{kind}.in_progress", **at))
                if kind == "mcp_call":
                    out.append(
                        self._event("response.mcp_call_arguments.done", **at, arguments=item["arguments"])
                    )
                else:
                    out.append(self._event(f"response.{kind}.searching", **at))
            elif isinstance(event, McpListing):
                item = mcp_list_tools(event, self.conversation.ids.next("mcpl_"))
                index = self._add(item, out)
                self.open = None
                at = {"item_id": item["id"], "output_index": index}
                out.append(self._event("response.mcp_list_tools.in_progress", **at))
                done = "failed" if event.error else "completed"
                out.append(self._event(f"response.mcp_list_tools.{done}", **at))
                out.append(self._event("response.output_item.done", output_index=index, item=item))
            elif isinstance(event, ApprovalRequest):
                item = approval_request(event)
                index = self._add(item, out)
                self.open = None
                out.append(self._event("response.output_item.done", output_index=index, item=item))
            elif isinstance(event, ToolResult):
                index, use = self.searches[event.id]
                include = self.conversation.request.include
                item = self.output[index] = search_call(use, event, self.output[index]["id"], include)
                at = {"item_id": item["id"], "output_index": index}
                ended = "failed" if item["type"] == "mcp_call" and item["status"] == "failed" else "completed"
                out.append(self._event(f"response.{item['type']}.{ended}", **at))
                out.append(self._event("response.output_item.done", output_index=index, item=item))

    def failure(self, exc: APIError) -> bytes:
        """An `error` event, then `response.failed`. The error event carries its fields both flat (the
        SDK's type) and under `error` (OpenAI's own streams), which is what makes the SDK raise."""
        code = exc.code or "server_error"
        error = {"type": exc.type, "code": code, "message": exc.message, "param": exc.param}
        failed = self._event("error", code=code, message=exc.message, param=exc.param, error=error)
        response = self._response("failed", {"code": code, "message": exc.message})
        return failed + self._event("response.failed", response=response)

    async def closing(self, failed: bool) -> bytes:
        if failed:
            return b""
        response = response_object(self.conversation.request, self.meta, self.output)
        await self.conversation.keep(response)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=response)
