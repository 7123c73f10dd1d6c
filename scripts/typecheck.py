"""mypy over the modules `[tool.mypy] packages` names in pyproject.toml, as installed.

The layers are top-level folders that install under one import name (`[tool.setuptools]
package-dir`: folder `schemas/` is the package `pulse.schemas`). An editable install
reaches them through an import hook, which mypy never runs: it finds modules by looking
for files named like them. So this lays `.typecheck/pulse/` out as the installed package,
from that same map, with links to the real folders and files (a new module needs no new
link), points mypy at it (`mypy_path` in pyproject.toml), and prints mypy's paths as the
real ones, so an editor opens `schemas/arrow.py`, not a link. The other ways cost more:
a `--target` install copies the code, so mypy would check a stale copy, and setuptools'
strict editable mode links files one by one and must be reinstalled for every new module.

Usage: `.venv/bin/python scripts/typecheck.py [mypy options]` (scripts/test runs it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".typecheck"


def lay_out_packages(package_dirs: dict[str, str]) -> None:
    """`TREE/<package path>` for every package: a link to its folder, or, for a package
    with packages mapped beneath it (`pulse`), a folder of links to its entries."""
    shutil.rmtree(TREE, ignore_errors=True)
    for package, folder in sorted(package_dirs.items()):
        target = TREE.joinpath(*package.split("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not any(other.startswith(package + ".") for other in package_dirs):
            target.symlink_to(os.path.relpath(ROOT / folder, target.parent))
            continue
        target.mkdir()
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(os.path.relpath(entry, target))


def real_paths(report: str) -> str:
    """mypy's report with each `.typecheck/...` path replaced by the file it links to."""
    lines = []
    for line in report.splitlines(keepends=True):
        path, colon, rest = line.partition(":")
        if colon and Path(os.path.abspath(path)).is_relative_to(TREE):
            path = os.path.relpath(os.path.realpath(path))
        lines.append(path + colon + rest)
    return "".join(lines)


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lay_out_packages(project["tool"]["setuptools"]["package-dir"])
    out, err, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), *sys.argv[1:]])
    sys.stdout.write(real_paths(out))
    sys.stderr.write(real_paths(err))
    return status


if __name__ == "__main__":
    sys.exit(main())
