"""Media in a chat request, made safe before routing: every image fetched or decoded, checked, capped and
re-encoded; for text-only models that read images through OCR, replaced by the text OCR finds.

Errors name the part that failed (`messages[2].content[1]`) and never echo its bytes or URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass, replace
from functools import partial

from kimi_gateway.catalog import ModelCard
from kimi_gateway.config import MediaConfig
from kimi_gateway.errors import APIError
from kimi_gateway.media.documents import BadDocument, TooCostly, extract_text
from kimi_gateway.media.fetch import Fetcher, FetchLimits, Refused, refused
from kimi_gateway.media.files import FileStore
from kimi_gateway.media.images import BadImage, Picture, declared_pixels, load_image
from kimi_gateway.media.video import BadVideo, Frame, VideoLimits, probe, sample_frames
from kimi_gateway.media.workers import Budget, OverBudget, trim_memory
from kimi_gateway.schema.chat import (
    ChatCompletionRequest,
    ContentPart,
    FilePart,
    ImagePart,
    ImageURL,
    TextPart,
    UserMessage,
    VideoPart,
    VideoURL,
)

LARGE_DECODE = 16_000_000  # pixels: past this, a decode's freed memory is returned to the system


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


def has_media(request: ChatCompletionRequest) -> bool:
    """Whether any user message has a list of parts (images, video, files): plain text needs no intake."""
    return any(isinstance(m, UserMessage) and isinstance(m.content, list) for m in request.messages)


class Media:
    def __init__(self, config: MediaConfig, files: FileStore) -> None:
        self.config = config
        self.files = files
        self.fetcher = Fetcher(
            FetchLimits(
                max_bytes=config.max_fetch_bytes,
                connect_seconds=config.fetch_connect_seconds,
                total_seconds=config.fetch_total_seconds,
                max_redirects=config.max_redirects,
                allow_hosts=frozenset(config.allow_hosts),
            )
        )
        self.ocr = files.ocr
        self.pool = files.pool
        self.video_limits = VideoLimits(
            fps=config.video_fps,
            max_frames=config.video_max_frames,
            max_seconds=config.video_max_seconds,
            max_pixels=config.video_max_pixels,
            budget_seconds=config.video_budget_seconds,
        )

    async def close(self) -> None:
        await self.fetcher.close()
        self.pool.close()

    async def prepare(self, request: ChatCompletionRequest, card: ModelCard, account_id: str | None) -> None:
        """Rewrite the request's media parts in place; raise a 400 for anything unacceptable.

        All of the request's media work shares one budget (`[media] request_budget_seconds` of CPU): a
        small request cannot buy minutes of decoding and OCR. If the caller is cancelled (the client went
        away), the budget trips and the work stops at its next check."""
        if not has_media(request):
            return  # plain text: the common case, and nothing to look at
        budget = self.pool.budget()
        try:
            await self._prepare(request, card, account_id, budget)
        except OverBudget as why:
            raise APIError(
                400,
                f"The media in this request are too costly to process: {why}.",
                param="messages",
                code="media_too_costly",
            ) from None
        finally:
            budget.cancelled.set()  # whatever is left of its work (after a failure) stops at its next check

    async def _prepare(
        self, request: ChatCompletionRequest, card: ModelCard, account_id: str | None, budget: Budget
    ) -> None:
        await self._files(request, account_id, budget)
        given = len(self._slots(request))
        limit = card.max_images or self.config.max_images
        videos = _count_videos(request)
        native_video = "video" in card.input_modalities
        # A model that sees video as frames gets them as images: they count against its cap too (four
        # videos once became 32 decoded and OCR'd frames for a model that takes 8 images). The frames left
        # after the images are shared between the videos; each gets at least one.
        frames_each = self.video_limits.max_frames
        if videos and not native_video:
            frames_each = min(frames_each, (limit - given) // videos)
            if frames_each < 1:
                raise APIError(
                    400,
                    f"Too many images: {given} images and {videos} videos (a frame at least each) in this "
                    f"request, and {card.id} takes at most {limit} images.",
                    param="messages",
                    code="too_many_images",
                )
        if given > limit:
            raise APIError(
                400,
                f"Too many images: {given} in this request, and {card.id} takes at most {limit}.",
                param="messages",
                code="too_many_images",
            )
        native = "image" in card.input_modalities
        if not native and not card.image_via_ocr:
            return  # routing answers: no endpoint takes image (or video) input
        max_pixels = card.max_image_pixels or self.config.max_image_pixels
        if not native:
            max_pixels = min(max_pixels, self.config.ocr_max_pixels)
        await self._videos(request, card, account_id, max_pixels, frames_each, budget)
        slots = self._slots(request)  # video frames, if any, are images now
        if not slots:
            return
        tasks = [asyncio.ensure_future(self._picture(slot, max_pixels, account_id, budget)) for slot in slots]
        try:
            pictures = await asyncio.gather(*tasks)
        except BaseException:
            # One image refused (or the client gone): the others stop, and are waited for, not orphaned.
            budget.cancelled.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for number, (slot, (picture, source)) in enumerate(zip(slots, pictures, strict=True), start=1):
            content = slot.message.content
            assert isinstance(content, list)
            content[slot.index] = (
                await self._forwarded(slot.part, picture, source, account_id, budget)
                if native
                else await self._ocr_text(number, slot.where, picture, account_id, budget)
            )

    @staticmethod
    def _slots(request: ChatCompletionRequest) -> list[_Slot]:
        return [
            _Slot(f"messages[{i}].content[{j}]", message, j, part)
            for i, message in enumerate(request.messages)
            if isinstance(message, UserMessage) and isinstance(message.content, list)
            for j, part in enumerate(message.content)
            if isinstance(part, ImagePart)
        ]

    async def _videos(
        self,
        request: ChatCompletionRequest,
        card: ModelCard,
        account_id: str | None,
        max_pixels: int,
        frames_each: int,
        budget: Budget,
    ) -> None:
        """Video parts: checked and passed on to models that watch video, else turned into ordered frames."""
        for i, message in enumerate(request.messages):
            if not isinstance(message, UserMessage) or not isinstance(message.content, list):
                continue
            parts: list[ContentPart] = []
            for j, part in enumerate(message.content):
                if not isinstance(part, VideoPart):
                    parts.append(part)
                    continue
                where = f"messages[{i}].content[{j}]"
                url = part.video_url if isinstance(part.video_url, str) else part.video_url.url
                raw, _ = await self._bytes(url, where, account_id)
                try:
                    if "video" in card.input_modalities:
                        limits = self.video_limits
                        await self.pool.run(account_id, partial(probe, raw, limits), budget)
                        data = base64.b64encode(raw).decode()
                        parts.append(
                            VideoPart(
                                type="video_url", video_url=VideoURL(url=f"data:video/mp4;base64,{data}")
                            )
                        )
                        continue
                    limits = replace(self.video_limits, max_frames=frames_each)
                    frames = await self.pool.run(
                        account_id, partial(sample_frames, raw, limits, max_pixels, budget), budget
                    )
                except BadVideo as why:
                    raise _bad(where, str(why), "invalid_video") from None
                parts.extend(await self.pool.run(account_id, partial(_frame_parts, where, frames), budget))
            message.content = parts

    async def _bytes(self, url: str, where: str, account_id: str | None) -> tuple[bytes, str | None]:
        """The bytes a media URL names, and for a fetched URL, its normalized form (what was fetched)."""
        if url.startswith("data:"):
            return decode_data_url(url, where), None
        if url.startswith("ms://"):
            return await self._stored(url.removeprefix("ms://"), where, account_id), None
        try:
            fetched = await self.fetcher.fetch_url(url)
        except Refused as why:
            raise refused(where, why) from None
        return fetched.body, fetched.url

    async def _picture(
        self, slot: _Slot, max_pixels: int, account_id: str | None, budget: Budget
    ) -> tuple[Picture, str | None]:
        part = slot.part
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        raw, source = await self._bytes(url, slot.where, account_id)
        decode_limit = self.config.max_decode_pixels
        try:
            # Admitted by its size before decoding: huge images decode a few at a time, not all at once.
            picture = await self.pool.run(
                account_id,
                lambda: _decoded(raw, max_pixels, decode_limit),
                budget,
                pixels=declared_pixels(raw),
            )
        except BadImage as why:
            raise _bad(slot.where, str(why)) from None
        return picture, source

    async def _stored(self, file_id: str, where: str, account_id: str | None) -> bytes:
        try:
            return (await self.files.data(account_id, file_id))[1]
        except APIError as error:
            if error.status != 404:
                raise
            raise _bad(
                where, f"no file '{file_id}' in this account (upload it with POST /v1/files)"
            ) from None

    async def _files(self, request: ChatCompletionRequest, account_id: str | None, budget: Budget) -> None:
        """File parts become their extracted text: none of the served models reads files natively."""
        for i, message in enumerate(request.messages):
            if not isinstance(message, UserMessage) or not isinstance(message.content, list):
                continue
            for j, part in enumerate(message.content):
                if isinstance(part, FilePart):
                    message.content[j] = await self._file_text(
                        part, f"messages[{i}].content[{j}]", account_id, budget
                    )

    async def _file_text(
        self, part: FilePart, where: str, account_id: str | None, budget: Budget
    ) -> ContentPart:
        spec = part.file
        name = spec.filename or spec.file_id or "file"
        if spec.file_id:
            try:
                info, text = await self.files.text(account_id, spec.file_id)
            except APIError as error:
                if error.status != 404:
                    raise
                raise _bad(where, f"no file '{spec.file_id}' in this account", "invalid_file") from None
            name = spec.filename or info.filename
        elif spec.file_data and spec.file_data.startswith("data:"):
            raw = decode_data_url(spec.file_data, where)
            if len(raw) > self.config.max_file_bytes:
                raise _bad(where, "the file is larger than the files API's limit", "invalid_file")
            try:
                text = await self.pool.document(
                    account_id, lambda own: extract_text(raw, self.ocr, budget=own), budget
                )
            except TooCostly as why:
                raise _bad(where, f"cannot read the file: {why}", "file_too_costly") from None
            except BadDocument as why:
                raise _bad(where, f"cannot read the file: {why}", "invalid_file") from None
        else:
            raise _bad(
                where, "a file part needs 'file_data' (a base64 data: URL) or 'file_id'", "invalid_file"
            )
        return TextPart(type="text", text=f"[File {name}, its text]\n{text}\n[End of file {name}]")

    async def _forwarded(
        self,
        part: ImagePart,
        picture: Picture,
        source: str | None,
        account_id: str | None,
        budget: Budget,
    ) -> ContentPart:
        # The checked, re-encoded bytes: every provider takes base64. A fetched image also keeps the
        # normalized URL it was fetched from (never the client's spelling of it), which adapters of
        # providers that fetch for themselves send instead (providers/wire/base.py).
        data, mime = await self.pool.run(account_id, picture.encode, budget)
        detail = None if isinstance(part.image_url, str) else part.image_url.detail
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        return ImagePart(type="image_url", image_url=ImageURL.checked(url, detail, source))

    async def _ocr_text(
        self, number: int, where: str, picture: Picture, account_id: str | None, budget: Budget
    ) -> ContentPart:
        image = picture.image
        text = (await self.pool.run(account_id, lambda: self.ocr.read(image), budget)).strip()
        label = f"[Image {number} ({where}), text read from it by OCR]"
        return TextPart(
            type="text", text=f"{label}\n{text or '(no text found in the image)'}\n[End of image {number}]"
        )


def _decoded(raw: bytes, max_pixels: int, max_decode_pixels: int) -> Picture:
    """`load_image`, then, after a large decode, the freed memory handed back to the system."""
    picture = load_image(raw, max_pixels, max_decode_pixels)
    if picture.original_size[0] * picture.original_size[1] > LARGE_DECODE:
        trim_memory()
    return picture


def _count_videos(request: ChatCompletionRequest) -> int:
    return sum(
        isinstance(part, VideoPart)
        for message in request.messages
        if isinstance(message, UserMessage) and isinstance(message.content, list)
        for part in message.content
    )


def _frame_parts(where: str, frames: list[Frame]) -> list[ContentPart]:
    """A label saying what follows, then each frame as an image, in order. Blocking (encodes JPEGs)."""
    parts: list[ContentPart] = [
        TextPart(
            type="text",
            text=f"[Video ({where}): {len(frames)} frames in order, at "
            + ", ".join(f"{f.at:.1f} s" for f in frames)
            + "]",
        )
    ]
    for frame in frames:
        out = io.BytesIO()
        frame.image.convert("RGB").save(out, "JPEG", quality=90)
        url = f"data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode()}"
        parts.append(ImagePart(type="image_url", image_url=ImageURL(url=url)))
    return parts
