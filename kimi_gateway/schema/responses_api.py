"""Request models for OpenAI's Responses API (POST /v1/responses), the subset the `openai` SDK's
`client.responses.*` sends for text, images, files, function calling and structured output.

Items a client replays from an earlier response (`reasoning`, assistant `message` with `id`/`status`,
`function_call`) are accepted as they come back. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class _Inner(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputText(_Inner):
    type: Literal["input_text", "output_text", "text"]
    text: str


class InputImage(_Inner):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(_Inner):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = Field(default=None, max_length=500)


class Refusal(_Inner):
    type: Literal["refusal"]
    refusal: str


InputPart = Annotated[InputText | InputImage | InputFile | Refusal, Field(discriminator="type")]


class MessageItem(_Inner):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Inner):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None  # Codex's tools grouped by MCP server (http/formats/tool_names.py)
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Inner):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputPart]
    id: str | None = None
    status: str | None = None


class SummaryText(_Inner):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(_Inner):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(_Inner):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class WebSearchCallItem(_Inner):
    """A web search the gateway ran in an earlier response, given back (Codex sends them without id)."""

    type: Literal["web_search_call"]
    id: str | None = None
    status: str | None = None
    action: dict[str, Any] | None = None


class McpItem(_Inner):
    """An MCP item of an earlier response given back: its list of tools, a call, an approval request."""

    type: Literal["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    id: str | None = None
    server_label: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    error: Any = None


class McpApprovalResponse(_Inner):
    type: Literal["mcp_approval_response"]
    approval_request_id: str = Field(max_length=80)
    approve: bool
    reason: str | None = Field(default=None, max_length=2000)
    id: str | None = None


class ItemReference(_Inner):
    type: Literal["item_reference"]
    id: str


def _item_type(value: Any) -> str:
    # A message item may leave out its `type` (EasyInputMessage): `role` says what it is.
    if isinstance(value, dict):
        return str(value.get("type") or "message")
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[WebSearchCallItem, Tag("web_search_call")]
    | Annotated[McpItem, Tag("mcp_list_tools")]
    | Annotated[McpItem, Tag("mcp_call")]
    | Annotated[McpItem, Tag("mcp_approval_request")]
    | Annotated[McpApprovalResponse, Tag("mcp_approval_response")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_type),
]


class NamedFunction(_Inner):
    type: Literal["function"]
    name: str


class Reasoning(_Inner):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: str | None = None


class TextFormat(_Inner):
    type: Literal["text", "json_schema", "json_object"]
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Inner):
    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None  # function tools are checked in the translation
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=80)
    store: bool = True
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    background: bool = False
    include: list[str] | None = Field(default=None, max_length=16)  # e.g. file_search_call.results
    # OpenRouter's routing extensions, taken in every format (checked by the chat request's model).
    provider: dict[str, Any] | None = None
    models: list[str] | None = None
    agent: dict[str, Any] | None = None  # a swarm run's options (validated in chat form)
