"""Conditional answers: an `ETag` on every tenant report, and 304 for `If-None-Match`.

Dashboards poll the same URLs every few seconds. The tag is derived from what an answer
can depend on, taken before the answer is computed, so a poll that matches costs one
hash instead of a query:

- this process (`INSTANCE`): replicas fold the journal at their own pace and list the
  lake at their own times, so a tag from one never matches on another;
- `RollupStore.version`, which moves with every journal record folded (buckets,
  progress, as_of, and the lake flushes the journal reports, which refresh listings);
- the period of the lake listing cache (`lake.LISTING_SECONDS`): files nobody reported,
  e.g. written by `pulse replay`, are listed again at least that often;
- the tenant and the whole request (path and query string; `from` and `to` are
  required, so nothing depends on the clock).

A tag taken before the answer can only be older than the numbers sent with it: the
state moves forward only, so when the same tag is asked for again, nothing the answer
read has changed since it was computed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from .auth import tenant_for
from .context import context
from .lake import LISTING_SECONDS

INSTANCE = secrets.token_hex(8)
"""Tells this API process's tags from another's (random per start)."""
HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
"""Browsers revalidate every time and never share an answer across keys."""

Handler = Callable[[Request], Awaitable[Response]]


def etag(version: int, tenant: str, request: Request) -> str:
    """The weak tag of `request`'s answer for `tenant` at store `version`."""
    period = int(time.monotonic() // LISTING_SECONDS)
    raw = (f"{INSTANCE}\0{version}\0{period}\0{tenant}\0{request.url.path}\0"
           f"{request.url.query}")
    return f'W/"{hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()}"'


def matches(tag: str, if_none_match: str | None) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or `*`)."""
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    return any(item.strip() == "*" or item.strip().removeprefix("W/") == opaque
               for item in if_none_match.split(","))


def conditional(handler: Handler) -> Handler:
    """`handler` with an ETag on its 200 answers and 304 for a matching If-None-Match.
    The key is checked first: a 304 says as much as the answer would."""

    async def endpoint(request: Request) -> Response:
        ctx = context(request)
        tenant = tenant_for(ctx.keys.scope(request), request)
        tag = etag(ctx.store.version, tenant, request)
        if matches(tag, request.headers.get("if-none-match")):
            ctx.metrics.not_modified.inc()
            return Response(status_code=304, headers={"ETag": tag, **HEADERS})
        response = await handler(request)
        if response.status_code == 200:
            response.headers.update({"ETag": tag, **HEADERS})
        return response

    endpoint.__doc__ = handler.__doc__
    return endpoint
