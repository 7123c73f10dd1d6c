"""The load generator of `pulse bench api` when `wrk` is not installed.

`clients` keep-alive HTTP/1.1 connections, each sending one GET at a time for
`seconds` and timing every request from the first byte written to the last body byte
read. Hand-written on asyncio streams (uvloop when installed), because a full HTTP
client costs more CPU per request than the servers measured here. It runs in its own
process and prints one JSON object: requests, errors, seconds, latency percentiles. A
request is an error unless it answers `--expect` (200 unless said; 304 for conditional
requests).

    python -m pulse.benchmarks.loadgen URL CLIENTS SECONDS [--expect STATUS] [HEADER: VALUE ...]
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit


class BadResponse(Exception):
    pass


def request_bytes(url: str, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    return host, port, "\r\n".join(lines).encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response; returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    if status in (204, 304):
        return status  # no body, by definition
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        raise BadResponse(f"no content-length in {head[:200]!r}")
    end = lowered.index(b"\r\n", at + 2)
    await reader.readexactly(int(lowered[at + 17:end]))
    return status


async def client(host: str, port: int, request: bytes, until: float, expect: int,
                 latencies: list[int], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    clock = time.perf_counter_ns
    try:
        while time.monotonic() < until:
            started = clock()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(clock() - started)
            if status != expect:
                errors.append(status)
    finally:
        writer.close()


async def run(url: str, clients: int, seconds: float, headers: list[str],
              expect: int = 200) -> dict[str, object]:
    host, port, request = request_bytes(url, headers)
    latencies: list[int] = []
    errors: list[int] = []
    cpu_before = _cpu()
    started = time.monotonic()
    await asyncio.gather(*(client(host, port, request, started + seconds, expect, latencies,
                                  errors) for _ in range(clients)))
    elapsed = time.monotonic() - started
    cpu = (_cpu() - cpu_before) / elapsed
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6

    return {"requests": len(latencies), "errors": len(errors), "seconds": elapsed,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": latencies[-1] / 1e6, "error_statuses": sorted(set(errors))[:5],
            "cpu": cpu}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    url, clients, seconds, *headers = sys.argv[1:]
    expect = 200
    if headers[:1] == ["--expect"]:
        expect, headers = int(headers[1]), headers[2:]
    work = run(url, int(clients), float(seconds), headers, expect)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(work)
    else:
        result = uvloop.run(work)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
