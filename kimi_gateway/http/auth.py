"""Authentication: `Authorization: Bearer sk-kg-...` (or `X-Api-Key`, as the Anthropic SDK sends it), and
which kind of key each path takes.

With no key in the database, a gateway bound to loopback serves without auth (the CLI refuses any other
address then). Inference keys cannot manage keys; management keys cannot call inference.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from kimi_gateway.accounts.keys import MANAGEMENT, KeyRecord, KeyStore
from kimi_gateway.errors import APIError
from kimi_gateway.http.errors import error_for
from kimi_gateway.http.middleware import route_path
from kimi_gateway.http.routes import web

log = logging.getLogger(__name__)

# /metrics checks its callers itself (loopback, or a management key).
# The pages are shells with no data: their scripts call the API with the key the user pastes.
PUBLIC = frozenset(
    {"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/metrics", *web.PAGE_PATHS}
)
PUBLIC_PREFIXES = ("/static/", *web.PAGE_PREFIXES)  # the pages and their own assets: nothing secret
MANAGEMENT_PATHS = ("/api/v1/keys", "/api/v1/credits/add")
# Paths either kind of key may call: about the calling key itself.
EITHER = frozenset(
    {
        "/api/v1/key",
        "/api/v1/credits",
        "/api/v1/generation",
        "/api/v1/generations",
        "/api/v1/activity",
        "/v1/users/me/balance",
        "/metrics",  # the route itself then asks for a management key
    }
)


def _bearer(scope: Scope) -> str | None:
    """`Authorization: Bearer <key>`, else `X-Api-Key: <key>` (how the Anthropic SDK sends its key)."""
    api_key: str | None = None
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return api_key


_FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def forwarded(scope: Scope) -> bool:
    """A reverse proxy relayed this request: its loopback address is the proxy's, not the client's, so
    nothing that trusts loopback (the keyless bootstrap, /metrics) trusts it."""
    return any(name in _FORWARDING for name, _ in scope["headers"])


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key")


async def authenticate(keys: KeyStore, scope: Scope) -> KeyRecord | None:
    """The request's key, checked for its path: None before any key exists (the loopback bootstrap).
    Raises the 401, 403 or 503 that says why not."""
    try:
        if not await keys.any_keys():
            if forwarded(scope):
                raise _unauthorized(
                    "This gateway has no API key yet, and a request through a proxy needs one: create "
                    "one with `kimi-gateway keys create`."
                )
            return None  # bootstrap: no keys yet, loopback only
        record, error = await _check(keys, _bearer(scope), route_path(scope))
    except (SQLAlchemyError, OSError):
        # The database is unreachable and the cached decision is past its grace: refuse, and say so.
        log.warning("authentication could not reach the database", exc_info=True)
        raise APIError(
            503,
            "Keys cannot be checked right now: the gateway's database is unreachable. Retry shortly.",
            type="service_unavailable",
            code="database_unavailable",
            headers={"Retry-After": "1"},
        ) from None
    if error is not None:
        raise error
    return record


async def _check(keys: KeyStore, token: str | None, path: str) -> tuple[KeyRecord | None, APIError | None]:
    if token is None:
        return None, _unauthorized("Missing API key: send it as 'Authorization: Bearer sk-kg-...'.")
    record = await keys.authenticate(token)
    if record is None:
        return None, _unauthorized("Invalid API key: it is unknown, disabled or expired.")
    if path in EITHER:
        return record, None
    management_path = path.startswith(MANAGEMENT_PATHS)
    if management_path and record.kind != MANAGEMENT:
        return None, APIError(
            403,
            "Only management keys can perform this operation.",
            type="permission_error",
            code="wrong_key_kind",
        )
    if not management_path and record.kind == MANAGEMENT:
        return None, APIError(
            403,
            "Management keys cannot call inference endpoints; use an inference key.",
            type="permission_error",
            code="wrong_key_kind",
        )
    return record, None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            record = await authenticate(self.keys, scope)
        except APIError as error:
            await error_for(path, error, scope)(scope, receive, send)
            return
        # For the routes behind the framework; the chat route's serving object keeps its own.
        state = scope.setdefault("state", {})
        state["key"] = record
        info = state.get("log")
        if info is not None and record is not None:
            info.account_id = record.account_id
        await self.app(scope, receive, send)
