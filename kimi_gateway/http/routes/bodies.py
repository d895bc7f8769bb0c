"""Request bodies in the API description for routes that parse their own body (one pass, our error shape):
their schemas are added to the document's components by `http/app.py`."""

from __future__ import annotations

from typing import Any


def json_body(schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
