"""Image bytes -> a checked, upright, size-capped image, decided by decoding, never by the declared type."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}

_ORIENTATION = 0x0112
_DRAFT_SLACK = 0.95

# Our own pixel check runs first; this only stops Pillow refusing on its own terms with another message.
Image.MAX_IMAGE_PIXELS = None


class BadImage(Exception):
    """Why the bytes are not an acceptable image; safe to show (no bytes echoed)."""


@dataclass(frozen=True, slots=True)
class Picture:
    image: Image.Image  # RGB or RGBA, upright, within the pixel cap
    original_size: tuple[int, int]
    digest: str  # sha256 of the bytes received: what logs may show instead of the bytes

    def encode(self) -> tuple[bytes, str]:
        """Re-encoded for forwarding: PNG when there is transparency, JPEG otherwise."""
        out = io.BytesIO()
        if self.image.mode == "RGBA":
            self.image.save(out, "PNG", optimize=False)
            return out.getvalue(), "image/png"
        self.image.save(out, "JPEG", quality=90)
        return out.getvalue(), "image/jpeg"


def declared_pixels(raw: bytes) -> int:
    """How many pixels the image's header claims (0 when it cannot be read): read from the header only,
    cheap enough for the event loop."""
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            width, height = opened.size
    except Exception:
        return 0  # load_image says what is wrong with it
    return width * height


def load_image(raw: bytes, max_pixels: int, max_decode_pixels: int) -> Picture:
    """Blocking (decoding is CPU work): run it in a thread."""
    try:
        opened = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise BadImage("not a PNG, JPEG, WebP or GIF image") from None
    except (OSError, ValueError, SyntaxError):
        raise BadImage("the image is corrupt") from None
    if opened.format not in FORMATS:
        raise BadImage(f"{opened.format} images are not accepted; send PNG, JPEG, WebP or GIF")
    width, height = opened.size
    # Before any pixel is decoded: a few KB of PNG can claim gigabytes of pixels.
    if width * height > max_decode_pixels:
        raise BadImage(
            f"the image is {width}x{height} pixels, over the {max_decode_pixels:,}-pixel limit "
            "(refused as a possible decompression bomb)"
        )
    try:
        opened.seek(0)  # a GIF's first frame
        if opened.format == "JPEG" and width * height > max_pixels:
            # Let the JPEG decoder scale down by a power of two while decoding: a fraction of the work and
            # memory of decoding everything and throwing most of it away. It may land up to 10% under the
            # cap (in pixels), which saves a resampling pass over the whole image.
            scale = math.sqrt(max_pixels / (width * height)) * _DRAFT_SLACK
            opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        opened.load()
        image: Image.Image = opened
        if image.width * image.height > 2 * max_pixels:
            # Shrink first, by a whole factor (a box filter over the decoded pixels), in the image's own
            # mode: converting a huge 1-bit or palette image to RGB first would hold 3-4 bytes a pixel.
            factor = math.isqrt(image.width * image.height // max_pixels)
            if image.mode in ("1", "P"):
                image = _reduce_in_strips(image, factor, "RGBA" if _has_alpha(image) else "L")
            else:
                image = image.reduce(factor)
        if image.getexif().get(_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        mode = "RGBA" if _has_alpha(image) else "RGB"
        if image.mode != mode:
            image = image.convert(mode)
    except (OSError, ValueError, SyntaxError, EOFError):
        raise BadImage("the image is corrupt or truncated") from None
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = math.sqrt(max_pixels / pixels)
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        # Bicubic: near Lanczos for a downscale, in half the time on a 12 MP photo.
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return Picture(image, (width, height), hashlib.sha256(raw).hexdigest())


# Rows converted at a time when a palette or 1-bit image is shrunk: about this many pixels a strip.
_STRIP_PIXELS = 4_000_000


def _reduce_in_strips(image: Image.Image, factor: int, mode: str) -> Image.Image:
    """`image.convert(mode).reduce(factor)`, a strip of rows at a time: a 64 MP palette PNG with
    transparency converted whole held 256 MB of RGBA (and the gateway peaked 800 MB over it); strips hold
    a few MB. The edges past a whole number of `factor` pixels are dropped (under `factor` pixels)."""
    width, height = (image.width // factor) * factor, (image.height // factor) * factor
    out = Image.new(mode, (width // factor, height // factor))
    rows = max(1, _STRIP_PIXELS // (width * factor)) * factor
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height))).convert(mode).reduce(factor)
        out.paste(strip, (0, top // factor))
    return out


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
