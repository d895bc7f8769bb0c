"""Media costs: one 12 MP JPEG decoded, checked and resized; one receipt OCRed; one 20-page PDF extracted.

Each is measured against the bare library call doing the core of the same work (Pillow decode, RapidOCR on
the pixels, pypdf text extraction), in the same run. Every measurement runs in its own process, so the
peak memory it reports (peak RSS minus the RSS before the work, after imports) is its own.

Run: .venv/bin/python -m bench.media [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

from bench.table import print_table


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _photo() -> bytes:
    image = Image.new("RGB", (4000, 3000))
    draw = ImageDraw.Draw(image)
    for i in range(0, 4000, 40):  # detail, so the JPEG is photo-sized rather than a flat colour
        draw.line((i, 0, 4000 - i, 3000), fill=(i % 256, (i * 7) % 256, (i * 13) % 256), width=9)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _receipt() -> Image.Image:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=28)
    for i, line in enumerate(["CORNER CAFE", "Coffee    3.50", "Bagel     2.25", "TOTAL     5.75"]):
        draw.text((30, 30 + i * 60), line, fill="black", font=font)
    return image


def _pdf() -> bytes:
    sys.path.insert(0, ".")
    from tests.pdfs import text_pdf

    return text_pdf([f"Page {n}: " + "quarterly revenue grew again " * 3 for n in range(1, 21)])


def _task(name: str) -> Callable[[], object]:
    """The work, with its inputs made beforehand."""
    if name in ("jpeg", "jpeg-raw"):
        raw = _photo()
        if name == "jpeg-raw":
            return lambda: Image.open(io.BytesIO(raw)).load()
        from kimi_gateway.media.images import load_image

        return lambda: load_image(raw, 1792 * 1792, 64_000_000).encode()
    if name in ("ocr", "ocr-raw"):
        import numpy as np

        from kimi_gateway.media.ocr import OCR

        image = _receipt()
        ocr = OCR()
        ocr.read(image)  # the model loads once per process; measured separately is not the point
        if name == "ocr-raw":
            engine = ocr._get()
            return lambda: engine(np.asarray(image))
        return lambda: ocr.read(image)
    if name in ("pdf", "pdf-raw"):
        data = _pdf()
        if name == "pdf-raw":
            from pypdf import PdfReader

            return lambda: [p.extract_text() for p in PdfReader(io.BytesIO(data)).pages]
        from kimi_gateway.media.documents import extract_text
        from kimi_gateway.media.ocr import OCR

        ocr = OCR()
        return lambda: extract_text(data, ocr)
    raise SystemExit(f"unknown task {name}")


def _child(name: str, rounds: int) -> None:
    work = _task(name)
    before = _rss_mb()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ms": statistics.median(times), "peak_mb": max(0.0, peak - before)}))


def _measure(name: str, rounds: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.media", "--child", name, "--rounds", str(rounds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rounds)
        return
    rows = [
        ("12 MP JPEG: decode, check, EXIF, resize to 3.2 MP, re-encode", "jpeg", "Pillow decode only"),
        ("receipt OCR (480x320), with line grouping", "ocr", "RapidOCR on the pixels"),
        ("20-page PDF text extraction", "pdf", "pypdf extract_text per page"),
    ]
    table = [("work", "gateway ms", "reference", "reference ms", "ratio", "peak MB (gateway / ref)")]
    for label, name, reference in rows:
        ours = _measure(name, args.rounds)
        base = _measure(name + "-raw", args.rounds)
        table.append(
            (
                label,
                f"{ours['ms']:.1f}",
                reference,
                f"{base['ms']:.1f}",
                f"{ours['ms'] / base['ms']:.2f}",
                f"{ours['peak_mb']:.0f} / {base['peak_mb']:.0f}",
            )
        )
    print_table(table)
    print(f"medians of {args.rounds} rounds; peak memory is the growth of the process's peak RSS")


if __name__ == "__main__":
    main()
