"""A running stack for the API tests: a worker and two `pulse api` processes, with data.

Module-scoped (a worker takes seconds to start); tests must not change its data except
through the tenants they own.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pulse.benchmarks.harness import free_port
from pulse.schemas.events import Event
from tests.deployment import Pulse, read_all
from tests.streams.test_pipeline import make_stream

KEYS = {"admin-key-0001": "*", "acme-key-00001": "acme", "globex-key-001": "globex"}


@dataclass
class Stack:
    pulse: Pulse
    urls: list[str]
    messages: list[tuple]
    valid: list[Event]
    bad: dict[bytes, str]
    now_us: int

    def get(self, path: str, key: str | None = "admin-key-0001", api: int = 0,
            method: str = "GET") -> tuple[int, dict | str, dict[str, str]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(self.urls[api] + path, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body, hdrs = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, body, hdrs = error.code, error.read(), dict(error.headers)
        text = body.decode()
        try:
            return status, json.loads(text), hdrs
        except ValueError:
            return status, text, hdrs


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, f"{url} was not ready in {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("api-stack")
    keys = ",".join(f"{k}={t}" for k, t in KEYS.items())
    pulse = Pulse.on(broker, root, PULSE_API_KEYS=keys)
    now_us = time.time_ns() // 1000
    messages, valid, bad = make_stream(seed=31, n=3000, now_us=now_us)
    pulse.ensure_topics()
    pulse.start_worker()
    ports = [free_port(), free_port()]
    for port in ports:
        pulse.start("api", name=f"api-{port}", PULSE_API_PORT=str(port))
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for url in urls:
        wait_ready(url)
    pulse.produce(messages)
    pulse.rollups(until=read_all(len(messages)))
    assert pulse.lake_rows(len(valid)) == len(valid)
    stack = Stack(pulse, urls, messages, valid, bad, now_us)
    deadline = time.monotonic() + 30
    for api in (0, 1):  # both replicas have folded everything
        while stack.get("/analytics/status", api=api)[1]["totals"]["read"] < len(messages):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    yield stack
    pulse.stop_all()
