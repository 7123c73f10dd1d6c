"""Errors are answered once, at the edge: lake failures, and only codes of the closed set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.api.errors import ApiError
from pulse.settings import Settings

KEYS = {"admin-key-0001": "*", "brokenco-key-01": "brokenco"}
PATH = "/analytics/overview?from=2026-01-01&to=2026-01-01T00:30:00Z"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    folder = tmp_path / "events" / "tenant_id=brokenco" / "date=2026-01-01"
    os.makedirs(folder)
    (folder / "0000000000aa-p0000-000000000000-000000000009.parquet").write_bytes(
        b"PAR1 this is not parquet")
    return TestClient(create_app(Settings(lake=str(tmp_path)), keys=KEYS))


def get(client: TestClient, path: str, key: str) -> tuple[int, dict]:
    response = client.get(path, headers={"Authorization": f"Bearer {key}"})
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def test_an_unreadable_lake_file_is_named_to_admins_only_and_counted(client: TestClient):
    status, body = get(client, PATH, "brokenco-key-01")
    assert status == 503 and body["error"]["code"] == "lake_unreadable"
    assert "parquet" not in body["error"]["message"]
    assert "/analytics/status" in body["error"]["message"]
    status, body = get(client, PATH + "&tenant=brokenco", "admin-key-0001")
    assert status == 503 and "0000000000aa-p0000" in body["error"]["message"]
    _, status_body = get(client, "/analytics/status", "admin-key-0001")
    assert status_body["lake"]["read_errors"] == 2
    assert "pulse_lake_read_errors_total 2.0" in client.get("/metrics").text


def test_an_error_code_outside_the_closed_set_is_refused():
    with pytest.raises(ValueError):
        ApiError(400, "not_a_code", "refused before it can reach a client")  # type: ignore[arg-type]
