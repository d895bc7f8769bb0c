"""A write-ahead journal of holds and settlements, so that a killed process loses no charge.

Each process writes its own folder under `data_dir/journal/` and holds an exclusive lock on it while it
lives. A plain `write()` is enough: after kill -9 the operating system still has the bytes (only a power
cut would need fsync, and that costs a disk flush per request). A process starting up takes over every
folder whose lock nobody holds: those belonged to processes that died.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.folder = root / secrets.token_hex(8)
        self.folder.mkdir()
        self._lock = os.open(self.folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._number = 0
        self._fd = self._open_segment()

    def _open_segment(self) -> int:
        self._number += 1
        path = self.folder / f"{self._number:08d}.jsonl"
        return os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)

    def append(self, record: dict[str, Any]) -> None:
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def rotate(self) -> list[Path]:
        """Start a new segment; the older ones may be deleted once what they hold is in the database."""
        old = sorted(self.folder.glob("*.jsonl"))
        os.close(self._fd)
        self._fd = self._open_segment()
        return old

    def close(self, remove: bool) -> None:
        os.close(self._fd)
        os.close(self._lock)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def orphans(self) -> Iterator[Path]:
        """Folders of processes that died: their locks are free."""
        for folder in sorted(self.root.iterdir()):
            if folder == self.folder or not folder.is_dir():
                continue
            lock = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock)
                continue  # a live process owns it
            try:
                yield folder
            finally:
                os.close(lock)


def read_folder(folder: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for segment in sorted(folder.glob("*.jsonl")):
        for line in segment.read_bytes().splitlines():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a line torn by the crash: its hold is released, never charged
    return records
