"""The layers are import rules: schemas <- rollups <- streams | api, and they hold.

The layers are top-level folders that install under one import name, as
`[tool.setuptools] package-dir` in pyproject.toml maps them (folder `rollups/` is the
package `pulse.rollups`). This test reads that map, names every module as Python imports
it, and resolves every import (relative ones and `from pulse import x` included) to the
module it loads, so no spelling of an import gets past the rules. An AST walk over every
module (imports inside functions included) so a violation fails here rather than in
review.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())[
    "tool"]["setuptools"]["package-dir"]
"""Installed package -> its folder in the repository: "pulse.rollups" -> "rollups"."""
TOP = "pulse"
"""The top package (folder `pulse/`): the CLI, the supervisor and the leaves."""

LEAVES = ("pulse.settings", "pulse.kafka")
"""Modules of the top package that every layer above rollups uses; they import nothing
of ours but the bottom layer (the settings check API keys' tenants against the event
model's tenant id)."""
SEAM = "pulse.lakefs"
"""The one way to the lake's files: it knows the settings that say where the lake is and
the lake's names (schemas), nothing that reads or writes the events."""
SEAM_S3 = "pulse.lakefs_s3"
"""The seam's S3 store, which only the seam imports (when a lake is on S3)."""
CACHE = "pulse.lakecache"
"""Local copies of lake files for readers (the API's lake queries on S3): it reaches the
lake only through the seam."""
SHARED = ("pulse.epoch", "pulse.checkpoint_store")
"""Modules of the top package that the worker and the API both use; they build on
schemas, rollups and the leaves, and know neither side."""
BELOW_BOTH_SIDES = {"pulse.schemas", "pulse.rollups", *LEAVES, SEAM, CACHE}
ALLOWED = {
    "pulse.schemas": set(),
    "pulse.rollups": {"pulse.schemas"},
    **{leaf: {"pulse.schemas"} for leaf in LEAVES},
    SEAM: {"pulse.settings", "pulse.schemas", SEAM_S3},
    SEAM_S3: {"pulse.settings", SEAM},
    CACHE: {"pulse.settings", SEAM},
    **{shared: BELOW_BOTH_SIDES for shared in SHARED},
    "pulse.streams": BELOW_BOTH_SIDES | set(SHARED),
    # `pulse` is the top package's __init__ alone, for `pulse.__version__` in OpenAPI's
    # `info.version`; it grants nothing below it (not `pulse.cli`, not `pulse.streams`).
    "pulse.api": BELOW_BOTH_SIDES | set(SHARED) | {TOP},
    TOP: set(),
}
"""What each layer, and each module of the top package, may import besides itself."""
COMPOSERS = {
    "pulse.cli": "imports each layer inside the command that runs it",
    "pulse.supervisor": "`pulse up`: runs the broker, a worker and the API as children",
    "pulse.benchmarks": "each benchmark runs the layers as users run them",
}
"""What sits above every layer and may import any of them."""
FORBIDDEN_LIBRARIES = {
    "pulse.schemas": {"aiokafka", "faust", "mode", "duckdb", "starlette", "uvicorn", "socket",
                      "asyncio"},
    "pulse.rollups": {"aiokafka", "faust", "mode", "duckdb", "starlette", "uvicorn", "pyarrow",
                      "socket", "asyncio", "os", "time", "threading"},
    "pulse.api": {"faust", "mode"},
}


def module_name(path: Path) -> str:
    """The name `path` is imported by, from the folder of the package that holds it."""
    package, folder = max(((p, f) for p, f in PACKAGE_DIRS.items()
                           if path.is_relative_to(ROOT / f)), key=lambda item: len(item[1]))
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    return ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def files(what: str) -> list[Path]:
    """Every module file of a rule's subject: a package (and its subpackages), or one
    module of the top package."""
    return sorted(p for p in OUR_FILES if unit(module_name(p)) == what)


def unit(module: str) -> str:
    """What a rule names: the installed package holding `module`, or a module of the top
    package itself (`pulse.settings`, `pulse.cli`; `pulse` for its __init__)."""
    packages = [p for p in PACKAGE_DIRS if p != TOP and (module == p or module.startswith(p + "."))]
    return max(packages, key=len) if packages else ".".join(module.split(".")[:2])


OUR_FILES = [p for f in set(PACKAGE_DIRS.values()) for p in (ROOT / f).rglob("*.py")]
OUR_MODULES = {module_name(p) for p in OUR_FILES}


def resolve(name: str) -> str:
    """The module an import of `name` loads, when it is ours: its longest prefix that is
    one of our modules (`pulse.settings.Settings` -> `pulse.settings`,
    `pulse.__version__` -> `pulse`)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in OUR_MODULES:
            return ".".join(parts[:n])
    return name


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Everything `source`, the code of `module`, imports: ours resolved, others as written."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            parent = ".".join([*base, *([node.module] if node.module else [])])
            names.update(parent if alias.name == "*" else f"{parent}.{alias.name}"
                         for alias in node.names)
    return {resolve(n) for n in names}


def imports(path: Path) -> set[str]:
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def refused(layer: str, name: str) -> str | None:
    """Why `layer` may not import `name`, or None when it may."""
    top = name.split(".")[0]
    if top == TOP and unit(name) not in ALLOWED[layer] | {layer}:
        return f"{layer} may import of ours only {sorted(ALLOWED[layer])}"
    if top in FORBIDDEN_LIBRARIES.get(layer, set()):
        return f"{layer} must not depend on {top}"
    return None


def test_every_package_and_top_level_module_has_rules_or_composes_the_layers():
    """A new folder in package-dir or a new module in `pulse/` must be placed first."""
    assert {unit(m) for m in OUR_MODULES} == set(ALLOWED) | set(COMPOSERS)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_is_below_them(layer: str):
    modules = files(layer)
    assert modules, f"no module found for {layer}"
    problems = [f"{path.relative_to(ROOT)} imports {name}: {why}"
                for path in modules for name in sorted(imports(path))
                if (why := refused(layer, name))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("source", "module", "is_package", "loaded"), [
    ("import pulse", "pulse.api.app", False, "pulse"),
    ("from pulse import __version__", "pulse.api.app", False, "pulse"),
    ("from pulse import cli", "pulse.schemas.decode", False, "pulse.cli"),
    ("from pulse.settings import Settings", "pulse.rollups.store", False, "pulse.settings"),
    ("import pulse.schemas.events", "pulse.rollups.store", False, "pulse.schemas.events"),
    ("from .. import supervisor", "pulse.streams.worker", False, "pulse.supervisor"),
    ("from .. import params", "pulse.api.endpoints.reports", False, "pulse.api.params"),
    ("from ...streams import app", "pulse.api.endpoints.reports", False, "pulse.streams.app"),
    ("from . import reports", "pulse.api.endpoints", True, "pulse.api.endpoints.reports"),
    ("from .events import *", "pulse.schemas", True, "pulse.schemas.events"),
])
def test_every_spelling_of_an_import_resolves_to_the_module_it_loads(
        source: str, module: str, is_package: bool, loaded: str):
    assert imports_of(source, module, is_package) == {loaded}


@pytest.mark.parametrize(("layer", "name", "allowed"), [
    ("pulse.api", "pulse", True),
    ("pulse.schemas", "pulse", False),
    ("pulse.api", "pulse.cli", False),
    ("pulse.api", "pulse.streams.app", False),
    ("pulse.streams", "pulse.api.app", False),
    ("pulse.streams", "pulse.lakefs", True),
    ("pulse.rollups", "pulse.lakefs", False),
    ("pulse.settings", "pulse.schemas.events", True),
    ("pulse.settings", "pulse.rollups.windows", False),
    ("pulse.epoch", "pulse.streams.broker", False),
    ("pulse.checkpoint_store", "pulse.rollups.checkpoint", True),
    ("pulse.api", "pulse.checkpoint_store", True),
    ("pulse.rollups", "pulse.rollups.windows", True),
    ("pulse.rollups", "os", False),
])
def test_the_rules_refuse_what_lies_above_or_beside(layer: str, name: str, allowed: bool):
    assert (refused(layer, name) is None) == allowed
