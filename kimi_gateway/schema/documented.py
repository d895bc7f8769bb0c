"""The API's response bodies as pydantic models, for the API description only (/openapi.json, /docs,
schemathesis): the routes build these bodies as plain dicts, and no instance of these models is made on
any path. Each lists the fields the route always sends; more may come (`extra="allow"`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- errors ------------------------------------------------------------------------------------------


class ErrorDetail(_Body):
    message: str
    type: str
    param: str | None
    code: str | int | None


class Error(_Body):
    """OpenAI's error shape, on every route but Anthropic's."""

    error: ErrorDetail


class AnthropicErrorDetail(_Body):
    type: str
    message: str


class AnthropicError(_Body):
    """Anthropic's error shape, on /v1/messages and /anthropic/..."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# ---- chat completions ----------------------------------------------------------------------------------


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str
    type: str
    function: FunctionCall


class ChatMessage(_Body):
    role: str
    content: str | None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None


class Choice(_Body):
    index: int
    message: ChatMessage
    finish_reason: str | None


class Usage(_Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = None


class ChatCompletion(_Body):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class TextChoice(_Body):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class TextCompletion(_Body):
    """POST /v1/completions: the prompt's continuation (the prompt first, with `echo`)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ChatCompletionChunk(_Body):
    """One `data:` line of a streamed completion (`stream: true`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]]


# ---- Anthropic Messages and the Responses API ----------------------------------------------------------


class AnthropicUsage(_Body):
    input_tokens: int
    output_tokens: int


class AnthropicMessage(_Body):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: AnthropicUsage


class TokenCount(_Body):
    input_tokens: int


class Response(_Body):
    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]


class ResponseDeleted(_Body):
    id: str
    deleted: bool


class InputItems(_Body):
    object: Literal["list"]
    data: list[dict[str, Any]]
    has_more: bool


# ---- models --------------------------------------------------------------------------------------------


class Model(_Body):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Body):
    object: Literal["list"]
    data: list[Model]


class AnthropicModel(_Body):
    type: Literal["model"]
    id: str
    display_name: str
    created_at: str


class AnthropicModelList(_Body):
    data: list[AnthropicModel]
    has_more: bool


class EndpointsData(_Body):
    id: str
    name: str
    endpoints: list[dict[str, Any]]


class Endpoints(_Body):
    data: EndpointsData


# ---- files ---------------------------------------------------------------------------------------------


class File(_Body):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str


class FileList(_Body):
    object: Literal["list"]
    data: list[File]


class FileContent(_Body):
    content: str
    filename: str
    type: str


class FileDeleted(_Body):
    id: str
    deleted: bool


# ---- keys, credits, generations ------------------------------------------------------------------------


class Key(_Body):
    hash: str
    label: str
    name: str
    kind: str
    disabled: bool


class KeyData(_Body):
    data: Key


class KeyCreated(_Body):
    data: Key
    key: str


class KeyList(_Body):
    data: list[Key]


class KeyDeleted(_Body):
    deleted: bool


class CurrentKey(_Body):
    data: dict[str, Any]


class CreditsData(_Body):
    total_credits: float
    total_usage: float


class Credits(_Body):
    data: CreditsData


class CreditAddedData(_Body):
    id: str
    account_id: str
    balance: float


class CreditAdded(_Body):
    data: CreditAddedData


class BalanceData(_Body):
    available_balance: float
    voucher_balance: float
    cash_balance: float


class Balance(_Body):
    code: int
    data: BalanceData
    status: bool


class GenerationData(_Body):
    id: str
    model: str
    total_cost: float
    tokens_prompt: int
    tokens_completion: int


class Generation(_Body):
    data: GenerationData


class AgentRunData(_Body):
    id: str
    object: str  # "agent.run"
    request_id: str
    model: str
    status: str  # running, completed, stopped, failed, cancelled
    stop_reason: str | None
    created_at: float
    orchestrator: dict[str, Any]
    agents: list[dict[str, Any]]  # name, role, task, status, steps, generations, tool_calls, tokens, cost
    cost: float


class AgentRun(_Body):
    data: AgentRunData


class GenerationList(_Body):
    data: list[GenerationData]
    has_more: bool


class TokenEstimateData(_Body):
    total_tokens: int


class TokenEstimate(_Body):
    data: TokenEstimateData


class ActivityRow(_Body):
    date: str
    model: str
    provider_name: str | None
    usage: float
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int


class Activity(_Body):
    data: list[ActivityRow]


class ModelStatsData(_Body):
    model: str
    period: str
    activity: list[dict[str, Any]]
    apps: list[dict[str, Any]]
    uptime: dict[str, list[dict[str, Any]]]


class ModelStats(_Body):
    data: ModelStatsData


# ---- health --------------------------------------------------------------------------------------------


class Health(_Body):
    status: str


class Ready(_Body):
    status: str
    local_models: dict[str, Any]
