"""Conditional answers: a poll with the last ETag costs a 304 until anything it read moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.rollups.journal import Claim, Delta
from pulse.rollups.metrics import Measures
from pulse.settings import Settings

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


def fold_calls(client: TestClient, seq: int, calls: int) -> None:
    """One journal record of the worker: `calls` more calls of acme in HOUR."""
    bucket = ("acme", None, HOUR, Measures(events=calls, calls=calls, duration_s=40.0 * calls,
                                           engaged=calls))
    delta = Delta("w", seq, {0: seq}, {"read": calls}, [bucket], b"", [], None, None,
                  {0: (HOUR + 30) * HOUR_US}, {0: (HOUR + 30) * HOUR_US}, {}, 0, {})
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
