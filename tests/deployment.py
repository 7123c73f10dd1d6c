"""A Pulse deployment under test (`Pulse`): its processes, started as users start them,
what it is fed, and reading back what it wrote, for the broker-backed tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pulse.checkpoint_store import CheckpointReader, rollup_spec
from pulse.epoch import read_epoch
from pulse.kafka import FETCH_MAX_WAIT_MS
from pulse.lakefs import LakeStore
from pulse.rollups import journal
from pulse.rollups.store import RollupStore
from pulse.schemas.events import Event
from pulse.schemas.topics import Topics
from pulse.settings import Settings


@dataclass
class Proc:
    """A `pulse ...` subprocess with its output in a log file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pulse.cli", *self.args],
                env={**os.environ, **self.env}, stdout=log, stderr=log, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60, after: int = 0) -> int:
        """Wait until `text` appears in the log after byte `after`; returns its end."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_path.read_bytes()
            at = log.find(text.encode(), after)
            if at >= 0:
                return at + len(text)
            if not self.alive():
                raise AssertionError(f"{self.args} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged in {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)


@dataclass
class Pulse:
    """One deployment under test: its env, processes and outputs."""

    root: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    @classmethod
    def on(cls, broker: str, root: Path, **env: str) -> Pulse:
        """A deployment of its own on `broker`: fresh topics and group, lake and state
        under `root`, small partitions and quick flushes; `env` adds or overrides."""
        name = f"t{uuid.uuid4().hex[:10]}"
        return cls(root=root, env={
            "PULSE_KAFKA_BOOTSTRAP": broker, "PULSE_TOPIC": name,
            "PULSE_DLQ_TOPIC": f"{name}-dlq", "PULSE_GROUP": name,
            "PULSE_LAKE": str(root / "lake"), "PULSE_STATE_DIR": str(root / "state"),
            "PULSE_PARTITIONS": "4", "PULSE_LAKE_FLUSH_SECONDS": "0.5",
            "PULSE_LOG_LEVEL": "info", **env,
        })

    def full_env(self, **env: str) -> dict[str, str]:
        """The environment a `pulse` command of this deployment runs with."""
        return {**os.environ, **self.env, **env}

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def topics(self) -> Topics:
        return Topics.of(self.settings)

    def start(self, *args: str, name: str | None = None, **env: str) -> Proc:
        log = self.root / f"{name or args[0]}-{len(self.procs)}.log"
        proc = Proc(list(args), {**self.env, **env}, log)
        self.procs.append(proc)
        return proc

    def start_worker(self, state: str = "state") -> Proc:
        return self.start("worker", name=f"worker-{state}",
                          PULSE_STATE_DIR=str(self.root / state))

    def stop_all(self) -> None:
        """Stop every process, the last started first (a broker outlives its clients)."""
        for proc in reversed(self.procs):
            if proc.alive():
                proc.stop(timeout=15)

    # ---- Kafka ---------------------------------------------------------------------

    def produce(self, messages: Iterable[tuple[bytes | None, bytes, int | None]]) -> int:
        """(key, value, partition or None) -> the input topic; returns how many."""
        async def go() -> int:
            producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                        enable_idempotence=False, linger_ms=5)
            try:
                await producer.start()
                futures = [await producer.send(self.topics.input, value, key=key,
                                               partition=partition)
                           for key, value, partition in messages]
                await asyncio.gather(*futures)
                return len(futures)
            finally:
                await producer.stop()
        return asyncio.run(go())

    def input_messages(self) -> list[tuple[bytes | None, bytes, int]]:
        """(key, value, partition) of everything on the input topic, for ground truth."""
        async def go() -> list[tuple[bytes | None, bytes, int]]:
            consumer = AIOKafkaConsumer(self.topics.input,
                                        bootstrap_servers=self.settings.kafka_bootstrap,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
            await consumer.start()
            out: list[tuple[bytes | None, bytes, int]] = []
            try:
                while batches := await consumer.getmany(timeout_ms=1500):
                    for records in batches.values():
                        out.extend((r.key, r.value or b"", r.partition) for r in records)
                return out
            finally:
                await consumer.stop()
        return asyncio.run(go())

    def ensure_topics(self) -> None:
        from pulse.streams.broker import ensure_topics
        asyncio.run(ensure_topics(self.settings))

    def rollups(self, until: Callable[[RollupStore], bool], timeout: float = 60) -> RollupStore:
        """Fold the journal, as an API replica does, until `until(store)` or fail."""
        async def go() -> RollupStore:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                        enable_auto_commit=False,
                                        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                        max_partition_fetch_bytes=32 * 1024 * 1024)
            await consumer.start()
            try:
                tps = [TopicPartition(self.topics.rollups, q)
                       for q in range(self.settings.partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                store = RollupStore()
                deadline = time.monotonic() + timeout
                quiet = False
                while not (quiet and until(store)):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"rollups did not get there in {timeout} s; "
                                             f"counters: {counters(store)}")
                    batches = await consumer.getmany(timeout_ms=300)
                    for tp, records in batches.items():
                        for record in records:
                            reset = store.fold(tp.partition).feed(
                                journal.decode(record.value), record.offset)
                            if reset is not None:
                                store.load(tp.partition, await self._checkpoint_at(
                                    tp.partition, record.offset, reset.session))
                    quiet = not batches  # read to the end of what is there now
                return store
            finally:
                await consumer.stop()
        return asyncio.run(go())

    async def _checkpoint_at(self, partition: int, offset: int, session: str,
                             timeout: float = 60):
        """The checkpoint a reset at `offset` names (published just after the reset)."""
        settings = self.settings
        epoch = await read_epoch(settings.kafka_bootstrap, self.topics)
        assert epoch is not None
        reader = CheckpointReader(LakeStore.open(settings.lake, settings), epoch, partition,
                                  rollup_spec(settings).definitions())
        deadline = time.monotonic() + timeout
        while (body := reader.at(offset, session)) is None:
            assert time.monotonic() < deadline, f"no checkpoint at journal offset {offset}"
            await asyncio.sleep(0.2)
        return body

    def dead_letter_topic(self, expected: int, timeout: float = 30) -> list:
        async def go() -> list:
            consumer = AIOKafkaConsumer(self.topics.dlq,
                                        bootstrap_servers=self.settings.kafka_bootstrap,
                                        enable_auto_commit=False, auto_offset_reset="earliest")
            await consumer.start()
            out: list = []
            deadline = time.monotonic() + timeout
            try:
                while len(out) < expected and time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        out.extend(records)
                await asyncio.sleep(0.5)
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(records)
                return out
            finally:
                await consumer.stop()
        return asyncio.run(go())

    # ---- the lake ------------------------------------------------------------------

    def lake_rows(self, expected: int, timeout: float = 60, relation: str = "events") -> int:
        """Wait until the lake holds `expected` raw rows of `relation` (`events` or
        `dead_letters`); returns what it holds."""
        deadline = time.monotonic() + timeout
        rows = 0
        while time.monotonic() < deadline:
            try:
                rows = self.lake_sql(f"SELECT count(*) FROM {{{relation}}}")[0][0]
            except duckdb.IOException:  # no file written yet
                rows = 0
            if rows >= expected:
                break
            time.sleep(0.3)
        return rows

    def lake_sql(self, sql: str) -> list[tuple]:
        """Plain DuckDB over the lake, as an analyst would run it (`{events}` etc.).

        On S3, where DuckDB has no httpfs here, pyarrow's own hive dataset discovery
        over each prefix stands in for the glob (none of Pulse's listing code)."""
        lake = self.settings.lake
        if lake.startswith("s3://"):
            return _s3_lake_sql(self.settings, sql)
        sql = sql.format(
            events=f"read_parquet('{lake}/events/**/*.parquet', hive_partitioning = true)",
            dead_letters=f"read_parquet('{lake}/dead_letters/**/*.parquet', "
                         "hive_partitioning = true)",
        )
        return duckdb.sql(sql).fetchall()

    def lake_events(self) -> list[tuple]:
        """The lake's events as contract section 5 deduplicates them (first copy by
        partition and offset), in the shape of `event_rows`."""
        return sorted(self.lake_sql("""
            SELECT tenant_id, id, event_type, customer_id, campaign_id, channel, category,
                   label, value, epoch_us(occurred_at), metadata
            FROM (SELECT DISTINCT ON (tenant_id, id) * FROM {events}
                  ORDER BY tenant_id, id, kafka_partition, kafka_offset)"""), key=str)


def event_rows(events: Iterable[Event]) -> list[tuple]:
    """What `Pulse.lake_events` should hold for these (unique) events."""
    return sorted(((e.tenant_id, e.id, e.event_type, e.customer_id, e.campaign_id, e.channel,
                    e.category, e.label, e.value, e.occurred_us, e.metadata) for e in events),
                  key=str)


def counters(store: RollupStore) -> dict[str, int]:
    total: dict[str, int] = {}
    for info in store.partitions.values():
        for k, v in info.counters.items():
            total[k] = total.get(k, 0) + v
    return total


def read_all(n: int) -> Callable[[RollupStore], bool]:
    """Predicate: the rollups have accounted for `n` input messages."""
    return lambda store: counters(store).get("read", 0) >= n


def _s3_lake_sql(settings: Settings, sql: str) -> list[tuple]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from pulse.lakefs import LakeStore

    store = LakeStore.open(settings.lake, settings)
    db = duckdb.connect()
    hive = {"events": [("date", pa.date32()), ("tenant_id", pa.string())],
            "dead_letters": [("date", pa.date32())]}
    names = {}
    for kind, fields in hive.items():
        base = store.arrow_path(kind)
        info = store.arrow_fs.get_file_info(pa.fs.FileSelector(base, allow_not_found=True))
        if not info:
            raise duckdb.IOException(f"No files found under {settings.lake}/{kind}")
        dataset = ds.dataset(base, filesystem=store.arrow_fs, format="parquet",
                             partitioning=ds.partitioning(pa.schema(fields), flavor="hive"),
                             exclude_invalid_files=False, ignore_prefixes=[".", "_"])
        db.register(f"lake_{kind}", dataset)
        names[kind] = f"lake_{kind}"
    try:
        return db.sql(sql.format(**names)).fetchall()
    finally:
        db.close()
