"""The ingest stage's routing (`PollRouter`) against the batches built from events.

`rollups.local` builds each keyed partition's batch event by event (`from_events`); the
router cuts the same events out of a poll's Arrow table, vectorised. Whatever the poll,
each partition must get the same rows, in (source, offset) order, cut into messages that
each fit `FORWARD_EVENTS`, with the poll's progress and lake marks on the last only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from pulse.rollups.columns import BatchColumns, ColumnBatch
from pulse.rollups.dedup import content_digest, id_digest
from pulse.rollups.funnel import FunnelSpec
from pulse.rollups.journal import LakeMark
from pulse.rollups.local import LocalPartitions, event_batch
from pulse.rollups.metrics import EVENT_TYPES
from pulse.rollups.partition import RollupSpec
from pulse.schemas.arrow import poll_to_table
from pulse.schemas.events import Event
from pulse.streams import keyed
from pulse.streams.keyed import PollRouter
from tests.strategies import STEPS, streams

PARTITIONS = 3
NOW_US = 1_800_000_000_000_000
_STEP = EVENT_TYPES.index("funnel_step")


def _rows(batch: ColumnBatch) -> list[tuple[Any, ...]]:
    """Each event of a batch as plain values (the customer only of a funnel step, the
    only event whose customer the rollups read)."""
    if not len(batch):
        return []
    cols = BatchColumns.of(batch)
    campaigns = [*cols.campaigns, None]

    def text(values: list[str], code: int) -> str | None:
        return None if code < 0 else values[code]

    return [(int(cols.sources[i]), int(cols.offsets[i]), cols.hi[i], cols.lo[i],
             int(cols.contents[i]), int(cols.occurred[i]),
             None if math.isnan(cols.values[i]) else float(cols.values[i]),
             int(cols.kinds[i]), bool(cols.chats[i]), cols.tenants[cols.tenant[i]],
             campaigns[cols.campaign[i]], text(cols.labels, cols.label[i]),
             text(cols.categories, cols.category[i]),
             text(cols.customers, cols.customer[i]) if cols.kinds[i] == _STEP else None)
            for i in range(len(batch))]


@settings(max_examples=60, deadline=None)
@given(events=streams(max_events=40), sources=st.data(), limit=st.sampled_from([3, 7, 8_000]))
def test_each_partition_gets_its_events_in_order(events: list[Event], sources: st.DataObject,
                                                 limit: int) -> None:
    entries: list[tuple[int, int, Event | str]] = []
    for i, event in enumerate(events):
        source = sources.draw(st.integers(0, 2))
        dead = sources.draw(st.integers(0, 9)) == 0
        entries.append((source, 100 + i, "bad_json" if dead else event))
    entries.sort(key=lambda e: (e[0], e[1]))
    routed = LocalPartitions(RollupSpec(FunnelSpec(STEPS), 30.0, 48, PARTITIONS)).route(entries)
    expected = {q: routed.get(q, event_batch([], [])) for q in range(PARTITIONS)}

    router = PollRouter(PARTITIONS)
    for source in sorted({e[0] for e in entries}):
        mine = [(o, item) for s, o, item in entries if s == source]
        good = [(o, item) for o, item in mine if isinstance(item, Event)]
        table = poll_to_table([e for _, e in good], source, [o for o, _ in good], NOW_US)
        router.add(source, table, b"".join(id_digest(e.tenant_id, e.id) for _, e in good),
                   [content_digest(e) for _, e in good],
                   [(o, item) for o, item in mine if isinstance(item, str)])
    progress = {0: 5, 1: 6}
    lake = {0: LakeMark(1, 2, 3)}
    with mock.patch.object(keyed, "FORWARD_EVENTS", limit):
        for q in range(PARTITIONS):
            messages = router.messages(q, progress, lake)
            assert router.has(q) == bool(len(expected[q]) or expected[q].dead)
            assert [row for m in messages for row in _rows(m)] == _rows(expected[q])
            assert [d for m in messages for d in m.dead] == expected[q].dead
            assert all(len(m) + len(m.dead) <= limit for m in messages)
            # Each journal record guards on the highest offset it applied per source, so
            # of every source a message holds only offsets before the next one's.
            held = [{(r[0], r[1]) for r in _rows(m)} | {(d[0], d[1]) for d in m.dead}
                    for m in messages]
            for before, after in itertools.pairwise(held):
                for source in {s for s, _ in before} & {s for s, _ in after}:
                    assert (max(o for s, o in before if s == source)
                            < min(o for s, o in after if s == source))
            assert [(m.progress, m.lake) for m in messages[:-1]] == [({}, {})] * (len(messages) - 1)
            assert (messages[-1].progress, messages[-1].lake) == (progress, lake)
