"""Text out of documents: PDFs page by page (pypdf), scanned pages and image files through OCR, plain text
and Markdown as they are. The kind is decided from the bytes, not from the file name."""

from __future__ import annotations

import io
import logging
from typing import Any

from PIL import Image

from kimi_gateway.media.images import BadImage, load_image
from kimi_gateway.media.ocr import OCR
from kimi_gateway.media.workers import UNLIMITED, Budget, OverBudget

log = logging.getLogger(__name__)

# Rendered page images and embedded scans are read at up to this size; OCR gains little beyond it.
_OCR_PIXELS = 4_000_000


# A page's drawing instructions, decompressed. Parsing them is one step pypdf cannot interrupt (about 10 µs
# an operator): this bounds that step to about a second; the budget bounds everything after it.
MAX_PAGE_CONTENT = 1024 * 1024
_CHECK_EVERY = 2000  # operators between budget checks


class _Halt(BaseException):
    """Raised from inside pypdf's text extraction when the budget runs out. Not an `Exception`: pypdf
    catches and logs every Exception raised while it draws a Form XObject, so an OverBudget raised there
    was swallowed and a 1 KB PDF drawing one form 120 times ran for a minute."""

    def __init__(self, why: OverBudget) -> None:
        self.why = why


class BadDocument(Exception):
    """Why no text could be taken from the file; safe to show."""


class TooCostly(BadDocument):
    """A document refused for the work it would take (a bomb, or over its budget), not for being corrupt."""


def extract_text(
    raw: bytes,
    ocr: OCR,
    max_pages: int = 500,
    max_decode_pixels: int = 64_000_000,
    budget: Budget = UNLIMITED,
) -> str:
    """Blocking: run it in the media pool (media/workers.py), with a budget."""
    try:
        return _extract(raw, ocr, max_pages, max_decode_pixels, budget)
    except OverBudget as why:
        raise TooCostly(f"the document is too costly to read: {why}") from None


def _extract(raw: bytes, ocr: OCR, max_pages: int, max_decode_pixels: int, budget: Budget) -> str:
    if raw.startswith(b"%PDF-"):
        return _pdf(raw, ocr, max_pages, max_decode_pixels, budget)
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


def _pdf(raw: bytes, ocr: OCR, max_pages: int, max_decode_pixels: int, budget: Budget) -> str:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            raise BadDocument("the PDF is encrypted")
        pages = reader.pages
        if len(pages) > max_pages:
            raise BadDocument(f"the PDF has {len(pages)} pages; at most {max_pages} are read")
        operators = 0

        def count(*_: object) -> None:
            nonlocal operators
            operators += 1
            if operators % _CHECK_EVERY == 0:
                try:
                    budget.check()
                except OverBudget as why:
                    raise _Halt(why) from None

        texts = []
        for number, page in enumerate(pages, start=1):
            budget.check()
            contents = page.get_contents()
            if contents is not None and len(contents.get_data()) > MAX_PAGE_CONTENT:
                raise TooCostly(
                    f"page {number} holds more than {MAX_PAGE_CONTENT // (1024 * 1024)} MB of drawing "
                    "instructions"
                )
            text = (page.extract_text(visitor_operand_before=count) or "").strip()
            if not text and _has_images(page):
                text = _scanned(page, ocr, max_decode_pixels, budget)
            texts.append(f"--- Page {number} ---\n{text}")
        return "\n\n".join(texts)
    except _Halt as halt:
        raise halt.why from None
    except LimitReachedError:
        # pypdf's own caps (a flate bomb, an image declaring absurd dimensions): refused, not a crash.
        raise TooCostly("the PDF exceeds the decoder's limits (a decompression bomb?)") from None
    except (BadDocument, OverBudget):
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        # A hostile or broken file makes a parser raise almost anything: it is the file's fault.
        raise BadDocument("the PDF is corrupt") from None


def _has_images(page: Any) -> bool:
    """Whether the page's resources name an image: looking for inline images would mean parsing the whole
    content stream again (pypdf does, to list `page.images`), and a scan's page is an image XObject."""
    resources = page.get("/Resources")
    xobjects = resources.get_object().get("/XObject") if resources is not None else None
    if not xobjects:
        return False
    return any(x.get_object().get("/Subtype") == "/Image" for x in xobjects.get_object().values())


def _scanned(page: object, ocr: OCR, max_decode_pixels: int, budget: Budget) -> str:
    """A page without a text layer: OCR the images it carries (a scan is one image per page)."""
    found = []
    for embedded in getattr(page, "images", []):
        budget.check()
        try:
            image = embedded.image if embedded.image is not None else Image.open(io.BytesIO(embedded.data))
            if image.width * image.height > max_decode_pixels:
                continue
            image.thumbnail((2000, 2000))
            found.append(ocr.read(image))
        except OverBudget:
            raise
        except Exception:  # an embedded image pypdf cannot decode: skip it, keep the page
            log.warning("an embedded PDF image could not be decoded")
    return "\n".join(t for t in found if t)
