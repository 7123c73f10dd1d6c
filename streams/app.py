"""`create_app(settings, epoch)`: the Faust app of one worker, assembled explicitly.

FAUST: topics are created by `streams.broker.ensure_topics` before the app starts
(`topic_allow_declare=False`), Faust's web server stays off, and the consumer session
timeout is 6 s (Kafka's minimum) so that a restarted or added worker joins in seconds
rather than the ~30 s Faust's default costs (FINDINGS).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from mode import ServiceT

from pulse.checkpoint_store import rollup_spec
from pulse.kafka import FETCH_MAX_WAIT_MS, MAX_MESSAGE_BYTES
from pulse.lakefs import LakeStore
from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .agents import RollupAgent, register_rollup_agent
from .ingest_process import IngestProcess
from .owners import PartitionOwners

STREAM_BUFFER_MESSAGES = 64
"""Keyed messages Faust may hold for the rollup agent before it stops fetching: twice
what the agent takes at once. Faust's default, 4,096, is sized for small messages; here
each holds up to 8,000 events, so when the rollups fell behind the ingest stage the
worker kept what it had fetched in memory rather than leave it in the broker (the
rollup process's peak in the peers workload: 152-155 MiB before, 143-145 MiB with
this, at the same rate)."""


class _PromptConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    """FAUST: fetch_max_wait_ms is hard-coded to 1500; Pulse's value is FETCH_MAX_WAIT_MS.

    TANSU holds fetches for their whole max-wait, which put up to 1.5 s on the keyed
    topic's hop (see `pulse.kafka.FETCH_MAX_WAIT_MS`).
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> faust_kafka.AIOKafkaConsumerThread:
        return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class PulseApp(faust.App):
    ingest: IngestProcess | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        """The ingest child first: spawned as the app starts, it joins its consumer group
        while Faust's own join and table recovery go on. An `app.service` would start
        only once recovery is done, which put the two groups' waits (each, after a
        kill -9, the dead member's session) one after the other: about 5 s of every
        restart. It is stopped last, so the rollups stop before it drains the lake."""
        first = [self.ingest] if self.ingest is not None else []
        return [*first, *super().on_init_dependencies()]


def create_app(settings: Settings, epoch: str) -> faust.App:
    topics = Topics.of(settings)
    app = PulseApp(
        settings.group,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=os.path.join(settings.state_dir, "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        web_enabled=False,
        broker_client_id=settings.client_id,  # see `pulse.kafka.evict_members`
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=4 * 1024 * 1024,  # per partition: five keyed messages
        stream_buffer_maxsize=STREAM_BUFFER_MESSAGES,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        producer_acks=-1,
        table_standby_replicas=0,
        worker_redirect_stdouts=False,
    )
    keyed = app.topic(
        topics.keyed,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def send(topic: str, value: bytes, partition: int) -> Any:
        return await app.producer.send(topic, None, value, partition, None, None)

    owners = PartitionOwners(settings, rollup_spec(settings), epoch, topics.rollups, send,
                             LakeStore.open(settings.lake, settings))
    register_rollup_agent(app, keyed, RollupAgent(owners, topics.keyed, send,
                                                  settings.partitions))
    app.ingest = IngestProcess(settings, epoch)

    @app.on_partitions_revoked.connect
    async def release_keyed(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        owners.release({tp.partition for tp in revoked if tp.topic == topics.keyed})

    @app.on_partitions_assigned.connect
    async def claim_keyed(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # Recover at once rather than at each partition's first message: after a restart
        # the rollups are whole again as soon as the group has settled.
        owners.claim_soon({tp.partition for tp in assigned if tp.topic == topics.keyed})

    @app.on_before_shutdown.connect
    async def finish_checkpoints(sender: Any, **kwargs: Any) -> None:
        await owners.drain()

    app.pulse_owners = owners  # type: ignore[attr-defined]
    return app
