"""Gateway configuration: defaults, overridden by a TOML file (`--config` or KIMI_GATEWAY_CONFIG).

Secrets never live in the file: a provider names the environment variable holding its key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONFIG_ENV = "KIMI_GATEWAY_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 20 * 1024 * 1024
    # Prompt and completion text are never logged unless this is set.
    log_prompts: bool = False
    log_level: str = "info"


class EngineConfig(_Section):
    n_threads: int | None = None
    n_batch: int = 512
    # Requests waiting behind the one being generated, per local model. Past this: 503 with Retry-After.
    max_queue: int = 16
    retry_after_seconds: int = 1
    # Upper bound on the KV cache size; a model's own context length is used when it is smaller.
    max_context: int = 8192


class GatewayConfig(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    data_dir: Path = Path("~/.local/share/kimi-gateway")
    # Per-model overrides and additions, merged over the packaged catalog.
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return GatewayConfig()
    with open(path, "rb") as f:
        data = tomllib.load(f)
    config = GatewayConfig.model_validate(data)
    # Relative paths in the file are relative to the file, not to wherever the server was started.
    base = Path(path).resolve().parent
    config.data_dir = (base / config.data_dir.expanduser()).resolve()
    for entry in config.models.values():
        local = entry.get("local")
        if isinstance(local, dict) and isinstance(local.get("gguf"), str):
            gguf = local["gguf"]
            if not gguf.startswith("package:"):
                local["gguf"] = str((base / Path(gguf).expanduser()).resolve())
    return config
