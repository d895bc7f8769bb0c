"""A gateway wired to fake upstream providers, one per wire style."""

from __future__ import annotations

from pathlib import Path

from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import FakeUpstream

KEY_ENV = "FAKE_UPSTREAM_KEY"
KEY = "test-upstream-key"
MODEL = "kimi-k2-thinking"

# name: (style, display name, price in, price out, extra model settings)
PROVIDERS: dict[str, tuple[str, str, float, float, str]] = {
    "moon": ("moonshot", "Moonshot AI", 0.60, 2.50, 'quantization = "int4"'),
    "orouter": ("openrouter", "OpenRouter", 0.50, 2.00, ""),
    "tog": (
        "openai",
        "Together",
        1.00,
        3.00,
        "context_length = 2000\n"
        'supported_parameters = ["max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice"]',
    ),
    "vllm": ("vllm", "Self-hosted vLLM", 0.05, 0.05, ""),
    "sglang": ("sglang", "Self-hosted SGLang", 0.05, 0.05, ""),
    "vllmparsed": ("vllm-parsed", "vLLM with parsers", 0.05, 0.05, ""),
}


def start_fakes() -> dict[str, FakeUpstream]:
    return {
        name: FakeUpstream(style, api_key=KEY, display=display)
        for name, (style, display, *_) in PROVIDERS.items()
    }


def gateway_config(fakes: dict[str, FakeUpstream], routing: str = "") -> str:
    lines = [
        "[routing]",
        "keepalive_seconds = 0.3",
        "breaker_failures = 2",
        "breaker_cooldown_seconds = 1.0",
        routing,
    ]
    for name, (style, display, price_in, price_out, extra) in PROVIDERS.items():
        wire = "vllm" if style == "vllm-parsed" else style
        lines += [
            f"[providers.{name}]",
            f'style = "{wire}"',
            f'name = "{display}"',
            f'base_url = "{fakes[name].base_url}"',
            f'api_key_env = "{KEY_ENV}"',
            "timeouts = { connect = 1.0, first_byte = 1.5, idle = 1.5 }",
        ]
        if style == "vllm-parsed":
            lines.append("server_parsers = true")
        upstream = "moonshotai/kimi-k2-thinking" if style in {"openrouter", "openai"} else MODEL
        lines += [
            f'[providers.{name}.models."{MODEL}"]',
            f'upstream = "{upstream}"',
            f"pricing = {{ input = {price_in}, output = {price_out} }}",
            extra,
        ]
        if name == "moon":
            lines += ['[providers.moon.models."kimi-k2.5"]', 'upstream = "kimi-k2.5"']
            lines += ['[providers.moon.models."kimi-k2-turbo-preview"]']
            lines += ['[providers.moon.models."kimi-vl-a3b-thinking"]']
        if name == "vllm":
            lines += [
                '[providers.vllm.models."kimi-vl-a3b-thinking"]',
                'upstream = "moonshotai/Kimi-VL-A3B-Thinking"',
            ]
    return "\n".join(lines) + "\n"


def start_upstream_gateway(
    workdir: Path, fakes: dict[str, FakeUpstream], routing: str = ""
) -> GatewayProcess:
    return GatewayProcess(workdir, gateway_config(fakes, routing), env={KEY_ENV: KEY})
