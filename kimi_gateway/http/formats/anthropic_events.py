"""The generation, as Anthropic's Messages API answers: one message body, or its event stream.

Blocks go out one at a time, in the order the model made them (thinking, then text or tool calls), each
opened with `content_block_start` before its deltas and closed with `content_block_stop`, with indexes
0, 1, 2… in that order: the SDK's accumulator and Claude Code look blocks up by index.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import orjson
from starlette.responses import Response

from kimi_gateway.core.generation import ResponseEvent
from kimi_gateway.core.toolloop import PAUSED
from kimi_gateway.errors import APIError
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.providers.events import Delta, Done, Finish, Usage
from kimi_gateway.schema.anthropic import ServerToolResultBlock
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.schema.server_tools import (
    AgentsOutput,
    FetchedPage,
    McpOutput,
    SearchResults,
    ToolError,
    ToolResult,
    ToolTally,
    ToolUse,
    server_tool_usage,
)

# Anthropic's error type for each status (its SDK picks the exception class by status).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED = 529  # Anthropic's status for "try again shortly": a full local queue


_PREFIXES = ("/v1/messages", "/anthropic/")


def is_anthropic(path: str) -> bool:
    """Paths whose errors take Anthropic's shape."""
    return path.startswith(_PREFIXES)


def error_response(exc: APIError) -> Response:
    status, body = error_body(exc)
    return ORJSONResponse(body, status_code=status, headers=exc.headers or None)


def error_body(exc: APIError) -> tuple[int, dict[str, Any]]:
    status = exc.status
    if status == 503 and exc.code == "server_overloaded":
        status = OVERLOADED
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": exc.message}}


_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish: str | None, matched: str | None, native: str | None = None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). Where the provider names the stop string it hit (the embedded engine,
    vLLM and SGLang do), the stop is `stop_sequence`; otherwise it is the end of the turn. A tool loop
    stopped by its bounds is `pause_turn`: the client may send the turn back to go on."""
    if native == PAUSED:
        return PAUSED, None
    if finish == "stop" and matched:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish or "stop", "end_turn"), None


# ---- server-side tools (web search, web fetch) ------------------------------------------------------


def _reports(output: object) -> str:
    if not isinstance(output, AgentsOutput):
        return (
            f"Sub-agents failed: {output.message}" if isinstance(output, ToolError) else "Sub-agents failed."
        )
    lines = []
    for report in output.reports:
        line = f"Agent {report.name}: {report.status}"
        if report.error:
            line += f" ({report.error})"
        if report.answer:
            line += f"\n{report.answer}"
        lines.append(line)
    return "\n\n".join(lines)


def _opaque(snippet: str) -> str:
    """A search result's `encrypted_content`: opaque to the client, which gives it back as it was; the
    gateway reads the snippet from it when the turn is replayed."""
    return base64.urlsafe_b64encode(orjson.dumps({"s": snippet})).decode()


def _snippet(encrypted: object) -> str:
    if not isinstance(encrypted, str):
        return ""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(encrypted.encode()))
    except (ValueError, orjson.JSONDecodeError):
        return ""
    return value.get("s", "") if isinstance(value, dict) and isinstance(value.get("s"), str) else ""


def server_tool_use(use: ToolUse) -> dict[str, Any]:
    if use.tool.kind == "mcp" and use.tool.mcp is not None:  # the MCP connector's block
        return {
            "type": "mcp_tool_use",
            "id": use.id,
            "name": use.tool.mcp_tool or use.tool.name,
            "server_name": use.tool.mcp.label,
            "input": use.input,
        }
    return {"type": "server_tool_use", "id": use.id, "name": use.tool.name, "input": use.input}


def server_tool_result(result: ToolResult) -> dict[str, Any]:
    output = result.output
    if isinstance(output, AgentsOutput) or result.tool.kind == "agents":
        # Anthropic has no block for a swarm's results: the agents' reports, as thinking the client shows.
        text = _reports(output)
        return {"type": "thinking", "thinking": text, "signature": signature(text)}
    if result.tool.kind == "mcp":
        if isinstance(output, McpOutput):
            text, failed = output.text, output.is_error
        else:
            text, failed = (output.message if isinstance(output, ToolError) else "failed"), True
        return {
            "type": "mcp_tool_result",
            "tool_use_id": result.id,
            "is_error": failed,
            "content": [{"type": "text", "text": text}],
        }
    if result.tool.kind == "web_search":
        kind = "web_search_tool_result"
        if isinstance(output, SearchResults):
            content: Any = [
                {
                    "type": "web_search_result",
                    "url": s.url,
                    "title": s.title,
                    "encrypted_content": _opaque(s.snippet),
                    "page_age": s.page_age,
                }
                for s in output.sources
            ]
        else:
            code = output.code if isinstance(output, ToolError) else "unavailable"
            content = {"type": "web_search_tool_result_error", "error_code": code}
    else:
        kind = "web_fetch_tool_result"
        if isinstance(output, FetchedPage):
            source = {"type": "text", "media_type": "text/plain", "data": output.text}
            document = {
                "type": "document",
                "title": output.title,
                "citations": {"enabled": result.tool.citations},
                "source": source,
            }
            content = {
                "type": "web_fetch_result",
                "url": output.url,
                "retrieved_at": output.retrieved_at,
                "content": document,
            }
        else:
            code = output.code if isinstance(output, ToolError) else "unavailable"
            content = {"type": "web_fetch_tool_result_error", "error_code": code}
    return {"type": kind, "tool_use_id": result.id, "content": content}


def replayed(block: ServerToolResultBlock) -> str:
    """A result given back in a later request, as the model read it the first time (near enough)."""
    content = block.content
    if block.type == "mcp_tool_result" or isinstance(content, str):
        if isinstance(content, list):
            text = "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        else:
            text = content if isinstance(content, str) else orjson.dumps(content).decode()
        return f"Error: {text}" if block.is_error else text
    if block.type == "web_search_tool_result":
        if isinstance(content, list):
            results = [
                {
                    "title": r.get("title"),
                    "url": r.get("url"),
                    "snippet": _snippet(r.get("encrypted_content")),
                }
                for r in content
                if isinstance(r, dict)
            ]
            return orjson.dumps({"results": results}).decode()
        return orjson.dumps({"error": content.get("error_code")}).decode()
    if isinstance(content, dict) and content.get("type") == "web_fetch_result":
        document = content.get("content") or {}
        source = document.get("source") or {} if isinstance(document, dict) else {}
        data = {"url": content.get("url"), "title": document.get("title"), "content": source.get("data")}
        return orjson.dumps(data).decode()
    error = content.get("error_code") if isinstance(content, dict) else None
    return orjson.dumps({"error": error or "unavailable"}).decode()


def citations(text: str, tools: ToolTally) -> list[dict[str, Any]]:
    """The sources a text block names by URL, as Anthropic's citations: `web_search_result_location` for
    a search result (always on, as Anthropic's web search is), `char_location` into a fetched page when
    its tool has citations enabled. Kimi does not mark what it cites, so a source counts as cited where
    the answer gives its URL; one citation per URL and kind (a page found and then read is both)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    read: set[str] = set()
    documents = 0  # a fetched page's index among the turn's documents
    for item in tools.activity:
        if not isinstance(item, ToolResult):
            continue
        output = item.output
        if isinstance(output, SearchResults):
            for source in output.sources:
                if source.url in seen or not _names(text, source.url):
                    continue
                seen.add(source.url)
                out.append(
                    {
                        "type": "web_search_result_location",
                        "url": source.url,
                        "title": source.title,
                        "encrypted_index": _opaque(source.snippet),
                        "cited_text": source.snippet[:150],
                    }
                )
        elif isinstance(output, FetchedPage):
            documents += 1
            if item.tool.citations and output.url not in read and _names(text, output.url):
                read.add(output.url)
                cited = output.text[:150]
                out.append(
                    {
                        "type": "char_location",
                        "cited_text": cited,
                        "document_index": documents - 1,
                        "document_title": output.title,
                        "start_char_index": 0,
                        "end_char_index": len(cited),
                    }
                )
    return out


def _names(text: str, url: str) -> bool:
    """Whether the text gives this URL, whole: `https://a.com` is not named by `https://a.com/x`."""
    return re.search(re.escape(url) + r"(?![\w/#?%=&~+-])", text) is not None


def _server_usage(tools: ToolTally | None) -> dict[str, int] | None:
    return server_tool_usage(tools) if tools is not None else None


def signature(thinking: str) -> str:
    """An opaque signature for a thinking block: Kimi's reasoning has none, and clients (the SDK, Claude
    Code) expect one to give back. It is not checked when it comes back: the thinking goes on as it is."""
    return base64.b64encode(hashlib.blake2b(thinking.encode(), digest_size=24).digest()).decode()


def usage(prompt: int, completion: int, cached: int) -> dict[str, int]:
    """Anthropic counts cached input apart: `input_tokens` is the uncached part."""
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def message_body(
    completion: CompletionBody, matched: str | None, tools: ToolTally | None = None
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    finish = native = None
    if completion["choices"]:
        choice = completion["choices"][0]
        message = choice["message"]
        finish, native = choice["finish_reason"], choice.get("native_finish_reason")
        thinking = message.get("reasoning_content")
        if thinking:
            content.append({"type": "thinking", "thinking": thinking, "signature": signature(thinking)})
        for item in tools.activity if tools is not None else ():
            if isinstance(item, ToolUse):
                content.append(server_tool_use(item))
            elif isinstance(item, ToolResult):
                content.append(server_tool_result(item))
        if message["content"]:
            text: dict[str, Any] = {"type": "text", "text": message["content"]}
            cited = citations(message["content"], tools) if tools is not None else None
            if cited:
                text["citations"] = cited
            content.append(text)
        for call in message.get("tool_calls") or ():
            function = call["function"]
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": function["name"],
                    "input": _input(function["arguments"]),
                }
            )
    reason, sequence = stop_reason(finish, matched, native)
    used = completion["usage"]
    counted = usage(
        used["prompt_tokens"], used["completion_tokens"], used["prompt_tokens_details"]["cached_tokens"]
    )
    server = _server_usage(tools)
    if server is not None:
        counted["server_tool_use"] = server  # type: ignore[assignment]
    body = {
        "id": completion["id"],
        "type": "message",
        "role": "assistant",
        "model": completion["model"],
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": counted,
    }
    if "agent_run_id" in completion:
        body["agent_run_id"] = completion["agent_run_id"]
    return body


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


PING = _event(b"ping", {"type": "ping"})


class MessageStream:
    """Normalized events → Anthropic's event stream (message_start … message_stop)."""

    keepalive = PING

    def __init__(self, meta: GenerationOutcome) -> None:
        self.meta = meta
        self.index = -1  # the open block's index
        self.open: str | None = None  # "thinking", "text" or "tool_use"
        self.thinking: list[str] = []
        self.tools: dict[int, int] = {}  # tool call index -> block index
        self.finish: Finish | None = None
        # A tool loop's text, kept to cite the sources it names when its block closes.
        self.text: list[str] | None = [] if meta.tools is not None else None

    def opening(self) -> list[bytes]:
        meta = self.meta
        # The usage here is the estimate (never zeros: clients read it); message_delta brings the real count.
        message: dict[str, Any] = {
            "id": meta.id,
            "type": "message",
            "role": "assistant",
            "model": meta.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(max(meta.prompt_estimate, 1), 1, 0),
        }
        return [_event(b"message_start", {"type": "message_start", "message": message}), PING]

    def _start(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self.index += 1
        self.open = kind
        out.append(
            _event(
                b"content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if self.open is None:
            return
        if self.open == "thinking":
            sig = signature("".join(self.thinking))
            self.thinking = []
            out.append(self._delta({"type": "signature_delta", "signature": sig}))
        elif self.open == "text" and self.text is not None and self.meta.tools is not None:
            # Citations stream as one `citations_delta` each, into the text block they belong to.
            for citation in citations("".join(self.text), self.meta.tools):
                out.append(self._delta({"type": "citations_delta", "citation": citation}))
            self.text = []
        out.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": self.index}))
        self.open = None

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        at = self.index if index is None else index
        return _event(b"content_block_delta", {"type": "content_block_delta", "index": at, "delta": delta})

    def encode(self, batch: list[ResponseEvent], out: list[bytes]) -> None:
        for event in batch:
            if isinstance(event, Delta):
                if event.index != 0:
                    continue  # Anthropic's format has one answer per request
                if event.reasoning:
                    if self.open != "thinking":
                        self._start("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
                    self.thinking.append(event.reasoning)
                    out.append(self._delta({"type": "thinking_delta", "thinking": event.reasoning}))
                if event.content:
                    if self.open != "text":
                        self._start("text", {"type": "text", "text": ""}, out)
                    out.append(self._delta({"type": "text_delta", "text": event.content}))
                    if self.text is not None:
                        self.text.append(event.content)
                for call in event.tool_calls or ():
                    block = self.tools.get(call.index)
                    if block is None:
                        tool = {
                            "type": "tool_use",
                            "id": call.id or f"toolu_{self.meta.id}_{call.index}",
                            "name": call.name or "",
                            "input": {},
                        }
                        self._start("tool_use", tool, out)
                        block = self.tools[call.index] = self.index
                    if call.arguments:
                        delta = {"type": "input_json_delta", "partial_json": call.arguments}
                        out.append(self._delta(delta, block))
            elif isinstance(event, Finish):
                if event.index == 0:
                    self.finish = event
            elif isinstance(event, Done):
                self._close(out)
                out.append(self._message_delta(event.usage))
            elif isinstance(event, ToolUse):
                # Streamed as a client tool_use is: the block, its input as one delta, its end.
                self._start("server_tool_use", {**server_tool_use(event), "input": {}}, out)
                delta = {"type": "input_json_delta", "partial_json": orjson.dumps(event.input).decode()}
                out.append(self._delta(delta))
                self._close(out)
            elif isinstance(event, ToolResult):
                # A result arrives whole, in its content_block_start, with no deltas.
                self._start("result", server_tool_result(event), out)
                self._close(out)

    def _message_delta(self, used: Usage) -> bytes:
        finish = self.finish
        reason, sequence = stop_reason(
            finish.reason if finish else None,
            finish.stop_sequence if finish else None,
            finish.native_reason if finish else None,
        )
        counted: dict[str, Any] = usage(used.prompt_tokens, used.completion_tokens, used.cached_tokens)
        server = _server_usage(self.meta.tools)
        if server is not None:
            counted["server_tool_use"] = server
        payload = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": counted,
        }
        return _event(b"message_delta", payload)

    def failure(self, exc: APIError) -> bytes:
        _, body = error_body(exc)
        return _event(b"error", body)

    async def closing(self, failed: bool) -> bytes:
        return b"" if failed else _event(b"message_stop", {"type": "message_stop"})
