"""Media in a chat request, made safe before routing: every image fetched or decoded, checked, capped and
re-encoded; for text-only models that read images through OCR, replaced by the text OCR finds.

Errors name the part that failed (`messages[2].content[1]`) and never echo its bytes or URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from kimi_gateway.catalog import ModelCard
from kimi_gateway.config import MediaConfig
from kimi_gateway.errors import APIError
from kimi_gateway.media.fetch import Fetcher, FetchLimits, Refused, refused
from kimi_gateway.media.images import BadImage, Picture, load_image
from kimi_gateway.media.ocr import OCR
from kimi_gateway.schema.chat import (
    ChatCompletionRequest,
    ContentPart,
    ImagePart,
    ImageURL,
    TextPart,
    UserMessage,
)


@dataclass(slots=True)
class _Slot:
    where: str
    message: UserMessage
    index: int
    part: ImagePart


def _bad(where: str, message: str, code: str = "invalid_image") -> APIError:
    return APIError(400, f"{where}: {message}.", param=where, code=code)


def decode_data_url(url: str, where: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _bad(where, "a data: URL must be base64 ('data:image/png;base64,...')")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(where, "the data: URL is not valid base64") from None


class Media:
    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self.fetcher = Fetcher(
            FetchLimits(
                max_bytes=config.max_fetch_bytes,
                connect_seconds=config.fetch_connect_seconds,
                total_seconds=config.fetch_total_seconds,
                max_redirects=config.max_redirects,
                allow_hosts=frozenset(config.allow_hosts),
            )
        )
        self.ocr = OCR()

    async def close(self) -> None:
        await self.fetcher.close()

    async def prepare(self, request: ChatCompletionRequest, card: ModelCard) -> None:
        """Rewrite the request's image parts in place; raise a 400 for anything unacceptable."""
        slots = [
            _Slot(f"messages[{i}].content[{j}]", message, j, part)
            for i, message in enumerate(request.messages)
            if isinstance(message, UserMessage) and isinstance(message.content, list)
            for j, part in enumerate(message.content)
            if isinstance(part, ImagePart)
        ]
        if not slots:
            return
        limit = card.max_images or self.config.max_images
        if len(slots) > limit:
            raise APIError(
                400,
                f"Too many images: {len(slots)} in this request, and {card.id} takes at most {limit}.",
                param="messages",
                code="too_many_images",
            )
        native = "image" in card.input_modalities
        if not native and not card.image_via_ocr:
            return  # routing answers: no endpoint takes image input
        max_pixels = card.max_image_pixels or self.config.max_image_pixels
        pictures = await asyncio.gather(*(self._picture(slot, max_pixels) for slot in slots))
        for number, (slot, picture) in enumerate(zip(slots, pictures, strict=True), start=1):
            content = slot.message.content
            assert isinstance(content, list)
            content[slot.index] = (
                await self._forwarded(slot.part, picture)
                if native
                else await self._ocr_text(number, slot.where, picture)
            )

    async def _picture(self, slot: _Slot, max_pixels: int) -> Picture:
        part = slot.part
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        if url.startswith("data:"):
            raw = decode_data_url(url, slot.where)
        elif url.startswith("ms://"):
            raise _bad(slot.where, "ms:// file references need the files API, which this gateway lacks yet")
        else:
            try:
                raw = await self.fetcher.fetch(url)
            except Refused as why:
                raise refused(slot.where, why) from None
        try:
            return await asyncio.to_thread(load_image, raw, max_pixels, self.config.max_decode_pixels)
        except BadImage as why:
            raise _bad(slot.where, str(why)) from None

    @staticmethod
    async def _forwarded(part: ImagePart, picture: Picture) -> ContentPart:
        # Always the checked, re-encoded bytes: every provider takes base64, and nothing unchecked passes.
        data, mime = await asyncio.to_thread(picture.encode)
        detail = None if isinstance(part.image_url, str) else part.image_url.detail
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        return ImagePart(type="image_url", image_url=ImageURL(url=url, detail=detail))

    async def _ocr_text(self, number: int, where: str, picture: Picture) -> ContentPart:
        text = (await self.ocr.aread(picture.image)).strip()
        label = f"[Image {number} ({where}), text read from it by OCR]"
        return TextPart(
            type="text", text=f"{label}\n{text or '(no text found in the image)'}\n[End of image {number}]"
        )
