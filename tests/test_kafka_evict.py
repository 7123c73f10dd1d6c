"""`pulse.kafka.evict_members` against a real broker: a restarted worker removes from a
group of its own the member its killed run left (named after the worker's client id),
and leaves a group that other workers are in alone. (That its join then does not wait
for the dead member's session is measured by `pulse bench recovery`, not timed here.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pulse.kafka import evict_members
from pulse.settings import Settings

pytestmark = pytest.mark.broker

PARTITIONS = 4
MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, group, client_id, topic):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                client_id=client_id, session_timeout_ms=10_000,
                                heartbeat_interval_ms=1_000)
    await consumer.start()
    consumer.subscribe([topic])
    deadline = asyncio.get_running_loop().time() + 60
    while not consumer.assignment():
        if asyncio.get_running_loop().time() > deadline:
            sys.exit("no assignment in 60 s")
        await consumer.getmany(timeout_ms=100)
    print("assigned", flush=True)
    while True:
        await consumer.getmany(timeout_ms=100)

asyncio.run(main(*sys.argv[1:]))
"""


def _members_of(bootstrap: str, group: str, topic: str, *client_ids: str
                ) -> list[subprocess.Popen[str]]:
    """A member process per client id, started together so that they join in one round
    (a member joining a settled group waits out a slow rebalance on the embedded broker)."""
    processes = [subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, group, client_id,
                                   topic], stdout=subprocess.PIPE, text=True)
                 for client_id in client_ids]
    for process in processes:  # a member not assigned in 60 s exits, and says why
        assert process.stdout is not None and process.stdout.readline() == "assigned\n"
    return processes


def _kill9(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()


async def _members(bootstrap: str, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
        return sorted(m[0] for r in described for entry in r.groups for m in entry[5])
    finally:
        await admin.close()


async def _create(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


def test_a_restart_removes_its_killed_runs_member_from_a_group_of_its_own(broker: str):
    topic, group = f"evict-{uuid.uuid4().hex[:8]}", f"evict-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create(broker, topic))
    _kill9(*_members_of(broker, group, topic, "pulse-mine"))
    assert [m.split("-")[1] for m in asyncio.run(_members(broker, group))] == ["mine"]

    assert asyncio.run(evict_members(broker, group, "pulse-mine")) == 1
    assert asyncio.run(_members(broker, group)) == []
    assert asyncio.run(evict_members(broker, group, "pulse-mine")) == 0


def test_a_group_other_workers_are_in_is_left_alone(broker: str):
    topic, group = f"evict-{uuid.uuid4().hex[:8]}", f"evict-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create(broker, topic))
    other, killed = _members_of(broker, group, topic, "pulse-other", "pulse-mine")
    try:
        _kill9(killed)
        before = asyncio.run(_members(broker, group))
        assert [m.split("-")[1] for m in before] == ["mine", "other"]
        assert asyncio.run(evict_members(broker, group, "pulse-mine")) == 0
        assert asyncio.run(_members(broker, group)) == before
    finally:
        _kill9(other)


def test_nothing_to_remove_in_a_group_that_does_not_exist(broker: str):
    assert asyncio.run(evict_members(broker, f"none-{uuid.uuid4().hex[:8]}", "pulse-x")) == 0


def test_a_worker_keeps_its_client_id_across_restarts_and_no_other_has_it(tmp_path: Path):
    first = Settings(state_dir=str(tmp_path / "a"))
    assert first.client_id == Settings(state_dir=str(tmp_path / "a" / ".." / "a")).client_id
    assert first.client_id != Settings(state_dir=str(tmp_path / "b")).client_id
    assert first.client_id.startswith("pulse-") and "-" not in first.client_id[6:]
