"""bytes -> `Event` or `Rejected`, never an exception.

The fast path is a typed msgspec decode (about a microsecond per event); the rules that
depend on the event type and the clock follow in plain Python. A message that fails
the typed decode is classified from msgspec's error, whose text also becomes the
human-readable `pulse-error` header.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec

from .errors import RejectReason
from .events import (
    MAX_FUTURE_US,
    MAX_MESSAGE_BYTES,
    MAX_METADATA_BYTES,
    MAX_NESTING,
    NO_METADATA,
    RULES,
    TENANT_ID_PATTERN,
    Event,
    Rejected,
    Rule,
    WireEvent,
    is_tenant_id,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
MIN_MS = -62135596800000  # 0001-01-01T00:00:00Z
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_MIN_US = MIN_MS * 1000
_END_US = (MAX_MS + 1) * 1000  # 10000-01-01T00:00:00Z
_NULL = b"null"
_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = b"[{"

wire_decoder = msgspec.json.Decoder(WireEvent)


def decode_event(raw: bytes, now_us: int) -> Event | Rejected:
    """Validate one message value against contract section 2 at worker time `now_us`."""
    too_large = oversized(raw)
    if too_large is not None:
        return too_large
    try:
        wire = wire_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejected(_classify(str(exc)), str(exc))
    except msgspec.DecodeError as exc:
        return Rejected(RejectReason.INVALID_JSON, f"not valid UTF-8 JSON: {exc}")
    return _normalize(wire, now_us)


def oversized(raw: bytes) -> Rejected | None:
    """Why `raw` is too large to parse, if it is: too many bytes, or nested too deep."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejected(
            RejectReason.TOO_LARGE,
            f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes",
        )
    if _nested_deeper_than(raw, MAX_NESTING):
        return Rejected(
            RejectReason.TOO_LARGE,
            f"arrays and objects are nested more than {MAX_NESTING} levels deep; "
            f"the limit is {MAX_NESTING}",
        )
    return None


def _normalize(wire: WireEvent, now_us: int) -> Event | Rejected:
    if not is_tenant_id(wire.tenant_id):
        return Rejected(RejectReason.BAD_VALUE,
                        f"Expected `str` matching regex '^{TENANT_ID_PATTERN}$' - at `$.tenant_id`")
    rule = RULES[wire.event_type]
    missing = _missing_for(rule, wire)
    if missing is not None:
        return missing
    value = wire.value
    if rule.non_negative_value and value is not None and value < 0:
        return Rejected(
            RejectReason.BAD_VALUE,
            f"value is a duration in seconds and must be >= 0 for {wire.event_type}, "
            f"got {value!r} - at `$.value`",
        )
    occurred = wire.occurred_at
    occurred_us = occurred * 1000 if type(occurred) is int and (
        MIN_MS <= occurred <= MAX_MS) else occurred_at_us(occurred)
    if isinstance(occurred_us, Rejected):
        return occurred_us
    if occurred_us > now_us + MAX_FUTURE_US:
        return Rejected(
            RejectReason.FUTURE_TIMESTAMP,
            f"occurred_at is {(occurred_us - now_us) / 3.6e9:.2f} h ahead of the worker's "
            "clock; at most 1 h is accepted",
        )
    metadata = None if wire.metadata is NO_METADATA else metadata_text(wire.metadata)
    if isinstance(metadata, Rejected):
        return metadata
    return Event(
        wire.tenant_id,
        wire.id,
        wire.event_type,
        occurred_us,
        wire.customer_id,
        wire.campaign_id,
        wire.channel or rule.default_channel,
        wire.category,
        wire.label,
        value,
        metadata,
        wire.schema_version,
    )


def _missing_for(rule: Rule, wire: WireEvent) -> Rejected | None:
    """The first field the event type requires that the message lacks."""
    if rule.customer and wire.customer_id is None:
        return _missing("customer_id", wire.event_type)
    if rule.label and wire.label is None:
        return _missing("label", wire.event_type)
    if rule.category and wire.category is None:
        return _missing("category", wire.event_type)
    if rule.value and wire.value is None:
        return _missing("value", wire.event_type)
    return None


def occurred_at_us(occurred: datetime | int) -> int | Rejected:
    """`occurred_at` as UTC microseconds, inside years 1-9999 in both forms (`_normalize`
    converts the common case, epoch milliseconds in range, itself)."""
    if isinstance(occurred, int):
        if not MIN_MS <= occurred <= MAX_MS:
            return Rejected(
                RejectReason.BAD_TIMESTAMP,
                f"occurred_at {occurred} is outside years 1-9999 as epoch milliseconds",
            )
        return occurred * 1000
    if occurred.tzinfo is None:
        return Rejected(
            RejectReason.BAD_TIMESTAMP,
            "occurred_at needs a UTC offset (`Z` or `+hh:mm`) - at `$.occurred_at`",
        )
    occurred_us = (occurred - _EPOCH) // _ONE_US
    if not _MIN_US <= occurred_us < _END_US:  # the lake's folders are UTC dates
        return Rejected(
            RejectReason.BAD_TIMESTAMP,
            f"occurred_at {occurred.isoformat()} is outside years 1-9999 in UTC",
        )
    return occurred_us


def metadata_text(raw: msgspec.Raw) -> str | None | Rejected:
    """`metadata` as JSON text (None when null): an object of at most
    `MAX_METADATA_BYTES`, valid UTF-8 (the parser skips over raw values unchecked)."""
    if (metadata_raw := bytes(raw)) == _NULL:
        return None
    if not metadata_raw.startswith(b"{"):
        return Rejected(RejectReason.WRONG_TYPE, "metadata must be a JSON object - at `$.metadata`")
    if len(metadata_raw) > MAX_METADATA_BYTES:
        return Rejected(
            RejectReason.TOO_LARGE,
            f"metadata is {len(metadata_raw)} bytes; the limit is {MAX_METADATA_BYTES}",
        )
    try:
        return metadata_raw.decode()
    except UnicodeDecodeError as exc:
        return Rejected(
            RejectReason.INVALID_JSON, f"metadata is not valid UTF-8: {exc} - at `$.metadata`"
        )


def _nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Whether `raw` nests arrays and objects more than `limit` deep, brackets in strings
    aside: never less deep than the parser would go, so it never hits the recursion limit.

    Counting the brackets first keeps the scan off every ordinary message, and a message
    no longer than `limit` bytes cannot hold more than `limit` of them.
    """
    if len(raw) <= limit or raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in _OPENERS else -1
        if depth > limit:
            return True
    return False


def _missing(field: str, event_type: str) -> Rejected:
    return Rejected(
        RejectReason.MISSING_FIELD, f"{event_type} events need `{field}` - at `$.{field}`"
    )


def _classify(message: str) -> RejectReason:
    """Map msgspec's validation message onto our closed set of reasons.

    msgspec reports one error per message with a stable prefix; tests pin every branch.
    """
    if message.startswith("Object missing required field"):
        return RejectReason.MISSING_FIELD
    if "$.occurred_at" in message:
        return RejectReason.BAD_TIMESTAMP
    if message.startswith("Expected `object`, got"):
        return RejectReason.NOT_AN_OBJECT
    if message.startswith("Expected `") and "`, got `" in message:
        return RejectReason.WRONG_TYPE
    return RejectReason.BAD_VALUE
