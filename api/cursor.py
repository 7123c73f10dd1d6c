"""Page cursors of the funnel customers: signed, and bound to one tenant and one query.

A cursor carries where the last page ended (the sort key of its last journey), the lake
snapshot the first page read (the highest input offset per epoch and partition it saw,
so later pages read exactly the same events however many arrive meanwhile, even after a
broker restart numbers offsets from 0 again) and that page's `as_of`. It is signed with
HMAC-SHA256 over the tenant, a digest of the query and the payload, so a cursor that
Pulse did not issue, that was altered, or that belongs to another query or tenant is
refused, with one message that says nothing about why.
The tenant is not in the payload: nothing in a cursor names a tenant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import msgspec

from .errors import ApiError, ErrorCode

VERSION = 2
"""1: snapshots by partition only (offsets of two broker epochs were confused)."""
_TAG_BYTES = 16


Snapshot = dict[str, dict[int, int]]
"""Epoch -> input partition -> the highest offset the first page's lake files held."""


class Page(msgspec.Struct, array_like=True, frozen=True):
    """Where the next page starts, and what every page of the list reads."""

    t1_us: int
    campaign_id: str | None
    customer_id: str
    snapshot: Snapshot
    as_of_us: int | None


class _Payload(msgspec.Struct, array_like=True, frozen=True):
    version: int
    page: Page


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Payload)
_version_decoder = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])
REFUSED = ("`cursor` was not issued by this Pulse for this query and key; ask for the first "
           "page again without it")
OUTDATED = ("`cursor` was issued by another version of Pulse, whose cursors this one cannot "
            "read; ask for the first page again without it")


def query_digest(*parts: object) -> bytes:
    """A digest of the parameters a cursor is bound to (all but the page size)."""
    return hashlib.sha256(msgspec.json.encode(list(parts))).digest()


class Cursors:
    def __init__(self, secret: bytes | None = None) -> None:
        """`secret` None: a random one, so cursors work only on this process."""
        self._key = secret if secret is not None else secrets.token_bytes(32)

    def _tag(self, tenant_id: str, query: bytes, payload: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (tenant_id.encode(), query, payload):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()[:_TAG_BYTES]

    def issue(self, tenant_id: str, query: bytes, page: Page) -> str:
        payload = _encoder.encode(_Payload(VERSION, page))
        token = payload + self._tag(tenant_id, query, payload)
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def read(self, tenant_id: str, query: bytes, cursor: str) -> Page:
        """The page `cursor` points to; a 400 unless this process issued it for this query."""
        try:
            token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise ApiError(400, ErrorCode.BAD_CURSOR, REFUSED) from None
        payload, tag = token[:-_TAG_BYTES], token[-_TAG_BYTES:]
        if len(token) <= _TAG_BYTES or not hmac.compare_digest(
                tag, self._tag(tenant_id, query, payload)):
            raise ApiError(400, ErrorCode.BAD_CURSOR, REFUSED)
        # Signed with our secret, but perhaps by a Pulse whose cursors looked different
        # (an upgrade between two pages): the version says so, or the layout does not fit.
        try:
            version, _ = _version_decoder.decode(payload)
            if version == VERSION:
                return _decoder.decode(payload).page
        except msgspec.DecodeError:
            pass
        raise ApiError(400, ErrorCode.BAD_CURSOR, OUTDATED)
