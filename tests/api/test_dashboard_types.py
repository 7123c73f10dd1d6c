"""The dashboard's TypeScript types come from the document the API serves.

dashboard/api_types.py writes the API's /openapi.json to dashboard/openapi.json and
runs openapi-typescript on it (dashboard/src/api.gen.ts; vitest checks that half).
This test fails when the API's answers or parameters change and the committed document,
hence the dashboard's types, were not regenerated.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_types", DASHBOARD / "api_types.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def differences(committed: dict[str, Any], served: dict[str, Any]) -> list[str]:
    """Where two documents differ: each path and each schema by name, then the rest."""
    out = []
    for where, a, b in (("path", committed.get("paths", {}), served["paths"]),
                        ("schema", committed.get("components", {}).get("schemas", {}),
                         served["components"]["schemas"])):
        out += [f"{where} {name}" for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)]
    if not out and committed != served:
        out.append("the document outside its paths and schemas")
    return out


def test_committed_openapi_document_is_the_served_one() -> None:
    generator = load_generator()
    changed = differences(json.loads(generator.DOCUMENT.read_text()),
                          generator.served_document())
    assert not changed, (f"the API's /openapi.json changed since dashboard/openapi.json "
                         f"was written ({', '.join(changed)}): {generator.REGENERATE}")
    assert not generator.stale(), ("dashboard/openapi.json is not rendered as the generator "
                                   f"renders it: {generator.REGENERATE}")


def test_generated_types_hold_every_answer() -> None:
    """api.gen.ts names each response model of the document (a cheap check, without
    Node, that it was generated from this document at all)."""
    generator = load_generator()
    types = generator.TYPES.read_text()
    models = json.loads(generator.DOCUMENT.read_text())["components"]["schemas"]
    missing = [name for name in models if f"\n        {name}: " not in types]
    assert not missing, f"src/api.gen.ts lacks {missing}: {generator.REGENERATE}"
