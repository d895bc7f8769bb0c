"""Grammars that constrain local generation: JSON objects and JSON schemas."""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]  # the stdlib's own regex parser
from typing import Any

import orjson
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

from kimi_gateway.errors import invalid_request

# llama-cpp-python's schema converter lets a string hold raw control characters (its `char` rule is
# `[^"\\]`), which JSON forbids: a model that writes a newline inside a string makes text no parser
# accepts. llama.cpp's own converter and the JSON_GBNF it ships exclude them; so does this.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


# Bounds on what a schema may ask of the grammar. llama-cpp-python's converter writes `minLength: 10**9` out
# as a billion rules (the engine grew to 21 GB), an enum of 5,000 long strings as a grammar llama.cpp takes
# minutes to build, and a pattern such as `((a?){30}){30}` or `(a|a|aa)*b` as one whose parse stacks grow
# without bound while sampling (100% CPU, cancelling does nothing). All are refused with a 400 here.
MAX_SCHEMA_BYTES = 32 * 1024
MAX_DEPTH = 24
MAX_COUNT = 1000  # minLength, maxLength, minItems, maxItems, minProperties, maxProperties
MAX_ENUM = 256
MAX_PATTERN = 256
MAX_PATTERN_REPEAT = 100  # {m,n} inside a pattern
MAX_GRAMMAR_BYTES = 256 * 1024
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "minContains")
_SINGLE = {sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.IN, sre_constants.ANY}
_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT}


def check_schema(schema: Any, param: str) -> None:
    """Refuse (400) a schema whose grammar would be too large or too costly to sample with."""
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise _refused(f"the schema is over {MAX_SCHEMA_BYTES // 1024} KB", param)
    _walk(schema, param, 0)


def _walk(node: Any, param: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _refused(f"the schema nests deeper than {MAX_DEPTH} levels", param)
    if isinstance(node, list):
        for item in node:
            _walk(item, param, depth + 1)
        return
    if not isinstance(node, dict):
        return
    for name in _COUNTS:
        value = node.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_COUNT:
            raise _refused(f"{name} is {value}; at most {MAX_COUNT} is enforced", param)
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM:
        raise _refused(f"an enum lists {len(enum)} values; at most {MAX_ENUM}", param)
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        check_pattern(pattern, param)
    for value in node.values():
        if isinstance(value, dict | list):
            _walk(value, param, depth + 1)


def check_pattern(pattern: str, param: str) -> None:
    if len(pattern) > MAX_PATTERN:
        raise _refused(f"a pattern is over {MAX_PATTERN} characters", param)
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise _refused(f"a pattern is not a valid regular expression ({exc})", param) from None
    _check_items(list(parsed), param, inside_repeat=False)


def _check_items(items: list[Any], param: str, inside_repeat: bool) -> None:
    """Refuse what makes many ways to read the same text, each a parse the grammar keeps alive: a
    repetition of what may be empty (`((a?){30}){30}`), of a repetition alone (`(a+)*`), or of a choice
    between longer alternatives (`(a|aa)*`)."""
    for op, value in items:
        if op in _REPEATS:
            _, high, body = value
            body = list(body)
            if high != sre_constants.MAXREPEAT and high > MAX_PATTERN_REPEAT:
                raise _refused(f"a pattern repeats up to {high} times; at most {MAX_PATTERN_REPEAT}", param)
            if high != 1 and _nullable(body):
                raise _refused("a pattern repeats something that may be empty", param)
            if len(body) == 1 and body[0][0] in _REPEATS:
                raise _refused("a pattern repeats a repetition", param)
            if len(body) == 1 and body[0][0] == sre_constants.SUBPATTERN:
                inner = list(body[0][1][-1])
                if len(inner) == 1 and inner[0][0] in _REPEATS:
                    raise _refused("a pattern repeats a repetition", param)
            _check_items(body, param, inside_repeat=True)
        elif op == sre_constants.SUBPATTERN:
            _check_items(list(value[-1]), param, inside_repeat)
        elif op == sre_constants.BRANCH:
            for alternative in value[1]:
                alternative = list(alternative)
                if inside_repeat and not (len(alternative) == 1 and alternative[0][0] in _SINGLE):
                    raise _refused("a pattern repeats a choice between longer alternatives", param)
                _check_items(alternative, param, inside_repeat)


def _nullable(items: list[Any]) -> bool:
    """Whether the items can match the empty string."""
    for op, value in items:
        if op in _REPEATS:
            if value[0] > 0 and not _nullable(list(value[2])):
                return False
        elif op == sre_constants.SUBPATTERN:
            if not _nullable(list(value[-1])):
                return False
        elif op == sre_constants.BRANCH:
            if not any(_nullable(list(alternative)) for alternative in value[1]):
                return False
        elif op not in (sre_constants.AT,):
            return False
    return True


def _refused(why: str, param: str) -> Exception:
    return invalid_request(
        f"The JSON schema cannot be enforced: {why}.", param=param, code="invalid_json_schema"
    )


def json_object_grammar() -> LlamaGrammar:
    return LlamaGrammar.from_string(JSON_GBNF)


# Keywords that constrain a value in the converter's eyes. A schema with none of them (`{}`, `true`, or only
# a `description`, as one of Claude Code's tools has) allows any JSON value: the converter would refuse it
# ("Unrecognized schema") or, for `{}`, allow objects only.
_CONSTRAINING = frozenset(
    {"type", "$ref", "oneOf", "anyOf", "allOf", "const", "enum", "properties", "items", "prefixItems"}
    | {"pattern"}
)
_ANY_VALUE: dict[str, Any] = {"type": ["string", "number", "boolean", "null", "object", "array"]}
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _loosened(node: Any) -> Any:
    """The schema with every unconstrained part made "any JSON value", as JSON Schema means it."""
    if node is True:
        return _ANY_VALUE
    if not isinstance(node, dict):
        return node
    if not node.keys() & _CONSTRAINING:
        return _ANY_VALUE
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _loosened(value) for name, value in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_loosened(value) for value in out[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _loosened(out[key])
    return out


def json_schema_grammar(schema: dict[str, Any], *, param: str) -> LlamaGrammar:
    check_schema(schema, param)
    try:
        gbnf = json_schema_to_gbnf(orjson.dumps(_loosened(schema)).decode())
    except Exception as exc:  # the converter raises bare exceptions for schemas it cannot express
        raise invalid_request(
            f"The JSON schema cannot be enforced: {exc}", param=param, code="invalid_json_schema"
        ) from None
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        raise _refused(f"its grammar is over {MAX_GRAMMAR_BYTES // 1024} KB", param)
    return LlamaGrammar.from_string(gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR))
