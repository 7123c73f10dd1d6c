"""The quick sizes of the ingest, freshness, memory, recovery and scale benchmarks still
run and still check their answers (speed is not judged here: CI machines are noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest


def recovery_answers(record: dict, stderr: str) -> None:
    """The restarted worker's rollups equal those before the kill (the benchmark fails
    otherwise); every keyed partition came back from a checkpoint, and a fresh API got
    ready."""
    run = record["large"]
    assert record["events"] == 20_000 and run["worker_s"] > 0 and run["api_s"] > 0, record
    assert run["from_checkpoints"] == 8, run


def scale_answers(record: dict, stderr: str) -> None:
    """Every event counted once, by the two workers' own sessions, split near evenly;
    and what to expect on 16 cores is said."""
    (run,) = record["runs"]
    assert run["workers"] == 2 and abs(run["share_0"] + run["share_1"] - 1) < 1e-3, run
    assert run["worst_off_even"] <= 0.2, run
    assert "On 16 cores" in stderr and "On 16 cores" in record["sixteen_cores"]


ANSWERS: dict[str, Callable[[dict, str], None]] = {
    "recovery": recovery_answers, "scale": scale_answers}


@pytest.mark.broker
@pytest.mark.parametrize("name", ["ingest", "freshness", "memory", "recovery", "scale"])
def test_quick_benchmark_runs_and_checks_its_answers(name: str, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "bench", name, "--quick"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("pulse bench")]
    assert summary and "quick" in summary[-1], result.stdout
    path = tmp_path / "benchmarks" / "results" / f"{name}-quick.json"
    assert path.exists()
    if name in ANSWERS:
        ANSWERS[name](json.loads(path.read_text()), result.stderr)
