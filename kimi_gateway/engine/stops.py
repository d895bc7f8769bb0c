"""Stop sequences over streamed text: release what cannot begin a stop string, hold back what might."""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._pending = ""
        self.matched: str | None = None  # the stop sequence that ended the text, once one has

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns the text safe to release, and whether a stop sequence was reached."""
        if not self._stops:
            return text, False
        pending = self._pending + text
        first = -1
        for stop in self._stops:
            at = pending.find(stop)
            if at != -1 and (first == -1 or at < first):
                first, self.matched = at, stop
        if first != -1:
            self._pending = ""
            return pending[:first], True
        hold = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(pending)), hold, -1):
                if pending.endswith(stop[:k]):
                    hold = k
                    break
        self._pending = pending[len(pending) - hold :] if hold else ""
        return (pending[: len(pending) - hold] if hold else pending), False

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest
