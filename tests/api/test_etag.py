"""Conditional answers: a poll with the last ETag costs a 304 until anything it read moves,
and a tag never matches an answer that differs."""

from __future__ import annotations

import random
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from pulse.api import lake as api_lake
from pulse.api.app import create_app
from pulse.api.params import iso
from pulse.lakefs import LakeStore
from pulse.rollups.journal import Claim, Delta, LakeMark
from pulse.rollups.metrics import Measures
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.settings import Settings
from pulse.streams.lake_sink import Flush, LakeWriter

KEYS = {"acme-key-00001": "acme", "globex-key-001": "globex", "admin-key-0001": "*"}
HOUR_US = 3_600_000_000
HOUR = 493_176 + 9  # 2026-04-06T09:00Z, in hours since the epoch
OVERVIEW = "/analytics/overview?from=2026-04-06&to=2026-04-07"


def auth(key: str, tag: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    return headers if tag is None else {**headers, "If-None-Match": tag}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(lake=str(tmp_path), partitions=1), keys=KEYS)
    app.state.pulse.store.fold(0).feed(Claim("w"), 0)
    return TestClient(app, raise_server_exceptions=False)


def fold_calls(client: TestClient, seq: int, calls: int, tenant: str = "acme",
               campaign: str | None = None, progress_us: int = (HOUR + 30) * HOUR_US) -> None:
    """One journal record of the worker: `calls` more calls of `tenant` in HOUR, every
    input partition complete up to `progress_us` (no calls: a heartbeat)."""
    bucket = (tenant, campaign, HOUR, Measures(events=calls, calls=calls,
                                               duration_s=40.0 * calls, engaged=calls))
    delta = Delta("w", seq, {0: seq}, {"read": calls}, [bucket] if calls else [], b"", [],
                  None, None, {0: progress_us}, {0: progress_us}, {}, 0, {})
    client.app.state.pulse.store.fold(0).feed(delta, seq)


def test_a_matching_tag_is_a_304_until_the_journal_moves(client: TestClient):
    fold_calls(client, 1, 3)
    first = client.get(OVERVIEW, headers=auth("acme-key-00001"))
    assert first.status_code == 200 and first.json()["conversations"]["calls"] == 3
    tag = first.headers["etag"]
    assert tag.startswith('W/"') and first.headers["cache-control"] == "private, no-cache"
    assert "Authorization" in first.headers["vary"]

    again = client.get(OVERVIEW, headers=auth("acme-key-00001", tag))
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    listed = client.get(OVERVIEW, headers=auth("acme-key-00001", f'"other", {tag}'))
    assert listed.status_code == 304

    # Another query, another tenant, or no key at all: never this tag's 304.
    other = client.get(OVERVIEW + "&campaign=spring", headers=auth("acme-key-00001", tag))
    assert other.status_code == 200 and other.headers["etag"] != tag
    globex = client.get(OVERVIEW, headers=auth("globex-key-001", tag))
    assert globex.status_code == 200 and globex.headers["etag"] != tag
    assert client.get(OVERVIEW, headers={"If-None-Match": tag}).status_code == 401
    admin = client.get(OVERVIEW + "&tenant=acme", headers=auth("admin-key-0001", tag))
    assert admin.status_code == 200 and admin.json()["conversations"]["calls"] == 3

    fold_calls(client, 2, 2)  # the numbers moved: the old tag now gets the new answer
    moved = client.get(OVERVIEW, headers=auth("acme-key-00001", tag))
    assert moved.status_code == 200 and moved.json()["conversations"]["calls"] == 5
    assert moved.headers["etag"] != tag
    metrics = client.get("/metrics").text
    assert "pulse_http_not_modified_total 2.0" in metrics


def test_errors_carry_no_tag(client: TestClient):
    bad = client.get("/analytics/overview?from=2026-04-07&to=2026-04-06",
                     headers=auth("acme-key-00001"))
    assert bad.status_code == 400 and "etag" not in bad.headers


def test_a_poll_while_other_tenants_events_flow_is_a_304(client: TestClient):
    fold_calls(client, 1, 3)
    first = client.get(OVERVIEW, headers=auth("acme-key-00001"))
    tag = first.headers["etag"]
    for seq in range(2, 12):  # globex's events, acme's numbers and as_of as they were
        fold_calls(client, seq, 4, tenant="globex")
        again = client.get(OVERVIEW, headers=auth("acme-key-00001", tag))
        assert again.status_code == 304 and again.headers["etag"] == tag
    globex = client.get(OVERVIEW, headers=auth("globex-key-001"))
    assert globex.json()["conversations"]["calls"] == 40

    fold_calls(client, 12, 2)  # acme's own event: new numbers, a new tag
    moved = client.get(OVERVIEW, headers=auth("acme-key-00001", tag))
    assert moved.status_code == 200 and moved.json()["conversations"]["calls"] == 5
    assert moved.headers["etag"] != tag
    assert moved.json()["as_of"] == first.json()["as_of"]
    assert client.get(OVERVIEW, headers=auth("acme-key-00001", moved.headers["etag"])
                      ).status_code == 304


def test_as_of_is_part_of_the_answer(client: TestClient):
    """A heartbeat moves every answer's as_of, not its numbers: the tag changes with it,
    and stays while the heartbeat's progress does."""
    fold_calls(client, 1, 3)
    first = client.get(OVERVIEW, headers=auth("acme-key-00001"))
    tag = first.headers["etag"]
    fold_calls(client, 2, 0, progress_us=(HOUR + 31) * HOUR_US)
    moved = client.get(OVERVIEW, headers=auth("acme-key-00001", tag))
    assert moved.status_code == 200 and moved.headers["etag"] != tag
    assert moved.json()["conversations"] == first.json()["conversations"]
    assert moved.json()["as_of"] == iso((HOUR + 31) * HOUR_US) != first.json()["as_of"]
    fold_calls(client, 3, 0, progress_us=(HOUR + 31) * HOUR_US)
    assert client.get(OVERVIEW, headers=auth("acme-key-00001", moved.headers["etag"])
                      ).status_code == 304


def test_a_kept_answer_is_the_answer(client: TestClient):
    """Asked again without a tag, an answer that stands is sent from memory: the same
    bytes and tag as a fresh one, counted as an answer."""
    fold_calls(client, 1, 3)
    first = client.get(OVERVIEW, headers=auth("acme-key-00001"))
    again = client.get(OVERVIEW, headers=auth("acme-key-00001"))
    assert again.status_code == 200 and again.content == first.content
    assert again.headers == first.headers
    assert 'pulse_answers_total{source="rollups"} 2.0' in client.get("/metrics").text


def test_a_tag_never_matches_an_answer_that_differs(client: TestClient):
    """Random journal records of two tenants and heartbeats, between polls that send the
    last tag they saw: every answer, whether sent or confirmed by a 304, holds exactly
    the calls folded and the progress reported, and one tag is only ever one body."""
    rnd = random.Random(14)
    urls = {OVERVIEW: None, "/analytics/campaign/spring?from=2026-04-06&to=2026-04-07": "spring",
            "/analytics/campaigns?from=2026-04-06&to=2026-04-07": "*"}
    calls = {None: 0, "spring": 0}
    progress = (HOUR + 30) * HOUR_US
    seen: dict[str, dict[str, str]] = {url: {} for url in urls}
    bodies: dict[str, bytes] = {}
    last: dict[str, str | None] = dict.fromkeys(urls)
    not_modified = 0
    for seq in range(1, 200):
        step = rnd.random()
        if step < 0.2:
            campaign = rnd.choice([None, "spring"])
            n = rnd.randint(1, 3)
            calls[campaign] += n
            fold_calls(client, seq, n, campaign=campaign, progress_us=progress)
        elif step < 0.5:
            fold_calls(client, seq, rnd.randint(1, 3), tenant="globex",
                       campaign=rnd.choice([None, "spring"]), progress_us=progress)
        elif step < 0.6:
            progress += rnd.choice([0, HOUR_US // 7])
            fold_calls(client, seq, 0, progress_us=progress)
        for url, campaign in urls.items():
            answer = client.get(url, headers=auth("acme-key-00001", last[url]))
            tag = answer.headers["etag"]
            if answer.status_code == 304:
                assert tag == last[url]
                not_modified += 1
            else:
                assert answer.status_code == 200
                assert bodies.setdefault(tag, answer.content) == answer.content
                seen[url] = answer.json()
                last[url] = tag
            body = seen[url]
            assert body["as_of"] == iso(progress)
            if campaign == "*":
                want = [{"campaign_id": "spring", "conversations": calls["spring"]}]
                assert body["campaigns"] == (want if calls["spring"] else [])
            else:
                total = calls["spring"] + (calls[None] if campaign is None else 0)
                assert body["conversations"]["calls"] == total
    assert not_modified > 100


def acme_flush(partition: int, first: int, n: int, occurred_us: int, tenant: str = "acme",
               ) -> Flush:
    flush = Flush(partition, first, first + n - 1)
    for offset in range(first, first + n):
        event = decode_event(
            f'{{"id": "{tenant}-{partition}-{offset}", "tenant_id": "{tenant}", '
            f'"event_type": "call_ended", "customer_id": "c", "value": 40, '
            f'"occurred_at": {occurred_us // 1000}}}'.encode(), occurred_us + 1_000_000)
        assert isinstance(event, Event)
        flush.add_event(event, offset)
    return flush


def test_a_lake_backed_answer_changes_its_tag_with_the_tenants_files_only(
        client: TestClient, monkeypatch: pytest.MonkeyPatch):
    """A range shorter than an hour is answered from the lake: its tag follows the
    tenant's own listing, not another tenant's files listed beside it."""
    store = client.app.state.pulse.store
    lake = LakeStore(client.app.state.pulse.settings.lake)
    writer = LakeWriter(lake, "e0", "events")
    occurred = (time.time_ns() // 1000 // HOUR_US) * HOUR_US + 600_000_000
    url = (f"/analytics/overview?from={quote(iso(occurred - 60_000_000))}"
           f"&to={quote(iso(occurred + 60_000_000))}")

    def report(seq: int, partition: int) -> None:
        mark = LakeMark(occurred + 5_000_000, occurred + seq)
        store.fold(0).feed(Delta("w", seq, {}, {}, [], b"", [], None, None, {}, {},
                                 {partition: mark}, 0, {}), seq)

    writer.write(acme_flush(0, 0, 5, occurred))
    report(1, 0)
    listed = client.get(url, headers=auth("acme-key-00001"))  # lists the lake meanwhile
    assert listed.json()["source"] == "lake" and listed.json()["conversations"]["calls"] == 5
    first = client.get(url, headers=auth("acme-key-00001", listed.headers["etag"]))
    assert first.status_code == 200 and first.content == listed.content
    tag = first.headers["etag"]
    assert client.get(url, headers=auth("acme-key-00001", tag)).status_code == 304

    writer.write(acme_flush(1, 0, 4, occurred, tenant="globex"))
    report(2, 1)  # listed again: acme's files are the same
    again = client.get(url, headers=auth("acme-key-00001", tag))
    assert again.status_code == 304

    writer.write(acme_flush(2, 0, 2, occurred))  # acme's, not reported (a replay, say)
    assert client.get(url, headers=auth("acme-key-00001", tag)).status_code == 304
    monkeypatch.setattr(api_lake, "LISTING_SECONDS", -1.0)  # the listing's time is up
    moved = client.get(url, headers=auth("acme-key-00001", tag))
    assert moved.status_code == 200 and moved.json()["conversations"]["calls"] == 7
    assert moved.headers["etag"] != tag
