"""Decoding: every rule of contract section 2, one row each, with its reason code."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event, Rejected

NOW_US = int(datetime(2026, 9, 21, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000
BASE = {"id": "e1", "tenant_id": "acme", "event_type": "call_ended", "customer_id": "c1",
        "occurred_at": "2026-09-20T10:00:00Z", "value": 42.5}


def with_(**changes: object) -> bytes:
    body = {**BASE, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def nested(levels: int) -> object:
    """A JSON array `levels` deep."""
    value: object = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"\xff", "invalid_json"),
    (b'{"id": NaN}', "invalid_json"),
    (b"[]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b"x" * (64 * 1024 + 1), "too_large"),
    (with_(id=...), "missing_field"),
    (with_(occurred_at=...), "missing_field"),
    (with_(customer_id=None), "missing_field"),
    (with_(value=None), "missing_field"),
    (with_(event_type="usage", customer_id=None, category=None), "missing_field"),
    (with_(event_type="intent_detected", value=None), "missing_field"),
    (with_(id=5), "wrong_type"),
    (with_(value="42"), "wrong_type"),
    (with_(value=True), "wrong_type"),
    (with_(metadata=[1]), "wrong_type"),
    (with_(metadata="text"), "wrong_type"),
    (with_(id=""), "bad_value"),
    (with_(id="x" * 129), "bad_value"),
    (with_(tenant_id="a b"), "bad_value"),
    (with_(tenant_id="acme\n"), "bad_value"),
    (with_(tenant_id="t" * 65), "bad_value"),
    (with_(event_type="sms"), "bad_value"),
    (with_(channel="fax"), "bad_value"),
    (with_(value=-0.5), "bad_value"),
    (b'{"id":"e","tenant_id":"t","event_type":"usage","category":"m","value":1e400,'
     b'"occurred_at":1}', "bad_value"),
    (with_(occurred_at="2026-09-20T10:00:00"), "bad_timestamp"),
    (with_(occurred_at="yesterday"), "bad_timestamp"),
    (with_(occurred_at=1.5e12), "bad_timestamp"),
    (with_(occurred_at=10**15), "bad_timestamp"),
    (with_(occurred_at=True), "bad_timestamp"),
    (with_(occurred_at="2026-09-21T13:00:00.001Z"), "future_timestamp"),
    (with_(metadata={"k": "v" * 9000}), "too_large"),
    (with_(zz=nested(256)), "too_large"),  # 257 levels with the event's own object
    (with_(metadata={"a": nested(300)}), "too_large"),
    (b"[" * 2000 + b"]" * 2000, "too_large"),
    (b'{"zz":' + b"{" * 5000, "too_large"),
    (with_(metadata={"k": "MARK"}).replace(b"MARK", b"\xff"), "invalid_json"),
    (with_(metadata={"k": "MARK"}).replace(b"MARK", b"\xed\xa0\x80"), "invalid_json"),
    (with_(schema_version=2**31), "bad_value"),
    (with_(schema_version=2**70), "bad_value"),
    (with_(occurred_at="0001-01-01T00:59:59.999999+01:00"), "bad_timestamp"),
])
def test_bad_messages_are_rejected_with_their_reason(raw: bytes, reason: str):
    result = decode_event(raw, NOW_US)
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert result.message


@pytest.mark.parametrize(("raw", "field", "expected"), [
    (with_(), "channel", "call"),
    (with_(event_type="chat_ended"), "channel", "chat"),
    (with_(channel="chat"), "channel", "chat"),
    (with_(event_type="intent_detected", label="buy", value=...), "channel", None),
    (with_(occurred_at=1789950000000), "occurred_us", 1789950000000000),
    (with_(occurred_at="2026-09-20T12:00:00+02:00"), "occurred_us",
     decode_event(with_(), NOW_US).occurred_us),  # type: ignore[union-attr]
    (with_(occurred_at="1969-12-31T23:59:59.5Z"), "occurred_us", -500_000),
    (with_(value=30), "value", 30.0),
    (with_(metadata={"a": [1, 2]}), "metadata", '{"a": [1, 2]}'),
    (with_(metadata=None), "metadata", None),
    (with_(unknown="ignored"), "id", "e1"),
    (with_(schema_version=3), "schema_version", 3),
    (with_(occurred_at="2026-09-21T13:00:00Z"), "id", "e1"),  # 1 h ahead is still fine
    (with_(id="é" * 128), "id", "é" * 128),  # characters, not bytes
    (with_(zz=nested(255)), "id", "e1"),  # 256 levels: the limit
    (with_(zz="[{" * 5000), "id", "e1"),  # brackets in strings are text
    (with_(zz='\\"' + "[" * 300), "id", "e1"),  # and escaped quotes do not end them
    (with_(schema_version=2**31 - 1), "schema_version", 2**31 - 1),
    (with_(occurred_at="0001-01-01T01:00:00+01:00"), "occurred_us", -62135596800000000),
])
def test_valid_messages_are_normalized(raw: bytes, field: str, expected: object):
    result = decode_event(raw, NOW_US)
    assert isinstance(result, Event), result
    assert getattr(result, field) == expected


def test_deep_nesting_is_rejected_the_same_at_any_stack_depth():
    """The parser's own limit is Python's recursion limit, which the caller's stack uses
    up too: the same message must get the same answer however deep it is decoded."""
    messages = [with_(zz="MARK").replace(b'"MARK"', b"[" * levels + b"]" * levels)
                for levels in (255, 256, 900, 990, 5000)]

    def decode_at(depth: int) -> list[str]:
        if depth:
            return decode_at(depth - 1)
        return [type(decode_event(raw, NOW_US)).__name__ for raw in messages]

    assert {tuple(decode_at(depth)) for depth in (0, 200, 600)} == {
        ("Event", "Rejected", "Rejected", "Rejected", "Rejected")}
