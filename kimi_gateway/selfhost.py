"""`kimi-gateway selfhost`: the launch command for a Kimi model on vLLM or SGLang, and the provider entry
to paste into the gateway's config; or (`--kubernetes`) the same preset as a Deployment and a Service, with
the gateway's provider entry as environment variables. The presets live in providers/selfhost.toml."""

from __future__ import annotations

import json
import shlex
import tomllib
from importlib import resources
from typing import Any

import yaml

ENGINES = ("vllm", "sglang")


class _Plain(yaml.SafeDumper):
    """Shared values written out again, not as YAML anchors and aliases (manifests are read by people)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def presets() -> dict[str, dict[str, dict[str, Any]]]:
    text = resources.files("kimi_gateway.providers").joinpath("selfhost.toml").read_text("utf-8")
    return tomllib.loads(text)


# The engines' own images (a tag is the operator's choice: these are the presets' minimum versions).
IMAGES = {"vllm": "vllm/vllm-openai:v0.18.0", "sglang": "lmsysorg/sglang:latest"}


def _preset(engine: str, model: str) -> dict[str, Any]:
    table = presets()
    if engine not in table:
        raise KeyError(f"unknown engine '{engine}': choose from {', '.join(ENGINES)}")
    if model not in table[engine]:
        raise KeyError(f"no {engine} preset for '{model}': choose from {', '.join(table[engine])}")
    return table[engine][model]


def _command(engine: str, preset: dict[str, Any]) -> list[str]:
    if engine == "vllm":
        return ["vllm", "serve", preset["repo"]]
    return ["python3", "-m", "sglang.launch_server", "--model-path", preset["repo"]]


def render(engine: str, model: str, host: str = "127.0.0.1", port: int = 8000) -> str:
    preset = _preset(engine, model)
    args: list[str] = [*preset["args"], "--served-model-name", model, "--host", host, "--port", str(port)]
    head = _command(engine, preset)
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


def render_kubernetes(engine: str, model: str, port: int = 8000) -> str:
    """The preset as a Deployment (its GPUs from the tensor-parallel size, shared memory, the Hugging Face
    cache and token, probes on the engine's /health) and a Service; the gateway's provider entry as the
    environment variables that configure it."""
    preset = _preset(engine, model)
    args: list[str] = [
        *preset["args"],
        "--served-model-name",
        model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    parallel = next((args[i + 1] for i, a in enumerate(args) if a in ("--tensor-parallel-size", "--tp")), "1")
    name = f"{engine}-{model}".replace(".", "-").lower()
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "kimi-gateway"}
    probe = {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 10}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": engine,
                            "image": IMAGES[engine],
                            "command": _command(engine, preset),
                            "args": args,
                            "ports": [{"name": "http", "containerPort": port}],
                            "env": [
                                {
                                    "name": "HF_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "huggingface",
                                            "key": "token",
                                            "optional": True,
                                        }
                                    },
                                }
                            ],
                            "resources": {"limits": {"nvidia.com/gpu": int(parallel)}},
                            # Loading the weights takes minutes: liveness waits for the first ready probe.
                            "startupProbe": {**probe, "failureThreshold": 180},
                            "readinessProbe": probe,
                            "livenessProbe": {**probe, "failureThreshold": 6},
                            "volumeMounts": [
                                {"name": "shm", "mountPath": "/dev/shm"},
                                {"name": "cache", "mountPath": "/root/.cache/huggingface"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                        {"name": "cache", "emptyDir": {}},  # a PersistentVolumeClaim keeps the weights
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
    provider = f"KIMI_GATEWAY_PROVIDERS__SELFHOSTED_{engine.upper()}"
    lengths = {"--max-model-len", "--context-length"}
    context = next((args[i + 1] for i, a in enumerate(args) if a in lengths), None)
    models = {model: {"upstream": model, **({"context_length": int(context)} if context else {})}}
    gateway = [
        f"{provider}__STYLE={engine}",
        f"{provider}__BASE_URL=http://{name}:{port}/v1",
        f"{provider}__SERVER_PARSERS={'true' if preset['server_parsers'] else 'false'}",
        f"{provider}__MODELS={json.dumps(models)}",
    ]
    head = [
        f"# {model} on {engine}: needs {preset['engine']}",
        "# The gateway's environment (its ConfigMap):",
    ]
    head += [f"#   {line}" for line in gateway]
    return "\n".join(head) + "\n" + yaml.dump_all([deployment, service], Dumper=_Plain, sort_keys=False)
