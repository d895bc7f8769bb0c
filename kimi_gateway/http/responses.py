"""JSON responses encoded with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from kimi_gateway.errors import APIError


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: APIError) -> ORJSONResponse:
    return ORJSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)
