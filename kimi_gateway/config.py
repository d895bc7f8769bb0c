"""Gateway configuration: defaults, overridden by a TOML file (`--config` or KIMI_GATEWAY_CONFIG), overridden
by the environment: every key as `KIMI_GATEWAY_<SECTION>__<KEY>` (`KIMI_GATEWAY_SERVER__PORT=9000`,
`KIMI_GATEWAY_TOOLS__WEB_SEARCH__BASE_URL=...`, top-level keys as `KIMI_GATEWAY_DATA_DIR`; lists and tables as
JSON), and the well-known `DATABASE_URL` and `REDIS_URL`. Both are read by pydantic-settings into the same
models, so a bad value gets the same validation and the same message wherever it was written.

Secrets never live in the file: a provider names the environment variable holding its key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

CONFIG_ENV = "KIMI_GATEWAY_CONFIG"
ENV_PREFIX = "KIMI_GATEWAY_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 20 * 1024 * 1024
    # Prompt and completion text are never logged unless this is set.
    log_prompts: bool = False
    log_level: str = "info"
    # "auto": readable lines at a terminal, JSON lines otherwise (containers, services, files).
    log_format: Literal["auto", "json", "text"] = "auto"
    # The path prefix a reverse proxy serves the gateway under (uvicorn's --root-path), e.g. "/kimi".
    root_path: str = ""
    # Connection limits (http/protocol.py): request headers must arrive within this many seconds and
    # total at most this many bytes (else 408 / 431); at most this many connections at once (else 503).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=16 * 1024 * 1024)
    max_connections: int = Field(default=1000, ge=1)
    # Request bodies still arriving a second after they began, from one client address at once; more get
    # 429. Bodies sent at network speed are never counted (behind a proxy, clients share its address).
    slow_bodies_per_client: int = Field(default=32, ge=1)
    # Browser apps on these origins may call the API directly (CORS); off by default. "*" allows any
    # origin (never with credentials: keys travel in the Authorization header, not cookies).
    cors_origins: list[str] = Field(default_factory=list)
    # An idle kept-alive connection is closed after this.
    keep_alive_seconds: int = Field(default=5, gt=0, le=300)
    # On SIGTERM: /ready fails (503 "draining") for this long while requests are still served, so load
    # balancers stop sending new ones; then the listener closes and requests in flight have up to
    # `shutdown_seconds` to finish before the rest end with an in-band error.
    drain_seconds: float = Field(default=0.0, ge=0, le=300)
    shutdown_seconds: int = Field(default=30, ge=0, le=3600)
    # Prometheus metrics at /metrics: answered to loopback clients and management keys, or to anyone
    # with `metrics_public`.
    metrics: bool = True
    metrics_public: bool = False
    # The pages for people (/models, /chat, /console): static files that call the API with the key the
    # user pastes. Off: those paths answer 404.
    web: bool = True


class EngineConfig(_Section):
    # llama.cpp threads for generating and for reading prompts; all cores when unset. Measured here
    # (SmolLM2-135M, 2 cores): both cores with flash attention read prompts fastest.
    n_threads: int | None = Field(default=None, ge=1)
    n_threads_batch: int | None = Field(default=None, ge=1)
    flash_attn: bool = True
    # Most tokens one step of the model evaluates (a prompt is read in chunks of at most this).
    n_batch: int = Field(default=512, ge=16, le=8192)
    # Requests served at once per local model (sequences in one llama.cpp context), and how many more may
    # wait for a free one. Past both: 503 with Retry-After at once.
    parallel: int = Field(default=4, ge=1, le=64)
    max_queue: int = Field(default=16, ge=0)
    retry_after_seconds: int = 1
    # A request that has not started within this many seconds gets 503 + Retry-After (Anthropic: 529).
    queue_timeout_seconds: float | None = Field(default=30.0, gt=0)
    # Prompt tokens read in one step while others wait on it (twice that alone): a short request is
    # answered while a long prompt is read, and a cancel is seen within a step (64 tokens: about 0.45 s on
    # this 2-core machine; the chunks are fixed, not timed, so answers repeat run after run).
    prefill_chunk: int = Field(default=64, ge=16, le=8192)
    # A step running longer than this is stuck inside llama.cpp: the engine process is ended (its requests
    # get 503, as for a crash) and the next request starts a new one.
    step_timeout_seconds: float = Field(default=120.0, gt=0)
    # Upper bound on one request's context; a model's own context length is used when it is smaller.
    max_context: int = 8192
    # The KV cache's size in tokens, shared by the sequences; twice max_context when unset.
    kv_cells: int | None = Field(default=None, ge=256)
    # Each local model runs in its own process, started by the first request for it; `preload` starts
    # it with the gateway instead. It stops after `idle_seconds` without requests (never when unset).
    preload: bool = False
    idle_seconds: float | None = Field(default=None, gt=0)


# The names of the wire styles (the classes are providers/wire/): a provider speaks one of them.
StyleName = Literal["moonshot", "openrouter", "openai", "vllm", "sglang"]


class PricingConfig(_Section):
    """USD per million tokens."""

    input: float | None = None
    cached_input: float | None = None
    output: float | None = None


class ProviderModelConfig(_Section):
    """One model a provider serves. Unset fields come from the model's catalog card."""

    upstream: str | None = None  # the provider's id for the model; ours when unset
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    context_length: int | None = None
    supported_parameters: list[str] | None = None
    input_modalities: list[str] | None = None
    quantization: str | None = None


class TimeoutsConfig(_Section):
    connect: float = 5.0
    first_byte: float = 60.0  # from sending the request to the first streamed event
    idle: float = 60.0  # between two streamed chunks


class ProviderConfig(_Section):
    preset: str | None = None  # defaults to the section name when a preset of that name exists
    enabled: bool = True
    name: str | None = None  # display name
    base_url: str | None = None
    style: StyleName | None = None
    api_key_env: str | None = None  # the key itself never lives in the file
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    # vLLM/SGLang only: whether the server runs its own reasoning and tool-call parsers. When false, raw
    # <think> and tool-call tokens in the output are parsed by the gateway.
    server_parsers: bool = False
    # Send images the gateway fetched as their URL (the provider fetches them) instead of base64. The default
    # follows the style: yes for openrouter and openai (Together, NIM), no for moonshot, vllm and sglang.
    forward_image_urls: bool | None = None
    models: dict[str, ProviderModelConfig] = Field(default_factory=dict)


class RoutingConfig(_Section):
    # SSE comment lines sent while a stream waits for its first upstream event.
    keepalive_seconds: float = 3.0
    # Providers that failed this recently go to the back of the default order.
    failure_window_seconds: float = 30.0
    # Consecutive failures that open a provider's circuit, and how long it stays open before a probe.
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 30.0
    # Upper bound on a 429's Retry-After cool-down.
    max_cooldown_seconds: float = 300.0
    # How long a conversation stays with the provider holding its cached prefix; 0 turns stickiness off.
    sticky_seconds: float = 600.0
    # Moonshot's rules refused as Moonshot does (400) rather than adapted (catalog/rules.py); a request
    # asks for this itself with `provider.require_parameters`.
    strict_rules: bool = False


class TierConfig(_Section):
    tier: int
    min_recharge: float  # cumulative recharge, USD
    concurrency: int
    rpm: int


class AccountsConfig(_Section):
    # Replaces the built-in table (Kimi API's published tiers) when set.
    tiers: list[TierConfig] | None = None
    # A hold or concurrency slot older than this belonged to a process that died, and frees itself.
    hold_seconds: float = 900.0
    slot_seconds: float = 600.0
    # Generation records and charges are written to the database in batches this often.
    flush_seconds: float = 0.25
    # Keys and tiers are cached per process for at most this long: a key disabled, or a recharge made,
    # elsewhere (the CLI, another replica without Redis) takes effect here within it. With Redis, replicas
    # tell each other at once (pub/sub). While the database is unreachable, a cached figure is served up to
    # `cache_grace_seconds` past its age bound, then requests needing it get 503.
    cache_seconds: float = Field(default=5.0, gt=0, le=300)
    cache_grace_seconds: float = Field(default=30.0, ge=0, le=3600)


class MediaConfig(_Section):
    max_images: int = 8  # per request, unless the model's catalog entry says otherwise
    # The largest image a model is given when its catalog entry sets no limit; bigger ones are downscaled.
    max_image_pixels: int = 4096 * 4096
    # Images whose header claims more pixels than this are refused before any decoding (bombs).
    max_decode_pixels: int = 64_000_000
    max_fetch_bytes: int = 20 * 1024 * 1024
    fetch_connect_seconds: float = 5.0
    fetch_total_seconds: float = 15.0
    max_redirects: int = 3
    # Hosts (as written in URLs) fetched even though they resolve to non-public addresses. Off by default:
    # only for trusted internal image servers.
    allow_hosts: list[str] = Field(default_factory=list)
    # Video: frames sampled for models that take images but not video, and the caps on what is decoded.
    video_fps: float = 1.0
    video_max_frames: int = 8
    video_max_seconds: float = 120.0
    video_max_pixels: int = 3840 * 2160
    video_budget_seconds: float = 20.0
    # CPU-heavy media work runs in a pool of its own: this many threads, at most this many jobs of one
    # account at once, and at most this many megapixels being decoded at once (one image may always go).
    workers: int = Field(default=2, ge=1, le=64)
    jobs_per_account: int = Field(default=1, ge=1, le=64)
    decoding_megapixels: int = Field(default=64, ge=1)
    # CPU seconds one document's text extraction may take (a PDF built to be slow is refused with 400).
    document_budget_seconds: float = Field(default=5.0, gt=0)
    # CPU seconds all of one request's media work may take together (fetched images decoded, OCR, video
    # frames, documents): past it, 400 `media_too_costly`. Its wall time is three times this.
    request_budget_seconds: float = Field(default=30.0, gt=0)
    # Images read by OCR (for text-only models) are scaled down to this first: OCR gains little beyond.
    ocr_max_pixels: int = Field(default=4_000_000, ge=100_000)
    # Files API quotas, per account (Moonshot's: 100 MB a file, 1,000 files, 10 GB in all).
    max_file_bytes: int = 100 * 1024 * 1024
    max_files: int = 1000
    max_total_bytes: int = 10 * 1024**3


class ResponsesConfig(_Section):
    # How long a response made with `store` (the Responses API's default) is kept for
    # `previous_response_id` and GET /v1/responses/{id}.
    retention_days: float = Field(default=30.0, gt=0, le=3650)


SearchBackend = Literal["searxng", "brave", "tavily", "exa"]


class WebSearchConfig(_Section):
    """[tools.web_search]: the backend the gateway searches with when a model calls `web_search`."""

    backend: SearchBackend = "searxng"
    # The backend's URL. SearXNG is self-hosted and has none by default (web search is then off); the
    # others default to their public APIs. An operator's URL may be on a private address.
    base_url: str | None = None
    api_key_env: str | None = None  # the environment variable holding the backend's key
    max_results: int = Field(default=5, ge=1, le=20)
    price_per_call: float = Field(default=0.0, ge=0)  # USD per search, charged to the account


class WebFetchConfig(_Section):
    """[tools.web_fetch]: pages fetched for the model, through the media fetcher's address checks."""

    enabled: bool = True
    price_per_page: float = Field(default=0.0, ge=0)  # USD per page fetched
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)  # a page's download


class FileSearchConfig(_Section):
    """[tools.file_search]: searches of the account's vector stores (the Responses API's file_search)."""

    max_results: int = Field(default=8, ge=1, le=50)
    price_per_call: float = Field(default=0.0, ge=0)


class McpServerConfig(_Section):
    """[tools.mcp.servers.NAME]: an MCP server of the operator's, offered to requests by its name."""

    url: str
    allowed_tools: list[str] | None = None  # None: every tool it lists
    # Request headers and the environment variables holding their values (tokens stay out of the file).
    headers_env: dict[str, str] = Field(default_factory=dict)
    require_approval: Literal["never", "always"] = "never"


class McpConfig(_Section):
    servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    max_servers: int = Field(default=4, ge=1, le=16)  # MCP servers one request may name


class ToolsConfig(_Section):
    """[tools]: the server-side tools and the bounds of the loop that runs them inside one request."""

    max_steps: int = Field(default=8, ge=1, le=100)  # model calls in one request
    max_calls_per_step: int = Field(default=8, ge=1, le=64)  # tool calls run from one model turn
    max_tool_seconds: float = Field(default=20.0, gt=0, le=300)  # each call's wall time
    max_result_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)  # what the model is given
    # The operator's own domain lists, over every request's: searched results and fetched pages outside
    # `allowed_domains` (when set) or inside `blocked_domains` are left out.
    allowed_domains: list[str] = Field(default_factory=list)
    blocked_domains: list[str] = Field(default_factory=list)
    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig)
    web_fetch: WebFetchConfig = Field(default_factory=WebFetchConfig)
    file_search: FileSearchConfig = Field(default_factory=FileSearchConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)


class AgentsConfig(_Section):
    """[agents]: the operator's bounds on swarm runs (`agent: {"mode": "swarm"}`, the `:swarm` variant),
    over what each request asks for."""

    enabled: bool = True
    max_agents: int = Field(default=16, ge=1, le=256)  # sub-agents in one run, every level
    max_depth: int = Field(default=1, ge=1, le=4)  # 1: only the orchestrator creates agents
    max_parallel: int = Field(default=4, ge=1, le=64)  # sub-agents (and their model calls) at once in a run
    # A sub-agent's call the account's rate limits refuse is tried again for this long, then fails.
    rate_limit_wait_seconds: float = Field(default=5.0, ge=0, le=120)
    max_steps: int = Field(default=15, ge=1, le=200)  # the orchestrator's model calls
    agent_max_steps: int = Field(default=30, ge=1, le=500)  # each sub-agent's model calls
    max_answer_bytes: int = Field(
        default=8192, ge=256, le=1024 * 1024
    )  # of each agent's answer, to the orchestrator
    max_task_chars: int = Field(default=8000, ge=100, le=200_000)  # of each agent's instructions
    keep_runs: int = Field(default=256, ge=1, le=100_000)  # finished runs each process keeps in memory


class GatewayConfig(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    # XDG's data directory (`$XDG_DATA_HOME`, else ~/.local/share) when unset.
    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    # SQLAlchemy URL; a SQLite file in data_dir when unset. postgresql:// URLs use asyncpg.
    database_url: str | None = None
    # With Redis, rate limits and credit holds are shared by every replica pointing at it.
    redis_url: str | None = None
    redis_prefix: str = "kg:"
    accounts: AccountsConfig = Field(default_factory=AccountsConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    # Per-model overrides and additions, merged over the packaged catalog.
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or "~/.local/share") / "kimi-gateway"


class ConfigError(ValueError):
    """The configuration cannot be used: each problem by its key, and where the value came from."""


class _Layered(GatewayConfig, BaseSettings):
    """The configuration as the file and the environment give it, the environment first."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )
    # The names every hosting platform sets, besides ours.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("kimi_gateway_database_url", "database_url")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("kimi_gateway_redis_url", "redis_url")
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the file's values come in as init arguments


def environment_keys() -> list[str]:
    """The environment variables that set configuration keys (names only: their values may be secret)."""
    names = [n for n in os.environ if n.upper().startswith(ENV_PREFIX) and n.upper() != CONFIG_ENV]
    ours = [
        n for n in names if "__" in n or n.upper()[len(ENV_PREFIX) :].lower() in GatewayConfig.model_fields
    ]
    return sorted(ours + [n for n in ("DATABASE_URL", "REDIS_URL") if n in os.environ])


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Defaults, the file (if any), then the environment. Raises ConfigError naming each bad key."""
    path = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    try:
        layered = _Layered(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, str(path) if path else None)) from None
    except SettingsError as exc:  # a list or table in the environment that is not JSON
        raise ConfigError(f"invalid configuration in the environment: {exc}") from None
    config = GatewayConfig.model_validate(layered.model_dump(exclude_unset=True))
    # Relative paths in the file are relative to the file, not to wherever the server was started; one
    # given in the environment is relative to the working directory.
    base = Path(path).resolve().parent if path else Path.cwd()
    from_environment = any(name.upper() == ENV_PREFIX + "DATA_DIR" for name in os.environ)
    config.data_dir = ((Path.cwd() if from_environment else base) / config.data_dir.expanduser()).resolve()
    for entry in config.models.values():
        local = entry.get("local")
        if isinstance(local, dict) and isinstance(local.get("gguf"), str):
            gguf = local["gguf"]
            if not gguf.startswith("package:"):
                local["gguf"] = str((base / Path(gguf).expanduser()).resolve())
    return config


def _problems(exc: ValidationError, path: str | None) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        variable = ENV_PREFIX + "__".join(loc).upper()
        if key in ("kimi_gateway_database_url", "database_url", "kimi_gateway_redis_url", "redis_url"):
            key = key.removeprefix("kimi_gateway_")
            variable = key.upper()
        where = variable if _set_in_environment(loc) else (path or "defaults")
        lines.append(f"{key}: {error['msg']} (from {where})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _set_in_environment(loc: list[str]) -> bool:
    """Whether the environment set this key or a table holding it."""
    upper = {name.upper() for name in os.environ}
    for depth in range(len(loc), 0, -1):
        if ENV_PREFIX + "__".join(loc[:depth]).upper() in upper:
            return True
    return loc[0] in ("database_url", "redis_url") and loc[0].upper() in upper


def masked(config: GatewayConfig) -> dict[str, Any]:
    """The configuration as `kimi-gateway config show` prints it: every URL's password and secret-looking
    query values hidden, wherever the URL is (keys and tokens themselves never live in it: only the names
    of the variables holding them)."""
    shown: dict[str, Any] = _masking(config.model_dump(mode="json"))
    return shown


def _masking(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _masking(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masking(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _without_password(value)
    return value


_SECRET_PARAMETERS = ("key", "token", "secret", "password", "auth", "sig")


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else "***@"
        netloc = user + (parts.hostname or "") + (f":{port}" if port else "")
    query = "&".join(
        f"{name}=***" if any(word in name.lower() for word in _SECRET_PARAMETERS) else pair
        for pair in parts.query.split("&")
        if pair
        for name in [pair.split("=", 1)[0]]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
