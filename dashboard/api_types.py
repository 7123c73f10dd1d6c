"""Regenerates the dashboard's API types from the OpenAPI document the API serves.

The answers' shapes are defined once, as msgspec structs (`rollups/report.py`,
`api/models.py`), and `/openapi.json` is built from them. This script builds that
document from `pulse.api.app` without starting a server or touching a broker, writes it
to ``openapi.json`` beside this file, and runs openapi-typescript on it to write
``src/api.gen.ts``, which the dashboard imports instead of writing the shapes a third
time. Both files are committed, so that building the dashboard needs no Python.

    .venv/bin/python dashboard/api_types.py           # rewrite both files
    .venv/bin/python dashboard/api_types.py --check   # exit 1 if openapi.json is stale

Two tests keep the chain honest: tests/api/test_dashboard_types.py (pytest, no Node)
fails when the served document differs from ``openapi.json``, and
``src/api.gen.test.ts`` (vitest, run by ``npm run build``) fails when ``src/api.gen.ts``
is not what openapi-typescript makes of ``openapi.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOCUMENT = HERE / "openapi.json"
TYPES = HERE / "src" / "api.gen.ts"
GENERATOR = HERE / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
REGENERATE = "run `.venv/bin/python dashboard/api_types.py` and rebuild the dashboard"


def served_document() -> dict[str, Any]:
    """`/openapi.json` exactly as `pulse api` serves it, with default settings: nothing
    in the document depends on the environment."""
    from pulse.api.app import create_app
    from pulse.settings import Settings

    app = create_app(Settings.from_env({}), keys={})
    document: dict[str, Any] = app.state.openapi
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stale() -> bool:
    """True when ``openapi.json`` is not the document the API serves."""
    return not DOCUMENT.is_file() or DOCUMENT.read_text() != render(served_document())


def write() -> None:
    DOCUMENT.write_text(render(served_document()))
    node = shutil.which("node")
    if node is None or not GENERATOR.is_file():
        raise SystemExit(f"api_types.py: needs Node and the dashboard's packages "
                         f"(`cd {HERE.name} && npm ci`) to run openapi-typescript")
    subprocess.run([node, str(GENERATOR), str(DOCUMENT), "--output", str(TYPES)],
                   cwd=HERE, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        if stale():
            print(f"{DOCUMENT} differs from the API's /openapi.json: {REGENERATE}",
                  file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: api_types.py [--check]", file=sys.stderr)
        return 2
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
