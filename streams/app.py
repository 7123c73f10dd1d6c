"""`create_app(settings, epoch)`: the Faust app of one worker, assembled explicitly.

FAUST: topics are created by `streams.broker.ensure_topics` before the app starts
(`topic_allow_declare=False`), Faust's web server stays off, and the consumer session
timeout is 6 s (Kafka's minimum) so that a restarted or added worker joins in seconds
rather than the ~30 s Faust's default costs (FINDINGS).
"""

from __future__ import annotations

import os
from typing import Any

import faust

from pulse.schemas.topics import Topics
from pulse.settings import Settings

from .agents import register_rollup_agent
from .bootstrap import rollup_spec
from .ingest_process import IngestProcess
from .owners import PartitionOwners


def create_app(settings: Settings, epoch: str) -> faust.App:
    topics = Topics(settings.topic, settings.dlq_topic)
    app = faust.App(
        settings.group,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=os.path.join(settings.state_dir, "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=16 * 1024 * 1024,
        producer_max_request_size=8 * 1024 * 1024,
        producer_acks=-1,
        table_standby_replicas=0,
        worker_redirect_stdouts=False,
    )
    by_tenant = app.topic(
        topics.by_tenant,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    async def send(topic: str, value: bytes, partition: int) -> Any:
        return await app.producer.send(topic, None, value, partition, None, None)

    owners = PartitionOwners(settings, rollup_spec(settings), epoch, topics.rollups, send)
    register_rollup_agent(app, by_tenant, owners)
    app.service(IngestProcess(settings, epoch))

    @app.on_partitions_revoked.connect
    async def release_keyed(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        owners.release({tp.partition for tp in revoked if tp.topic == topics.by_tenant})

    app.pulse_owners = owners  # type: ignore[attr-defined]
    return app
