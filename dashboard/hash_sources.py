"""SHA-256 over the dashboard's sources, so a test can tell whether api/static/ was built
from them.

The digest covers package.json, package-lock.json, index.html, the Vite config, every
tsconfig*.json and everything under src/, in sorted relative-path order, hashing
``path + "\\0" + bytes + "\\0"`` for each file (paths relative to this folder, with
``/``). ``python3 hash_sources.py`` prints it; ``--write`` writes it to
``../api/static/SOURCES.sha256`` (``npm run build`` does that last). Standard library
only: the Python test imports this file by path.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "api" / "static" / "SOURCES.sha256"
TOP_LEVEL = ("package.json", "package-lock.json", "index.html")
TOP_LEVEL_PATTERNS = ("vite.config.*", "tsconfig*.json")


def source_files(root: Path = HERE) -> list[str]:
    """The hashed files, as sorted paths relative to ``root``."""
    names = {name for name in TOP_LEVEL if (root / name).is_file()}
    for pattern in TOP_LEVEL_PATTERNS:
        names.update(p.name for p in root.glob(pattern) if p.is_file())
    names.update(p.relative_to(root).as_posix() for p in (root / "src").rglob("*") if p.is_file())
    return sorted(names)


def digest(root: Path = HERE) -> str:
    h = hashlib.sha256()
    for rel in source_files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return h.hexdigest()


def main(argv: list[str]) -> int:
    value = digest()
    if argv[1:] == ["--write"]:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(value + "\n")
    elif argv[1:]:
        print("usage: hash_sources.py [--write]", file=sys.stderr)
        return 2
    else:
        print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
