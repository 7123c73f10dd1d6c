"""A chunk decoded at once equals `decode_event` message by message: the same events in
the same order, as columns and as rows, and the same rejects with the same reasons."""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulse.rollups.dedup import content_digest, content_digests, id_digest, id_digests
from pulse.schemas.arrow import poll_to_table
from pulse.schemas.chunk import decode_chunk
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event, Rejected

from .test_decode import BASE, NOW_US, nested

PARTITION = 3
MS = {**BASE, "occurred_at": NOW_US // 1000 - 26 * 3_600_000}
"""The common message, with its time in epoch milliseconds (the form checked as one
array; a chunk with RFC 3339 texts converts its times one by one)."""


def _message(fields: dict[str, object]) -> bytes:
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def with_(**changes: object) -> bytes:
    return _message({**MS, **changes})


def assert_same_as_one_by_one(raws: Sequence[bytes]) -> None:
    offsets = [1000 + 7 * i for i in range(len(raws))]
    chunk = decode_chunk(raws, offsets, PARTITION, NOW_US)
    results = [decode_event(raw, NOW_US) for raw in raws]
    events = [r for r in results if isinstance(r, Event)]
    expected = poll_to_table(events, PARTITION,
                             [o for o, r in zip(offsets, results, strict=True)
                              if isinstance(r, Event)], NOW_US)
    assert chunk.table.equals(expected), (chunk.table.to_pylist(), expected.to_pylist())
    assert chunk.table.schema.equals(expected.schema, check_metadata=True)
    assert chunk.rows == [msgspec.structs.astuple(e) for e in events]
    assert chunk.rejected == [(i, r) for i, r in enumerate(results)
                              if isinstance(r, Rejected)]
    assert content_digests(chunk.rows) == [content_digest(e) for e in events]
    assert id_digests(chunk.rows) == b"".join(id_digest(e.tenant_id, e.id) for e in events)


GOOD = [with_(id=f"ok{i}") for i in range(5)]

EDGES = [
    b"", b"{", b"\xff", b"[]", b'"text"', b"x" * (64 * 1024 + 1),
    with_(id=...), with_(customer_id=None), with_(value=None), with_(value=-0.5),
    with_(value=-0.0), with_(event_type="usage", customer_id=None, category=None),
    with_(event_type="usage", customer_id=None, category="min", value=-2.0),
    with_(event_type="intent_detected", label=None, value=...),
    with_(event_type="intent_detected", label="buy", value=-3.0),
    with_(event_type="funnel_step", label="Qualified", customer_id=None),
    with_(tenant_id="a b"), with_(tenant_id="acme\n"), with_(tenant_id="t" * 65),
    with_(event_type="sms"), with_(channel="fax"), with_(channel="chat"),
    with_(event_type="chat_ended"), with_(id=5), with_(value="42"), with_(value=30),
    with_(occurred_at="2026-09-20T10:00:00"), with_(occurred_at="yesterday"),
    with_(occurred_at="2026-09-20T12:00:00+02:00"), with_(occurred_at=1.5e12),
    with_(occurred_at=10**15), with_(occurred_at=-62135596800001),
    with_(occurred_at=-62135596800000), with_(occurred_at=253402300799999),
    with_(occurred_at=2**63), with_(occurred_at=10**30), with_(occurred_at=True),
    with_(occurred_at=2**62 + 1), with_(occurred_at=-(2**62)),
    with_(occurred_at=NOW_US // 1000 + 3_600_000),
    with_(occurred_at=NOW_US // 1000 + 3_600_001),
    with_(occurred_at="2026-09-21T13:00:00.001Z"),
    with_(occurred_at="0001-01-01T01:00:00+01:00"),
    with_(metadata={"k": "v" * 9000}), with_(metadata={"a": [1, 2]}), with_(metadata=None),
    with_(metadata=[1]), with_(metadata="text"), with_(zz=nested(256)),
    with_(zz=nested(255)), with_(metadata={"a": nested(300)}),
    with_(metadata={"k": "MARK"}).replace(b"MARK", b"\xff"),
    with_(schema_version=2**31), with_(schema_version=3), with_(unknown="ignored"),
    with_(id="é" * 128),
]


@pytest.mark.parametrize("edge", EDGES)
def test_each_edge_among_good_messages(edge: bytes):
    assert_same_as_one_by_one([GOOD[0], edge, GOOD[1], edge, GOOD[2]])


def test_every_edge_in_one_chunk():
    assert_same_as_one_by_one([m for edge in EDGES for m in (edge, GOOD[0])])


def test_empty_and_all_rejected_chunks():
    assert_same_as_one_by_one([])
    assert_same_as_one_by_one([b"{", b"[]"])
    assert_same_as_one_by_one([with_(occurred_at="2026-09-20T10:00:00Z")])


_maybe = st.one_of(st.just(...), st.none())
messages = st.builds(
    lambda kind, tenant, ident, customer, value, label, category, channel, at, meta, extra: (
        _message({**MS, "event_type": kind, "tenant_id": tenant, "id": ident,
                  "customer_id": customer, "value": value, "label": label,
                  "category": category, "channel": channel, "occurred_at": at,
                  "metadata": meta, **extra})),
    st.sampled_from(["call_ended", "chat_ended", "intent_detected", "funnel_step",
                     "tag_changed", "usage", "sms"]),
    st.sampled_from(["acme", "globex", "a b", "", "t.1-x_Y"]),
    st.text(min_size=0, max_size=3),
    st.one_of(_maybe, st.sampled_from(["c1", "c2", ""])),
    st.one_of(_maybe, st.floats(allow_nan=False, allow_infinity=False, width=32),
              st.integers(-5, 5)),
    st.one_of(_maybe, st.sampled_from(["buy", "Qualified", ""])),
    st.one_of(_maybe, st.just("call_minutes")),
    st.one_of(_maybe, st.sampled_from(["call", "chat", "fax"])),
    st.one_of(st.integers(NOW_US // 1000 - 10**10, NOW_US // 1000 + 4_000_000),
              st.integers(-(2**64), 2**64),
              st.sampled_from(["2026-09-20T10:00:00Z", "2026-09-21T12:59:00+00:00",
                               "2026-09-21T14:00:00Z", "2026-09-20T10:00:00", "soon"])),
    st.one_of(_maybe, st.dictionaries(st.sampled_from("ab"), st.integers(0, 9), max_size=2),
              st.just([1])),
    st.dictionaries(st.sampled_from(["zz", "schema_version"]), st.integers(0, 2**32),
                    max_size=1),
)
raw_messages = st.one_of(messages, messages, messages,
                         st.binary(max_size=20), messages.map(lambda m: m[:-1]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_messages, max_size=40))
def test_random_chunks_equal_one_by_one(raws: list[bytes]):
    assert_same_as_one_by_one(raws)
