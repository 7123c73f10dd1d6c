"""`pulse up --simulate` as a newcomer runs it: data within seconds, Ctrl-C stops it all."""

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

from tests.helpers import free_port


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


@pytest.mark.broker
def test_up_simulate_shows_data_in_seconds_and_sigint_stops_every_child(tmp_path: Path):
    started = time.monotonic()
    process, env = start_up(tmp_path, "--simulate", "--rate", "300")
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
        assert {"broker", "worker", "api", "simulate"} <= {
            line.split()[2] for line in lines if line.startswith("pulse up: ")
            and len(line.split()) > 2}

        lake = tmp_path / "lake" / "events"
        deadline = time.monotonic() + 60
        while not any(lake.rglob("*.parquet")):
            assert time.monotonic() < deadline, "no events reached the lake in 60 s"
            time.sleep(0.2)
        first_in_lake = time.monotonic() - started
        tenants = get(f"{base}/analytics/tenants", key)["tenants"]
        assert tenants
        now = time.time()
        frm = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now - 3 * 86400))
        to = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(now + 7200))
        deadline = time.monotonic() + 30
        while get(f"{base}/analytics/overview?tenant={tenants[0]}&from={frm}&to={to}",
                  key)["conversations"]["total"] == 0:
            assert time.monotonic() < deadline, "the rollups showed nothing in 30 s"
            time.sleep(0.5)
        print(f"\npulse up --simulate: first events in the lake after {first_in_lake:.1f} s")
        Path("tests/artifacts").mkdir(parents=True, exist_ok=True)
        Path("tests/artifacts/up_first_events.txt").write_text(f"{first_in_lake:.1f}\n")
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
