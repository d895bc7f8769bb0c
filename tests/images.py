"""Test media made on the spot with Pillow: a receipt, a form, a bar chart, and hostile images."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from typing import Any

from PIL import Image, ImageDraw, ImageFont

RECEIPT_LINES = ["CORNER CAFE", "Coffee    3.50", "Bagel     2.25", "TOTAL     5.75"]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def receipt() -> Image.Image:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(RECEIPT_LINES):
        draw.text((30, 30 + i * 60), line, fill="black", font=_font(28))
    return image


def form() -> Image.Image:
    image = Image.new("RGB", (560, 260), "white")
    draw = ImageDraw.Draw(image)
    for i, (label, value) in enumerate([("Name:", "Ada Lovelace"), ("City:", "London"), ("Year:", "1843")]):
        y = 30 + i * 70
        draw.text((30, y), label, fill="black", font=_font(28))
        draw.rectangle((150, y - 8, 520, y + 40), outline="black", width=2)
        draw.text((165, y), value, fill="black", font=_font(28))
    return image


def chart() -> Image.Image:
    image = Image.new("RGB", (560, 360), "white")
    draw = ImageDraw.Draw(image)
    for i, (label, value) in enumerate([("Apples", 30), ("Pears", 70), ("Plums", 50)]):
        x = 60 + i * 170
        draw.rectangle((x, 300 - value * 3, x + 90, 300), fill="steelblue")
        draw.text((x, 310), label, fill="black", font=_font(26))
    draw.text((150, 10), "Fruit sold", fill="black", font=_font(28))
    return image


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def image_part(url: str) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def bomb() -> bytes:
    """A few KB of PNG that claims 400 million pixels."""
    return encoded(Image.new("1", (20_000, 20_000)), "PNG", optimize=True)


def decoded(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def video(
    colors: list[str], fps: int = 5, seconds_each: int = 1, size: tuple[int, int] = (160, 120)
) -> bytes:
    """An MP4 (MPEG-4 Part 2, FFmpeg's own encoder) showing each colour for `seconds_each` seconds."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for color in colors:
            still = av.VideoFrame.from_image(Image.new("RGB", size, color))
            for _ in range(fps * seconds_each):
                for packet in stream.encode(still):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def mean_color(image: Image.Image) -> tuple[int, int, int]:
    small = image.convert("RGB").resize((1, 1), Image.Resampling.BOX)
    r, g, b = small.getpixel((0, 0))  # type: ignore[misc]
    return int(r), int(g), int(b)


def ask_receipt_total(client: Any, url: str) -> str:
    """The embedded model's answer to "What is the TOTAL on this receipt?" about the image at `url`."""
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        temperature=0,
        max_tokens=40,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the TOTAL on this receipt?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    return str(reply.choices[0].message.content or "")


class ImageHost(http.server.ThreadingHTTPServer):
    """A server on loopback that answers every GET with the receipt PNG (or as `handler` says), and
    remembers the paths it was asked for: tests check what the gateway fetched, and what it never did."""

    daemon_threads = True

    def __init__(
        self, host: str = "127.0.0.1", handler: type[http.server.BaseHTTPRequestHandler] | None = None
    ):
        super().__init__((host, 0), handler or _ReceiptHandler)
        self.hits: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ReceiptHandler(http.server.BaseHTTPRequestHandler):
    server: ImageHost

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = encoded(receipt())
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
