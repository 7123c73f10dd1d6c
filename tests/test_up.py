"""`pulse up --simulate` as a newcomer runs it: a dashboard with history on first open,
live traffic after it, Ctrl-C stops it all."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pulse.benchmarks.harness import free_port
from pulse.settings import Settings
from pulse.supervisor import Supervisor


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries `marker` (every child inherits our state dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def up_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "PULSE_API_PORT": str(free_port()),
        "PULSE_LAKE": str(tmp_path / "lake"),
        "PULSE_STATE_DIR": str(tmp_path / "state"),
        "PULSE_LAKE_FLUSH_SECONDS": "1",
    }
    env.pop("PULSE_API_KEYS", None)
    return env


def start_up(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = up_env(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "pulse.cli", "up", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, env


def get(url: str, key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def hour_text(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(at))


def first_look(base: str, key: str, tenant: str, days: int) -> list[int]:
    """What the dashboard's panels ask for on first open, over the backfilled days: a
    time series with history in most hours, intents, and a funnel past its first step
    (returned: journeys per step)."""
    now = time.time()
    frm, to = hour_text(now - days * 86400), hour_text(now + 3600)
    query = f"tenant={tenant}&from={frm}&to={to}"
    series = f"{base}/analytics/timeseries?metric=conversations&{query}&interval="
    hours = get(series + "hour", key)["points"]
    assert len(hours) == days * 24 + 1
    assert sum(p["value"] > 0 for p in hours) > 0.75 * len(hours), (tenant, hours)
    dates = get(series + "day", key)["points"]
    assert len(dates) == days + 1  # the first one partly inside the range
    assert all(p["value"] > 0 for p in dates[1:]), (tenant, dates)
    overview = get(f"{base}/analytics/overview?{query}", key)
    funnel = [step["customers"] for step in overview["funnel"]]
    assert funnel[0] > funnel[1] > funnel[2] >= 0, (tenant, funnel)
    assert len(overview["intents"]["by_label"]) >= 5
    campaigns = get(f"{base}/analytics/campaigns?{query}", key)["campaigns"]
    assert len([c for c in campaigns if c["conversations"]]) == 3
    return funnel


@pytest.mark.broker
def test_up_simulate_opens_on_a_history_then_goes_live_and_sigint_stops_it(tmp_path: Path):
    started = time.monotonic()
    process, env = start_up(tmp_path, "--simulate", "--backfill-days", "2", "--rate", "300")
    marker = f"PULSE_STATE_DIR={env['PULSE_STATE_DIR']}"
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "dashboard http" in line:
                break
        url = re.search(r"(http://\S+)/\?key=(\S+)", "".join(lines))
        assert url, "".join(lines)
        base, key = url.group(1), url.group(2)
        assert {"broker", "worker", "api", "simulate", "history"} <= {
            line.split()[2] for line in lines if line.startswith("pulse up: ")
            and len(line.split()) > 2}
        opened = time.monotonic() - started

        tenants = get(f"{base}/analytics/tenants", key)["tenants"]
        assert len(tenants) == 3
        # at once: the URL comes only when the history is in
        funnels = [first_look(base, key, tenant, days=2) for tenant in tenants]
        assert sum(qualified for _, _, qualified in funnels) > 0  # within two days
        lake = tmp_path / "lake" / "events"
        deadline = time.monotonic() + 60
        while not any(lake.rglob("*.parquet")):  # the lake flushes on its own clock
            assert time.monotonic() < deadline, "no events reached the lake in 60 s"
            time.sleep(0.2)

        now = time.time()
        live = f"{base}/analytics/overview?tenant={tenants[0]}&from={hour_text(now - 3600)}" \
               f"&to={hour_text(now + 7200)}"
        before = get(live, key)["conversations"]["total"]
        deadline = time.monotonic() + 30
        while get(live, key)["conversations"]["total"] == before:
            assert time.monotonic() < deadline, "no live traffic after the history in 30 s"
            time.sleep(0.5)
        print(f"\npulse up --simulate: dashboard with 2 days of history after {opened:.1f} s")
        Path("tests/artifacts").mkdir(parents=True, exist_ok=True)
        Path("tests/artifacts/up_dashboard_open.txt").write_text(f"{opened:.1f}\n")
        assert len(processes_with(marker)) >= 4  # broker, worker, api, simulate

        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert "pulse up: stopped" in process.stdout.read()
        assert processes_with(marker) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_lake_that_holds_events_gets_no_second_history(tmp_path: Path):
    settings = Settings.from_env(up_env(tmp_path))
    supervisor = Supervisor(settings, external_kafka=False, simulate=True, rate=0,
                            insecure=True, backfill_days=30)
    assert supervisor.history_days() == 30
    (tmp_path / "lake" / "events" / "tenant_id=acme" / "date=2025-03-01").mkdir(parents=True)
    assert supervisor.history_days() == 0


def test_a_port_in_use_names_the_variable_to_change(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for variable, value in (("PULSE_API_PORT", str(port)),
                                ("PULSE_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")):
            env = {**up_env(tmp_path), variable: value}
            result = subprocess.run([sys.executable, "-m", "pulse.cli", "up"], env=env,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 1
            assert variable in result.stdout + result.stderr
