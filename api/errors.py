"""The one JSON error shape, `{"error": {"code", "message"}}`, for every failure.

Handlers are passed to `Starlette(exception_handlers=...)`, so no route builds an error
body by hand and nothing ever answers with an HTML page or a stack trace. Errors raised
below the endpoints (the lake's) carry their HTTP status and code themselves and are
turned into answers here, once, at the edge.
"""

from __future__ import annotations

import enum
import logging
from typing import ClassVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pulse.schemas.errors import PulseError

log = logging.getLogger("pulse.api")


class ErrorCode(enum.StrEnum):
    """Every `error.code` the API answers with: a closed set, listed in /openapi.json."""

    BAD_REQUEST = "bad_request"
    MISSING_PARAMETER = "missing_parameter"
    BAD_PARAMETER = "bad_parameter"
    BAD_TIME = "bad_time"
    BAD_RANGE = "bad_range"
    RANGE_TOO_LONG = "range_too_long"
    BAD_METRIC = "bad_metric"
    BAD_INTERVAL = "bad_interval"
    BAD_TENANT = "bad_tenant"
    TENANT_REQUIRED = "tenant_required"
    BAD_ORDER = "bad_order"
    BAD_WINDOW = "bad_window"
    BAD_STEP = "bad_step"
    BAD_OUTCOME = "bad_outcome"
    BAD_LIMIT = "bad_limit"
    BAD_CURSOR = "bad_cursor"
    BAD_FORMAT = "bad_format"
    BAD_COMPARE = "bad_compare"
    BAD_TZ = "bad_tz"
    BAD_BREAKDOWN = "bad_breakdown"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TOO_LARGE = "too_large"
    URI_TOO_LONG = "uri_too_long"
    TOO_MANY_REQUESTS = "too_many_requests"
    HEADERS_TOO_LARGE = "headers_too_large"
    INTERNAL_ERROR = "internal_error"
    LAKE_UNREADABLE = "lake_unreadable"
    LAKE_TIMEOUT = "lake_timeout"
    NOT_READY = "not_ready"
    UNAVAILABLE = "unavailable"


_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.TOO_LARGE,
    414: ErrorCode.URI_TOO_LONG, 429: ErrorCode.TOO_MANY_REQUESTS,
    431: ErrorCode.HEADERS_TOO_LARGE, 500: ErrorCode.INTERNAL_ERROR,
    503: ErrorCode.UNAVAILABLE,
}


class ApiError(PulseError):
    """An answer that is an error; `code` is stable, `message` tells the caller what to do."""

    def __init__(self, status: int, code: ErrorCode, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = ErrorCode(code)
        self.message = message
        self.headers = headers or {}


class LakeError(PulseError):
    """A lake query failed; `lake_error` makes it an answer with this status and code."""

    status: ClassVar[int] = 503
    code: ClassVar[ErrorCode] = ErrorCode.UNAVAILABLE


class LakeUnreadable(LakeError):
    """A lake file could not be read; `detail` names it (for admins only)."""

    code = ErrorCode.LAKE_UNREADABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LakeTimeout(LakeError):
    code = ErrorCode.LAKE_TIMEOUT


class LakeBusy(LakeError):
    """The tenant already has its share of lake queries running."""

    status = 429
    code = ErrorCode.TOO_MANY_REQUESTS


def error_response(status: int, code: ErrorCode, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def lake_error(request: Request, exc: Exception) -> Response:
    """Lake failures: the file that failed is named to admins only."""
    assert isinstance(exc, LakeError)
    ctx = request.app.state.pulse
    headers = None
    if isinstance(exc, LakeBusy):
        message = "this tenant already has lake queries running; retry in a second"
        headers = {"Retry-After": "1"}
    else:
        ctx.metrics.lake_read_failed()
        if isinstance(exc, LakeUnreadable):
            message = (f"the lake cannot be read: {exc.detail}" if ctx.keys.scope(request).admin
                       else "the lake cannot be read right now; an administrator can see why "
                       "in /analytics/status and the server log")
        else:
            message = f"{exc}; ask for a shorter range"
    return error_response(exc.status, exc.code, message, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no such endpoint: {request.url.path}; see /openapi.json"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    fallback = ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL_ERROR
    return error_response(status, _HTTP_CODES.get(status, fallback), message,
                          dict(exc.headers or {}))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return error_response(500, ErrorCode.INTERNAL_ERROR,
                          "the server failed to answer; the error is in its log")


EXCEPTION_HANDLERS = {ApiError: api_error, LakeError: lake_error, HTTPException: http_error,
                      Exception: unexpected_error}
