"""OCR with RapidOCR and the ONNX models its package ships: nothing is downloaded, nothing leaves the host."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from PIL import Image

from kimi_gateway.media.workers import trim_memory


class OCR:
    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()  # one recognition at a time: the engine is not re-entrant

    def _get(self) -> Any:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR  # loaded on first use: ~0.3 s and ~100 MB

            self._engine = RapidOCR()
        return self._engine

    def read(self, image: Image.Image) -> str:
        """The text in the image, line by line, top to bottom. Blocking: call `aread` from async code."""
        import numpy as np

        with self._lock:
            result, _ = self._get()(np.asarray(image.convert("RGB")))
            if image.width * image.height > 1_000_000:
                trim_memory()  # detection on a large image takes hundreds of MB; give them back
        return _lines(result or [])

    async def aread(self, image: Image.Image) -> str:
        return await asyncio.to_thread(self.read, image)


def _lines(boxes: list[Any]) -> str:
    """Boxes whose vertical centres are close belong to one line, read left to right."""
    items = []
    for corners, text, _score in boxes:
        ys = [p[1] for p in corners]
        xs = [p[0] for p in corners]
        items.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text))
    items.sort()
    lines: list[list[tuple[float, str]]] = []
    centre = height = 0.0
    for y, h, x, text in items:
        if lines and abs(y - centre) < max(h, height) / 2:
            lines[-1].append((x, text))
        else:
            lines.append([(x, text)])
            centre, height = y, h
    return "\n".join(" ".join(text for _, text in sorted(line)) for line in lines)
