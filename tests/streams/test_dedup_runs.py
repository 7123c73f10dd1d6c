"""Dedup runs on local disk (`DiskRuns`): a cache that is checked before it is trusted.

Runs read back as written and answer lookups across their index blocks; a run file that
is missing, truncated or corrupt is fetched from the lake again (and one the lake cannot
give either is refused); a day leaving retention drops whole files; a saved filter is
used only for the checkpoint and the runs it was saved with; temporary files are swept
only when no write of this process owns them and they are old.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pulse.rollups.dedup import ENTRY, Bloom, Run, SeenSet, sort_entries
from pulse.streams.dedup_runs import (
    INDEX_EVERY,
    TMP_GRACE_SECONDS,
    DiskRuns,
    RunCorrupt,
    encode_run,
)


def entries(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n, ENTRY)
    out["hi"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    out["lo"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    out["content"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    return sort_entries(out)


class Lake:
    """The lake's copies of runs, counting what is fetched."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fetched: list[str] = []

    def fetch(self, run: Run) -> bytes:
        self.fetched.append(run.name)
        try:
            return self.files[run.name]
        except KeyError:
            raise FileNotFoundError(run.name) from None


def test_runs_read_back_and_answer_lookups_across_index_blocks(tmp_path: Path):
    runs = DiskRuns(str(tmp_path))
    written = entries(5 * INDEX_EVERY + 17)
    run = runs.write(19_000, written)
    assert Path(runs.path(run)).name.startswith("19000-")
    assert runs.read(run).tobytes() == written.tobytes()

    absent = entries(300, seed=1)
    hi = np.concatenate([written["hi"], absent["hi"]])
    lo = np.concatenate([written["lo"], absent["lo"]])
    found, content = runs.find(run, hi, lo)
    assert found[:len(written)].all() and not found[len(written):].any()
    assert (content[:len(written)] == written["content"]).all()


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt"])
def test_a_run_not_whole_on_disk_is_fetched_from_the_lake(tmp_path: Path, damage: str,
                                                          caplog: pytest.LogCaptureFixture):
    written = entries(1000)
    first = DiskRuns(str(tmp_path))
    run = first.write(19_000, written)
    first.close()
    lake = Lake()
    lake.files[run.name] = encode_run(run, written)
    path = Path(first.path(run))
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-20])
    else:
        data = bytearray(path.read_bytes())
        data[-7] ^= 0x10
        path.write_bytes(bytes(data))

    runs = DiskRuns(str(tmp_path))
    with caplog.at_level(logging.WARNING, "pulse.dedup"):
        assert runs.adopt(run, lake.fetch) is True
    assert lake.fetched == [run.name]
    assert path.read_bytes() == lake.files[run.name]
    assert runs.find(run, written["hi"], written["lo"])[0].all()
    assert ("taking the lake's copy" in caplog.text) == (damage != "missing")


def test_a_whole_run_is_kept_and_one_bad_everywhere_is_refused(tmp_path: Path):
    written = entries(1000)
    run = DiskRuns(str(tmp_path)).write(19_000, written)
    lake = Lake()
    assert DiskRuns(str(tmp_path)).adopt(run, lake.fetch) is False
    assert lake.fetched == []

    Path(DiskRuns(str(tmp_path)).path(run)).write_bytes(b"PULSERUN garbage")
    lake.files[run.name] = encode_run(run, written)[:-1]
    with pytest.raises(RunCorrupt, match="truncated or corrupt"):
        DiskRuns(str(tmp_path)).adopt(run, lake.fetch)


def test_a_day_leaving_retention_drops_whole_files(tmp_path: Path):
    runs = DiskRuns(str(tmp_path))
    seen = SeenSet(runs, spill=500)
    rng = np.random.default_rng(3)
    for day in (19_000, 19_001, 19_002):
        for _ in range(3):  # several spills a day: runs merged within each day
            n = 400
            seen.add(rng.integers(0, 2**63, n, dtype=np.uint64),
                     rng.integers(0, 2**63, n, dtype=np.uint64), np.zeros(n, np.uint32),
                     np.full(n, day, np.int32))
    seen.flush()

    def days_on_disk() -> set[int]:
        return {int(name.split("-")[0]) for name in os.listdir(tmp_path)
                if name.endswith(".run")}

    assert days_on_disk() == {19_000, 19_001, 19_002}
    kept = {run.name for run in seen.runs() if run.day >= 19_001}
    seen.expire(19_001)
    assert days_on_disk() == {19_001, 19_002}
    assert {name[:-4] for name in os.listdir(tmp_path) if name.endswith(".run")} == kept
    assert len(seen) == 6 * 400


def test_a_saved_filter_is_used_only_for_its_own_checkpoint_and_runs(tmp_path: Path):
    runs = DiskRuns(str(tmp_path))
    made = [runs.write(19_000, entries(100, seed=s)) for s in range(3)]
    bloom = Bloom(1 << 12)
    saved = bloom.to_bytes()
    runs.save_filter(900, "s1" * 16, made[:2], saved)
    assert runs.load_filter(900, "s1" * 16, made[1::-1]) == saved  # order does not matter
    # The same offset of a journal recreated under the same epoch: another session.
    assert runs.load_filter(900, "s2" * 16, made[:2]) is None
    # The same name over other runs (a stale file): refused, the filter is rebuilt.
    assert runs.load_filter(900, "s1" * 16, made[:3]) is None
    assert runs.load_filter(900, "s1" * 16, [made[0], made[2]]) is None


def test_the_filters_kept_are_the_last_saved_not_the_highest_offsets(tmp_path: Path):
    runs = DiskRuns(str(tmp_path))
    made = [runs.write(19_000, entries(10))]
    data = Bloom(1024).to_bytes()
    for offset, session in ((900, "old-a"), (901, "old-b"), (5, "new-a"), (6, "new-b")):
        runs.save_filter(offset, session, made, data)
        time.sleep(0.01)  # distinct modification times
    assert runs.load_filter(5, "new-a", made) == data
    assert runs.load_filter(6, "new-b", made) == data
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("filter-")) == [
        "filter-000000000005-new-a.bin", "filter-000000000006-new-b.bin"]


def test_forget_others_keeps_what_is_used_and_sweeps_only_old_temporary_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runs = DiskRuns(str(tmp_path))
    used, unused = runs.write(19_000, entries(10)), runs.write(19_000, entries(10, seed=1))
    old_tmp, fresh_tmp = tmp_path / "19000-x.run.aaaa.tmp", tmp_path / "filter-1-s.bin.bbbb.tmp"
    for path in (old_tmp, fresh_tmp):
        path.write_bytes(b"partial")
    stale = time.time() - TMP_GRACE_SECONDS - 5
    os.utime(old_tmp, (stale, stale))

    # A filter still being written (an earlier claim's publish, in another thread) is
    # never taken, however long the write takes.
    real_open = open
    swept_while_writing: list[bool] = []

    def slow_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(".tmp") and "w" in mode:
            fh = real_open(path, mode, *args, **kwargs)
            os.utime(path, (stale, stale))
            runs.forget_others({used.name})
            swept_while_writing.append(os.path.exists(path))
            return fh
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", slow_open)
    runs.save_filter(7, "s", [used], Bloom(1024).to_bytes())
    monkeypatch.undo()

    assert swept_while_writing == [True]
    names = set(os.listdir(tmp_path))
    assert f"{used.name}.run" in names and f"{unused.name}.run" not in names
    assert old_tmp.name not in names and fresh_tmp.name in names
    assert runs.load_filter(7, "s", [used]) is not None
