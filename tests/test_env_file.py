"""One environment file serves every process: only `pulse api` and `pulse up` read keys.

A deployment shares one `.env` between the broker, workers, `pulse topics` and the API.
A key the API would refuse (shorter than 8 characters) must stop the API alone, with a
message naming the variable, never the processes that do not read keys.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Pulse, free_port

pytestmark = pytest.mark.broker

SHORT_KEY = {"PULSE_API_KEYS": "short=acme", "PULSE_API_KEYS_FILE": "/nonexistent/keys"}


def test_broker_worker_and_topics_ignore_keys_that_only_the_api_reads(tmp_path: Path):
    bootstrap = f"127.0.0.1:{free_port()}"
    pulse = Pulse.on(bootstrap, tmp_path, **SHORT_KEY)
    try:
        broker = pulse.start("broker")
        broker.wait_for_log("topics ready", timeout=30)
        topics = subprocess.run([sys.executable, "-m", "pulse.cli", "topics"],
                                env=pulse.full_env(), capture_output=True, text=True,
                                timeout=120)
        assert topics.returncode == 0, topics.stderr
        assert "pulse topics: ready" in topics.stdout
        worker = pulse.start_worker()
        worker.wait_for_log("ingest reads input partitions", timeout=90)

        api = subprocess.run([sys.executable, "-m", "pulse.cli", "api"],
                             env=pulse.full_env(PULSE_API_PORT=str(free_port())),
                             capture_output=True, text=True, timeout=60)
        assert api.returncode == 2
        assert "PULSE_API_KEYS" in api.stderr and "8 characters" in api.stderr, api.stderr
    finally:
        pulse.stop_all()
