"""Media intake: safe URL fetching, image checks and resizing, OCR for text-only models."""

from kimi_gateway.media.intake import Media

__all__ = ["Media"]
