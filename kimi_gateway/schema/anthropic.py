"""Request models for Anthropic's Messages API (POST /v1/messages and /v1/messages/count_tokens).

What the `anthropic` SDK and Claude Code send, validated in one pass. Unknown fields are ignored (newer
clients send extras such as `context_management` or `output_config` that a Kimi backend cannot honour), and
`cache_control` is accepted wherever it may appear.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Inner(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CacheControl(_Inner):
    type: Literal["ephemeral"] = "ephemeral"
    ttl: str | None = None


class _Block(_Inner):
    cache_control: CacheControl | None = None


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class Base64Source(_Inner):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Inner):
    type: Literal["url"]
    url: str


class TextSource(_Inner):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class ContentSource(_Inner):
    type: Literal["content"]
    content: str | list[TextBlock]


class FileSource(_Inner):
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Base64Source | URLSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[
    Base64Source | URLSource | TextSource | ContentSource | FileSource, Field(discriminator="type")
]


class ImageBlock(_Block):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(_Block):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


ToolResultContent = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool = False


class ServerToolUseBlock(_Inner):
    """A server-side tool call of an earlier response, given back (web search, web fetch, an MCP tool)."""

    type: Literal["server_tool_use", "mcp_tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    server_name: str | None = None  # mcp_tool_use


class ServerToolResultBlock(_Inner):
    """Its result, given back as it was sent: a list of results, or one error or fetch object."""

    type: Literal["web_search_tool_result", "web_fetch_tool_result", "mcp_tool_result"]
    tool_use_id: str
    content: list[dict[str, Any]] | dict[str, Any] | str
    is_error: bool = False  # mcp_tool_result


class ThinkingBlock(_Inner):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Inner):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ServerToolUseBlock
    | ServerToolResultBlock,
    Field(discriminator="type"),
]


class Message(_Inner):
    # "system" inside `messages`: Claude Code 2.x sends one mid-conversation. It stays where it is.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Tool(_Inner):
    """A client tool, or one of Anthropic's server tools (a dated `type`, no `input_schema`): web search
    and web fetch are run by the gateway; the others are refused by the translation, saying so."""

    name: str = ""  # an mcp_toolset has none (its server's name is `mcp_server_name`)
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None
    # web_search_* and web_fetch_*
    max_uses: int | None = Field(default=None, ge=1)
    allowed_domains: list[str] | None = Field(default=None, max_length=100)
    blocked_domains: list[str] | None = Field(default=None, max_length=100)
    citations: dict[str, Any] | None = None
    # mcp_toolset: the server (of `mcp_servers`, or the operator's of that name) and which tools are on
    mcp_server_name: str | None = Field(default=None, max_length=64)
    default_config: dict[str, Any] | None = None
    configs: dict[str, dict[str, Any]] | None = Field(default=None, max_length=128)


class ToolChoice(_Inner):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingConfig(_Inner):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)


class OutputFormat(_Inner):
    """Structured output: the answer's text is JSON matching `schema`."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Inner):
    format: OutputFormat | None = None


class Metadata(_Inner):
    user_id: str | None = Field(default=None, max_length=256)


class Prompt(BaseModel):
    """What Messages and count_tokens share: the prompt."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    # OpenRouter's routing extensions, taken in every format (checked by the chat request's model).
    provider: dict[str, Any] | None = None
    models: list[str] | None = None
    agent: dict[str, Any] | None = None  # a swarm run's options (validated in chat form)


class McpServerDefinition(_Inner):
    """The MCP connector's `mcp_servers` entry."""

    type: Literal["url"] = "url"
    url: str = Field(max_length=2048)
    name: str = Field(max_length=64)
    authorization_token: str | None = Field(default=None, max_length=8192, repr=False)


class MessagesRequest(Prompt):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    metadata: Metadata | None = None
    # Structured output: `output_config.format` now, `output_format` in the beta before it.
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None
    mcp_servers: list[McpServerDefinition] | None = Field(default=None, max_length=16)


class CountTokensRequest(Prompt):
    pass
