"""Request models for POST /v1/chat/completions.

Parsing and validation happen in one pass (`ChatCompletionRequest.model_validate_json`). Unknown top-level
fields are kept (`extra="allow"`) so provider-specific extensions survive to the adapters; inner objects
ignore what they do not know, as OpenAI-compatible servers commonly do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from pydantic.json_schema import SkipJsonSchema

from kimi_gateway.schema.server_tools import ApprovedCall, ServerTool


class _Inner(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- content parts -------------------------------------------------------------------------------------


class TextPart(_Inner):
    type: Literal["text"]
    text: str


ImageDetail = Literal["auto", "low", "high", "original"]


class ImageURL(_Inner):
    url: str
    detail: ImageDetail | None = None
    # Set by the gateway, never read from the wire: the http(s) URL a checked image (now a data URL) was
    # fetched from, so adapters of providers that fetch URLs themselves can send that instead. Here rather
    # than on the request: a private attribute costs every model instance a lookup chain when validated.
    _fetched_from: str | None = PrivateAttr(default=None)

    @classmethod
    def checked(cls, url: str, detail: ImageDetail | None, fetched_from: str | None) -> ImageURL:
        """A checked image's URL (a data URL), remembering where it was fetched from."""
        image = cls(url=url, detail=detail)
        image._fetched_from = fetched_from
        return image

    @property
    def fetched_from(self) -> str | None:
        return self._fetched_from


class ImagePart(_Inner):
    type: Literal["image_url"]
    # Moonshot also accepts a bare string here.
    image_url: ImageURL | str


class VideoURL(_Inner):
    url: str


class VideoPart(_Inner):
    type: Literal["video_url"]
    video_url: VideoURL | str


class FileData(_Inner):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(_Inner):
    type: Literal["file"]
    file: FileData


class InputAudio(_Inner):
    data: str
    format: str


class AudioPart(_Inner):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImagePart | VideoPart | FilePart | AudioPart, Field(discriminator="type")]


# ---- messages ------------------------------------------------------------------------------------------


class FunctionCall(_Inner):
    name: str
    arguments: str


class ToolCall(_Inner):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Inner):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(_Inner):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Inner):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    # Reasoning replayed by the client, under any of the names clients use.
    reasoning: str | None = None
    reasoning_content: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None
    # Moonshot's Partial Mode: continue this message instead of answering it.
    partial: bool = False


class ToolMessage(_Inner):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


# ---- tools and formats ---------------------------------------------------------------------------------


class FunctionDefinition(_Inner):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Inner):
    type: Literal["function"]
    function: FunctionDefinition


class McpToolEntry(BaseModel):
    """`{"type": "mcp", "server_label", "server_url", ...}` in a chat request's tools (the Responses API's
    shape): an MCP server whose tools the gateway runs."""

    model_config = ConfigDict(extra="allow")
    type: Literal["mcp"]


class OpenRouterServerTool(_Inner):
    """`{"type": "openrouter:web_search", "parameters": {...}}` in a chat request's tools."""

    type: Literal["openrouter:web_search", "openrouter:web_fetch", "web_search", "web_search_preview"]
    parameters: dict[str, Any] | None = None


class NamedFunction(_Inner):
    name: str


class BuiltinFunction(_Inner):
    """Moonshot's `{"type": "builtin_function", "function": {"name": "$web_search"}}`."""

    type: Literal["builtin_function"]
    function: NamedFunction


class NamedToolChoice(_Inner):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormatText(_Inner):
    type: Literal["text"]


class ResponseFormatJSONObject(_Inner):
    type: Literal["json_object"]


class JSONSchemaSpec(_Inner):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    # `schema` shadows a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJSONSchema(_Inner):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(_Inner):
    include_usage: bool = False


# ---- routing and reasoning (OpenRouter's extensions) -----------------------------------------------------


class SortBy(_Inner):
    by: Literal["price", "throughput", "latency"]


class MaxPrice(_Inner):
    """USD per million tokens (OpenRouter types these as strings or numbers)."""

    prompt: float | None = Field(default=None, ge=0)
    completion: float | None = Field(default=None, ge=0)


class AgentOptions(_Inner):
    """`agent: {"mode": "swarm", ...}`: the model may split the task among sub-agents the gateway runs
    (core/swarm.py), within these bounds (each also bounded by the operator's [agents])."""

    mode: Literal["swarm"] = "swarm"
    max_depth: int = Field(default=1, ge=1, le=4, strict=True)  # levels of agents creating agents
    max_agents: int = Field(default=8, ge=1, le=64, strict=True)  # sub-agents in the whole run
    max_steps: int = Field(default=15, ge=1, le=100, strict=True)  # the orchestrator's model calls
    agent_max_steps: int = Field(default=30, ge=1, le=200, strict=True)  # each sub-agent's model calls
    max_cost: float | None = Field(default=None, ge=0, le=10_000)  # USD for the whole run


class ProviderPreferences(_Inner):
    order: list[str] | None = None
    allow_fallbacks: bool = True
    require_parameters: bool = False
    only: list[str] | None = None
    ignore: list[str] | None = None
    sort: Literal["price", "throughput", "latency"] | SortBy | None = None
    max_price: MaxPrice | None = None
    quantizations: list[str] | None = None

    @property
    def sort_by(self) -> str | None:
        return self.sort.by if isinstance(self.sort, SortBy) else self.sort


class Thinking(_Inner):
    """Moonshot's switch: `{"type": "enabled" | "disabled"}`."""

    type: Literal["enabled", "disabled"]


class ReasoningConfig(_Inner):
    effort: Literal["max", "xhigh", "high", "medium", "low", "minimal", "none"] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    exclude: bool = False
    enabled: bool | None = None


# ---- the request ---------------------------------------------------------------------------------------


MAX_OUTPUT_TOKENS = 10_000_000


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    # Strict: JSON's `true` is not the count 1. Bounded at the edge (no model has a longer output).
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS, strict=True)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, strict=True)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    response_format: ResponseFormat | None = None
    if TYPE_CHECKING:
        tools: list[Tool] | None = None
    else:
        # OpenRouter's server tools may come among the functions: the chat format takes them out
        # (http/formats/chat.py) before anything else reads `tools`, which then holds functions only.
        tools: list[Tool | OpenRouterServerTool | BuiltinFunction | McpToolEntry] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    user: str | None = None

    provider: ProviderPreferences | None = None
    models: list[str] | None = None
    agent: AgentOptions | None = Field(default=None, exclude=True)  # a swarm run (never sent upstream)
    reasoning: ReasoningConfig | None = None
    include_reasoning: bool | None = None
    reasoning_effort: Literal["max", "xhigh", "high", "medium", "low", "minimal", "none"] | None = None
    thinking: Thinking | None = None
    prompt_cache_key: str | None = None
    session_id: str | None = Field(default=None, max_length=256)

    # vLLM's extension: keep generating past end-of-sequence until max_tokens.
    ignore_eos: bool = False

    # Set by the legacy completions format (http/formats/text.py), never read from a chat request (its
    # format refuses it): the prompt as the model reads it, without the chat template. Not in the body
    # sent upstream; adapters of providers with a completions endpoint send it as `prompt` there.
    raw_prompt: str | None = Field(default=None, exclude=True)
    # Set by the gateway after validation, never taken from a body (`_set_by_the_gateway`), never
    # documented nor sent upstream.
    # Server-side tools (schema/server_tools.py), as the formats found them.
    server_tools: SkipJsonSchema[list[ServerTool]] = Field(default_factory=list, exclude=True)
    # Moonshot's builtin functions (`{"type": "builtin_function", "function": {"name": "$web_search"}}`),
    # set apart by the chat format: sent as they are to a provider that runs them, else run by the gateway.
    builtin_tools: SkipJsonSchema[list[dict[str, Any]]] = Field(default_factory=list, exclude=True)
    # MCP calls the client approved or denied (the Responses API's mcp_approval_response), to run first.
    approved_calls: SkipJsonSchema[list[ApprovedCall]] = Field(default_factory=list, exclude=True)

    @field_validator("server_tools", "builtin_tools", "approved_calls", mode="before")
    @classmethod
    def _set_by_the_gateway(cls, value: Any) -> list[Any]:
        """A body's own value is dropped: these are set after validation (a validator that runs only when
        a body names them, so it costs the common request nothing)."""
        return []

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @property
    def stop_list(self) -> list[str]:
        # The validator normalises `stop` to a list; this keeps mypy informed.
        return list(self.stop) if isinstance(self.stop, list) else []

    @property
    def partial_prefix(self) -> str | None:
        """The text a Partial Mode request asks to continue, if it is one."""
        last = self.messages[-1]
        if isinstance(last, AssistantMessage) and last.partial:
            content = last.content
            if isinstance(content, list):
                return "".join(part.text for part in content)
            return content or ""
        return None

    @property
    def reasoning_wanted(self) -> bool | None:
        """Whether the client asked for reasoning on (True), off (False), or left it to the model (None)."""
        if self.thinking is not None:
            return self.thinking.type == "enabled"
        r = self.reasoning
        if r is not None:
            if r.enabled is not None:
                return r.enabled
            if r.effort is not None:
                return r.effort != "none"
            if r.max_tokens is not None:
                return r.max_tokens > 0
        if self.reasoning_effort is not None:
            return self.reasoning_effort != "none"
        return None

    @property
    def reasoning_excluded(self) -> bool:
        """Reasoning may run but is not returned."""
        return bool(self.reasoning and self.reasoning.exclude) or self.include_reasoning is False

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
