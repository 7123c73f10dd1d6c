"""The quick sizes of the ingest, freshness and memory benchmarks still run and still
check their answers (speed is not judged here: CI machines are noisy)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.broker
@pytest.mark.parametrize("name", ["ingest", "freshness", "memory"])
def test_quick_benchmark_runs_and_checks_its_answers(name: str, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pulse.cli", "bench", name, "--quick"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("pulse bench")]
    assert summary and "quick" in summary[-1], result.stdout
    assert (tmp_path / "benchmarks" / "results" / f"{name}-quick.json").exists()
