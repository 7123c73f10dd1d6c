"""`pulse bench query --quick` and `pulse bench api --quick` run as users run them.

Each is a subprocess in a scratch folder (the results land in its `benchmarks/results`)
and must exit 0 with its one summary line on stdout: the quick runs check that the
benchmarks work and that Pulse answers right (the query benchmark fails when Pulse and
the hand-written SQL disagree, the API benchmark when the API's answer is not the
journal's), not how fast anything is. The answers must not be empty, or agreeing
would prove nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def bench(name: str, tmp_path: Path) -> tuple[str, dict[str, object]]:
    done = subprocess.run([sys.executable, "-m", "pulse.cli", "bench", name, "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads((tmp_path / "benchmarks" / "results" / f"{name}-quick.json").read_text())
    return lines[0], result


def test_bench_query_quick(tmp_path: Path) -> None:
    line, result = bench("query", tmp_path)
    assert line.startswith("pulse bench query: ") and line.endswith(", quick]"), line
    assert "hand-written" in line and "after compaction" in line and "insight answers" in line
    assert result["files_after"] < result["files_before"]
    assert result["conversations"] > 0 and result["intents"] > 0 and result["journeys"] > 0
    from pulse.benchmarks.query_insights import CASES

    for prefix in ("before", "after", *(case.name for case in CASES)):
        assert result[f"{prefix}_pulse_median_ms"] > 0 and result[f"{prefix}_hand_median_ms"] > 0
    assert "90 days at 4 clients" in line
    for case in ("overview", "funnel"):  # the summaries' way and the events' way, 1 and 4
        for way in ("summaries", "events"):
            assert result[f"long_{case}_{way}_4c_requests"] >= 8
            assert result[f"long_{case}_{way}_1c_p99_ms"] > 0


@pytest.mark.broker
def test_bench_api_quick(tmp_path: Path) -> None:
    line, result = bench("api", tmp_path)
    assert line.startswith("pulse bench api: ") and line.endswith(", quick]"), line
    assert "hello-JSON" in line
    assert result["answer_conversations"] > 0 and result["answer_intents"] > 0
    assert result["pulse_requests"] > 0 and result["hello_requests"] > 0


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:18777/hello
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   709.33us    1.08ms   5.65ms   85.73%
    Req/Sec    13.37k     4.92k   21.25k    70.00%
  Latency Distribution
     50%  189.00us
     75%  505.00us
     90%    2.47ms
     99%    4.60ms
  13325 requests in 1.01s, 1.80MB read
  Non-2xx or 3xx responses: 7
Requests/sec:  13248.32
Transfer/sec:      1.79MB
"""


def test_wrk_output_is_read() -> None:
    from pulse.benchmarks.api import parse_wrk

    assert parse_wrk(WRK_OUTPUT) == {"requests": 13325, "seconds": 1.01, "p50_ms": 0.189,
                                     "p99_ms": 4.6, "errors": 7}


def test_python_load_generator_against_hello(tmp_path: Path) -> None:
    """The generator used when wrk is not installed (whether or not it is here)."""
    from pulse.benchmarks.api import start_hello, stop, wait_for
    from pulse.benchmarks.harness import free_port

    port = free_port()
    log = tmp_path / "hello.log"
    hello = start_hello(port, log)
    try:
        url = f"http://127.0.0.1:{port}/hello"
        wait_for(url, hello, log, 30)
        done = subprocess.run([sys.executable, "-m", "pulse.benchmarks.loadgen", url, "4", "1",
                               "X-Probe: 1"], capture_output=True, text=True, timeout=60)
    finally:
        stop(hello)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["requests"] > 100 and result["errors"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
