"""Endpoint declarations, from which both the routes and `/openapi.json` are built.

Each endpoint states its path, parameters, who may call it and its response model;
the OpenAPI document is generated from those declarations and the msgspec models, so
it cannot describe an API other than the one served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups.reach import MAX_WINDOW_S
from pulse.schemas.events import TENANT_ID_PATTERN

from . import models


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    required: bool = False
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    location: str = "query"


@dataclass(frozen=True)
class Endpoint:
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    response: type | None
    params: tuple[Param, ...] = ()
    auth: str = "tenant"
    """`tenant` (a tenant key, or an admin key naming ?tenant=), `admin`, or `none`."""
    media_type: str = "application/json"
    name: str = ""
    csv: bool = False
    """Also answers text/csv (with `format=csv`)."""


TIME = {"type": "string",
        "description": "RFC 3339 time with offset, or YYYY-MM-DD (midnight UTC)"}
ZONED_TIME = {"type": "string", "description": "RFC 3339 time with offset, or YYYY-MM-DD "
              "(local midnight in `tz`: the first instant of that date where DST skips "
              "midnight)"}
"""`from`/`to` of an endpoint that takes `tz`: there a date is read in that zone."""
FROM = Param("from", "start of the half-open range [from, to)", True, TIME)
TO = Param("to", "end of the range (exclusive)", True, TIME)
CAMPAIGN = Param("campaign", "only events of this campaign_id",
                 schema={"type": "string", "minLength": 1, "maxLength": 128})
ORDER = Param("order", "funnel steps in any order (the default) or in sequence",
              schema={"type": "string", "enum": ["any", "sequence"], "default": "any"})
WINDOW = Param("window", "conversion window: a journey reached a step only if it did within "
               "this many seconds of its first step",
               schema={"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_S})
FUNNEL_OPTIONS = (ORDER, WINDOW)
STEP = Param("step", "the funnel step, by number: 1 (the first) to the number of steps in "
             "PULSE_FUNNEL_STEPS", True, {"type": "integer", "minimum": 1})
"""Its maximum is the configured number of steps, which `document` is given."""
TENANT = Param("tenant", "the tenant to report on; required with an admin key",
               schema={"type": "string", "pattern": f"^{TENANT_ID_PATTERN}$"})


def document(endpoints: list[Endpoint], version: str, funnel_steps: int) -> dict[str, Any]:
    """The OpenAPI document of `endpoints`, for an API counting `funnel_steps` steps."""
    models_used = sorted({e.response for e in endpoints if e.response is not None}
                         | {models.Error}, key=lambda m: m.__name__)
    _, components = msgspec.json.schema_components(
        models_used, ref_template="#/components/schemas/{name}")
    paths: dict[str, Any] = {}
    for e in endpoints:
        params = [*e.params, TENANT] if e.auth == "tenant" else list(e.params)
        responses: dict[str, Any] = {"200": _content(e)}
        if e.auth == "tenant":  # api.etag
            responses["200"]["headers"] = {"ETag": {
                "description": "changes whenever the numbers or as_of can; send it back as "
                               "If-None-Match", "schema": {"type": "string"}}}
            responses["304"] = {"description": "not modified since the If-None-Match tag"}
        for status, text in _errors(e):
            responses[status] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        operation: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.name or e.handler.__name__,
            "parameters": [_parameter(p, params, funnel_steps) for p in params],
            "responses": responses,
        }
        if e.auth == "none":
            operation["security"] = []
        paths.setdefault(e.path, {})["get"] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pulse API",
            "version": version,
            "description": "Campaign analytics per tenant: dashboards from the rollups, "
                           "date-range reports from the Parquet lake.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "queryKey": {"type": "apiKey", "in": "query", "name": "key"},
            },
        },
        "security": [{"bearer": []}, {"queryKey": []}],
    }


def _parameter(p: Param, params: list[Param], funnel_steps: int) -> dict[str, Any]:
    """`p` as an OpenAPI parameter: dates read in `tz` where the endpoint takes one, and
    `step` bounded by the steps this API counts."""
    schema = p.schema
    if p in (FROM, TO) and any(other.name == "tz" for other in params):
        schema = ZONED_TIME
    elif p is STEP:
        schema = {**schema, "maximum": funnel_steps}
    return {"name": p.name, "in": p.location, "required": p.required or p.location == "path",
            "description": p.description, "schema": schema}


def _content(e: Endpoint) -> dict[str, Any]:
    if e.response is None:
        return {"description": "OK", "content": {e.media_type: {}}}
    content: dict[str, Any] = {
        e.media_type: {"schema": {"$ref": f"#/components/schemas/{e.response.__name__}"}}}
    if e.csv:
        content["text/csv"] = {"schema": {"type": "string"}}
    return {"description": "OK", "content": content}


def _errors(e: Endpoint) -> list[tuple[str, str]]:
    if e.auth == "none":
        return [("503", "not ready")] if e.path == "/readyz" else []
    out = [("400", "bad parameters"), ("401", "missing or unknown API key"),
           ("403", "the key may not see this")]
    if e.path.startswith("/analytics") and e.auth == "tenant":
        out += [("429", "too many lake queries at once"), ("503", "the lake cannot be read")]
    return out
