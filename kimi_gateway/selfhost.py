"""`kimi-gateway selfhost`: the launch command for a Kimi model on vLLM or SGLang, and the provider entry
to paste into the gateway's config. The presets live in providers/selfhost.toml."""

from __future__ import annotations

import shlex
import tomllib
from importlib import resources
from typing import Any

ENGINES = ("vllm", "sglang")


def presets() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("kimi_gateway.providers").joinpath("selfhost.toml").read_text("utf-8")
    return tomllib.loads(text)


def render(engine: str, model: str, host: str = "127.0.0.1", port: int = 8000) -> str:
    table = presets()
    if engine not in table:
        raise KeyError(f"unknown engine '{engine}': choose from {', '.join(ENGINES)}")
    if model not in table[engine]:
        raise KeyError(f"no {engine} preset for '{model}': choose from {', '.join(table[engine])}")
    preset = table[engine][model]
    args: list[str] = [*preset["args"], "--served-model-name", model, "--host", host, "--port", str(port)]
    if engine == "vllm":
        head = ["vllm", "serve", preset["repo"]]
    else:
        head = ["python", "-m", "sglang.launch_server", "--model-path", preset["repo"]]
    lines = [" ".join(shlex.quote(part) for part in head)]
    for arg in args:  # one flag and its value a line
        if arg.startswith("-"):
            lines.append(shlex.quote(arg))
        else:
            lines[-1] += " " + shlex.quote(arg)
    lengths = {"--max-model-len", "--context-length"}
    context = next((args[i + 1] for i, a in enumerate(args) if a in lengths), None)
    name = f"selfhosted-{engine}"
    entry = [
        f"[providers.{name}]",
        f'style = "{engine}"',
        f'base_url = "http://{host}:{port}/v1"',
        f"server_parsers = {'true' if preset['server_parsers'] else 'false'}",
        f'[providers.{name}.models."{model}"]',
        f'upstream = "{model}"',
    ]
    if context:
        entry.append(f"context_length = {context}")
    return "\n".join(
        [
            f"# {model} on {engine}: needs {preset['engine']}",
            " \\\n    ".join(lines),
            "",
            "# Then add this to the gateway's config file:",
            *entry,
        ]
    )
