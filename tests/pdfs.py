"""PDFs made on the spot: text pages written by hand (a PDF is a small text format), scans made by Pillow."""

from __future__ import annotations

import io
import zlib

from PIL import Image


def text_pdf(pages: list[str]) -> bytes:
    """One line of Helvetica per page; enough for a real text layer that pypdf extracts."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 18 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _assemble(objects)


def scanned_pdf(images: list[Image.Image]) -> bytes:
    """Pages that are pictures only, as a scanner makes them: no text layer."""
    out = io.BytesIO()
    first, *rest = [image.convert("RGB") for image in images]
    first.save(out, "PDF", save_all=True, append_images=rest, resolution=100)
    return out.getvalue()


def _assemble(objects: list[bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def _stream(data: bytes, extra: str = "", compress: bool = True) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        extra += " /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra.encode()) + data + b"\nendstream"


def slow_pdf(operators: int, pages: int = 1) -> bytes:
    """Pages sharing one content stream of `operators` text-showing operators: a few KB on the wire, and
    seconds of text extraction for each page."""
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        _stream(b"BT /F1 12 Tf\n" + b"(a) Tj\n" * operators + b"ET"),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for _ in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
            b"/Resources << /Font << /F1 4 0 R >> >> >>"
        )
    return _assemble(objects)


def form_pdf(draws: int = 120, operators: int = 20_000) -> bytes:
    """About 1 KB: one page drawing one Form XObject `draws` times, the form showing text `operators` times.
    Its cost is in the form, where pypdf catches (and logs) whatever is raised while drawing it."""
    form = _stream(
        b"BT /F1 12 Tf\n" + b"(a) Tj\n" * operators + b"ET",
        " /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >>",
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R "
        b"/Resources << /Font << /F1 4 0 R >> /XObject << /Fm1 5 0 R >> >> >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        form,
        _stream(b"/Fm1 Do\n" * draws),
    ]
    return _assemble(objects)


def flate_bomb_pdf(megabytes: int = 300) -> bytes:
    """One page whose content stream inflates to hundreds of MB."""
    bomb = zlib.compressobj(9)
    data = b"".join(bomb.compress(b"\0" * (1024 * 1024)) for _ in range(megabytes)) + bomb.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
    ]
    return _assemble(objects)


def huge_image_pdf() -> bytes:
    """A scanned-looking page (no text) whose image declares 100000 x 100000 pixels."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
        _stream(b"q 612 0 0 792 0 0 cm /Im1 Do Q", compress=False),
        _stream(
            b"\0" * 3000,
            " /Type /XObject /Subtype /Image /Width 100000 /Height 100000 /ColorSpace /DeviceRGB "
            "/BitsPerComponent 8",
        ),
    ]
    return _assemble(objects)
