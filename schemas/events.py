"""The one definition of an event: the wire form producers send and the normalized form
every other layer uses.

`WireEvent` carries the per-field constraints of contract section 2 as msgspec
annotations, so most validation runs in C during decoding; the rules that depend on
`event_type` live in `RULES`, next to it, and are applied by `schemas.decode`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import msgspec

MAX_MESSAGE_BYTES = 64 * 1024
MAX_METADATA_BYTES = 8 * 1024
MAX_NESTING = 256
"""Arrays and objects nested deeper than this are a dead letter. The JSON parser recurses
once per level against Python's recursion limit (1000), so without a fixed limit well
below it a deeply nested message would raise instead of being rejected, at a depth that
depends on the caller's stack. Messages of at most this many bytes are never checked."""
MAX_FUTURE_US = 3600 * 1_000_000
"""An `occurred_at` more than this far ahead of the worker's clock is a dead letter."""

EventType = Literal[
    "call_ended", "chat_ended", "intent_detected", "funnel_step", "tag_changed", "usage"
]
Channel = Literal["call", "chat"]

NO_METADATA = msgspec.Raw(b"null")
"""The default of `WireEvent.metadata`; `decode` recognises it by identity, without a copy."""

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TENANT_ID_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
"""What a whole `tenant_id` may be (it names a lake folder); `is_tenant_id` checks it."""
TenantId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
"""Not given `TENANT_ID_PATTERN`: msgspec would run the regular expression on every
message, half the decode's cost, for the same few tenants over and over."""
_TENANT_ID = re.compile(TENANT_ID_PATTERN)
_TENANT_IDS_REMEMBERED = 4096
_tenant_ids: dict[str, bool] = {}
SchemaVersion = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
"""The lake's `schema_version` column is int32; the parser alone takes any integer."""


def is_tenant_id(text: str) -> bool:
    """Whether `text` is a whole tenant id. Each text's answer is remembered: a stream
    and an API hold few tenants, so a dict lookup replaces the regular expression
    (forgotten wholesale when full, so made-up tenants cost memory only up to the
    bound)."""
    valid = _tenant_ids.get(text)
    if valid is None:
        if len(_tenant_ids) >= _TENANT_IDS_REMEMBERED:
            _tenant_ids.clear()
        valid = _tenant_ids[text] = _TENANT_ID.fullmatch(text) is not None
    return valid


class WireEvent(msgspec.Struct, gc=False):
    """A message value as producers send it (contract section 2); unknown fields ignored."""

    id: Id
    tenant_id: TenantId
    event_type: EventType
    occurred_at: datetime | int
    customer_id: Id | None = None
    campaign_id: Id | None = None
    channel: Channel | None = None
    category: Id | None = None
    label: Id | None = None
    value: float | None = None
    metadata: msgspec.Raw = msgspec.field(default_factory=lambda: NO_METADATA)
    schema_version: SchemaVersion = 1


@dataclass(frozen=True)
class Rule:
    """What an event type requires beyond the common fields."""

    customer: bool = True
    label: bool = False
    value: bool = False
    non_negative_value: bool = False
    category: bool = False
    default_channel: str | None = None


RULES: dict[str, Rule] = {
    "call_ended": Rule(value=True, non_negative_value=True, default_channel="call"),
    "chat_ended": Rule(value=True, non_negative_value=True, default_channel="chat"),
    "intent_detected": Rule(label=True),
    "funnel_step": Rule(label=True),
    "tag_changed": Rule(label=True),
    "usage": Rule(customer=False, value=True, category=True),
}
CONVERSATION_TYPES = frozenset({"call_ended", "chat_ended"})


class Event(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A valid event, normalized: UTC microseconds, channel defaulted, metadata as text.

    `array_like` keeps it compact when the worker forwards batches of events
    between its stages.
    """

    tenant_id: str
    id: str
    event_type: str
    occurred_us: int
    customer_id: str | None
    campaign_id: str | None
    channel: str | None
    category: str | None
    label: str | None
    value: float | None
    metadata: str | None
    schema_version: int


EventRow = tuple[str, str, str, int, str | None, str | None, str | None, str | None,
                 str | None, float | None, str | None, int]
"""An event's normalized fields in `Event`'s order: how `schemas.chunk` hands a chunk's
events on without building an `Event` each (and, `Event` being `array_like`, how one
encodes)."""


class Rejected(msgspec.Struct, frozen=True):
    """A message that is not a valid event, and why (`reason` is a `RejectReason`)."""

    reason: str
    message: str
