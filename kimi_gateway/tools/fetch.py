"""web_fetch: a page the model asks for, fetched as any user-supplied URL is (media/fetch.py: public
addresses only, in every spelling; size, time and redirect limits), and read into text: HTML with
trafilatura (the page's main text as Markdown, not its menus), PDFs through the documents pipeline, plain
text as it is. The CPU work runs in the media pool, under the request's media budget."""

from __future__ import annotations

from datetime import UTC, datetime

from kimi_gateway.media.documents import BadDocument, extract_text
from kimi_gateway.media.fetch import Fetcher, Refused
from kimi_gateway.media.ocr import OCR
from kimi_gateway.media.workers import Budget, MediaPool
from kimi_gateway.schema.server_tools import FetchedPage, ToolError


def _html_text(html: bytes) -> tuple[str | None, str]:
    """(title, Markdown of the main text); runs in a media worker."""
    # Imported on first use: it brings lxml and its own parsers, a second of start-up most servers,
    # which never fetch a page, would pay.
    import trafilatura

    document = html.decode("utf-8", errors="replace")
    text = trafilatura.extract(
        document, output_format="markdown", include_links=True, include_tables=True, favor_recall=True
    )
    metadata = trafilatura.extract_metadata(document)
    title = metadata.title if metadata is not None else None
    return title, text or ""


def _kind(content_type: str, body: bytes) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if body.startswith(b"%PDF-"):
        return "application/pdf"
    if media in ("text/html", "application/xhtml+xml") or (not media and b"<html" in body[:1024].lower()):
        return "text/html"
    if media.startswith("text/") or media in ("application/json", "application/xml"):
        return "text/plain"
    return media or "application/octet-stream"


async def fetch_page(
    fetcher: Fetcher, pool: MediaPool, ocr: OCR, account: str | None, url: str, budget: Budget
) -> FetchedPage | ToolError:
    try:
        fetched = await fetcher.fetch_url(url)
    except Refused as why:
        message = str(why)
        code = (
            "url_not_accessible"
            if message.startswith(("the URL answered", "the download"))
            else "url_not_allowed"
        )
        return ToolError(code, f"cannot fetch {url}: {message}")
    kind = _kind(fetched.content_type, fetched.body)
    retrieved = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        if kind == "text/html":
            body = fetched.body
            title, text = await pool.run(account, lambda: _html_text(body), budget)
        elif kind == "application/pdf":
            raw = fetched.body
            title, text = (
                None,
                await pool.document(account, lambda own: extract_text(raw, ocr, budget=own), budget),
            )
        elif kind == "text/plain":
            title, text = None, fetched.body.decode("utf-8", errors="replace")
        else:
            return ToolError(
                "unsupported_content_type", f"{url} is {kind}: only web pages, text and PDFs are read"
            )
    except BadDocument as why:
        return ToolError("unsupported_content_type", f"{url} could not be read: {why}")
    return FetchedPage(fetched.url, title, text, kind, retrieved)
