"""When the lake sink seals a flush (the tail of a backlog at once, a trickle on its
timer, the largest ones when its bytes run over) and how it writes them (several
partitions at once, each partition's in order).

The end-to-end side (a real worker, a backlog and a live event) is in `test_pipeline`;
this pins the rules themselves, clock and all, without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from pulse.lakefs import LakeStore
from pulse.rollups.journal import LakeMark
from pulse.schemas.arrow import poll_to_table
from pulse.schemas.events import Event
from pulse.streams.lake_sink import PARALLEL_FLUSHES, LakeSink, LakeWriter

FLUSH_SECONDS = 5.0


async def commit_at_once(partition: int, next_offset: int) -> bool:
    return True


def sink_on(tmp_path: Path, intent: tuple[int, int] | None = None,
            commit: Callable[[int, int], Awaitable[bool]] = commit_at_once,
            partitions: int = 1, max_bytes: int = 2**30) -> LakeSink:
    def on_mark(partition: int, mark: LakeMark) -> None:
        pass

    writer = LakeWriter(LakeStore.open(str(tmp_path / "lake")), "e1", "events")
    sink = LakeSink(writer, flush_rows=1_000, flush_seconds=FLUSH_SECONDS, commit=commit,
                    on_mark=on_mark, max_bytes=max_bytes)
    for partition in range(partitions):
        sink.assign(partition, 0, intent)
    return sink


def add(sink: LakeSink, offsets: list[int], backlog: bool, partition: int = 0) -> None:
    events = [Event("acme", f"e{partition}-{o}", "tag_changed", 1_790_000_000_000_000, "c1",
                    None, None, None, "vip", None, None, 1) for o in offsets]
    sink.add_rows(partition, offsets,
                  poll_to_table(events, partition, offsets, 1_790_000_000_000_000), [],
                  backlog=backlog)


def sealed(sink: LakeSink) -> list[tuple[int, int]]:
    return [(flush.first, flush.last) for flush in sink._sealed]


def test_a_backlogs_tail_is_sealed_when_caught_up_at_most_once_per_interval(tmp_path: Path):
    sink = sink_on(tmp_path)
    add(sink, [0, 1], backlog=True)
    sink.caught_up(0, now=100.0)
    assert sealed(sink) == [(0, 1)]

    # Fell behind again and caught up within the interval: the timer decides.
    add(sink, [2], backlog=True)
    sink.caught_up(0, now=100.0 + FLUSH_SECONDS / 2)
    assert sealed(sink) == [(0, 1)]
    sink.caught_up(0, now=100.0 + FLUSH_SECONDS)
    assert sealed(sink) == [(0, 1), (2, 2)]

    # A trickle read at the end of the log is not a backlog: it waits for its timer.
    add(sink, [3], backlog=False)
    sink.caught_up(0, now=1_000.0)
    assert sealed(sink) == [(0, 1), (2, 2)]
    sink.seal_due(now=sink._open[0].opened_at + FLUSH_SECONDS)
    assert sealed(sink) == [(0, 1), (2, 2), (3, 3)]


def test_a_resumed_flushs_boundary_keeps_the_backlog_mark_on_the_rows_after_it(
        tmp_path: Path):
    """A partition resumed at an earlier owner's intent seals at its last offset; the
    rows of the same poll after it are still a backlog's tail."""
    sink = sink_on(tmp_path, intent=(0, 1))
    add(sink, [0, 1, 2, 3], backlog=True)
    assert sealed(sink) == [(0, 1)]
    sink.caught_up(0, now=100.0)
    assert sealed(sink) == [(0, 1), (2, 3)]


def test_the_largest_open_flushes_are_sealed_when_the_bytes_run_over(tmp_path: Path):
    """Enough of them to keep every writer busy, not all: sealing the small ones too
    would only make more, smaller files."""
    sizes = [3, 9, 1, 7, 5, 8]
    sink = sink_on(tmp_path, partitions=len(sizes), max_bytes=1)
    for partition, rows in enumerate(sizes):
        add(sink, list(range(rows)), backlog=False, partition=partition)
    sink.seal_due(now=0.0)
    largest = sorted(range(len(sizes)), key=lambda p: -sizes[p])[:PARALLEL_FLUSHES]
    assert sorted(flush.partition for flush in sink._sealed) == sorted(largest)
    assert all(sink._open[p].rows == sizes[p] for p in range(len(sizes)) if p not in largest)


def test_partitions_flush_at_once_and_each_partitions_flushes_in_order(tmp_path: Path):
    """A partition whose commit hangs holds back its own later flushes, not the others'."""
    asyncio.run(_flush_at_once(tmp_path))


async def _flush_at_once(tmp_path: Path) -> None:
    committed: list[tuple[int, int]] = []
    hold = asyncio.Event()

    async def commit(partition: int, next_offset: int) -> bool:
        if partition == 0:
            await hold.wait()
        committed.append((partition, next_offset))
        return True

    sink = sink_on(tmp_path, commit=commit, partitions=3)
    for offsets in ([0, 1], [2, 3]):
        add(sink, offsets, backlog=True, partition=0)
        sink.caught_up(0, now=100.0 * (offsets[0] + 1))
    for partition in (1, 2):
        add(sink, [0, 1, 2], backlog=True, partition=partition)
        sink.caught_up(partition, now=100.0)
    assert sealed(sink) == [(0, 1), (2, 3), (0, 2), (0, 2)]

    done = False
    running = asyncio.create_task(sink.run(lambda: done))
    def partition_0_files() -> int:
        return len(list((tmp_path / "lake" / "events").rglob("*-p0000-*.parquet")))

    async with asyncio.timeout(30):
        while len(committed) < 2 or not partition_0_files():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time enough to start partition 0's second flush, if it could
    assert sorted(committed) == [(1, 3), (2, 3)]
    assert sealed(sink) == [(0, 1), (2, 3)]
    assert partition_0_files() == 1

    hold.set()
    done = True
    async with asyncio.timeout(30):
        await running
    assert [c for c in committed if c[0] == 0] == [(0, 2), (0, 4)]
    assert sealed(sink) == []
    assert len(list((tmp_path / "lake" / "events").rglob("*.parquet"))) == 4


def test_a_revoked_partitions_write_under_way_ends_and_no_other_starts(tmp_path: Path):
    asyncio.run(_revoke_while_writing(tmp_path))


async def _revoke_while_writing(tmp_path: Path) -> None:
    committed: list[int] = []
    hold = asyncio.Event()

    async def commit(partition: int, next_offset: int) -> bool:
        await hold.wait()
        committed.append(next_offset)
        return True

    sink = sink_on(tmp_path, commit=commit)
    for offsets in ([0, 1], [2, 3]):
        add(sink, offsets, backlog=True)
        sink.caught_up(0, now=100.0 * (offsets[0] + 1))
    done = False
    running = asyncio.create_task(sink.run(lambda: done))
    async with asyncio.timeout(30):
        while not list((tmp_path / "lake" / "events").rglob("*.parquet")):
            await asyncio.sleep(0.01)
        revoking = asyncio.create_task(sink.revoke(0))
        await asyncio.sleep(0.2)
        assert not revoking.done()  # the first flush's commit is still under way
        hold.set()
        await revoking
        done = True
        await running
    assert committed == [2]
    assert sealed(sink) == []
    assert len(list((tmp_path / "lake" / "events").rglob("*.parquet"))) == 1
