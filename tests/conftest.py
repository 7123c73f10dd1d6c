"""Fixtures: one real embedded broker and one real S3 server per session, started as
processes the way users start them.

`pulse broker` runs as a subprocess on a free loopback port; a test that needs Kafka
and cannot reach it fails, it is never skipped. Each test gets its own topics, consumer
group, lake and state folders, so tests share the broker and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Pulse, free_port
from tests.s3 import S3Server, start_s3

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("broker") / "broker.log"
    env = {**os.environ, "PULSE_KAFKA_BOOTSTRAP": bootstrap, "PULSE_TOPIC": "fixture-probe"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", "broker"], env=env, stdout=log, stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while b"topics ready" not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"pulse broker did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    yield bootstrap
    assert process.poll() is None, f"the broker died during the tests:\n{log_path.read_text()}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def pulse(broker: str, tmp_path: Path) -> Iterator[Pulse]:
    """A Pulse deployment of its own on the shared broker (topics, group, lake, state)."""
    deployment = Pulse.on(broker, tmp_path)
    yield deployment
    deployment.stop_all()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`moto_server` on a free loopback port; every S3 lake is a bucket of its own."""
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    assert server.process.poll() is None, f"the S3 server died during the tests:\n{server.log()}"
    server.stop()


@pytest.fixture
def s3_pulse(broker: str, s3: S3Server, tmp_path: Path) -> Iterator[Pulse]:
    """A deployment like `pulse`'s, its lake in a fresh bucket of the S3 server."""
    deployment = Pulse.on(broker, tmp_path, PULSE_LAKE=s3.new_lake(), **s3.env())
    yield deployment
    deployment.stop_all()
