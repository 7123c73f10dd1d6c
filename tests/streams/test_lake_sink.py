"""When the lake sink seals a flush: the tail of a backlog at once, a trickle on its timer.

The end-to-end side (a real worker, a backlog and a live event) is in `test_pipeline`;
this pins the rule itself, clock and all, without a broker.
"""

from __future__ import annotations

from pathlib import Path

from pulse.lakefs import LakeStore
from pulse.rollups.journal import LakeMark
from pulse.schemas.arrow import poll_to_table
from pulse.schemas.events import Event
from pulse.streams.lake_sink import LakeSink, LakeWriter

FLUSH_SECONDS = 5.0


def sink_on(tmp_path: Path, intent: tuple[int, int] | None = None) -> LakeSink:
    async def commit(partition: int, next_offset: int) -> bool:
        return True

    def on_mark(partition: int, mark: LakeMark) -> None:
        pass

    writer = LakeWriter(LakeStore.open(str(tmp_path / "lake")), "e1", "events")
    sink = LakeSink(writer, flush_rows=1_000, flush_seconds=FLUSH_SECONDS, commit=commit,
                    on_mark=on_mark, max_bytes=2**30)
    sink.assign(0, 0, intent)
    return sink


def add(sink: LakeSink, offsets: list[int], backlog: bool) -> None:
    events = [Event("acme", f"e{o}", "tag_changed", 1_790_000_000_000_000, "c1", None, None,
                    None, "vip", None, None, 1) for o in offsets]
    sink.add_rows(0, offsets, poll_to_table(events, 0, offsets, 1_790_000_000_000_000), [],
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
