"""Turning pydantic validation errors into OpenAI-style 400s that name the offending parameter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from kimi_gateway.errors import APIError

# Tags of discriminated unions show up in pydantic's error locations; they are not part of the user's path.
_UNION_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool"}
    | {"text", "image_url", "video_url", "file", "input_audio"}
    | {"json_object", "json_schema", "function"}
)
_UNION_FIELDS = frozenset({"response_format", "tool_choice", "sort"})


def param_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    previous: int | str | None = None
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif "[" in item or item in {"str", "int", "float", "bool", "literal", "dict"}:
            # A union member's type name, e.g. 'list[...]' or 'str'.
            pass
        elif item in _UNION_TAGS and (isinstance(previous, int) or previous in _UNION_FIELDS):
            pass
        else:
            path += f".{item}" if path else item
        previous = item
    return path


def _describe(error: Mapping[str, Any], param: str) -> tuple[str, str]:
    kind = error["type"]
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", "missing_required_parameter"
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'.", "unknown_parameter"
    if kind in {"json_invalid", "json_type"}:
        return (
            "We could not parse the JSON body of your request. The body must be a valid JSON object "
            f"({error.get('msg', 'invalid JSON')}).",
            "invalid_json",
        )
    if kind.endswith("_type") or kind in {"model_type", "model_attributes_type", "union_tag_invalid"}:
        return f"Invalid type for '{param}': {error['msg']}.", "invalid_type"
    return f"Invalid value for '{param}': {error['msg']}.", "invalid_value"


def validation_error(exc: ValidationError) -> APIError:
    return errors_to_api_error(list(exc.errors(include_url=False, include_input=False)))


def anthropic_validation_error(exc: ValidationError) -> APIError:
    """The same error in Anthropic's wording, which its clients recognize: `messages.1.role: Input should
    be 'user' or 'assistant'` (a dotted path, then the reason)."""
    error = validation_error(exc)
    if error.code == "invalid_json":
        return error
    errors = exc.errors(include_url=False, include_input=False)
    first = max(errors, key=lambda e: len(e["loc"]))
    param = param_path(tuple(first["loc"]))
    dotted = param.replace("[", ".").replace("]", "")
    return APIError(
        400, f"{dotted}: {first['msg']}" if dotted else first["msg"], param=param, code=error.code
    )


def errors_to_api_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    # Prefer the most specific error: union members each report one, and the deepest is the useful one.
    first: Mapping[str, Any] = (
        max(errors, key=lambda e: len(e["loc"])) if errors else {"type": "value_error", "loc": (), "msg": ""}
    )
    if any(e["type"] in {"json_invalid", "json_type"} for e in errors):
        first = next(e for e in errors if e["type"] in {"json_invalid", "json_type"})
    param = param_path(tuple(first["loc"])) or None
    message, code = _describe(first, param or "body")
    return APIError(400, message, param=param if code != "invalid_json" else None, code=code)
