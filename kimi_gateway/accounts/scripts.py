"""The Redis scripts, kept whole in accounts/lua/*.lua (each says what it reads, writes and returns) and
read once from the package."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def script(name: str) -> str:
    return files("kimi_gateway.accounts").joinpath("lua", name).read_text(encoding="utf-8")
