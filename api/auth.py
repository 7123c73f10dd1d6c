"""API keys -> what a request may see: one tenant, or every tenant (admin `*`).

Keys are compared in constant time against every configured key, so neither the
answer nor its timing says which key (or how much of one) was right.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from pulse.settings import TENANT_ID_PATTERN

from .errors import ApiError, ErrorCode

ADMIN = "*"
_TENANT = re.compile(TENANT_ID_PATTERN)


@dataclass(frozen=True)
class Scope:
    tenant_id: str | None
    """The key's tenant; None for an admin key."""

    @property
    def admin(self) -> bool:
        return self.tenant_id is None


class Keys:
    def __init__(self, keys: dict[str, str] | None) -> None:
        self._keys = [(k.encode(), tenant) for k, tenant in (keys or {}).items()]
        self.enabled = keys is not None

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
        match: str | None = None
        presented = given.encode()
        for key, tenant in self._keys:
            if hmac.compare_digest(key, presented):
                match = tenant
        if match is None:
            raise ApiError(401, ErrorCode.UNAUTHORIZED, "this API key is not valid")
        return Scope(None if match == ADMIN else match)


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.query_params.get("key") or None


def tenant_for(scope: Scope, request: Request) -> str:
    """The tenant a request is about; a tenant key may only name its own."""
    asked = request.query_params.get("tenant")
    if asked is not None and not _TENANT.fullmatch(asked):
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
