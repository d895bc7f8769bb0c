"""The API description (/openapi.json): FastAPI's document, completed with what it cannot infer.

The routes build their bodies as dicts and parse their request bodies themselves (one pass, our error
shape), so FastAPI sees neither: here each operation gets its request body, its 200 body
(`schema/documented.py`), and the error responses it can really give, in OpenAI's shape, or Anthropic's on
Anthropic's routes. FastAPI's 422 goes: validation failures are answered 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from kimi_gateway.http.routes.credits import AddCredits
from kimi_gateway.http.routes.keys import CreateKey, PatchKey
from kimi_gateway.schema import documented as d
from kimi_gateway.schema.anthropic import CountTokensRequest, MessagesRequest
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.completions import CompletionRequest
from kimi_gateway.schema.responses_api import ResponsesRequest

_REF = "#/components/schemas/"

# What an authenticated route may answer before it runs: a bad body or query (400), no or a wrong key
# (401, 403), a body over the limit or in an encoding we do not read (413, 415), the key store unreachable
# (503).
_AUTHENTICATED = (400, 401, 403, 413, 415, 503)
# A generation may also be refused for credit (402), an unknown model (404), limits (429), or fail upstream
# (502, 503, 504).
_GENERATION = (*_AUTHENTICATED, 402, 404, 429, 502, 504)

# (method, path): (200 body, its status, error statuses, request body)
_OPERATIONS: dict[
    tuple[str, str], tuple[type[BaseModel] | None, int, tuple[int, ...], type[BaseModel] | None]
] = {
    ("post", "/v1/chat/completions"): (d.ChatCompletion, 200, _GENERATION, ChatCompletionRequest),
    ("post", "/v1/completions"): (d.TextCompletion, 200, _GENERATION, CompletionRequest),
    ("post", "/v1/messages"): (d.AnthropicMessage, 200, (*_GENERATION, 529), MessagesRequest),
    ("post", "/v1/messages/count_tokens"): (
        d.TokenCount,
        200,
        (*_AUTHENTICATED, 404, 429),
        CountTokensRequest,
    ),
    ("post", "/v1/responses"): (d.Response, 200, _GENERATION, ResponsesRequest),
    ("get", "/v1/responses/{response_id}"): (d.Response, 200, (*_AUTHENTICATED, 404), None),
    ("delete", "/v1/responses/{response_id}"): (d.ResponseDeleted, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/responses/{response_id}/input_items"): (d.InputItems, 200, (*_AUTHENTICATED, 404), None),
    ("post", "/v1/tokenizers/estimate-token-count"): (
        d.TokenEstimate,
        200,
        (*_AUTHENTICATED, 404, 429),
        ChatCompletionRequest,
    ),
    ("get", "/v1/models"): (d.ModelList, 200, _AUTHENTICATED, None),
    ("get", "/v1/models/{model_id}"): (d.Model, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/anthropic/v1/models"): (d.AnthropicModelList, 200, _AUTHENTICATED, None),
    ("get", "/anthropic/v1/models/{model_id}"): (d.AnthropicModel, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/models/{model_id}/endpoints"): (d.Endpoints, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/files"): (d.FileList, 200, _AUTHENTICATED, None),
    ("post", "/v1/files"): (d.File, 200, (*_AUTHENTICATED, 429), None),
    ("get", "/v1/files/{file_id}"): (d.File, 200, (*_AUTHENTICATED, 404), None),
    ("delete", "/v1/files/{file_id}"): (d.FileDeleted, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/files/{file_id}/content"): (d.FileContent, 200, (*_AUTHENTICATED, 404), None),
    # Vector stores: bodies as FastAPI documents them from the routes.
    ("post", "/v1/vector_stores"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/vector_stores"): (None, 200, _AUTHENTICATED, None),
    ("get", "/v1/vector_stores/{store_id}"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("delete", "/v1/vector_stores/{store_id}"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("post", "/v1/vector_stores/{store_id}/files"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/vector_stores/{store_id}/files"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/v1/vector_stores/{store_id}/files/{file_id}"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("delete", "/v1/vector_stores/{store_id}/files/{file_id}"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("post", "/v1/vector_stores/{store_id}/search"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/keys"): (d.KeyList, 200, _AUTHENTICATED, None),
    ("post", "/api/v1/keys"): (d.KeyCreated, 201, (*_AUTHENTICATED, 404), CreateKey),
    ("get", "/api/v1/keys/{hash_}"): (d.KeyData, 200, (*_AUTHENTICATED, 404), None),
    ("patch", "/api/v1/keys/{hash_}"): (d.KeyData, 200, (*_AUTHENTICATED, 404), PatchKey),
    ("delete", "/api/v1/keys/{hash_}"): (d.KeyDeleted, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/key"): (d.CurrentKey, 200, _AUTHENTICATED, None),
    ("get", "/api/v1/credits"): (d.Credits, 200, _AUTHENTICATED, None),
    ("post", "/api/v1/credits/add"): (d.CreditAdded, 200, (*_AUTHENTICATED, 404), AddCredits),
    ("get", "/v1/users/me/balance"): (d.Balance, 200, _AUTHENTICATED, None),
    ("get", "/api/v1/generation"): (d.Generation, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/generations"): (d.GenerationList, 200, _AUTHENTICATED, None),
    ("get", "/api/v1/activity"): (d.Activity, 200, _AUTHENTICATED, None),
    ("get", "/api/v1/models/{model_id}/stats"): (d.ModelStats, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/agents/runs/{run_id}"): (d.AgentRun, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/api/v1/agents/runs/{run_id}/events"): (None, 200, (*_AUTHENTICATED, 404), None),
    ("get", "/health"): (d.Health, 200, (), None),
    ("get", "/ready"): (d.Ready, 200, (503,), None),
}

_REASONS = {
    400: "Invalid request: a field, the JSON or a query parameter",
    401: "Missing or invalid API key",
    402: "Not enough credit for the request's hold",
    403: "The key's kind cannot call this route",
    404: "Unknown model, file, vector store, key, response, generation or agent run",
    413: "Request body over the limit",
    415: "Content-Encoding other than gzip",
    429: "Rate limit or concurrency limit reached (see Retry-After)",
    502: "The provider failed",
    503: "Overloaded or unavailable (see Retry-After)",
    504: "The provider timed out",
    529: "The local model's queue is full (Anthropic's overloaded_error; see Retry-After)",
}


_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "the event's JSON, in the format's own shape"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def _schemas(models: list[type[BaseModel]], components: dict[str, Any], prefix: str = "") -> None:
    for model in models:
        schema = model.model_json_schema(ref_template=_REF + prefix + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            components[prefix + name] = definition
        components[model.__name__] = schema


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + name}}}


def build(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # Each format's inner models are named apart (Anthropic's and OpenAI's both have a `Tool`).
    _schemas([ChatCompletionRequest, CompletionRequest, CreateKey, PatchKey, AddCredits], components)
    _schemas([MessagesRequest, CountTokensRequest], components, "Anthropic")
    _schemas([ResponsesRequest], components, "Responses")
    bodies = {body for body, *_ in _OPERATIONS.values() if body is not None}
    _schemas([d.Error, d.AnthropicError, d.ChatCompletionChunk, *bodies], components)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            operation["responses"].pop("422", None)
            documented = _OPERATIONS.get((method, path))
            if documented is None:
                continue
            body, status, errors, request = documented
            responses = operation["responses"]
            if status != 200:
                responses.pop("200", None)
            if body is not None:
                content = _json(body.__name__)
                if body is d.ChatCompletion or body is d.AnthropicMessage or body is d.Response:
                    content["text/event-stream"] = {
                        # Each server-sent event, as a reader parses it: its fields are strings.
                        "schema": _SSE_EVENT,
                        "description": "with `stream: true`: server-sent events in the format's own shape",
                    }
                responses[str(status)] = {"description": "Success", "content": content}
            error = "AnthropicError" if path.startswith(("/v1/messages", "/anthropic/")) else "Error"
            for code in errors:
                responses[str(code)] = {"description": _REASONS[code], "content": _json(error)}
            if request is not None:
                name = request.__name__
                operation["requestBody"] = {"required": True, "content": _json(name)}
    app.openapi_schema = schema
    return schema
