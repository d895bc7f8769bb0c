"""A write-ahead journal of holds and settlements, so that a killed process loses no charge.

Each process writes its own folder under `data_dir/journal/` and holds an exclusive lock on it while it
lives. A plain `write()` is enough: after kill -9 the operating system still has the bytes (only a power
cut would need fsync, and that costs a disk flush per request). A process starting up takes over every
folder whose lock nobody holds: those belonged to processes that died.

Records are group-committed: those appended during one turn of the event loop go out in one `write()` at
its end, so concurrent requests share a system call. What must not happen before a record is in the file
(a settlement) is handed to `after_write`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
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
        self._pending: list[bytes] = []
        self._after: list[Callable[[], None]] = []

    def _open_segment(self) -> int:
        self._number += 1
        path = self.folder / f"{self._number:08d}.jsonl"
        return os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)

    def append(self, record: dict[str, Any]) -> None:
        """Queue a record; it reaches the file at the end of this turn of the event loop."""
        self._pending.append(orjson.dumps(record))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self.write_pending)

    def after_write(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every record appended so far is in the file (at the end of this turn)."""
        self._after.append(callback)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.write_pending)

    def write_pending(self) -> None:
        after, self._after = self._after, []
        try:
            if self._pending:
                data = memoryview(b"\n".join(self._pending) + b"\n")
                self._pending.clear()
                while data:
                    data = data[os.write(self._fd, data) :]
        finally:
            # Run even when the write failed (a full disk): the records still reach the database with the
            # next batch, and holds and slots must not be stranded.
            for callback in after:
                callback()

    def rotate(self) -> list[Path]:
        """Start a new segment; the older ones may be deleted once what they hold is in the database."""
        self.write_pending()
        old = sorted(self.folder.glob("*.jsonl"))
        os.close(self._fd)
        self._fd = self._open_segment()
        return old

    def close(self, remove: bool) -> None:
        self.write_pending()
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
