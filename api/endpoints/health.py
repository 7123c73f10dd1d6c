"""Liveness, readiness, metrics, the OpenAPI document and the dashboard page."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from ..context import context
from ..errors import ErrorCode, error_response
from .reports import json_response

STATIC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "static")

_PLACEHOLDER = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Pulse</title></head><body><h1>Pulse</h1>
<p>The dashboard assets are not built. The API is at <code>/analytics/*</code>;
see <a href="/openapi.json">/openapi.json</a>.</p></body></html>"""


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    replica = context(request).replica
    if replica.ready:
        return json_response({"status": "ready"})
    return error_response(503, ErrorCode.NOT_READY,
                          replica.problem or "catching up with the rollup journal")


async def metrics(request: Request) -> Response:
    return Response(context(request).metrics.render(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi)


async def index(request: Request) -> Response:
    page = os.path.join(STATIC, "index.html")
    if os.path.exists(page):
        return FileResponse(page, headers={"Cache-Control": "no-cache"})
    return HTMLResponse(_PLACEHOLDER)
