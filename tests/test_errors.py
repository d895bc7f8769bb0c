"""Bad input gets OpenAI's error shape with the right status, never a traceback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess

URL = "/v1/chat/completions"


def _post(gateway: GatewayProcess, body: Any = None, content: bytes | None = None) -> httpx.Response:
    if content is None:
        return httpx.post(gateway.base_url + URL, json=body, timeout=60)
    return httpx.post(
        gateway.base_url + URL, content=content, headers={"content-type": "application/json"}, timeout=60
    )


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


def test_invalid_json(gateway: GatewayProcess) -> None:
    error = _error(_post(gateway, content=b'{"model": "x", "messages": ['), 400)
    assert error["code"] == "invalid_json"
    assert error["type"] == "invalid_request_error"


def test_empty_body(gateway: GatewayProcess) -> None:
    assert _error(_post(gateway, content=b""), 400)["code"] == "invalid_json"


def test_missing_field_names_param(gateway: GatewayProcess) -> None:
    error = _error(_post(gateway, {"model": LOCAL_MODEL}), 400)
    assert error["param"] == "messages"
    assert error["code"] == "missing_required_parameter"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": LOCAL_MODEL, "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"model": LOCAL_MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": LOCAL_MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        ({"model": LOCAL_MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": LOCAL_MODEL, "messages": "hello"}, "messages"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "lots"},
            "max_tokens",
        ),
        (
            {
                "model": LOCAL_MODEL,
                "messages": [{"role": "user", "content": [{"type": "text", "txt": "hi"}]}],
            },
            "messages[0].content[0].text",
        ),
    ],
)
def test_ill_typed_fields_name_param(gateway: GatewayProcess, body: dict[str, Any], param: str) -> None:
    assert _error(_post(gateway, body), 400)["param"] == param


def test_unknown_model(gateway: GatewayProcess) -> None:
    error = _error(_post(gateway, {"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}), 404)
    assert error["code"] == "model_not_found"
    assert "gpt-17" in error["message"]


def test_context_length_exceeded_with_numbers(gateway: GatewayProcess) -> None:
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 9000}
    error = _error(_post(gateway, body), 400)
    assert error["code"] == "context_length_exceeded"
    assert "8192" in error["message"] and "9000" in error["message"]


def test_long_prompt_exceeds_context(gateway: GatewayProcess) -> None:
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "word " * 9000}]}
    error = _error(_post(gateway, body), 400)
    assert error["code"] == "context_length_exceeded"


def test_body_over_limit_is_413(gateway: GatewayProcess) -> None:
    big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (21 * 1024 * 1024) + b'"}]}'
    error = _error(_post(gateway, content=big), 413)
    assert error["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": -5}, "presence_penalty"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"abc": 5}}, "logit_bias"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_unsupported_parameter_values(gateway: GatewayProcess, extra: dict[str, Any], param: str) -> None:
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    assert _error(_post(gateway, body), 400)["param"] == param


def test_broken_image_names_its_part_without_echoing_it(gateway: GatewayProcess) -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}],
    }
    # The embedded model reads images through OCR, so the image is decoded first: a PNG signature alone is not
    # an image. (A model with neither image input nor OCR gets 404 no_endpoints: tests/test_routing.py.)
    error = _error(_post(gateway, body), 400)
    assert error["code"] == "invalid_image" and error["param"] == "messages[0].content[1]"
    assert "iVBORw0KGgo" not in error["message"]


def test_model_without_provider_is_503_naming_the_configuration(gateway: GatewayProcess) -> None:
    body = {"model": "kimi-k2.5", "messages": [{"role": "user", "content": "hi"}]}
    error = _error(_post(gateway, body), 503)
    assert error["code"] == "provider_unavailable"
    assert "kimi-k2.5" in error["message"] and "provider" in error["message"]


def test_unknown_url_and_method(gateway: GatewayProcess) -> None:
    assert _error(httpx.get(gateway.base_url + "/v1/nothing-here"), 404)["code"] == "unknown_url"
    assert _error(httpx.get(gateway.base_url + URL), 405)["code"] == "method_not_allowed"


def test_sdk_raises_typed_errors(client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "hi"}], temperature=9
        )


def test_a_prompt_that_fits_by_the_exact_count_is_accepted(gateway: GatewayProcess) -> None:
    """About 3,600 tokens by the model's own tokenizer, about 5,400 by four characters a token: with 3,000
    more for the answer, the estimate says it does not fit in 8,192 and the exact count says it does."""
    short = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}, "required": ["a"]}
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": "hello world " * 1800}],
        "max_tokens": 3000,
        "response_format": {"type": "json_schema", "json_schema": {"name": "short", "schema": short}},
    }
    counted = httpx.post(gateway.api + "/tokenizers/estimate-token-count", json=body, timeout=60).json()
    assert counted["data"]["total_tokens"] + 3000 < 8192
    response = httpx.post(gateway.base_url + URL, json=body, timeout=300)  # a long prefill on one core
    assert response.status_code == 200, response.text
