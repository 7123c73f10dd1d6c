"""Hostile input: one worker is fed every kind of bad message hypothesis can think of.

Fault injected: a hypothesis-drawn stream mixing arbitrary bytes, Kafka tombstones,
broken JSON, deep nesting (up to 100 000 levels, at the top and inside fields), huge
strings, a wrong type in every field, NaN/Infinity literals, out-of-range and naive
timestamps, integers beyond every machine width, unicode edge cases (escaped and raw
surrogates, invalid UTF-8 inside strings, RTL marks, NUL, emoji), messages around the
64 KiB limit and near Kafka's 1 MiB limit, and valid events (with duplicates) mixed in.
Everything is produced in one run against one worker, then a valid sentinel event.

What must hold (contract section 2): the worker never stops (it is alive, its ingest
stage never exited, and the sentinel sent last is counted); every invalid message is
on the dead-letter topic byte for byte (key and value) with the `pulse-error-reason`
that `decode_event` gives it and a `pulse-error` text, and in the lake's
`dead_letters/`; the folded journal accounts for every message (read = accepted +
duplicates + dead letters = messages produced, dead letters per reason as expected);
the valid events are in the lake once per offset, column for column, and in the rollups
exactly; and `/analytics/status` shows the same accounting to an operator.

`PULSE_BAD_INPUT_SEED` replays a run (the seed is printed); `PULSE_BAD_INPUT_EXAMPLES`
sets how many drawn lists are concatenated (default 25).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from pulse.rollups import report
from pulse.rollups.store import ALL, RollupStore
from pulse.schemas.decode import decode_event
from pulse.schemas.events import MAX_MESSAGE_BYTES, Event
from tests import oracle
from tests.api_process import start_api
from tests.deployment import Proc, Pulse, counters, read_all
from tests.streams.test_faults import READY
from tests.streams.test_pipeline import HOUR, STEPS

pytestmark = pytest.mark.broker

EXAMPLES = int(os.environ.get("PULSE_BAD_INPUT_EXAMPLES", "25"))
SEED = int(os.environ.get("PULSE_BAD_INPUT_SEED", str(random.randrange(2**32))))
NOW_MS = time.time_ns() // 1_000_000
KIB = 1024
FIELDS = ("id", "tenant_id", "event_type", "occurred_at", "customer_id", "campaign_id",
          "channel", "category", "label", "value", "metadata", "schema_version")
TENANTS = ("acme", "globex", "a.b-c_9", "T" * 64)
TYPES = ("call_ended", "chat_ended", "intent_detected", "funnel_step", "tag_changed", "usage")
ODD_TEXT = ("\u200f", "\u202e", "\u200d", "\u0000", "\U0001f600", "\U0001f468\u200d\U0001f469",
            "e\u0301", "\ufeff", "\uffff", "\U0010ffff", "\u0085", "\u2028", "'\"\\/",
            "\U0001f1fa\U0001f1f8", "ﷺ", "\u00a0", "a" * 128, "\U0001f600" * 128)


# ---- valid events ------------------------------------------------------------------

def iso(ms: int, offset_minutes: int = 0) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).isoformat()
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


text_field = st.one_of(
    st.sampled_from(("a", "b", "vip", "spring")), st.sampled_from(ODD_TEXT),
    st.text(min_size=1, max_size=20),
)


@st.composite
def valid_body(draw: st.DrawFn) -> dict:
    """A valid event as a dict; ids from a small pool, so duplicates happen."""
    kind = draw(st.sampled_from(TYPES))
    at = draw(st.one_of(
        st.integers(NOW_MS - 48 * 3_600_000, NOW_MS),
        st.sampled_from((NOW_MS + 59 * 60_000, -62135596800000, 0, -1)),
    ))
    body: dict = {
        "id": draw(st.one_of(st.sampled_from([f"v{i}" for i in range(40)]), text_field)),
        "tenant_id": draw(st.sampled_from(TENANTS[:2])),
        "event_type": kind,
        "occurred_at": draw(st.one_of(st.just(at),
                                      st.sampled_from((0, 330, -480)).map(lambda m: iso(at, m))))
        if at >= 0 else at,
    }
    if kind != "usage":
        body["customer_id"] = draw(st.one_of(st.sampled_from(("c1", "c2", "c3")), text_field))
    if draw(st.booleans()):
        body["campaign_id"] = draw(st.one_of(st.none(), st.sampled_from(("spring", "fall")),
                                             text_field))
    if kind in ("call_ended", "chat_ended", "usage"):
        body["value"] = draw(st.one_of(st.sampled_from((0, 30, 29.999, 30.0)),
                                       st.floats(0, 1e6)))
    if kind in ("intent_detected", "funnel_step", "tag_changed"):
        body["label"] = draw(st.one_of(st.sampled_from(STEPS + ("buy", "vip")), text_field))
    if kind == "usage":
        body["category"] = draw(st.one_of(st.sampled_from(("call_minutes", "sms")), text_field))
    if draw(st.integers(0, 4)) == 0:
        body["metadata"] = draw(st.dictionaries(text_field, st.one_of(
            st.none(), st.integers(), text_field, st.lists(st.integers(), max_size=3)),
            max_size=3))
    if draw(st.integers(0, 4)) == 0:
        body[draw(text_field)] = draw(st.one_of(st.integers(), text_field, st.none()))
    return body


def dumps(body: dict, ascii_only: bool = True) -> bytes:
    return json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


valid_message = st.builds(dumps, valid_body(), st.booleans())


# ---- bad messages ------------------------------------------------------------------

def splice(body: dict, field: str, raw: bytes) -> bytes:
    """`body` as JSON with `field` set to the raw JSON text `raw` (whatever it is)."""
    marker = "\x01splice\x01"
    text = dumps({**body, field: marker})
    return text.replace(json.dumps(marker).encode(), raw)


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    raw = draw(valid_message)
    how = draw(st.sampled_from(("truncate", "insert", "drop", "trailing", "single", "bom")))
    at = draw(st.integers(0, max(0, len(raw) - 1)))
    if how == "truncate":
        return raw[:at]
    if how == "insert":
        return raw[:at] + draw(st.sampled_from((b"{", b"}", b'"', b",", b":", b"\\"))) + raw[at:]
    if how == "drop":
        return raw[:at] + raw[at + 1:]
    if how == "trailing":
        return raw + draw(st.sampled_from((b",", b" x", b"}", b"\x00", b"{}")))
    if how == "single":
        return raw.replace(b'"', b"'")
    return b"\xef\xbb\xbf" + raw


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from((1_000, 10_000, 100_000)))
    shape = draw(st.sampled_from(("array", "object")))
    nested = (b"[" * depth + b"]" * depth if shape == "array"
              else b'{"a":' * depth + b"1" + b"}" * depth)
    where = draw(st.sampled_from(("top", "metadata", "metadata.a", "unknown", "id", "value")))
    if where == "top":
        return nested
    if where == "metadata.a":
        return splice(draw(valid_body()), "metadata", b'{"a":' + nested + b"}")
    return splice(draw(valid_body()), "zz" if where == "unknown" else where, nested)


@st.composite
def huge_string(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from((129, 5_000, 9_000, 65_000, 70_000)))
    field = draw(st.sampled_from(FIELDS + ("zz",)))
    fill = draw(st.sampled_from(("x", "\U0001f600", "\u202e")))
    value: object = {"s": fill * size} if field == "metadata" else fill * size
    return dumps({**draw(valid_body()), field: value}, draw(st.booleans()))


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def wrong_type(draw: st.DrawFn) -> bytes:
    """Every field in turn gets some other JSON value (some happen to be valid)."""
    body = draw(valid_body())
    body[draw(st.sampled_from(FIELDS))] = draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        del body[draw(st.sampled_from(sorted(body)))]  # and sometimes a field goes missing
    return dumps(body)


@st.composite
def non_finite(draw: st.DrawFn) -> bytes:
    literal = draw(st.sampled_from((b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf",
                                    b"1e999", b"-1e999", b"1e-999", b"-0.0", b"0e0")))
    field = draw(st.sampled_from(("value", "occurred_at", "schema_version", "campaign_id")))
    if draw(st.booleans()):
        return splice(draw(valid_body()), "metadata", b'{"x":' + literal + b"}")
    return splice(draw(valid_body()), field, literal)


TIMESTAMPS = (
    -2**63, -62135596800001, 253402300800000, 2**63, 2**64, 10**30, NOW_MS + 2 * 3_600_000,
    1.7e12, -0.5, "2026-01-01T00:00:00", "2026-01-01", "2026-01-01 00:00:00Z",
    "2026-01-01t00:00:00z", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z", "2026-12-31T23:59:60Z",
    "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+01", "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:59:59.999999+01:00", "9999-12-31T23:59:59-01:00", "", "now",
    str(NOW_MS), "2026-01-01T00:00:00.1234567890Z",
)


@st.composite
def bad_timestamp(draw: st.DrawFn) -> bytes:
    return dumps({**draw(valid_body()), "occurred_at": draw(st.sampled_from(TIMESTAMPS))})


BIG_INTS = (2**31, -2**31 - 1, 2**53 + 1, 2**63, -2**63 - 1, 2**64, 2**70, -(2**70), 10**400)


@st.composite
def big_int(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(("schema_version", "value", "occurred_at", "id", "metadata")))
    number = str(draw(st.sampled_from(BIG_INTS))).encode()
    if field == "metadata":
        return splice(draw(valid_body()), field, b'{"n":' + number + b"}")
    return splice(draw(valid_body()), field, number)


ODD_RAW = (
    b'"\\ud800"', b'"a\\udfffb"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"', b'"\\u0000"',
    b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"a\x00b"',
    b'"\x1f"', b'"\\u202e\\u200f"', b'"\xe2\x80\xae"', b'"\\uFFFF"', b'"\\x41"', b'"\\u12"',
)


@st.composite
def odd_unicode(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(FIELDS + ("zz", "metadata.k")))
    raw = draw(st.sampled_from(ODD_RAW))
    if field == "metadata.k":
        return splice(draw(valid_body()), "metadata", b'{"k":' + raw + b"}")
    return splice(draw(valid_body()), field, raw)


@st.composite
def sized(draw: st.DrawFn) -> bytes:
    """A valid event padded to an exact size: the 64 KiB edge, and near Kafka's 1 MiB."""
    size = draw(st.sampled_from((MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 1, 200 * KIB,
                                 KIB * KIB - KIB)))
    raw = splice(draw(valid_body()), "pad", b'""')
    return raw.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(raw)) + b'"')


@st.composite
def odd_shape(draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from((
        b"null", b"1", b'"s"', b"[]", b"true", b"{}", b" ", b"\x00", b"{" * 3,
        b'{"id":"d","id":"e","tenant_id":"acme","event_type":"usage","occurred_at":1,'
        b'"category":"c","value":1}',
        b'{"ID":"x","tenant_id":"acme","event_type":"usage","occurred_at":1,"category":"c",'
        b'"value":1}',
    )))


message_value = st.one_of(
    valid_message, valid_message, valid_message, st.binary(max_size=300), st.none(),
    broken_json(), deep(), huge_string(), wrong_type(), non_finite(), bad_timestamp(),
    big_int(), odd_unicode(), sized(), odd_shape(),
)
message = st.tuples(st.one_of(st.none(), st.binary(max_size=16)), message_value).map(
    lambda kv: (kv[0] or b"tombstone", None) if kv[1] is None else kv)  # Kafka: a key or a value


# Cases that have broken a worker before, sent in every run whatever hypothesis draws.
_PIN = {"id": "pin", "tenant_id": "acme", "event_type": "tag_changed", "customer_id": "c",
        "label": "vip", "occurred_at": NOW_MS - 60_000}
PINNED: list[tuple[bytes | None, bytes | None]] = [
    (b"pin", splice(_PIN, "metadata", b'{"a":' + b"[" * 1_000 + b"]" * 1_000 + b"}")),
    (b"pin", splice(_PIN, "zz", b"[" * 1_000 + b"]" * 1_000)),
    (b"pin", splice(_PIN, "metadata", b'{"k":"\xff"}')),
    (b"pin", dumps({**_PIN, "id": "pin-year0", "occurred_at": "0001-01-01T00:00:00+01:00"})),
    (b"pin", dumps({**_PIN, "id": "pin-int32", "schema_version": 2**40})),
    (b"pin", dumps({**_PIN, "id": "pin-uint64", "schema_version": 2**70})),
    (b"pin", None),
]


# ---- the test ----------------------------------------------------------------------

def draw_stream() -> list[tuple[bytes | None, bytes | None]]:
    drawn: list[list[tuple[bytes | None, bytes | None]]] = []

    @seed(SEED)
    @settings(max_examples=EXAMPLES, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=10, max_size=40))
    def collect(batch: list[tuple[bytes | None, bytes | None]]) -> None:
        drawn.append(batch)

    collect()
    return [m for batch in drawn for m in batch] + PINNED


def classify(value: bytes | None, now_us: int) -> Event | str:
    """What `decode_event` says: the event, a reason code, or `raised: <exception>`."""
    try:
        result = decode_event(value or b"", now_us)
    except Exception as exc:  # decode_event promises never to raise; reported below
        return f"raised: {type(exc).__name__}"
    return result if isinstance(result, Event) else str(result.reason)


def without_conflicts(stream: list[tuple[bytes | None, bytes | None]], now_us: int
                      ) -> list[tuple[bytes | None, bytes | None]]:
    """Later copies of a (tenant, id) that differ from the first become exact copies.

    Which of two differing copies counts is unspecified (contract section 3), so the
    rollups could not be compared with the definition; exact duplicates stay.
    """
    first: dict[tuple[str, str], tuple[Event, bytes | None]] = {}
    out = []
    for key, value in stream:
        result = classify(value, now_us)
        if isinstance(result, Event):
            seen = first.setdefault((result.tenant_id, result.id), (result, value))
            if seen[0] != result:
                value = seen[1]
        out.append((key, value))
    return out


def wait_for_everything(pulse: Pulse, worker: Proc, total: int, timeout: float = 60
                        ) -> RollupStore:
    """Fold the journal until it accounts for `total` messages; fail early on a crash."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pulse.rollups(until=read_all(total), timeout=5)
        except AssertionError as exc:
            crashed = "ingest process exited" in worker.log() or not worker.alive()
            if crashed or time.monotonic() > deadline:
                raise AssertionError(f"{'the ingest stage crashed; ' if crashed else ''}{exc}"
                                     f"\n--- worker log (tail) ---\n{worker.log()[-6000:]}"
                                     ) from None


def test_bad_input_never_stops_the_worker_and_is_dead_lettered_exactly(pulse: Pulse):
    now_us = time.time_ns() // 1000
    stream = without_conflicts(draw_stream(), now_us)
    sentinel = dumps({"id": "sentinel", "tenant_id": "sentinel", "event_type": "call_ended",
                      "customer_id": "c", "occurred_at": NOW_MS - 1, "value": 45})
    valid: list[Event] = []
    dead: Counter[tuple[bytes | None, bytes | None, str]] = Counter()
    raised: list[tuple[str, bytes]] = []
    for key, value in stream:
        result = classify(value, now_us)
        if isinstance(result, Event):
            valid.append(result)
        elif result.startswith("raised"):
            raised.append((result, (value or b"")[:120]))
        else:
            dead[(key, value, result)] += 1
    valid.append(decode_event(sentinel, now_us))
    total = len(stream) + 1
    print(f"\nbad input: seed {SEED}, {total} messages ({sum(len(v or b'') for _, v in stream):,}"
          f" bytes): {len(valid)} valid, {sum(dead.values())} dead letters "
          f"{dict(Counter(reason for _, _, reason in dead.elements()))}, decode_event raised "
          f"on {len(raised)}")

    pulse.ensure_topics()
    worker = pulse.start_worker()
    api = start_api(pulse)
    worker.wait_for_log(READY)
    pulse.produce((key, value, None) for key, value in stream)
    pulse.produce([(b"sentinel", sentinel, None)])

    store = wait_for_everything(pulse, worker, total)

    # The worker never stopped, not even its ingest stage, and counted the sentinel.
    assert worker.alive()
    assert "ingest process exited" not in worker.log(), worker.log()[-6000:]
    sentinel_hour = (NOW_MS * 1000) // HOUR
    assert report.overview(store.total("sentinel", ALL, sentinel_hour, sentinel_hour + 1),
                           STEPS).conversations.total == 1

    # decode_event is the reference for every expectation below; it must never raise.
    assert not raised, f"decode_event raised on {len(raised)} messages: {raised[:5]}"

    # Accounting in the folded journal: every message read is exactly one outcome.
    totals = counters(store)
    assert totals["read"] == total
    assert totals["read"] == (totals.get("accepted", 0) + totals.get("duplicates", 0)
                              + totals.get("dead_letters", 0))
    assert totals.get("dead_letters", 0) == sum(dead.values())
    assert {k.removeprefix("dead_letter:"): v for k, v in totals.items()
            if k.startswith("dead_letter:")} == Counter(r for _, _, r in dead.elements())
    assert totals.get("accepted", 0) + totals.get("duplicates", 0) == len(valid)

    # The same accounting, as an operator reads it from an API process.
    api.wait_until_read(total)
    status, body = api.get("/analytics/status")
    assert status == 200 and body["accounting_holds"] is True, body
    assert {k: v for k, v in body["totals"].items() if v} == {k: v for k, v in totals.items() if v}

    # The dead-letter topic: byte for byte, with the reason decode_event gives.
    records = pulse.dead_letter_topic(expected=sum(dead.values()), timeout=60)
    got = Counter((r.key, r.value, dict(r.headers)["pulse-error-reason"].decode())
                  for r in records)
    assert got == dead, (f"missing: {list((dead - got).elements())[:5]}; "
                         f"unexpected: {list((got - dead).elements())[:5]}")
    assert all(dict(r.headers).get("pulse-error") for r in records)

    # The lake: dead letters once each, valid events once per offset, every id there.
    pulse.lake_rows(sum(dead.values()), relation="dead_letters")
    lake_dead = pulse.lake_sql("SELECT raw, reason, kafka_partition, kafka_offset "
                               "FROM {dead_letters}")
    assert Counter((bytes(raw), reason) for raw, reason, _, _ in lake_dead) == Counter(
        (value or b"", reason) for _, value, reason in dead.elements())
    assert len({(p, o) for _, _, p, o in lake_dead}) == len(lake_dead)
    assert pulse.lake_rows(len(valid)) == len(valid)
    (rows, offsets), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM {events}")
    assert rows == offsets == len(valid)
    assert set(pulse.lake_sql("""
        SELECT DISTINCT tenant_id, id, event_type, customer_id, campaign_id, channel,
               category, label, value, epoch_us(occurred_at), metadata, schema_version
        FROM {events}""")) == {
        (e.tenant_id, e.id, e.event_type, e.customer_id, e.campaign_id, e.channel, e.category,
         e.label, e.value, e.occurred_us, e.metadata, e.schema_version) for e in valid}

    # The rollups: every tenant's overview over the last days equals the definition.
    base = now_us - now_us % HOUR
    frm, to = base - 72 * HOUR, base + 2 * HOUR
    for tenant in sorted({e.tenant_id for e in valid}):
        got_overview = {**msgspec.to_builtins(report.overview(
                            store.total(tenant, ALL, frm // HOUR, to // HOUR), STEPS)),
                        "usage": report.usage(store.total(tenant, ALL, frm // HOUR,
                                                          to // HOUR))}
        want = {**oracle.overview(valid, tenant, None, False, frm, to, STEPS, 30.0),
                "usage": oracle.usage_report(valid, tenant, frm, to)}
        assert oracle.approx_equal(got_overview, want), tenant
