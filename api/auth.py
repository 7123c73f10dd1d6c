"""API keys -> what a request may see: one tenant, or every tenant (admin `*`).

A presented key is looked up by its keyed digest (BLAKE2b under a secret drawn per
process), never compared byte by byte with a configured one, so neither the answer nor
its timing says which key (or how much of one) was right: an attacker cannot choose
digests. One digest and one dict lookup per request, however many keys there are.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from pulse.schemas.events import is_tenant_id

from .errors import ApiError, ErrorCode
from .params import header, query

ADMIN = "*"


@dataclass(frozen=True)
class Scope:
    tenant_id: str | None
    """The key's tenant; None for an admin key."""

    @property
    def admin(self) -> bool:
        return self.tenant_id is None


class Keys:
    def __init__(self, keys: dict[str, str] | None) -> None:
        self._secret = secrets.token_bytes(32)
        self._scopes = {self._digest(k): Scope(None if tenant == ADMIN else tenant)
                        for k, tenant in (keys or {}).items()}
        self.enabled = keys is not None

    def _digest(self, key: str) -> bytes:
        return hashlib.blake2b(key.encode(), key=self._secret, digest_size=32).digest()

    @staticmethod
    def generate_admin() -> tuple[str, dict[str, str]]:
        key = secrets.token_urlsafe(24)
        return key, {key: ADMIN}

    def scope(self, request: Request) -> Scope:
        if not self.enabled:
            return Scope(None)
        given = _presented_key(request)
        if given is None:
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "send your API key as "
                           "'Authorization: Bearer <key>' (or ?key=<key> from the dashboard)")
        scope = self._scopes.get(self._digest(given))
        if scope is None:
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "this API key is not valid")
        return scope


def _presented_key(request: Request) -> str | None:
    given = header(request, b"authorization")
    if given:
        kind, _, value = given.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return query(request).get("key") or None


TENANT = "pulse.tenant"
"""Where `request_tenant` leaves its finding in the ASGI scope."""


def request_tenant(keys: Keys, request: Request) -> str:
    """`tenant_for` the request's key, worked out once per request (the conditional
    wrapper asks first, then the handler)."""
    tenant: str | None = request.scope.get(TENANT)
    if tenant is None:
        tenant = request.scope[TENANT] = tenant_for(keys.scope(request), request)
    return tenant


def tenant_for(scope: Scope, request: Request) -> str:
    """The tenant a request is about; a tenant key may only name its own."""
    asked = query(request).get("tenant")
    if asked is not None and not is_tenant_id(asked):
        raise ApiError(400, ErrorCode.BAD_TENANT,
                       "tenant must be 1-64 characters of letters, digits, '_', '.', '-'")
    if scope.tenant_id is not None:
        if asked is not None and asked != scope.tenant_id:
            raise ApiError(403, ErrorCode.FORBIDDEN, "this API key is limited to its own tenant")
        return scope.tenant_id
    if asked is None:
        raise ApiError(400, ErrorCode.TENANT_REQUIRED,
                       "an admin key must name the tenant: add ?tenant=<tenant_id>")
    return asked


def require_admin(scope: Scope) -> None:
    if not scope.admin:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this endpoint needs an admin key")
