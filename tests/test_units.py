"""The pure pieces: stop matching, the tool envelope parser, error parameter paths."""

from __future__ import annotations

import json

import pytest

from kimi_gateway.engine.stops import StopMatcher
from kimi_gateway.engine.toolcalls import EnvelopeParser
from kimi_gateway.http.validation import param_path
from kimi_gateway.schema.models import per_token


def _feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            return out, True
    return out + matcher.flush(), False


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello ", "wor", "ld"], ["world"], ("Hello ", True)),
        (["ab", "c<", "/s", ">tail"], ["</s>"], ("abc", True)),
        (["no stop ", "here"], ["zzz"], ("no stop here", False)),
        (["wo", "rk"], ["world"], ("work", False)),  # a held-back prefix that never completes is released
        (["x", "STOP", "y"], ["STOP", "x"], ("", True)),
        (["text"], [], ("text", False)),
    ],
)
def test_stop_matcher(pieces: list[str], stops: list[str], expected: tuple[str, bool]) -> None:
    assert _feed_all(StopMatcher(stops), pieces) == expected


def test_envelope_parser_streams_response_text_across_escapes() -> None:
    raw = json.dumps({"response": 'He said "hi" \\ then 😀 and \u00e9'})
    for size in (1, 2, 3, 7):
        parser = EnvelopeParser()
        out = "".join(parser.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        assert out == 'He said "hi" \\ then 😀 and \u00e9'
        assert parser.tool_calls() is None


def test_envelope_parser_surrogate_pairs_escaped() -> None:
    raw = json.dumps({"response": "smile 😀"}, ensure_ascii=True)
    parser = EnvelopeParser()
    out = "".join(parser.feed(ch) for ch in raw)
    assert out == "smile 😀"


def test_envelope_parser_tool_calls() -> None:
    raw = '{ "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}'
    parser = EnvelopeParser()
    assert "".join(parser.feed(ch) for ch in raw) == ""
    assert parser.tool_calls() == [{"name": "f", "arguments": {"a": 1}}]


def test_envelope_parser_truncated_tool_calls() -> None:
    parser = EnvelopeParser()
    parser.feed('{"tool_calls": [{"name": "f", "argu')
    assert parser.tool_calls() is None


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("messages", 0, "user", "content"), "messages[0].content"),
        (("messages", 2, "user", "content", "list[...]", 1, "text", "text"), "messages[2].content[1].text"),
        (("response_format", "json_schema", "json_schema", "name"), "response_format.json_schema.name"),
        (("max_tokens",), "max_tokens"),
    ],
)
def test_param_path(loc: tuple[int | str, ...], path: str) -> None:
    assert param_path(loc) == path


@pytest.mark.parametrize(
    ("usd", "text"), [(0.6, "0.0000006"), (3.0, "0.000003"), (0.15, "0.00000015"), (0.0, "0")]
)
def test_per_token_prices(usd: float, text: str) -> None:
    assert per_token(usd) == text
