"""The root of Pulse's exceptions and the closed set of reasons a message is rejected."""

from __future__ import annotations

import enum


class PulseError(Exception):
    """Root of every error Pulse raises on purpose; the message says what to do."""


class RejectReason(enum.StrEnum):
    """Why a message went to the dead-letter topic (header `pulse-error-reason`)."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
