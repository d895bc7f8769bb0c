"""The pages for people: /models, /models/{id}, /chat and /console, and their scripts and styles.

Each page is the one HTML shell (`kimi_gateway/web/pages/shell.html`) naming its script, which reads the
API with the key the user pastes (held in the browser's sessionStorage): the pages carry no data and need
no authentication of their own. Model output is shown on these pages, so the policy below lets nothing run
or load that the gateway did not ship: no inline script, no eval, no other origin.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parents[2] / "web"
STATIC_PATH = "/static/web"
PAGE_PATHS = frozenset({"/", "/models", "/chat", "/console"})
PAGE_PREFIXES = ("/models/",)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Pasted and dropped images are shown from data: and blob: URLs; nothing from another origin.
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
# (X-Content-Type-Options: nosniff is on every response the gateway sends: http/middleware.py.)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # A page's URL (a model id, nothing secret) stays here; so does anything a user adds to it.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_RAW_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

router = APIRouter(include_in_schema=False)


# page: (title, its script, whether it renders Markdown: DOMPurify, a classic script, loads first)
PAGES = {
    "models": ("Models", "models.js", False),
    "model": ("Model", "model.js", False),
    "chat": ("Chat playground", "chat.js", True),
    "console": ("Console", "console.js", False),
}


@cache
def _page(name: str, root: str) -> bytes:
    title, script, sanitizer = PAGES[name]
    scripts = [f'<script type="module" src="{root}{STATIC_PATH}/{script}"></script>']
    if sanitizer:
        scripts.insert(0, f'<script src="{root}/static/vendor/dompurify/purify.min.js"></script>')
    # Assets are named from the site's root: a gateway behind a path prefix serves them there.
    shell = (WEB / "pages" / "shell.html").read_text("utf-8")
    html = shell.replace("{{title}}", title).replace("{{scripts}}", "\n".join(scripts))
    return html.replace("{{root}}", root).encode()


def _html(name: str, request: Request) -> Response:
    body = _page(name, request.scope.get("root_path", ""))
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/models", status_code=302)


@router.get("/models")
async def models(request: Request) -> Response:
    return _html("models", request)


@router.get("/models/{model_id:path}")
async def model(model_id: str, request: Request) -> Response:
    return _html("model", request)


@router.get("/chat")
async def chat(request: Request) -> Response:
    return _html("chat", request)


@router.get("/console")
async def console(request: Request) -> Response:
    return _html("console", request)


class Secured:
    """Static files with the pages' headers (an SVG or HTML file opened on its own gets the same policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_RAW_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)


def static_files() -> ASGIApp:
    return Secured(StaticFiles(directory=WEB / "static"))
