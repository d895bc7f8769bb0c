"""OpenAI's Responses API (POST /v1/responses), as the `openai` SDK's `client.responses.*` speaks it.

The request becomes the gateway's chat request here (with the stored conversation of
`previous_response_id` in front of it); `responses_events` renders the response. What has no counterpart:
- `instructions` lead the conversation as a system message, and, as OpenAI does, are not carried over to
  a later response through `previous_response_id`;
- `reasoning` items given back become the reasoning of the assistant turn that follows them (Kimi refuses
  a thinking tool-call turn without it); their `encrypted_content` has no counterpart and is dropped;
- `item_reference` inputs name items of the account's stored responses (http/formats/item_ids.py) and
  are replaced by them; Codex's `namespace` tools are flattened (http/formats/tool_names.py);
- built-in tools (file search, computer use, MCP) and `background` mode are refused with a 400 that says
  so; `web_search` is left out, and the response says so.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.errors import APIError, invalid_request
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.formats.base import FormatContext, WireFormat
from kimi_gateway.http.formats.item_ids import ItemIds, response_of
from kimi_gateway.http.formats.responses_events import (
    Conversation,
    ResponseStream,
    flat_citations,
    response_object,
    search_items,
)
from kimi_gateway.http.formats.tool_names import ChatTools, flat_name
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.http.validation import validation_error
from kimi_gateway.ids import new_id
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.schema import responses_api as r
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.schema.server_tools import ApprovedCall, ToolTally, mcp_function_name
from kimi_gateway.storage.responses import ResponseStore

PATH = "/v1/responses"


class ResponsesFormat(WireFormat):
    __slots__ = ("conversation", "response_id")

    conversation: Conversation

    async def parse(
        self, request: Request, context: FormatContext, account: str | None
    ) -> ChatCompletionRequest:
        body = await parse_body(request, r.ResponsesRequest, context.max_body_bytes)
        if body.background:
            raise invalid_request(
                "background responses are not supported: stream, or wait for the answer",
                param="background",
                code="unsupported_value",
            )
        history: list[dict[str, Any]] = []
        previous = None
        if body.previous_response_id is not None:
            previous = await context.responses.get(account, body.previous_response_id)
            history = previous.context
        if body.store:
            await context.responses.check_quota(account)
        self.response_id = new_id("resp_")
        ids = ItemIds(self.response_id)
        limit = context.max_body_bytes
        items = await _referenced(_input_items(body.input, ids), context.responses, account, limit)
        messages = _messages(items)
        if history and len(orjson.dumps(history)) + len(orjson.dumps(messages)) > limit:
            # What one request may carry bounds a chain too, as the whole conversation is sent each time.
            raise APIError(
                413,
                f"The conversation of previous_response_id is over {limit} bytes with this input: start a "
                "new one, or send a shorter history as input.",
                param="previous_response_id",
                code="conversation_too_long",
            )
        strict = context.strict_rules or bool((body.provider or {}).get("require_parameters"))
        tools = ChatTools.of(body.tools, strict, context.searches)
        chat = to_chat(body, history + messages, tools.functions)
        chat.server_tools = tools.server
        chat.approved_calls = _approvals(items, previous.response["output"] if previous is not None else [])
        self.conversation = Conversation(
            body, items, messages, previous, context.responses, account, tools, ids
        )
        self.adaptations = tools.adaptations
        return chat

    def new_id(self) -> str:
        return self.response_id  # made in `parse`: the ids of the items it made there name it

    async def render(self, completion: CompletionBody, meta: GenerationOutcome) -> Response:
        output = completion_output(
            completion,
            self.conversation.tools,
            self.conversation.ids,
            meta.tools,
            self.conversation.request.include,
        )
        body = response_object(self.conversation.request, meta, output)
        await self.conversation.keep(body)
        return ORJSONResponse(body)

    def encoder(self, meta: GenerationOutcome) -> ResponseStream:
        return ResponseStream(meta, self.conversation)

    def error(self, exc: APIError) -> Response:
        # Checks made on the request in chat form name chat's fields (`messages[2].reasoning_content`):
        # the client sent `input` (and `instructions`), whose items do not map one to one.
        if exc.param is not None and exc.param.startswith("messages"):
            exc.param = "input"
        return super().error(exc)


def completion_output(
    completion: CompletionBody,
    tools: ChatTools,
    ids: ItemIds,
    server: ToolTally | None = None,
    include: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The output items of a whole completion: reasoning, the searches the gateway ran, then the message,
    then function calls."""
    if not completion["choices"]:
        return []
    message = completion["choices"][0]["message"]
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if reasoning:
        output.append(
            {
                "type": "reasoning",
                "id": ids.next("rs_"),
                "summary": [{"type": "summary_text", "text": reasoning}],
            }
        )
    output.extend(search_items(server, ids, include))
    if message["content"]:
        annotations = flat_citations(message["content"], server)
        part = {"type": "output_text", "text": message["content"], "annotations": annotations, "logprobs": []}
        output.append(
            {
                "type": "message",
                "id": ids.next("msg_"),
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        )
    for call in message.get("tool_calls") or ():
        output.append(
            {
                "type": "function_call",
                "id": ids.next("fc_"),
                "call_id": call["id"],
                **tools.call_fields(call["function"]["name"]),
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
        )
    return output


# ---- the request, in chat form -------------------------------------------------------------------------


# References one request may hold: each may name a large item, and each distinct response is read.
MAX_REFERENCES = 256


async def _referenced(
    items: list[dict[str, Any]], store: ResponseStore, account: str | None, limit: int
) -> list[dict[str, Any]]:
    """Item references replaced by the items they name, from the account's own stored responses (another
    account's, or one not kept, is not found: 404). What they expand to is bounded as a body is: a small
    request repeating a reference to a large item must not grow without end."""
    references = sum(item["type"] == "item_reference" for item in items)
    if not references:
        return items
    if references > MAX_REFERENCES:
        raise invalid_request(
            f"at most {MAX_REFERENCES} item references are accepted in one request", param="input"
        )
    kept: dict[str, list[dict[str, Any]]] = {}
    out = []
    size = 0
    for i, item in enumerate(items):
        if item["type"] != "item_reference":
            out.append(item)
            continue
        response_id = response_of(item["id"])
        found = None
        if response_id is not None:
            if response_id not in kept:
                try:
                    stored = await store.get(account, response_id)
                except APIError:
                    stored = None
                kept[response_id] = [*stored.response["output"], *stored.input_items] if stored else []
            found = next((one for one in kept[response_id] if one.get("id") == item["id"]), None)
        if found is None:
            raise APIError(
                404,
                f"Item with id '{item['id']}' not found (only items of this account's stored responses "
                "can be referenced).",
                param=f"input[{i}]",
                code="item_not_found",
            )
        size += len(orjson.dumps(found))
        if size > limit:
            raise APIError(
                413,
                f"The items this request references are over {limit} bytes: send fewer.",
                param="input",
                code="request_too_large",
            )
        out.append(dict(found))
    return out


def _approvals(items: list[dict[str, Any]], earlier: list[dict[str, Any]]) -> list[ApprovedCall]:
    """The client's answers to MCP approval requests (of the response it continues, or given back in this
    input), as calls for the tool loop to run (or refuse) before the model goes on."""
    answers = [item for item in items if item.get("type") == "mcp_approval_response"]
    if not answers:
        return []
    asked = {
        item["id"]: item
        for item in [*earlier, *items]
        if item.get("type") == "mcp_approval_request" and item.get("id")
    }
    calls = []
    for i, answer in enumerate(answers):
        request = asked.get(answer["approval_request_id"])
        if request is None:
            raise APIError(
                404,
                f"No mcp_approval_request with id '{answer['approval_request_id']}' in this conversation.",
                param=f"input[{i}].approval_request_id",
                code="item_not_found",
            )
        calls.append(
            ApprovedCall(
                new_id("call_"),
                request.get("server_label") or "",
                request.get("name") or "",
                request.get("arguments") or "{}",
                bool(answer["approve"]),
                answer.get("reason"),
            )
        )
    return calls


def _input_items(given: str | list[r.InputItem], ids: ItemIds) -> list[dict[str, Any]]:
    """This request's input as items (what GET /v1/responses/{id}/input_items lists), each with an id."""
    if isinstance(given, str):
        given = [r.MessageItem(role="user", content=given)]
    items = []
    for item in given:
        data = item.model_dump(mode="json", exclude_none=True, by_alias=True)
        if "id" not in data:
            data["id"] = ids.next("msg_" if item.type == "message" else "item_")
        if item.type == "message":
            # As OpenAI lists them: content as parts, and a status.
            if isinstance(data["content"], str):
                kind = "output_text" if data["role"] == "assistant" else "input_text"
                data["content"] = [{"type": kind, "text": data["content"]}]
            data.setdefault("status", "completed")
        items.append(data)
    return items


def _text(content: str | list[Any], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") in ("input_text", "output_text", "text"):
            texts.append(part["text"])
        elif part.get("type") == "refusal":
            texts.append(part["refusal"])
        else:
            raise invalid_request(f"only text can go here, not '{part.get('type')}'", param=where)
    return "".join(texts)


def _user_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        if not part.get("image_url"):
            raise invalid_request(
                "images by file_id are not supported: send image_url (a URL or a data: URL)", param=where
            )
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        name = part.get("filename") or "file"
        if part.get("file_id"):
            return {"type": "file", "file": {"filename": name, "file_id": part["file_id"]}}
        data = part.get("file_data")
        if data:
            if not data.startswith("data:"):  # bare base64, as the SDK's examples send a PDF
                kind_of = "application/pdf" if name.lower().endswith(".pdf") else "text/plain"
                data = f"data:{kind_of};base64,{data}"
            return {"type": "file", "file": {"filename": name, "file_data": data}}
        raise invalid_request(
            "input_file needs file_id (from POST /v1/files) or file_data; file_url is not fetched",
            param=where,
        )
    raise invalid_request(f"a user message cannot hold '{kind}'", param=where)


def _messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    reasoning: list[str] = []  # reasoning items wait for the assistant turn they belong to

    def assistant() -> dict[str, Any]:
        last = out[-1] if out else None
        if last is not None and last["role"] == "assistant" and not reasoning:
            return last  # consecutive calls (and the text before them) make one assistant turn
        turn: dict[str, Any] = {"role": "assistant", "content": None}
        if reasoning:
            turn["reasoning_content"] = "".join(reasoning)
            reasoning.clear()
        out.append(turn)
        return turn

    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role, content = item["role"], item["content"]
            if role in ("system", "developer"):
                out.append({"role": "system", "content": _text(content, f"{where}.content")})
            elif role == "assistant":
                turn = assistant()
                turn["content"] = (turn["content"] or "") + _text(content, f"{where}.content")
            elif isinstance(content, str):
                out.append({"role": "user", "content": content})
            elif len(content) == 1 and content[0].get("type") == "input_text":
                out.append({"role": "user", "content": content[0]["text"]})  # a string input, as listed
            else:
                parts = [_user_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
                out.append({"role": "user", "content": parts})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {
                    "name": flat_name(item.get("namespace"), item["name"]),
                    "arguments": item["arguments"],
                },
            }
            assistant().setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            texts = [s["text"] for s in item.get("summary", ())] or [
                c["text"] for c in item.get("content", ())
            ]
            reasoning.append("".join(texts))
        elif kind in ("mcp_list_tools", "mcp_approval_request", "mcp_approval_response"):
            continue  # the tools are listed again; approvals are read by `_approvals`
        elif kind == "mcp_call":
            # A call of an earlier turn: the model sees it, and what it returned.
            call_id = item.get("id") or new_id("mcp_")
            name = mcp_function_name(item.get("server_label") or "", item.get("name") or "")
            call = {"name": name, "arguments": item.get("arguments") or "{}"}
            assistant().setdefault("tool_calls", []).append(
                {"id": call_id, "type": "function", "function": call}
            )
            output = item.get("output") if item.get("output") is not None else f"Error: {item.get('error')}"
            out.append({"role": "tool", "tool_call_id": call_id, "content": str(output)})
        elif kind == "web_search_call":
            # A search of an earlier turn: the model sees its call and the sources it found.
            action = item.get("action") or {}
            call_id = item.get("id") or new_id("ws_")
            query = action.get("query") or ""
            call = {"name": "web_search", "arguments": orjson.dumps({"query": query}).decode()}
            assistant().setdefault("tool_calls", []).append(
                {"id": call_id, "type": "function", "function": call}
            )
            sources = [s.get("url") for s in action.get("sources") or () if isinstance(s, dict)]
            result = {"query": query, "results": [{"url": url} for url in sources if url]}
            out.append({"role": "tool", "tool_call_id": call_id, "content": orjson.dumps(result).decode()})
        else:
            raise invalid_request(
                f"'{kind}' input items are not supported: give the item itself",
                param=where,
                code="unsupported_value",
            )
    return out


def to_chat(
    request: r.ResponsesRequest, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> ChatCompletionRequest:
    if request.instructions:
        messages = [{"role": "system", "content": request.instructions}, *messages]
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if tools:
        body["tools"] = tools
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}}
        )
    for name in (
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "user",
        "prompt_cache_key",
        "provider",
        "models",
        "agent",
    ):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        if fmt.description is not None:
            spec["description"] = fmt.description
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
