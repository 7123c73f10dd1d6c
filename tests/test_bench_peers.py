"""`pulse bench peers --quick` runs end to end: every peer and Pulse, each answer exact.

`scripts/test` installs the `peers` extra, so every peer must run here; a peer that is
not installed fails this test with the command that installs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pulse.benchmarks.peers import INSTALL, PEERS, Peer, finish, missing, start
from pulse.benchmarks.peers_answer import Answer


@pytest.mark.broker
@pytest.mark.alone  # five systems at once, each within a time budget
def test_bench_peers_quick_every_answer_exact(tmp_path: Path) -> None:
    absent = {peer.key: why for peer in PEERS if (why := missing(peer))}
    assert not absent, f"install the peers extra ({INSTALL}): {absent}"
    done = subprocess.run(
        [sys.executable, "-m", "pulse.cli", "bench", "peers", "--quick"], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("pulse bench peers:")]
    assert len(lines) == 1 and lines[0].endswith(", quick]"), done.stdout
    assert "x hand-written" in done.stderr  # the table's header

    record = json.loads((tmp_path / "benchmarks" / "results" / "peers-quick.json").read_text())
    assert record["messages"] == 20_000
    assert record["unique"] < record["valid"] < record["read"] == 20_000
    systems = record["systems"]
    assert set(systems) == {"pulse", *(peer.key for peer in PEERS)}
    for key, row in systems.items():
        assert row["exact"] is True, (key, row)
        assert row["per_s"] > 0 and row["peak_rss_mb"] > 0, (key, row)


def test_a_peer_not_installed_is_reported_not_run(tmp_path: Path) -> None:
    ghost = Peer("ghost", "a peer", "handwritten", "no-such-dist", ("no_such_module_xyz",))
    job = start(ghost, "127.0.0.1:1", "topic", "group", 10, tmp_path, budget=1)
    assert job.process is None
    row = finish(job, 10, Answer({}, {}))
    assert not row.ran and row.exact is None
    assert row.note.startswith(f"not installed ({INSTALL})"), row.note
    assert "no_such_module_xyz" in row.note
