"""Fixtures: one real embedded broker and one real S3 server per session, started as
processes the way users start them.

`pulse broker` runs as a subprocess on a free loopback port; a test that needs Kafka
and cannot reach it fails, it is never skipped. Each test gets its own topics, consumer
group, lake and state folders, so tests share the broker and nothing else. Under
pytest-xdist (scripts/test runs two workers) each worker is a session of its own, with
its own broker, port and temporary folders; `--dist loadgroup` keeps the tests that
share a module- or package-scoped stack on one worker, so it is built once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from pulse.benchmarks.harness import free_port
from tests.deployment import Pulse
from tests.s3 import S3Server, start_s3

SHARED_STACKS = {"api": "module", "browser": "package"}
"""Test folders whose fixtures start a deployment once per module or per package."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (`--dist loadgroup`), keep together only the tests that share a
    deployment (a module of tests/api, the whole of tests/browser), so that it starts
    once; every other test goes to whichever worker is free, which keeps two workers
    busy to the end rather than one finishing a long file alone."""
    for item in items:
        parts = item.path.relative_to(Path(__file__).parent).parts
        scope = SHARED_STACKS.get(parts[0]) if len(parts) > 1 else None
        if scope is not None:
            group = "/".join(parts) if scope == "module" else parts[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Under xdist, a test marked `alone` runs while no other test does.

    Such a test asserts a speed (a produce rate, a time budget) that a 2-core machine
    gives only to one test at a time. It holds the run's lock exclusively, and every
    other test holds it shared, from the setup of its fixtures (a module's stack
    included) to their teardown, so the two never overlap and the others still do.
    A waiting `alone` test also holds the turnstile, which every test passes before it
    asks for the lock: flock lets a shared request in ahead of a waiting exclusive
    one, so without it the other worker could start test after test in front of it.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    # Each worker's basetemp is <the run's basetemp>/popen-gwN: the parent belongs to this
    # run alone, never to another engineer's or another run's.
    root = Path(item.config.option.basetemp).parent
    alone = item.get_closest_marker("alone") is not None
    with open(root / "alone.turnstile", "a") as turnstile, open(root / "alone.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        return (yield)


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
