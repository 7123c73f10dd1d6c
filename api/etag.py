"""Conditional answers: an `ETag` on every tenant report, 304 for `If-None-Match`, and
each request's last answer kept for as long as it is still the answer.

A tag names one answer. It is derived from everything the answer's numbers and `as_of`
were read from, so two answers with one tag are the same bytes, and it changes
whenever the answer can:

- this process (`INSTANCE`): replicas fold the journal at their own pace and list the
  lake at their own times, so a tag from one never matches on another;
- the tenant and the whole request (path and query string; `from` and `to` are
  required, so nothing depends on the clock);
- `RollupStore.tenant_version`: the tenant's own sums, and what changes every tenant's
  answers at once (a partition reset or folded for the first time, the retention
  horizon). Other tenants' records leave it as it is;
- the answer's `source` and `as_of`. `as_of` moves with every partition's progress,
  heartbeats included, and it is part of the answer, so a tag never outlives it;
- for an answer that read the lake, the tenant's file listing it read (a digest of
  the names, taken before the answer: a file appears whole and is never rewritten with
  other rows, see `api.lake`), which also catches files written outside the journal
  once the lake reader lists them again (at least every `lake.LISTING_SECONDS`).

So a dashboard polling while other tenants' events flow gets 304 for as long as its
own numbers and `as_of` stand, and the numbers never differ from a fresh answer's.

Answering without running the handler: each request's last answer is kept with the
state it was computed from (`_State`: the tenant version, the `as_of` each source
would report, and for a lake-backed answer the listing). While the state is the same,
the answer would be too, so a matching `If-None-Match` is a 304 and any other ask gets
the kept bytes. When the state moved, the handler runs, and a matching tag is still a
304 if the new answer is the same (say the lake's `as_of` moved under an answer from
the rollups). An answer during which the state moved (a lake query awaits, and the
journal is folded meanwhile) or the lake reader listed again is sent with a tag that
never matches, and not kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from pulse.rollups.windows import HOUR_US

from .auth import request_tenant
from .context import Context
from .params import header
from .query import Plan

INSTANCE = secrets.token_hex(8)
"""Tells this API process's tags from another's (random per start)."""
HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
"""Browsers revalidate every time and never share an answer across keys."""
_RAW_HEADERS = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
ANSWERED = "pulse.answered"
"""Where a handler leaves its answer's (source, as_of) in the ASGI scope (`answered`)."""
KEEP_ENTRIES = 4096
"""Requests whose last answer is kept (least recently asked first out)."""
KEEP_BYTES = 32 * 2**20
"""Most bytes of answers kept; an answer over `KEEP_BODY` keeps only its tag."""
KEEP_BODY = 2**20
_NOT_TAKEN = b""
"""The listing of an answer that read the lake while none was taken before it: matches
no digest, so the next ask takes one and runs the handler."""
_ROLLUPS = Plan((0, HOUR_US))
_LAKE = Plan(None, [(0, HOUR_US)])

Handler = Callable[[Request], Awaitable[Response]]
_Key = tuple[str, str, bytes]
_State = tuple[tuple[int, int], int | None, int | None]
"""(tenant version, as_of of the rollups, as_of of the lake)."""


def answered(request: Request, source: str, as_of: int | None) -> None:
    """Say what the answer about to be sent reports: without it, its tag never matches."""
    request.scope[ANSWERED] = (source, as_of)


def matches(tag: str, if_none_match: str | None) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or `*`)."""
    if not if_none_match:
        return False
    opaque = tag.removeprefix("W/")
    return any(item.strip() == "*" or item.strip().removeprefix("W/") == opaque
               for item in if_none_match.split(","))


@dataclass(frozen=True, slots=True)
class _Kept:
    state: _State
    listing: bytes | None
    """Digest of the tenant's lake listing the answer read (`_NOT_TAKEN` if unknown);
    None: the rollups alone."""
    tag: str
    source: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    """None when too large to keep: the tag is still good for a 304."""


class _Sent(Response):
    """An answer whose headers are rendered already: a kept one sent again, or a 304."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = headers


class Answers:
    """The answers kept per (tenant, path, query), and what they were computed from."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._kept: dict[_Key, _Kept] = {}
        self._bytes = 0
        self._as_of: dict[str, tuple[int, int | None, int | None]] = {}
        """Per tenant: (store version, as_of of the rollups, of the lake)."""
        self._listings: dict[str, tuple[int, bytes]] = {}
        """Per tenant: (lake listings made, digest of its listing then)."""

    def state(self, tenant: str) -> _State:
        """What the tenant's answers are computed from, but the lake listing. The as_of
        parts depend on every partition's progress, so they are worked out again only
        when the store moved."""
        store = self.ctx.store
        cached = self._as_of.get(tenant)
        if cached is None or cached[0] != store.version:
            if len(self._as_of) >= KEEP_ENTRIES:
                self._as_of.clear()
            query = self.ctx.query
            cached = self._as_of[tenant] = (store.version, query.as_of(tenant, _ROLLUPS),
                                            query.as_of(tenant, _LAKE))
        return store.tenant_version(tenant), cached[1], cached[2]

    async def listing(self, tenant: str) -> tuple[bytes, int]:
        """(digest of the tenant's lake listing as an answer would read it now, listings
        the lake reader had made then, or -1 if it listed meanwhile). Off the loop: it
        may list."""
        lake = self.ctx.lake

        def digest() -> tuple[bytes, int]:
            made = lake.listings
            files = tuple(lake.files(tenant, None))
            cached = self._listings.get(tenant)
            if cached is None or cached[0] != files:
                if len(self._listings) >= KEEP_ENTRIES:
                    self._listings.clear()
                value = hashlib.blake2b("\0".join(files).encode(), digest_size=16).digest()
                cached = self._listings[tenant] = (files, value)
            return cached[1], made if lake.listings == made else -1

        return await asyncio.to_thread(digest)

    def tagged(self, key: _Key, request: Request, response: Response, state: _State,
               listing: bytes | None, listings: int) -> str:
        """Put the tag on `response`, the answer to `key` just computed, and keep it when
        what it was computed from is known exactly: `state`, taken before it, and for
        an answer that read the lake, `listing`, the digest taken before it when the lake
        reader had made `listings` (so if it listed again since, which listing the answer
        read is unknown)."""
        source, as_of = request.scope.get(ANSWERED, (None, None))
        known = source is not None and self.state(key[0]) == state
        if source == "rollups":
            listing = None
        elif listing is None or listings < 0 or self.ctx.lake.listings != listings:
            known = False
            if source is not None:  # it reads the lake: next time, list before the answer
                self._keep(key, _Kept(state, _NOT_TAKEN, "", source, [], None))
        if not known or source is None:
            tag = f'W/"x{secrets.token_hex(12)}"'  # never sent back
            response.raw_headers += [(b"etag", tag.encode()), *_RAW_HEADERS]
            return tag
        tenant, path, query = key
        raw = (f"{INSTANCE}\0{tenant}\0{path}\0{query!r}\0{state[0]}\0{source}\0{as_of}\0"
               f"{listing.hex() if listing else '-'}")
        tag = f'W/"{hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()}"'
        response.raw_headers += [(b"etag", tag.encode()), *_RAW_HEADERS]
        body = bytes(response.body)
        self._keep(key, _Kept(state, listing, tag, source, response.raw_headers,
                              body if len(body) <= KEEP_BODY else None))
        return tag

    def get(self, key: _Key) -> _Kept | None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._kept[key] = kept  # most recently asked: last out
        return kept

    def _forget(self, key: _Key) -> None:
        old = self._kept.pop(key, None)
        if old is not None and old.body is not None:
            self._bytes -= len(old.body)

    def _keep(self, key: _Key, kept: _Kept) -> None:
        self._forget(key)
        self._kept[key] = kept
        if kept.body is not None:
            self._bytes += len(kept.body)
        while len(self._kept) > KEEP_ENTRIES or self._bytes > KEEP_BYTES:
            dropped = self._kept.pop(next(iter(self._kept)))
            if dropped.body is not None:
                self._bytes -= len(dropped.body)

    def not_modified(self, tag: str) -> Response:
        self.ctx.metrics.not_modified.inc()
        return _Sent(304, [(b"etag", tag.encode()), *_RAW_HEADERS], b"")


def conditional(handler: Handler, answers: Answers) -> Handler:
    """`handler` with an ETag on its 200 answers, 304 for a matching If-None-Match, and
    its answers kept while they stand. The key is checked first: a 304 says as much as
    the answer would."""
    ctx = answers.ctx

    async def endpoint(request: Request) -> Response:
        tenant = request_tenant(ctx.keys, request)
        scope = request.scope
        key = (tenant, scope["path"], scope["query_string"])
        if_none_match = header(request, b"if-none-match")
        state = answers.state(tenant)
        kept = answers.get(key)
        listing, listings = None, -1
        if kept is not None and kept.listing is not None:  # the answer reads the lake
            try:
                listing, listings = await answers.listing(tenant)
            except Exception:  # the lake failing: the answer says how, if it reads it
                kept = None
        if kept is not None and kept.state == state and kept.listing == listing:
            if matches(kept.tag, if_none_match):
                return answers.not_modified(kept.tag)
            if kept.body is not None:
                ctx.metrics.answered(kept.source)
                return _Sent(200, kept.headers, kept.body)
        response = await handler(request)
        if response.status_code != 200:
            return response
        tag = answers.tagged(key, request, response, state, listing, listings)
        if matches(tag, if_none_match):
            return answers.not_modified(tag)
        return response

    endpoint.__doc__ = handler.__doc__
    return endpoint
