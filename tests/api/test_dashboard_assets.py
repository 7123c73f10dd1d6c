"""The committed dashboard build (api/static/) matches the dashboard sources.

`pip install` ships api/static/ as built, without Node, so a source change that was not
rebuilt would ship an old dashboard. dashboard/hash_sources.py hashes the sources; the
build writes that hash to api/static/SOURCES.sha256, and this test recomputes it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"
STATIC = ROOT / "api" / "static"
REBUILD = "run `cd dashboard && npm ci && npm run build` and commit api/static/"


def load_hasher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hash_sources", DASHBOARD / "hash_sources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_build_matches_sources() -> None:
    recorded = STATIC / "SOURCES.sha256"
    assert recorded.is_file(), f"{recorded} is missing: {REBUILD}"
    assert load_hasher().digest(DASHBOARD) == recorded.read_text().strip(), (
        f"api/static/ was not built from the current dashboard sources: {REBUILD}"
    )


def test_index_references_its_assets_relatively() -> None:
    index = STATIC / "index.html"
    assert index.is_file(), f"{index} is missing: {REBUILD}"
    refs = re.findall(r'(?:src|href)="([^"]+)"', index.read_text())
    local = [r for r in refs if not r.startswith(("data:", "http:", "https:"))]
    assert any(r.endswith(".js") for r in local), f"index.html loads no script: {refs}"
    for ref in local:
        # Relative, so the page works wherever the API mounts it.
        assert ref.startswith("./assets/"), f"index.html references {ref!r}, not ./assets/..."
        assert (STATIC / ref).is_file(), f"index.html references {ref}, which is missing: {REBUILD}"
