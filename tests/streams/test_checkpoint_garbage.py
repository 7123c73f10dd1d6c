"""What a checkpoint writer collects in the lake's store, and what it must never take."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pulse.lakefs import LakeStore
from pulse.rollups import checkpoint
from pulse.rollups.checkpoint import RunRef
from pulse.streams.checkpoints import GARBAGE_GRACE_SECONDS, PartitionCheckpoints
from tests.rollups.test_store import body

DEFINITIONS = checkpoint.Definitions(("a",), 30.0, 48, 2)


def publish(lake: LakeStore, writer: PartitionCheckpoints, offset: int, session: str,
            run: str, at: float) -> None:
    written = body(1, [])
    written.offset, written.session, written.runs = offset, session, [RunRef(1, run, 1, 0)]
    for rel, data in ((f"{writer.dir}/{checkpoint.file_name(offset, session)}",
                       checkpoint.encode(written)), (f"{writer.runs_dir}/{run}.run", b"r")):
        lake.put(rel, data)
        os.utime(lake.uri(rel), (at, at))


def test_checkpoints_of_a_recreated_journal_are_kept_and_the_stale_ones_collected(
        tmp_path: Path):
    lake = LakeStore(str(tmp_path))
    writer = PartitionCheckpoints(lake, "e", 1, DEFINITIONS)
    old = time.time() - GARBAGE_GRACE_SECONDS - 100
    publish(lake, writer, 900, "before-a", "r900", old)
    publish(lake, writer, 901, "before-b", "r901", old + 1)
    # The journal topic was recreated: the new owner's offsets start again, below.
    publish(lake, writer, 5, "after-a", "r5", old + 2)
    publish(lake, writer, 6, "after-b", "r6", old + 3)
    writer.collect_garbage()
    assert sorted(e.name for e in lake.list(writer.dir)) == [
        checkpoint.file_name(5, "after-a"), checkpoint.file_name(6, "after-b")]
    assert sorted(e.name for e in lake.list(writer.runs_dir)) == ["r5.run", "r6.run"]


def test_temporary_files_of_a_killed_writer_go_once_old_and_live_ones_stay(tmp_path: Path):
    lake = LakeStore(str(tmp_path))
    writer = PartitionCheckpoints(lake, "e", 1, DEFINITIONS)
    now = time.time()
    publish(lake, writer, 7, "s", "r7", now)
    orphans = [f"{writer.dir}/.{checkpoint.file_name(8, 's')}.0badf00d.tmp",
               f"{writer.runs_dir}/.r8.run.0badf00d.tmp"]
    live = [f"{writer.dir}/.{checkpoint.file_name(9, 's')}.12345678.tmp",
            f"{writer.runs_dir}/.r9.run.12345678.tmp"]
    for rel in orphans + live:
        Path(lake.uri(rel)).write_bytes(b"half")
    for rel in orphans:
        os.utime(lake.uri(rel), (now - GARBAGE_GRACE_SECONDS - 1,) * 2)
    writer.collect_garbage()  # one checkpoint only: no run is collected yet, temp files are
    left = {f"{folder}/{e.name}" for folder in (writer.dir, writer.runs_dir)
            for e in lake.list(folder)}
    assert not left & set(orphans)
    assert set(live) <= left
    assert f"{writer.runs_dir}/r7.run" in left
