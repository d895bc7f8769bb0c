"""Grammars that constrain local generation: JSON objects and JSON schemas."""

from __future__ import annotations

from typing import Any

import orjson
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

from kimi_gateway.errors import invalid_request

# llama-cpp-python's schema converter lets a string hold raw control characters (its `char` rule is
# `[^"\\]`), which JSON forbids: a model that writes a newline inside a string makes text no parser
# accepts. llama.cpp's own converter and the JSON_GBNF it ships exclude them; so does this.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_object_grammar() -> LlamaGrammar:
    return LlamaGrammar.from_string(JSON_GBNF)


def json_schema_grammar(schema: dict[str, Any], *, param: str) -> LlamaGrammar:
    try:
        gbnf = json_schema_to_gbnf(orjson.dumps(schema).decode())
    except Exception as exc:  # the converter raises bare exceptions for schemas it cannot express
        raise invalid_request(
            f"The JSON schema cannot be enforced: {exc}", param=param, code="invalid_json_schema"
        ) from None
    return LlamaGrammar.from_string(gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR))
