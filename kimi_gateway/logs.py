"""Structured logging: one JSON object per line.

Prompt and completion text, API keys and media never reach these lines unless `server.log_prompts` is set.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import orjson

logger = logging.getLogger("kimi_gateway")

# The id of the request being served, for log lines written far from the HTTP layer.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


# Overrides the config's log level in worker and engine processes: the CLI's in-process gateway logs errors
# only, so a terminal user sees the answer and nothing else.
LOG_LEVEL_ENV = "KIMI_GATEWAY_LOG_LEVEL"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our own per-request line replaces uvicorn's access log.
    logging.getLogger("uvicorn.access").disabled = True


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})
