"""One environment file serves every process: only `pulse api` and `pulse up` read keys
and the cursor secret.

A deployment shares one `.env` between the broker, workers, `pulse topics` and the API.
A key the API would refuse (shorter than 8 characters), or a cursor secret it would
refuse (shorter than 16), must stop the API alone, with a message naming the variable,
never the processes that do not read them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pulse.benchmarks.harness import free_port
from pulse.settings import Settings, SettingsError
from tests.deployment import Pulse

SHORT_KEY = {"PULSE_API_KEYS": "short=acme", "PULSE_API_KEYS_FILE": "/nonexistent/keys"}
SHORT_SECRET = {"PULSE_CURSOR_SECRET": "short"}


def test_only_reading_the_cursor_secret_checks_it():
    settings = Settings.from_env(SHORT_SECRET)  # what every command does
    with pytest.raises(SettingsError, match="PULSE_CURSOR_SECRET must be at least 16"):
        settings.read_cursor_secret()  # what the API does
    assert Settings.from_env({}).read_cursor_secret() is None
    secret = "0123456789abcdef"
    assert Settings.from_env({"PULSE_CURSOR_SECRET": secret}).read_cursor_secret() == \
        secret.encode()


@pytest.mark.broker
def test_broker_worker_and_topics_ignore_settings_that_only_the_api_reads(tmp_path: Path):
    bootstrap = f"127.0.0.1:{free_port()}"
    pulse = Pulse.on(bootstrap, tmp_path, **SHORT_KEY, **SHORT_SECRET)
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

        for fix, variable, says in (({}, "PULSE_API_KEYS", "8 characters"),
                                    ({"PULSE_API_KEYS": "long-enough-key=acme"},
                                     "PULSE_CURSOR_SECRET", "16 characters")):
            api = subprocess.run([sys.executable, "-m", "pulse.cli", "api"],
                                 env=pulse.full_env(PULSE_API_PORT=str(free_port()), **fix),
                                 capture_output=True, text=True, timeout=60)
            assert api.returncode == 2
            assert variable in api.stderr and says in api.stderr, api.stderr
    finally:
        pulse.stop_all()
