"""The layers are import rules: schemas <- rollups <- streams | api, and they hold.

An AST walk over every module (imports inside functions included) so a violation
fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"schemas": "schemas", "rollups": "rollups", "streams": "streams", "api": "api",
          "pulse": "pulse"}

ALLOWED = {
    "schemas": {"pulse.schemas"},
    "rollups": {"pulse.schemas", "pulse.rollups"},
    "streams": {"pulse.schemas", "pulse.rollups", "pulse.streams", "pulse.settings",
                "pulse.kafka", "pulse.lakefs"},
    "api": {"pulse.schemas", "pulse.rollups", "pulse.api", "pulse.settings", "pulse.kafka",
            "pulse"},
}
FORBIDDEN_LIBRARIES = {
    "schemas": {"aiokafka", "faust", "mode", "duckdb", "starlette", "uvicorn", "socket",
                "asyncio"},
    "rollups": {"aiokafka", "faust", "mode", "duckdb", "starlette", "uvicorn", "pyarrow",
                "socket", "asyncio", "os", "time", "threading"},
    "api": {"faust", "mode"},
}
LEAVES = {"pulse/settings.py": set(), "pulse/kafka.py": set(),
          "pulse/lakefs.py": {"pulse.settings", "pulse.schemas", "pulse.schemas.lake"}}


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path, package: str) -> set[str]:
    """Absolute names of everything `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = ["pulse", package] if package != "pulse" else ["pulse"]
    rel = path.relative_to(ROOT / LAYERS[package]).with_suffix("").parts[:-1]
    here = parts + list(rel)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
    return names


def owner(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed) or name == "pulse"


@pytest.mark.parametrize("layer", ["schemas", "rollups", "streams", "api"])
def test_layers_import_only_what_is_below_them(layer: str):
    problems = []
    for path in modules(layer):
        for name in imports(path, layer):
            top = name.split(".")[0]
            if top == "pulse" and not owner(name, ALLOWED[layer]):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
            if top in FORBIDDEN_LIBRARIES.get(layer, set()):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not problems, "\n".join(problems)


def test_settings_kafka_and_lake_store_are_leaves():
    for rel, allowed in LEAVES.items():
        names = imports(ROOT / rel, "pulse")
        assert not [n for n in names if n.startswith("pulse.") and n not in
                    {"pulse.settings", *allowed}], rel
