"""Server-side tools on the gateway's request: which ones the model is offered, with their limits.

Each format fills `ChatCompletionRequest.server_tools` from its own shapes (Anthropic's
`web_search_20250305`, OpenRouter's `openrouter:web_search` and `plugins: [{"id": "web"}]`, the `:online`
variant); the tool loop (core/toolloop.py) runs them (tools/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kimi_gateway.errors import invalid_request

ToolKind = Literal["web_search", "web_fetch", "file_search", "mcp", "agents"]
MAX_DOMAINS = 100


@dataclass(frozen=True, slots=True)
class McpServer:
    """A remote MCP server a request uses (tools/mcp.py reaches it)."""

    label: str
    url: str | None  # None: the operator's server of that label ([tools.mcp.servers])
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # secrets: never in a repr or a log
    allowed_tools: tuple[str, ...] | None = None  # None: every tool
    approval: str = "always"  # "never", or "always": each call waits for the client's approval
    never_approve: frozenset[str] = frozenset()  # tools that run without approval under "always"
    private_ok: bool = False  # configured by the operator: may be on a private address

    def needs_approval(self, tool: str) -> bool:
        return self.approval != "never" and tool not in self.never_approve


@dataclass(frozen=True, slots=True)
class ServerTool:
    """A server-side tool a request offers its model, with the limits its format gave it."""

    kind: ToolKind
    name: str  # the function name the model calls
    max_uses: int | None = None  # calls in the whole request; past it, the call's result is an error
    allowed_domains: tuple[str, ...] = ()  # only these (and their subdomains)
    blocked_domains: tuple[str, ...] = ()  # never these
    max_results: int | None = None  # search results per call
    citations: bool = True  # whether the answer's citations name this tool's sources
    vector_store_ids: tuple[str, ...] = ()  # file_search: the stores searched (the account's own)
    mcp: McpServer | None = None  # mcp: the server (the request names it; the loop lists its tools)
    mcp_tool: str | None = None  # mcp: the server's own name of the tool (`name` is the model's)


@dataclass(frozen=True, slots=True)
class Source:
    """One web search result."""

    url: str
    title: str
    snippet: str
    page_age: str | None = None


@dataclass(frozen=True, slots=True)
class SearchResults:
    query: str
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class FileHit:
    """One chunk of an uploaded file that a file search found."""

    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileResults:
    query: str
    hits: tuple[FileHit, ...]


@dataclass(frozen=True, slots=True)
class FetchedPage:
    url: str
    title: str | None
    text: str  # readable text (HTML pages as Markdown), cut to the result bound
    media_type: str  # of the page as fetched: text/html, text/plain, application/pdf
    retrieved_at: str  # ISO 8601, UTC
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ToolError:
    """A call that produced no result, with Anthropic's error codes (the other formats show the message):
    invalid_tool_input, unavailable, max_uses_exceeded, too_many_requests, query_too_long, url_too_long,
    url_not_allowed, url_not_accessible, unsupported_content_type."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class McpOutput:
    """What an MCP tool returned (its text content), and whether it says it failed."""

    text: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What one sub-agent of a swarm did (core/swarm.py): its answer, or why it has none."""

    name: str
    status: str  # completed, failed, stopped (a bound or the budget ended it)
    answer: str  # its final text, cut to the result bound ("" if none)
    error: str | None = None
    steps: int = 0  # model calls
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class AgentsOutput:
    """The `create_agents` call's result: each agent's report, in the order they were asked for."""

    run_id: str
    reports: tuple[AgentReport, ...]


ToolOutput = SearchResults | FetchedPage | FileResults | McpOutput | AgentsOutput | ToolError


@dataclass(slots=True)
class ToolUse:
    """The model called a server-side tool: emitted into the response's events before the call runs."""

    id: str  # srvtoolu_...
    tool: ServerTool
    input: dict[str, Any]


@dataclass(slots=True)
class ToolResult:
    """A server-side tool call's result: emitted once it ran."""

    id: str  # the ToolUse's
    tool: ServerTool
    output: ToolOutput
    cost_nano: int = 0  # the call's own price ([tools] price_per_call / price_per_page)


@dataclass(frozen=True, slots=True)
class McpListing:
    """An MCP server's tools as the model was offered them (or why they could not be listed)."""

    label: str
    tools: tuple[dict[str, Any], ...]  # name, description, input_schema, annotations
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An MCP call waiting for the client's approval: the response ends with it."""

    id: str  # mcpr_...
    tool: ServerTool
    arguments: str


@dataclass(frozen=True, slots=True)
class ApprovedCall:
    """A call the client answered (`mcp_approval_response`), run (or not) before the model goes on."""

    call_id: str
    label: str
    tool: str  # the server's name of it
    arguments: str
    approve: bool
    reason: str | None = None


@dataclass(slots=True)
class ToolTally:
    """A request's server-side tool calls: for `usage.server_tool_use`, the charge and the citations."""

    web_search_requests: int = 0
    web_fetch_requests: int = 0
    file_search_requests: int = 0
    cost_nano: int = 0
    files: list[FileHit] = field(default_factory=list)  # file search hits the answer may cite, in order
    sources: list[Source] = field(default_factory=list)  # every source the answer may cite, in order
    activity: list[ToolUse | ToolResult | McpListing | ApprovalRequest] = field(default_factory=list)

    def count(self, result: ToolResult) -> None:
        if result.tool.kind == "web_search":
            self.web_search_requests += 1
        elif result.tool.kind == "web_fetch":
            self.web_fetch_requests += 1
        elif result.tool.kind == "file_search":
            self.file_search_requests += 1
        self.cost_nano += result.cost_nano
        output = result.output
        if result.tool.citations:
            if isinstance(output, SearchResults):
                self.sources.extend(output.sources)
            elif isinstance(output, FetchedPage):
                self.sources.append(Source(output.url, output.title or output.url, output.text[:150]))
            elif isinstance(output, FileResults):
                self.files.extend(output.hits)


def url_citations(text: str, sources: list[Source]) -> list[dict[str, Any]]:
    """The answer's sources as chat's `annotations` (OpenRouter's shape: `url_citation` with the source's
    title and snippet as `content`), each spanning where the answer names its URL, else empty at 0.
    One per URL."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for source in sources:
        if source.url in seen:
            continue
        seen.add(source.url)
        start = text.find(source.url)
        end = start + len(source.url) if start >= 0 else 0
        citation = {
            "url": source.url,
            "title": source.title,
            "content": source.snippet,
            "start_index": max(start, 0),
            "end_index": end,
        }
        out.append({"type": "url_citation", "url_citation": citation})
    return out


def server_tool_usage(tally: ToolTally) -> dict[str, int]:
    """`usage.server_tool_use`, as Anthropic's and OpenRouter's usage objects carry it."""
    return {"web_search_requests": tally.web_search_requests, "web_fetch_requests": tally.web_fetch_requests}


def mcp_function_name(label: str, tool: str) -> str:
    """An MCP tool's name for the model: `<label>__<tool>`, in the characters a function name may hold."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", f"{label}__{tool}")[:64]


_LABEL = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > 128 or not all(isinstance(n, str) and n for n in value):
        raise invalid_request("a list of up to 128 tool names is expected", param=where)
    return tuple(value)


def mcp_tool(tool: dict[str, Any], where: str) -> ServerTool:
    """`{"type": "mcp", "server_label", "server_url", "headers", "allowed_tools", "require_approval"}`. With
    no `server_url`, the label names a server of the operator's ([tools.mcp.servers])."""
    label = tool.get("server_label")
    if not isinstance(label, str) or not _LABEL.match(label):
        raise invalid_request("server_label must match ^[a-zA-Z0-9_-]{1,64}$", param=f"{where}.server_label")
    url = tool.get("server_url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048
    ):
        raise invalid_request("server_url must be an http(s) URL", param=f"{where}.server_url")
    if tool.get("connector_id") is not None:
        raise invalid_request("connectors are OpenAI's: give a server_url", param=f"{where}.connector_id")
    headers = tool.get("headers") or {}
    if tool.get("authorization"):
        headers = {**headers, "Authorization": f"Bearer {tool['authorization']}"}
    if (
        not isinstance(headers, dict)
        or len(headers) > 16
        or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 8192 for k, v in headers.items())
    ):
        raise invalid_request("headers must be up to 16 string values", param=f"{where}.headers")
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, dict):
        allowed = allowed.get("tool_names")
    approval = tool.get("require_approval", "always")
    never: tuple[str, ...] = ()
    if isinstance(approval, dict):
        never = _names((approval.get("never") or {}).get("tool_names") or [], f"{where}.require_approval")
        approval = "always"
    if approval not in ("always", "never"):
        raise invalid_request(
            "require_approval must be 'always', 'never' or an object", param=f"{where}.require_approval"
        )
    server = McpServer(
        label,
        url,
        headers,
        _names(allowed, f"{where}.allowed_tools") if allowed is not None else None,
        approval,
        frozenset(never),
    )
    return ServerTool("mcp", label, mcp=server)


# OpenRouter's server tools in a chat request's `tools`, and the shorthand its API converts to them.
OPENROUTER_TYPES: dict[str, ToolKind] = {
    "openrouter:web_search": "web_search",
    "openrouter:web_fetch": "web_fetch",
    "web_search": "web_search",
    "web_search_preview": "web_search",
}


def _domains(value: Any, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
        raise invalid_request(f"{param} must be a list of domain names", param=param)
    if len(value) > MAX_DOMAINS:
        raise invalid_request(f"{param} takes at most {MAX_DOMAINS} domains", param=param)
    return tuple(value)


def _count(value: Any, param: str, most: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise invalid_request(f"{param} must be an integer from 1 to {most}", param=param)
    return value


def openrouter_tool(entry: dict[str, Any], param: str) -> ServerTool:
    """`{"type": "openrouter:web_search", "parameters": {...}}` (OpenRouter's fields where they apply)."""
    kind = OPENROUTER_TYPES[entry["type"]]
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid_request("parameters must be an object", param=f"{param}.parameters")
    allowed = _domains(params.get("allowed_domains"), f"{param}.parameters.allowed_domains")
    blocked = _domains(
        params.get("excluded_domains", params.get("blocked_domains")), f"{param}.parameters.excluded_domains"
    )
    return ServerTool(
        kind,
        kind,
        max_uses=_count(params.get("max_uses"), f"{param}.parameters.max_uses", 1000),
        allowed_domains=allowed,
        blocked_domains=blocked,
        max_results=_count(params.get("max_results"), f"{param}.parameters.max_results", 25),
    )


def web_plugin(plugin: dict[str, Any], param: str) -> ServerTool:
    """OpenRouter's `plugins: [{"id": "web", "max_results", "include_domains", "exclude_domains"}]`."""
    return ServerTool(
        "web_search",
        "web_search",
        max_results=_count(plugin.get("max_results"), f"{param}.max_results", 25),
        allowed_domains=_domains(plugin.get("include_domains"), f"{param}.include_domains"),
        blocked_domains=_domains(plugin.get("exclude_domains"), f"{param}.exclude_domains"),
    )
