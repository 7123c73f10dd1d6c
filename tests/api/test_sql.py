"""`pulse sql` as users run it: every format equals plain DuckDB over the same files.

The lake comes from a real worker fed a realistic stream (duplicates, dead letters,
late events); the answers are compared with what an analyst gets from plain DuckDB,
deduplicated as contract section 5 says. Empty lakes, bad queries and the prompt (fed
from a pipe and driven through a terminal) run without a broker.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pulse import lakefs
from pulse.api.sql import Lake
from pulse.lakefs import LakeStore
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pulse.schemas.decode import decode_event
from pulse.schemas.events import Event
from pulse.settings import Settings
from pulse.streams.lake_sink import DeadLetter, Flush, LakeWriter
from tests import oracle
from tests.deployment import Pulse
from tests.s3 import S3Server
from tests.streams.test_pipeline import make_stream
from tests.test_lakecache import log_size, requests_to

COLUMNS = "tenant_id, id, event_type, value, occurred_at, kafka_partition, kafka_offset, date"
EVENTS_QUERY = f"SELECT {COLUMNS} FROM events ORDER BY tenant_id, id"
PLAIN_EVENTS = f"""
    SELECT {COLUMNS} FROM (
        SELECT DISTINCT ON (tenant_id, id) * FROM {{events}}
        ORDER BY tenant_id, id, kafka_partition, kafka_offset)
    ORDER BY tenant_id, id"""


def pulse_sql(env: dict[str, str], *args: str, stdin: bytes | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pulse.cli", "sql", *args], env={**os.environ, **env},
        input=stdin if stdin is not None else b"", capture_output=True, timeout=120)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


# ---- turning each format back into typed rows ----------------------------------------


def _typed(tenant: str, eid: str, kind: str, value: Any, occurred: Any, partition: Any,
           offset: Any, day: Any) -> tuple:
    return (tenant, eid, kind, None if value in (None, "", "NULL") else float(value),
            occurred if isinstance(occurred, datetime) else datetime.fromisoformat(occurred),
            int(partition), int(offset),
            day if isinstance(day, date) else date.fromisoformat(day))


def from_csv(text: str) -> list[tuple]:
    reader = csv.reader(io.StringIO(text))
    assert next(reader) == [c.strip() for c in COLUMNS.split(",")]
    return [_typed(*row) for row in reader]


def from_json(text: str) -> list[tuple]:
    names = [c.strip() for c in COLUMNS.split(",")]
    records = [json.loads(line) for line in text.splitlines()]
    assert all(list(r) == names for r in records)
    return [_typed(*(r[n] for n in names)) for r in records]


def from_table(text: str) -> list[tuple]:
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == [c.strip() for c in COLUMNS.split(",")]
    rows = [tuple(c.strip() for c in line.split("|")) for line in lines[2:-1]]
    assert lines[-1] == f"({len(rows)} rows)"
    return [_typed(*row) for row in rows]


def from_parquet(data: bytes) -> list[tuple]:
    table = pq.read_table(io.BytesIO(data))
    return [_typed(*row.values()) for row in table.to_pylist()]


PARSE = {"csv": from_csv, "json": from_json, "table": from_table}


# ---- over a worker's lake ------------------------------------------------------------


@pytest.mark.broker
def test_every_format_equals_plain_duckdb_over_a_workers_lake(pulse: Pulse, tmp_path: Path):
    now_us = time.time_ns() // 1000
    messages, valid, bad = make_stream(seed=21, n=2500, now_us=now_us)
    pulse.ensure_topics()
    worker = pulse.start_worker()
    pulse.produce(messages)
    assert pulse.lake_rows(len(valid), timeout=90) == len(valid)
    deadline = time.monotonic() + 30
    while pulse.lake_sql("SELECT count(*) FROM {dead_letters}")[0][0] < len(bad):
        assert time.monotonic() < deadline, "dead letters did not reach the lake"
        time.sleep(0.3)
    worker.stop()

    want = [_typed(*row) for row in pulse.lake_sql(PLAIN_EVENTS)]
    unique = oracle.unique(valid)
    assert len(want) == len(unique) < len(valid)  # the stream has duplicates
    assert {(r[0], r[1]) for r in want} == {(e.tenant_id, e.id) for e in unique}

    for fmt in ("table", "csv", "json"):
        text = ok(pulse_sql(pulse.env, EVENTS_QUERY, "--format", fmt))
        assert PARSE[fmt](text) == want, fmt
        out = tmp_path / f"events.{fmt}"
        assert ok(pulse_sql(pulse.env, EVENTS_QUERY, "--format", fmt, "--output", str(out))) == ""
        assert out.read_text() == text, fmt
    piped = pulse_sql(pulse.env, EVENTS_QUERY, "--format", "parquet")
    assert piped.returncode == 0, piped.stderr.decode()
    assert from_parquet(piped.stdout) == want
    out = tmp_path / "events.parquet"
    ok(pulse_sql(pulse.env, EVENTS_QUERY, "--format", "parquet", "-o", str(out)))
    assert from_parquet(out.read_bytes()) == want

    # events_raw: every row, every column, the hive columns included.
    (raw, offsets), = pulse.lake_sql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM {events}")
    assert raw == offsets == len(valid)
    lines = ok(pulse_sql(pulse.env, "SELECT * FROM events_raw", "--format", "json")).splitlines()
    assert len(lines) == raw
    first = json.loads(lines[0])
    assert list(first) == [*EVENT_SCHEMA.names, "date", "tenant_id"]
    assert first["occurred_at"].endswith("Z") and first["ingested_at"].endswith("Z")
    counts = ok(pulse_sql(pulse.env, "SELECT (SELECT count(*) FROM events_raw), "
                          "(SELECT count(*) FROM events)", "--format", "csv"))
    assert counts.splitlines()[1] == f"{len(valid)},{len(unique)}"
    for view, plain_sql in [
        ("events_raw", "SELECT * FROM {events}"),
        ("events", "SELECT DISTINCT ON (tenant_id, id) * FROM {events} "
                   "ORDER BY tenant_id, id, kafka_partition, kafka_offset"),
    ]:  # every column of every row, as plain DuckDB reads them
        order = " ORDER BY kafka_partition, kafka_offset"
        result = pulse_sql(pulse.env, f"SELECT * FROM {view}" + order, "--format", "parquet")
        assert result.returncode == 0, result.stderr.decode()
        table = pq.read_table(io.BytesIO(result.stdout))
        assert [tuple(r.values()) for r in table.to_pylist()] == pulse.lake_sql(
            f"SELECT * FROM ({plain_sql})" + order), view

    # dead_letters: the raw bytes, base64 in json and csv.
    letters = ok(pulse_sql(pulse.env, "SELECT raw, reason FROM dead_letters", "--format", "json"))
    got = sorted((base64.b64decode(r["raw"]), r["reason"])
                 for r in map(json.loads, letters.splitlines()))
    assert got == sorted(bad.items())
    rows = list(csv.reader(io.StringIO(ok(pulse_sql(
        pulse.env, "SELECT raw, reason FROM dead_letters", "--format", "csv")))))[1:]
    assert sorted((base64.b64decode(r), reason) for r, reason in rows) == sorted(bad.items())
    order = " ORDER BY kafka_partition, kafka_offset"
    plain = pulse.lake_sql("SELECT * FROM {dead_letters}" + order)
    result = pulse_sql(pulse.env, "SELECT * FROM dead_letters" + order, "--format", "parquet")
    assert result.returncode == 0, result.stderr.decode()
    table = pq.read_table(io.BytesIO(result.stdout))
    assert table.column_names == [*DEAD_LETTER_SCHEMA.names, "date"]
    assert [tuple(r.values()) for r in table.to_pylist()] == plain

    # The prompt, fed from a pipe, answers like the one-shot command.
    lines = ok(pulse_sql(pulse.env, stdin=b"SELECT count(*) AS n\nFROM events;\n.quit\n"))
    assert [line.strip() for line in lines.splitlines()] == [
        "n", "-" * (len(str(len(unique))) + 2), str(len(unique)), "(1 row)"]


# ---- without a broker ----------------------------------------------------------------


def write_lake(root: Path, n: int = 300) -> tuple[list[Event], int]:
    """A small lake written by the worker's own writer: (valid events, dead letters)."""
    now_us = time.time_ns() // 1000
    messages, _, _ = make_stream(seed=4, n=n, now_us=now_us)
    writer = LakeWriter(LakeStore(str(root)), "e0", "events")
    valid: list[Event] = []
    letters = 0
    for partition in range(2):
        flush = Flush(partition, 0)
        for offset, (_, raw, _) in enumerate(messages[partition::2]):
            decoded = decode_event(raw, now_us)
            flush.last = offset
            if isinstance(decoded, Event):
                valid.append(decoded)
                flush.add_event(decoded, offset)
            else:
                letters += 1
                flush.dead.setdefault(now_us // 86_400_000_000, []).append(
                    DeadLetter(raw, decoded.reason, decoded.message, offset, now_us))
        writer.write(flush)
    return valid, letters


def describe(env: dict[str, str], view: str) -> list[list[str]]:
    text = ok(pulse_sql(env, f"SELECT column_name, column_type FROM (DESCRIBE {view})",
                        "--format", "csv"))
    return list(csv.reader(io.StringIO(text)))


def test_an_empty_or_missing_lake_still_has_the_three_views(tmp_path: Path):
    full = {"PULSE_LAKE": str(tmp_path / "full")}
    valid, letters = write_lake(tmp_path / "full")
    assert letters > 0
    (tmp_path / "empty").mkdir()
    for lake in ("empty", "missing"):
        env = {"PULSE_LAKE": str(tmp_path / lake)}
        counts = ok(pulse_sql(env, "SELECT (SELECT count(*) FROM events), "
                              "(SELECT count(*) FROM events_raw), "
                              "(SELECT count(*) FROM dead_letters)", "--format", "csv"))
        assert counts.splitlines()[1] == "0,0,0"
        for view in ("events", "events_raw", "dead_letters"):
            assert describe(env, view) == describe(full, view), (lake, view)
        assert ok(pulse_sql(env, "SELECT * FROM events", "--format", "json")) == ""
    counts = ok(pulse_sql(full, "SELECT (SELECT count(*) FROM events_raw), "
                          "(SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)",
                          "--format", "csv"))
    assert counts.splitlines()[1] == f"{len(valid)},{len(oracle.unique(valid))},{letters}"


def test_a_bad_query_exits_1_with_duckdbs_message(tmp_path: Path):
    env = {"PULSE_LAKE": str(tmp_path / "lake")}
    for query, message in [("SELECT * FROM nope", "Catalog Error: Table with name nope"),
                           ("SELEKT 1", "Parser Error"),
                           ("SELECT no_such_column FROM events", "Binder Error")]:
        result = pulse_sql(env, query)
        assert result.returncode == 1
        assert message in result.stderr.decode()
        assert "Traceback" not in result.stderr.decode() and result.stdout == b""


def test_values_are_rfc3339_base64_and_json_in_csv_and_json(tmp_path: Path):
    env = {"PULSE_LAKE": str(tmp_path / "lake")}
    query = ("SELECT TIMESTAMPTZ '2026-01-02 03:04:05.5+02' AS t, 'ab'::BLOB AS b, 1.5 AS d, "
             "[1, 2] AS l, NULL AS n, 'x,\"y\"' AS s, DATE '2026-01-02' AS day, "
             "'nan'::DOUBLE AS nan")
    line, = ok(pulse_sql(env, query, "--format", "json")).splitlines()
    assert json.loads(line) == {"t": "2026-01-02T01:04:05.500000Z", "b": "YWI=", "d": 1.5,
                                "l": [1, 2], "n": None, "s": 'x,"y"', "day": "2026-01-02",
                                "nan": None}
    rows = list(csv.reader(io.StringIO(ok(pulse_sql(env, query, "--format", "csv")))))
    assert rows == [["t", "b", "d", "l", "n", "s", "day", "nan"],
                    ["2026-01-02T01:04:05.500000Z", "YWI=", "1.5", "[1, 2]", "", 'x,"y"',
                     "2026-01-02", "nan"]]


def test_the_prompt_reads_statements_up_to_semicolons_from_a_pipe(tmp_path: Path):
    env = {"PULSE_LAKE": str(tmp_path / "lake")}
    valid, _ = write_lake(tmp_path / "lake")
    script = (b"SELECT count(*) AS raw\n  FROM events_raw;\n"
              b"SELECT nope;\n"
              b".schema dead_letters\n"
              b".tables\n"
              b"-- a comment; not a statement\n"
              b"SELECT 'a;b' AS text; SELECT 2 AS two;\n"
              b"SELECT 3 AS three")
    result = pulse_sql(env, stdin=script)
    assert result.returncode == 1  # one statement failed, and the rest still ran
    out, err = result.stdout.decode(), result.stderr.decode()
    assert f" {len(valid)}\n(1 row)" in out
    assert 'Binder Error: Referenced column "nope"' in err and "Traceback" not in err
    assert " received_at     | TIMESTAMP WITH TIME ZONE\n date            | DATE\n(8 rows)" in out
    assert " dead_letters\n events\n events_raw\n(3 rows)" in out
    assert " a;b\n(1 row)" in out and " 2\n(1 row)" in out and " 3\n(1 row)" in out
    assert "pulse>" not in out  # no prompts when nobody is typing


def _read_until(master: int, text: bytes, seen: bytearray, after: int = 0,
                timeout: float = 30) -> int:
    """Read the terminal into `seen` until `text` shows after `after`; returns its end."""
    deadline = time.monotonic() + timeout
    while (at := seen.find(text, after)) < 0:
        assert time.monotonic() < deadline, f"{text!r} not shown; got {bytes(seen)!r}"
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen.extend(os.read(master, 4096))
            except OSError:  # the child closed the terminal
                assert text in seen[after:], f"{text!r} not shown; got {bytes(seen)!r}"
    return at + len(text)


def _on_terminal(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    env = {**os.environ, "PULSE_LAKE": str(tmp_path / "lake"), "HOME": str(tmp_path),
           "TERM": "dumb"}
    process = subprocess.Popen([sys.executable, "-m", "pulse.cli", "sql", *args],
                               stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    return process, master


def test_the_prompt_on_a_terminal(tmp_path: Path):
    write_lake(tmp_path / "lake")
    process, master = _on_terminal(tmp_path)
    seen = bytearray()
    try:
        at = _read_until(master, b"pulse> ", seen)
        os.write(master, b"SELECT 6 *\n")
        at = _read_until(master, b"...> ", seen, at)
        os.write(master, b"7 AS answer;\n")
        at = _read_until(master, b" 42\r\n(1 row)", seen, at)
        at = _read_until(master, b"pulse> ", seen, at)
        os.write(master, b"SELECT nope;\n")
        at = _read_until(master, b"Binder Error", seen, at)
        _read_until(master, b"pulse> ", seen, at)
        os.write(master, b"\x04")  # Ctrl-D
        assert process.wait(30) == 0
    finally:
        process.kill()
        os.close(master)


def test_parquet_is_not_written_to_a_terminal(tmp_path: Path):
    process, master = _on_terminal(tmp_path, "SELECT 1", "--format", "parquet")
    seen = bytearray()
    try:
        _read_until(master, b"--output FILE", seen)
        assert process.wait(30) == 2
    finally:
        process.kill()
        os.close(master)


def test_an_s3_lake_gives_the_same_views_with_no_request_per_file_to_spare(
        tmp_path: Path, s3: S3Server):
    """The views over S3 equal the folder's, hive columns included; no object is asked
    for its size (the listing gave it), and while the listing stays the same a session's
    next statement reads no Parquet footer again."""
    write_lake(tmp_path / "lake")
    settings = Settings.from_env(s3.env())
    store = LakeStore.open(s3.new_lake(), settings)
    pafs.copy_files(str(tmp_path / "lake"), store.arrow_path(""),
                    source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=store.arrow_fs)
    folder, on_s3 = Lake(str(tmp_path / "lake")), Lake(store.root, settings)
    try:
        for query in ("SELECT * FROM events_raw ORDER BY tenant_id, id, kafka_partition",
                      "SELECT * FROM events ORDER BY tenant_id, id",
                      "SELECT * FROM dead_letters ORDER BY kafka_partition, kafka_offset",
                      "DESCRIBE events_raw", "DESCRIBE dead_letters"):
            assert on_s3.run(query) == folder.run(query), query
    finally:
        folder.close()
        on_s3.close()
    files = sum(len(entries) for folder, entries in lakefs.lake_dirs(store).items()
                if folder.kind == "events")
    session = Lake(store.root, settings)
    try:
        requests = []
        for _ in range(2):
            since = log_size(s3)
            session.run("SELECT tenant_id, date, count(*), sum(value) FROM events_raw "
                        "GROUP BY ALL")
            requests.append([method for method, _ in requests_to(s3, store, since)])
    finally:
        session.close()
    assert requests == [["GET"] * 2 * files, ["GET"] * files]  # footer and data, then data
