"""Text out of documents: PDFs page by page (pypdf), scanned pages and image files through OCR, plain text
and Markdown as they are. The kind is decided from the bytes, not from the file name."""

from __future__ import annotations

import io
import logging

from PIL import Image

from kimi_gateway.media.images import BadImage, load_image
from kimi_gateway.media.ocr import OCR

log = logging.getLogger(__name__)

# Rendered page images and embedded scans are read at up to this size; OCR gains little beyond it.
_OCR_PIXELS = 4_000_000


class BadDocument(Exception):
    """Why no text could be taken from the file; safe to show."""


def extract_text(raw: bytes, ocr: OCR, max_pages: int = 500, max_decode_pixels: int = 64_000_000) -> str:
    """Blocking: run it in a thread."""
    if raw.startswith(b"%PDF-"):
        return _pdf(raw, ocr, max_pages, max_decode_pixels)
    try:
        picture = load_image(raw, _OCR_PIXELS, max_decode_pixels)
    except BadImage as why:
        if "not a PNG" not in str(why):
            raise BadDocument(str(why)) from None
    else:
        return ocr.read(picture.image)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadDocument("not a PDF, an image, or UTF-8 text") from None


def _pdf(raw: bytes, ocr: OCR, max_pages: int, max_decode_pixels: int) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise BadDocument("the PDF is encrypted")
        pages = reader.pages
        if len(pages) > max_pages:
            raise BadDocument(f"the PDF has {len(pages)} pages; at most {max_pages} are read")
        texts = []
        for number, page in enumerate(pages, start=1):
            text = (page.extract_text() or "").strip()
            if not text:
                text = _scanned(page, ocr, max_decode_pixels)
            texts.append(f"--- Page {number} ---\n{text}")
        return "\n\n".join(texts)
    except PdfReadError:
        raise BadDocument("the PDF is corrupt") from None


def _scanned(page: object, ocr: OCR, max_decode_pixels: int) -> str:
    """A page without a text layer: OCR the images it carries (a scan is one image per page)."""
    found = []
    for embedded in getattr(page, "images", []):
        try:
            image = embedded.image if embedded.image is not None else Image.open(io.BytesIO(embedded.data))
            if image.width * image.height > max_decode_pixels:
                continue
            image.thumbnail((2000, 2000))
            found.append(ocr.read(image))
        except Exception:  # an embedded image pypdf cannot decode: skip it, keep the page
            log.warning("an embedded PDF image could not be decoded")
    return "\n".join(t for t in found if t)
