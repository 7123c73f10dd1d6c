"""The customers at a funnel step: pages that hold while events arrive, CSV, cursors.

A real lake written with the worker's writer; between two pages, more flushes land in
it (new journeys, late first steps, copies of earlier events), as a running worker
would write them. The pages, put together, must be exactly the oracle's list of the
events that were there when the first page was read: nothing skipped, nothing twice,
even when a broker restart between two pages numbers offsets from 0 again.
"""

from __future__ import annotations

import base64
import csv
import io
import tempfile
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from pulse.api import cursor
from pulse.api.app import create_app
from pulse.api.cursor import query_digest
from pulse.api.errors import ApiError
from pulse.api.params import iso
from pulse.api.snapshots import snapshot, snapshot_files, snapshot_filter
from pulse.lakefs import LakeStore
from pulse.rollups.journal import Claim, Delta, LakeMark
from pulse.rollups.reach import ORDERS
from pulse.rollups.store import RollupStore
from pulse.schemas.events import Event
from pulse.schemas.lake import LakeFile
from pulse.settings import Settings
from pulse.streams.lake_sink import Flush, LakeWriter
from tests import oracle
from tests.strategies import BASE_US, HOUR, STEPS, streams

KEYS = {"acme-key-00001": "acme", "globex-key-001": "globex", "admin-key-0001": "*"}
FROM, TO = BASE_US - 48 * HOUR, BASE_US + 48 * HOUR


class Lake:
    """A lake folder that flushes arrive in, three input partitions, offsets in order;
    each flush is reported to the API processes in `readers`, as a worker's journal
    would (they list a tenant's files again when one is)."""

    def __init__(self, root: str) -> None:
        self.writer = LakeWriter(LakeStore(root), "e0", "events")
        self.next = defaultdict(int)
        self.readers: list[RollupStore] = []
        self.reported = 0

    def restart(self, epoch: str) -> None:
        """The broker restarted (Tansu keeps nothing): a new epoch, offsets from 0 again."""
        self.writer = LakeWriter(self.writer.store, epoch, "events")
        self.next = defaultdict(int)

    def report_to(self, client: TestClient) -> None:
        store = client.app.state.pulse.store
        store.fold(0).feed(Claim("lake"), 0)
        self.readers.append(store)

    def write(self, events: list[Event]) -> None:
        flushes: dict[int, Flush] = {}
        for i, event in enumerate(events):
            p = i % 3
            flush = flushes.setdefault(p, Flush(p, self.next[p]))
            flush.add_event(event, self.next[p])
            flush.last = self.next[p]
            self.next[p] += 1
        for flush in flushes.values():
            self.writer.write(flush)
            self.reported += 1
            mark = {flush.partition: LakeMark(self.reported, self.reported)}
            for store in self.readers:
                store.fold(0).feed(Delta("lake", self.reported, {}, {}, [], b"", [], None,
                                         None, {}, {}, mark, 0, {}), self.reported)


def client_for(root: str) -> TestClient:
    return TestClient(create_app(Settings(lake=root, funnel_steps=STEPS), keys=KEYS))


def ask(client: TestClient, key: str = "acme-key-00001", **query: object) -> tuple[int, dict]:
    query = {"from": iso(FROM), "to": iso(TO), **{k: v for k, v in query.items()
                                                  if v is not None}}
    response = client.get(f"/analytics/funnel/customers?{urlencode(query)}",
                          headers={"Authorization": f"Bearer {key}"})
    return response.status_code, response.json()


def as_rows(customers: list[dict]) -> list[tuple]:
    return [(c["campaign_id"], c["customer_id"], c["entered_at"], c["reached_step"])
            for c in customers]


def want_rows(events: list[Event], **query: object) -> list[tuple]:
    return [(c, u, iso(t1), k) for c, u, t1, k in oracle.funnel_customers(
        events, "acme", None, False, FROM, TO, STEPS, **query)]


def csv_rows(client: TestClient, **query: object) -> list[tuple]:
    query = {"from": iso(FROM), "to": iso(TO), "format": "csv",
             **{k: v for k, v in query.items() if v is not None}}
    response = client.get(f"/analytics/funnel/customers?{urlencode(query)}",
                          headers={"Authorization": "Bearer acme-key-00001"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["campaign_id", "customer_id", "entered_at", "reached_step"]
    return [(c or None, u, t, int(k)) for c, u, t, k in table[1:]]


def renamed(events: list[Event], prefix: str) -> list[Event]:
    return [msgspec.structs.replace(e, id=prefix + e.id) for e in events]


@st.composite
def queries(draw: st.DrawFn) -> dict[str, object]:
    step = draw(st.integers(1, len(STEPS)))
    return {"step": step,
            "outcome": draw(st.sampled_from(["reached", "dropped"] if step > 1 else ["reached"])),
            "order": draw(st.sampled_from(ORDERS)),
            "window": draw(st.none() | st.sampled_from([60, 3600, 86_400]))}


def newcomer(query: dict[str, object]) -> list[Event]:
    """A journey entering at the end of the range that the list would hold."""
    step = int(query["step"])  # type: ignore[call-overload]
    reached = step - 1 if query["outcome"] == "dropped" else step
    return [Event("acme", f"new-{k}", "funnel_step", TO - 1, "zz-newcomer", "spring", None,
                  None, STEPS[k], None, None, 1) for k in range(reached)]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(max_events=80, spread_hours=60), streams(max_events=40, spread_hours=60),
       queries(), st.integers(1, 4))
def test_pages_never_skip_or_repeat_a_journey_while_events_arrive(first, later, query, limit):
    later = renamed(later, "late-") + first[: len(first) // 3]  # new events, and copies
    with tempfile.TemporaryDirectory() as root:
        lake = Lake(root)
        lake.write(first)
        client = client_for(root)
        lake.report_to(client)
        chunks = [later[i::4] for i in range(4)]
        chunks[-1] += newcomer(query)  # lands after the first page, sorts last
        pages: list[tuple] = []
        cursor = None
        for _ in range(200):
            status, body = ask(client, limit=limit, cursor=cursor, **query)
            assert status == 200, body
            assert len(body["customers"]) <= limit and body["source"] == "lake"
            assert (body["step"], body["outcome"]) == (query["step"], query["outcome"])
            pages += as_rows(body["customers"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
            if chunks:
                lake.write(chunks.pop())  # events keep arriving between pages
        assert pages == want_rows(first, **query)
        for chunk in chunks:
            lake.write(chunk)
        assert csv_rows(client, **query) == want_rows(first + later + newcomer(query), **query)


def journeys(n: int) -> list[Event]:
    """`n` journeys of acme and of globex, each with every step."""
    return [Event(tenant, f"{tenant}-{i}-{k}", "funnel_step", BASE_US + i * HOUR + k,
                  f"{tenant}-cust-{i}", "spring", None, None, step, None, None, 1)
            for tenant in ("acme", "globex") for i in range(n)
            for k, step in enumerate(STEPS)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = str(tmp_path_factory.mktemp("lake"))
    Lake(root).write(journeys(5))
    return client_for(root)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_pages_keep_to_their_snapshot_across_a_broker_restart(tmp_path: Path, limit: int):
    """Offsets start again at 0 in a new epoch: its rows, at offsets the first page's
    snapshot covered in the old epoch, are not in that snapshot, so no later page may
    read them (new journeys, and steps that would change journeys already listed)."""
    lake = Lake(str(tmp_path))
    before = journeys(4)
    lake.write(before)
    client = client_for(str(tmp_path))
    lake.report_to(client)
    pages: list[tuple] = []
    status, body = ask(client, step=1, outcome="reached", limit=limit)
    pages += as_rows(body["customers"])
    lake.restart("e1")
    lake.write([Event("acme", f"after-{i}-{k}", "funnel_step", BASE_US + i * HOUR + 30, customer,
                      "spring", None, None, STEPS[0], None, None, 1)
                for i, customer in enumerate(("acme-cust-0", "acme-cust-1", "acme-cust-3",
                                              "acme-new-0", "acme-new-3")) for k in range(2)]
               + [Event("acme", "earlier-t1", "funnel_step", BASE_US - 1, "acme-cust-2",
                        "spring", None, None, STEPS[0], None, None, 1)])
    while body["next_cursor"] is not None:
        status, body = ask(client, step=1, outcome="reached", limit=limit,
                           cursor=body["next_cursor"])
        assert status == 200, body
        pages += as_rows(body["customers"])
    assert pages == want_rows(before, step=1, outcome="reached")
    assert csv_rows(client, step=1, outcome="reached") != pages  # the new epoch is read now


def lake_file(epoch: str, partition: int, first: int, last: int, compacted: bool = False
              ) -> str:
    return (f"events/tenant_id=acme/date=2026-11-02/"
            f"{LakeFile(epoch, partition, first, last, compacted).name}")


def test_a_snapshot_reads_its_own_epochs_files_and_refuses_a_cut_it_cannot_make():
    files = [lake_file("e0", 0, 0, 9), lake_file("e0", 0, 10, 19), lake_file("e0", 1, 0, 4)]
    taken = snapshot(files)
    assert taken == {"e0": {0: 19, 1: 4}}
    later = [lake_file("e0", 0, 20, 29), lake_file("e1", 0, 0, 3), lake_file("e0", 2, 0, 1)]
    assert snapshot_files(taken, files + later) == files
    merged = [lake_file("e0", 0, 0, 29, compacted=True), lake_file("e0", 1, 0, 4)]
    assert snapshot_files(taken, merged) == merged  # one epoch: its rows are cut by offset
    params: dict = {}
    assert snapshot_filter(taken, params).startswith("kafka_offset <= CASE kafka_partition")
    assert params == {"sp0": 0, "so0": 19, "sp1": 1, "so1": 4}

    restarted = snapshot([lake_file("e0", 0, 0, 99), lake_file("e1", 0, 0, 9)])
    assert restarted == {"e0": {0: 99}, "e1": {0: 9}}
    assert snapshot_files(restarted, [lake_file("e0", 0, 0, 99), lake_file("e1", 0, 0, 9),
                                       lake_file("e1", 0, 10, 20)]) == [
        lake_file("e0", 0, 0, 99), lake_file("e1", 0, 0, 9)]
    with pytest.raises(ApiError, match="ask for the first page again"):  # e1's 10..20 would
        snapshot_files(restarted, [lake_file("e0", 0, 0, 99),  # pass an offset cut at 99
                                    lake_file("e1", 0, 0, 20, compacted=True)])


def test_a_cursor_reaches_only_its_own_query_and_tenant(client: TestClient):
    status, body = ask(client, step=2, outcome="reached", limit=2)
    assert status == 200 and body["next_cursor"]
    cursor = body["next_cursor"]
    assert ask(client, step=2, outcome="reached", limit=3, cursor=cursor)[0] == 200
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    refused = [
        ask(client, "globex-key-001", step=2, outcome="reached", limit=2, cursor=cursor),
        ask(client, "admin-key-0001", step=2, outcome="reached", cursor=cursor,
            tenant="globex"),
        ask(client, step=3, outcome="reached", cursor=cursor),  # another query
        ask(client, step=2, outcome="reached", order="sequence", cursor=cursor),
        ask(client, step=2, outcome="reached", cursor=flipped),
        ask(client, step=2, outcome="reached", cursor="not-a-cursor"),
        ask(client, step=2, outcome="reached", cursor="é"),
        ask(client, step=2, outcome="reached", cursor=cursor[:10]),
    ]
    for status, body in refused:
        assert status == 400 and body["error"]["code"] == "bad_cursor", body
        assert "cust" not in str(body) and "globex" not in str(body)
    other_process = client_for(str(client.app.state.pulse.settings.lake))
    status, body = ask(other_process, step=2, outcome="reached", cursor=cursor)
    assert status == 400 and body["error"]["code"] == "bad_cursor"  # a secret of its own


def test_a_cursor_of_another_pulse_version_is_refused_not_an_error(client: TestClient):
    """Signed with the right secret (the same PULSE_CURSOR_SECRET across an upgrade), but
    laid out as another version's: a 400 saying to start again, never a 500."""
    cursors = client.app.state.pulse.cursors
    query = query_digest(FROM, TO, None, 2, "reached", "any", None)
    for payload in ([cursor.VERSION - 1, [0, None, "acme-cust-0", {0: 5}, None]],
                    [cursor.VERSION, ["a page", "of another shape"]],
                    [cursor.VERSION + 1, {"whatever": True}], "not even a list"):
        data = msgspec.msgpack.encode(payload)
        token = data + cursors._tag("acme", query, data)
        forged = base64.urlsafe_b64encode(token).rstrip(b"=").decode()
        for fmt in ("json", "csv"):
            status, body = ask(client, step=2, outcome="reached", cursor=forged, format=fmt)
            assert status == 400 and body["error"]["code"] == "bad_cursor", body
            assert "another version of Pulse" in body["error"]["message"]


def test_a_configured_secret_lets_every_process_read_the_cursors(tmp_path: Path):
    Lake(str(tmp_path)).write(journeys(3))
    settings = Settings(lake=str(tmp_path), funnel_steps=STEPS,
                        cursor_secret="shared-secret-0123456789")
    a, b = (TestClient(create_app(settings, keys=KEYS)) for _ in range(2))
    first = ask(a, step=1, outcome="reached", limit=1)[1]
    rest = ask(b, step=1, outcome="reached", limit=5, cursor=first["next_cursor"])[1]
    assert [c["customer_id"] for c in first["customers"] + rest["customers"]] == [
        f"acme-cust-{i}" for i in range(3)]


FORMULAS = ("=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain",
            "'quoted", "a=b")


def test_the_csv_keeps_spreadsheets_from_running_ids_as_formulas(tmp_path: Path):
    Lake(str(tmp_path)).write([
        Event("acme", f"f-{i}", "funnel_step", BASE_US + i, customer, "=cmd|' /C calc'!A0",
              None, None, STEPS[0], None, None, 1) for i, customer in enumerate(FORMULAS)])
    client = client_for(str(tmp_path))
    rows = csv_rows(client, step=1, outcome="reached")
    assert [(c, u) for c, u, _, _ in rows] == [
        ("'=cmd|' /C calc'!A0", "'" + u if u[0] in "=+-@\t\r" else u) for u in FORMULAS]
    status, body = ask(client, step=1, outcome="reached", limit=1000)  # JSON: as they are
    assert status == 200 and [c["customer_id"] for c in body["customers"]] == list(FORMULAS)


@pytest.mark.parametrize(("query", "code", "says"), [
    ({"outcome": "reached"}, "missing_parameter", "`step` is required"),
    ({"step": 0, "outcome": "reached"}, "bad_step", "from 1 to 3"),
    ({"step": 4, "outcome": "reached"}, "bad_step", "from 1 to 3"),
    ({"step": "two", "outcome": "reached"}, "bad_step", "from 1 to 3"),
    ({"step": 2}, "missing_parameter", "`outcome` is required"),
    ({"step": 2, "outcome": "stalled"}, "bad_outcome", "`reached` or `dropped`"),
    ({"step": 1, "outcome": "dropped"}, "bad_outcome", "`step` 2 or more"),
    ({"step": 2, "outcome": "reached", "limit": 0}, "bad_limit", "from 1 to 1000"),
    ({"step": 2, "outcome": "reached", "limit": 1001}, "bad_limit", "from 1 to 1000"),
    ({"step": 2, "outcome": "reached", "format": "xlsx"}, "bad_format", "`json` or `csv`"),
    ({"step": 2, "outcome": "reached", "order": "reverse"}, "bad_order", "`sequence`"),
    ({"step": 2, "outcome": "reached", "window": "-5"}, "bad_window", "whole number"),
    ({"step": 2, "outcome": "reached", "window": "1.5"}, "bad_window", "whole number"),
    ({"step": 2, "outcome": "reached", "format": "csv", "limit": 0}, "bad_limit",
     "from 1 to 1000"),
    ({"step": 2, "outcome": "reached", "format": "csv", "limit": "all"}, "bad_limit",
     "from 1 to 1000"),
    ({"step": 2, "outcome": "reached", "format": "csv", "cursor": "not-a-cursor"},
     "bad_cursor", "ask for the first page again"),
])
def test_bad_parameters_name_the_parameter_and_what_it_accepts(client: TestClient, query,
                                                               code, says):
    status, body = ask(client, **query)
    assert status == 400 and body["error"]["code"] == code, body
    assert says in body["error"]["message"]
