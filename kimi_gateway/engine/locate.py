"""Finding a GGUF file: a filesystem path, or a file shipped inside an installed package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_PREFIX = "package:"


def resolve_gguf(spec: str) -> Path:
    """`package:<pkg>/<file>` finds the file inside the installed package, so nothing is downloaded."""
    if spec.startswith(PACKAGE_PREFIX):
        package, _, name = spec[len(PACKAGE_PREFIX) :].partition("/")
        try:
            traversable = resources.files(package).joinpath(name)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(f"package '{package}' holding {name} is not installed") from exc
        # Installed wheels are plain directories, so the traversable is a real path.
        path = Path(str(traversable))
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF model file not found: {spec}")
    return path
