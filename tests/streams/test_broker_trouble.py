"""Broker trouble: a broker that is not there yet, and connections cut mid-stream."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pulse.benchmarks.harness import free_port
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.streams.broker import broker_binary
from tests.deployment import Proc, Pulse, read_all
from tests.streams.test_faults import READY, Producer, assert_exact
from tests.streams.test_pipeline import make_stream

pytestmark = pytest.mark.broker


def status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""  # not listening yet


def test_worker_and_api_wait_for_a_broker_that_comes_later(tmp_path: Path):
    pulse = Pulse.on(f"127.0.0.1:{free_port()}", tmp_path)
    api_port = free_port()
    try:
        worker = pulse.start_worker()
        pulse.start("api", PULSE_API_PORT=str(api_port), PULSE_API_KEYS="admin-key-0001=*")
        worker.wait_for_log("waiting for Kafka at", timeout=30)
        ready = f"http://127.0.0.1:{api_port}/readyz"
        deadline = time.monotonic() + 30
        while status(ready)[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert "waiting for Kafka" in status(ready)[1]
        broker = pulse.start("broker")
        broker.wait_for_log("topics ready", timeout=30)
        messages, _, _ = make_stream(seed=51, n=500, now_us=time.time_ns() // 1000)
        pulse.produce(messages)
        pulse.rollups(until=read_all(len(messages)), timeout=120)
        while status(ready)[0] != 200:
            assert time.monotonic() < deadline + 60
            time.sleep(0.2)
        assert worker.alive()
    finally:
        pulse.stop_all()


class CuttableProxy(threading.Thread):
    """A TCP proxy whose connections can all be dropped, refusing new ones for a while."""

    def __init__(self, listen: int, target: int) -> None:
        super().__init__(daemon=True)
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.blocked_until = 0.0
        self.writers: set[asyncio.StreamWriter] = set()
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen)
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.blocked_until:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.writers.discard(writer)

    def cut(self, seconds: float) -> None:
        def drop() -> None:
            self.blocked_until = time.monotonic() + seconds
            for writer in list(self.writers):
                writer.transport.abort()
        self.loop.call_soon_threadsafe(drop)


def test_dropped_connections_lose_nothing_and_count_nothing_twice(tmp_path: Path):
    real, front = free_port(), free_port()
    with open(tmp_path / "tansu.log", "wb") as log:
        tansu = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{real}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{front}"],
            stdout=log, stderr=log, start_new_session=True)
    proxy = CuttableProxy(front, real)
    proxy.start()
    proxy.ready.wait(5)
    pulse = Pulse.on(f"127.0.0.1:{front}", tmp_path)
    try:
        time.sleep(1)
        pulse.ensure_topics()
        now_us = time.time_ns() // 1000
        messages, _, _ = make_stream(seed=52, n=12_000, now_us=now_us)
        worker = pulse.start_worker()
        worker.wait_for_log(READY, timeout=60)
        producer = Producer(pulse, messages, seconds=20)
        producer.start()
        rnd = random.Random(3)
        for _ in range(3):
            time.sleep(rnd.uniform(2, 5))
            proxy.cut(rnd.uniform(1, 3))
        producer.join()
        assert producer.error is None
        # A producer retry across a cut may have written a message twice: the truth is
        # what the input topic holds.
        on_topic = pulse.input_messages()
        assert len(on_topic) >= len(messages)
        valid = [e for e in (decode_event(v, now_us) for _, v, _ in on_topic)
                 if isinstance(e, Event)]
        assert_exact(pulse, on_topic, valid, now_us)
        assert isinstance(worker, Proc) and worker.alive()
    finally:
        pulse.stop_all()
        os.killpg(tansu.pid, 15)
        tansu.wait(10)
