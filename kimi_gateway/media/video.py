"""Video bytes -> a few ordered still frames (PyAV), for models that take images but not video.

Work is bounded before and during decoding: duration, resolution and a wall-clock budget are checked, and
decoding stops once the last wanted frame is out.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from kimi_gateway.media.workers import UNLIMITED, Budget


class BadVideo(Exception):
    """Why the bytes are not an acceptable video; safe to show."""


@dataclass(frozen=True, slots=True)
class VideoLimits:
    fps: float  # frames sampled per second of video
    max_frames: int
    max_seconds: float
    max_pixels: int  # per frame, as stored in the file
    budget_seconds: float  # wall clock for the whole decode


@dataclass(frozen=True, slots=True)
class Frame:
    at: float  # seconds from the start
    image: Image.Image


# MP4/MOV boxes that may open a file.
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def container_format(raw: bytes) -> str:
    """The demuxer for the bytes, from their magic numbers, among file containers only. FFmpeg's own
    probing would also take an SDP or HLS description, whose demuxer opens network sockets (an SDP
    `video_url` of 152 bytes bound UDP ports and blocked 20 s): the demuxer is named, never probed."""
    if raw[4:8] in _MOV_BOXES:
        return "mov"
    if raw[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # and WebM
    if raw[:4] == b"RIFF" and raw[8:12] == b"AVI ":
        return "avi"
    if len(raw) > 376 and raw[0] == raw[188] == raw[376] == 0x47:
        return "mpegts"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise BadVideo("not a video container that is accepted (MP4/MOV, WebM/MKV, AVI, MPEG-TS, GIF)")


def _open(raw: bytes) -> Any:  # PyAV's InputContainer
    import av

    return av.open(io.BytesIO(raw), mode="r", format=container_format(raw))


def probe(raw: bytes, limits: VideoLimits) -> tuple[float, int, int]:
    """Duration and size, checked against the limits without decoding a frame. Blocking."""
    import av

    try:
        with _open(raw) as container:
            return _checked(container, limits)
    except av.FFmpegError:
        raise BadVideo("not a video that can be decoded") from None


def _checked(container: object, limits: VideoLimits) -> tuple[float, int, int]:
    streams = getattr(container, "streams", None)
    video = streams.video[0] if streams is not None and streams.video else None
    if video is None:
        raise BadVideo("the file has no video stream")
    duration = _duration(container, video)
    if duration > limits.max_seconds:
        raise BadVideo(f"the video is {duration:.0f} s long; at most {limits.max_seconds:g} s is accepted")
    width, height = video.codec_context.width, video.codec_context.height
    if width * height > limits.max_pixels:
        raise BadVideo(f"the video is {width}x{height}; at most {limits.max_pixels:,} pixels a frame")
    return duration, width, height


def _duration(container: object, video: object) -> float:
    total = getattr(container, "duration", None)  # microseconds
    if total:
        return float(total) / 1_000_000
    if getattr(video, "duration", None) and getattr(video, "time_base", None):
        return float(video.duration * video.time_base)  # type: ignore[attr-defined]
    return 0.0


def sample_frames(
    raw: bytes, limits: VideoLimits, max_image_pixels: int, budget: Budget = UNLIMITED
) -> list[Frame]:
    """Frames at `fps`, in order, at most `max_frames`, each within `max_image_pixels`. Blocking: the
    request's media budget is checked at every decoded frame (it stops when the client goes away)."""
    import av

    deadline = time.monotonic() + limits.budget_seconds
    frames: list[Frame] = []
    try:
        with _open(raw) as container:
            duration, _, _ = _checked(container, limits)
            stream = container.streams.video[0]
            # One decoding thread: FFmpeg's own threads would take every core at once (four video parts
            # once kept both cores busy for minutes), and their CPU would escape the budget, which counts
            # this thread's time.
            stream.thread_count = 1
            step = 1.0 / limits.fps
            # Spread the frames over the whole video when fps would want more than the cap allows.
            if duration > 0 and duration * limits.fps > limits.max_frames:
                step = duration / limits.max_frames
            due = 0.0
            for frame in container.decode(stream):
                budget.check()
                if time.monotonic() > deadline:
                    raise BadVideo(f"decoding took longer than {limits.budget_seconds:g} s")
                at = float(frame.time or 0.0)
                if at + 1e-6 < due:
                    continue
                image: Image.Image = frame.to_image()
                if image.width * image.height > max_image_pixels:
                    scale = math.sqrt(max_image_pixels / (image.width * image.height))
                    image = image.resize(
                        (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
                    )
                frames.append(Frame(at, image))
                due = at + step
                if len(frames) >= limits.max_frames:
                    break
    except av.FFmpegError:
        raise BadVideo("the video is corrupt or cannot be decoded") from None
    if not frames:
        raise BadVideo("no frame could be decoded")
    return frames
