"""Request limits, keys from a file, and unexpected errors: in-process, no broker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pulse.api.app import create_app
from pulse.api.errors import LakeBusy
from pulse.api.slots import TenantSlots
from pulse.settings import Settings

KEY = "tenant-key-001"
RANGE = "from=2026-11-01&to=2026-11-02T00:30:00Z"


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(lake=str(tmp_path)), keys={KEY: "acme"})
    return TestClient(app, raise_server_exceptions=False)


def test_long_query_strings_and_huge_headers_are_refused(client: TestClient):
    response = client.get(f"/analytics/usage?{RANGE}&pad={'x' * 5000}",
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 414 and response.json()["error"]["code"] == "uri_too_long"
    response = client.get(f"/analytics/usage?{RANGE}", headers={
        "Authorization": f"Bearer {KEY}", "X-Pad": "y" * 20_000})
    assert response.status_code == 431 and "16384 bytes" in response.json()["error"]["message"]


def test_a_tenant_over_its_lake_share_gets_429_with_retry_after(client: TestClient):
    client.app.state.pulse.lake.slots.per_tenant = 0  # every lake query is over the share
    response = client.get(f"/analytics/usage?{RANGE}", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "too_many_requests"


def test_slots_bound_each_tenant_queue_a_burst_and_refuse_a_flood():
    async def go() -> None:
        slots = TenantSlots(per_tenant=2, queue=1)
        entered: list[str] = []

        async def query(name: str, hold: asyncio.Event) -> None:
            async with slots("a"):
                entered.append(name)
                await hold.wait()

        hold = asyncio.Event()
        running = [asyncio.create_task(query(n, hold)) for n in ("q1", "q2", "q3")]
        await asyncio.sleep(0.01)
        assert entered == ["q1", "q2"]  # the third waits in the queue
        with pytest.raises(LakeBusy):  # the queue is full: refused at once
            async with slots("a"):
                pass
        async with slots("b"):  # another tenant still gets in
            pass
        hold.set()
        await asyncio.gather(*running)
        assert entered == ["q1", "q2", "q3"]
        async with slots("a"), slots("a"):  # all released
            pass
    asyncio.run(go())


def test_keys_can_come_from_a_file(tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# one key per line\nfile-key-0001=acme\nfile-admin-01=*\n")
    settings = Settings.from_env({"PULSE_API_KEYS_FILE": str(keys), "PULSE_LAKE": str(tmp_path)})
    client = TestClient(create_app(settings))
    assert client.get("/analytics/me", headers={"Authorization": "Bearer file-key-0001"}).json() \
        == {"role": "tenant", "tenant_id": "acme"}
    assert client.get("/analytics/me", headers={"Authorization": "Bearer file-admin-01"}).json() \
        == {"role": "admin", "tenant_id": None}


def test_an_unexpected_error_is_a_json_500_with_the_traceback_only_in_the_log(
        client: TestClient, caplog: pytest.LogCaptureFixture):
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom: internal detail")

    client.app.state.pulse.query.plan = explode
    with caplog.at_level(logging.ERROR, logger="pulse.api"):
        response = client.get(f"/analytics/usage?{RANGE}",
                              headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message":
                                         "the server failed to answer; the error is in its log"}}
    assert "boom: internal detail" not in response.text
    assert "boom: internal detail" in caplog.text and "Traceback" in caplog.text
