"""The folders are the architecture (README, "Layout"): no two of them import each other, so each part can
be read, tested and replaced from below. Read from the source, type-checking imports included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import kimi_gateway

ROOT = Path(kimi_gateway.__file__).parent


def _part(module: str) -> str:
    """The folder a module belongs to (`accounts`, `http`, ...), or the top-level module's own name."""
    first = module.split(".")[1] if module.count(".") else module
    return first


def _imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).with_suffix("").parts
        source = relative[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("kimi_gateway."):
                    target = _part(name)
                    if target != source:
                        edges[source].add(target)
    return edges


def test_no_two_parts_import_each_other() -> None:
    edges = _imports()
    assert {"http", "accounts", "routing", "providers", "engine", "storage"} <= set(edges)  # it reads them
    mutual = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, set())})
    assert mutual == [], f"parts importing each other: {mutual}"


# The README's table ("What each part may import"): each part, and the parts it may import besides the ones
# any part may (BASE). A new import outside it is a change to the architecture: change the table with it.
BASE = {"errors", "ids", "logs", "money"}
BELOW_CORE = {
    "config",
    "storage",
    "schema",
    "catalog",
    "engine",
    "providers",
    "outcome",
    "stats",
    "limits",
    "accounts",
    "routing",
    "media",
    "tools",
}
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "storage": set(),
    "schema": set(),
    "catalog": {"schema"},
    "engine": {"schema"},
    "providers": {"catalog", "engine", "schema", "config"},
    "outcome": {"catalog", "providers", "schema"},
    "stats": {"storage", "outcome"},
    "limits": set(),
    "accounts": {"limits", "storage", "stats", "catalog", "outcome", "providers"},
    "routing": {"catalog", "providers", "stats", "schema", "config"},
    "media": {"catalog", "schema", "storage", "config"},
    "tools": {"config", "media", "schema", "storage"},
    "core": BELOW_CORE,
    "runtime": BELOW_CORE | {"core"},
    "http": BELOW_CORE | {"core", "runtime", "web"},
    "web": BELOW_CORE | {"core", "runtime"},
    "cli": BELOW_CORE | {"core", "runtime", "http", "web", "selfhost"},
    "selfhost": set(),
    "testing": BELOW_CORE | {"runtime"},
    "__main__": {"cli"},
}


def test_each_part_imports_only_what_the_layering_allows() -> None:
    unexpected = {
        part: sorted(targets - BASE - ALLOWED.get(part, set()))
        for part, targets in _imports().items()
        if targets - BASE - ALLOWED.get(part, set())
    }
    assert unexpected == {}, f"imports outside the README's table: {unexpected}"
