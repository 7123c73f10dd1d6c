"""`pulse sql`: DuckDB over the Parquet lake, for analysts and scripts (contract section 5).

This module owns the three views every lake query starts from:

- `events_raw`: every row of the live event files (files superseded by a compaction
  are left out, as `schemas.lake.live_files` says), with the hive columns `date` and
  `tenant_id`, as plain DuckDB with `hive_partitioning = true` gives them (on S3, a
  pyarrow dataset with hive partitioning, through `pulse.lakefs`);
- `events`: one row per (`tenant_id`, `id`), the first copy by `kafka_partition`,
  `kafka_offset` (a producer may have sent an event twice);
- `dead_letters`: the live dead-letter files, with `date`.

The views name the lake's files, so they are rebuilt before every statement (a
compaction may have replaced files since). Each statement's answer is read whole
before it is printed, so a statement that loses a file to a compaction under it can
simply run again (a few times, backing off), and output never holds half an answer.
An empty or missing lake still gives the three views, with their columns and no rows.

On S3 a view is a pyarrow dataset made with the sizes the listing gave (no request per
file for its size), kept while the listing stays the same, and with it the footers it
has read. It does not fetch local copies as the API does (`pulse.lakecache`): a
statement may filter on `date` or `tenant_id`, which prunes files inside the scan,
while copies are fetched before DuckDB sees the statement. Measured on 1,713 objects on
moto, a GROUP BY over the whole lake: 19-21 s with a size request per file, 11-13 s
without, 7-8 s for a session's next statement (copies: 12 s, then 1 s).

Output formats: `table` (aligned text for people), `csv` (header, then rows), `json`
(JSON Lines) and `parquet`. In `csv` and `json`, timestamps are RFC 3339 (the session
time zone is UTC), bytes are base64 and lists or structs are JSON. A QUERY with several
statements prints the last one's answer. With no QUERY, an interactive prompt reads
statements up to `;` and prints each answer.

No Kafka here: `pulse sql` works with the lake alone.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pulse.lakefs import Entry, LakeStore, LakeStoreError, lake_dirs, live, retry_vanished
from pulse.rollups.metrics import first_copies_sql
from pulse.schemas import lake
from pulse.schemas.arrow import DEAD_LETTER_SCHEMA, EVENT_SCHEMA
from pulse.settings import Settings

VIEWS = ("events", "events_raw", "dead_letters")
ATTEMPTS = 8
BATCH_ROWS = 10_000
MAX_CELL = 80
PROMPT, MORE = "pulse> ", "   ...> "
HISTORY = os.path.join(os.path.expanduser("~"), ".pulse_sql_history")
_HIVE = {lake.EVENTS: {"date": "DATE", "tenant_id": "VARCHAR"}, lake.DEAD_LETTERS: {"date": "DATE"}}
_HIVE_ARROW = {"DATE": pa.date32(), "VARCHAR": pa.string()}


class Lake:
    """An in-memory DuckDB session whose views read one lake."""

    def __init__(self, root: str, settings: Settings | None = None) -> None:
        self.store = LakeStore.open(root, settings)
        self.root = self.store.uri("")
        self.db = duckdb.connect(":memory:")
        self.db.execute("SET TimeZone = 'UTC'")
        self.db.execute("SET parquet_metadata_cache = true")  # views rebind every statement
        self._listed: dict[str, list[tuple[str, Entry]]] = {}
        """Per view over S3, the listing its dataset was made from (see `_view`)."""

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> None:
        """(Re)build the views over the files live right now."""
        files: dict[str, dict[str, Entry]] = {lake.EVENTS: {}, lake.DEAD_LETTERS: {}}
        for folder, entries in lake_dirs(self.store).items():
            by_rel = {folder.file(e.name): e for e in entries}
            files[folder.kind].update((rel, by_rel[rel]) for rel in live(folder, entries))
        self._view("events_raw", files[lake.EVENTS], EVENT_SCHEMA, _HIVE[lake.EVENTS])
        self.db.execute(
            f"CREATE OR REPLACE VIEW events AS {first_copies_sql('events_raw')}")
        self._view("dead_letters", files[lake.DEAD_LETTERS], DEAD_LETTER_SCHEMA,
                   _HIVE[lake.DEAD_LETTERS])

    def _view(self, name: str, files: dict[str, Entry], schema: pa.Schema,
              hive: dict[str, str]) -> None:
        """The view `name` over `files` (lake-relative path -> its listing)."""
        if self.store.local or not files:
            paths = [self.store.arrow_path(r) for r in files]
            self.db.execute(f"CREATE OR REPLACE VIEW {name} AS {_scan(paths, schema, hive)}")
            self._listed.pop(name, None)
            return
        # DuckDB cannot read S3 here: scan a pyarrow dataset, hive columns last as DuckDB
        # puts them, so both kinds of lake give the same columns in the same order. The
        # listing's sizes spare a request per file; while the listing stays the same
        # (names, sizes and times: the same objects), the dataset is kept, and with it
        # the Parquet footers it has read, so a prompt's next statement reads no footer.
        listing = sorted(files.items())
        if self._listed.get(name) != listing:
            fields = pa.schema([pa.field(k, _HIVE_ARROW[v]) for k, v in hive.items()])
            dataset = self.store.dataset(list(files), schema,
                                         {r: e.size for r, e in files.items()}, fields)
            self.db.register(f"{name}_files", dataset)
            self._listed[name] = listing
        columns = ", ".join(_ident(c) for c in [*schema.names, *hive])
        self.db.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM {name}_files")

    def statements(self, text: str) -> list[str]:
        """The statements of `text` (raises `duckdb.ParserException` on bad syntax)."""
        return [s.query for s in self.db.extract_statements(text)]

    def run(self, statement: str) -> pa.Table | None:
        """The whole answer of one statement over fresh views (None: it has none).

        When a compaction deletes a file under it, it runs again, a little later.
        """
        def attempt() -> pa.Table | None:
            self.refresh()
            relation = self.db.sql(statement)
            return None if relation is None else relation.to_arrow_table()

        return retry_vanished(ATTEMPTS, attempt,
                              wait=lambda n: time.sleep(min(0.05 * 2**n, 1.0)))


def _scan(paths: list[str], schema: pa.Schema, hive: dict[str, str]) -> str:
    """SQL reading `paths` like plain DuckDB with hive partitioning; typed nothing if none.

    DuckDB puts hive columns after the file's, in name order; `hive` lists them so.
    """
    if not paths:
        return _empty(schema, hive)
    files = ", ".join(_quote(p) for p in paths)
    types = ", ".join(f"{_quote(k)}: {v}" for k, v in hive.items())
    return (f"SELECT * FROM read_parquet([{files}], hive_partitioning = true, "
            f"hive_types = {{{types}}}, union_by_name = true)")


def _empty(schema: pa.Schema, hive: dict[str, str]) -> str:
    types = duckdb.from_arrow(schema.empty_table()).types
    columns = [f"CAST(NULL AS {t}) AS {_ident(n)}"
               for n, t in [*zip(schema.names, types, strict=True), *hive.items()]]
    return f"SELECT {', '.join(columns)} WHERE false"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# ---- values as text ------------------------------------------------------------------


def _rfc3339(value: dt.datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _json_value(value: Any) -> Any:
    """`value` as something `json.dumps` writes faithfully."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dt.datetime):
        return _rfc3339(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, pa.MonthDayNano):  # an INTERVAL, as an ISO 8601 duration
        return f"P{value.months}M{value.days}DT{value.nanoseconds / 1e9:g}S"
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, float | int | str | decimal.Decimal):
        return value
    plain = _json_value(value)
    return plain if isinstance(plain, str) else json.dumps(plain)


def _cell(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bytes):
        text = repr(value)
    else:
        text = str(_csv_value(value))
    text = text.replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


# ---- output --------------------------------------------------------------------------


def _rows(table: pa.Table) -> Iterator[tuple]:
    for batch in table.to_batches(BATCH_ROWS):
        yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)


def _is_number(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(
        type_)


def write_table(table: pa.Table, out: IO[str]) -> None:
    """psql-style aligned text: numbers right, text left, a row count last."""
    if not table.num_columns:
        return
    names = table.column_names
    rows = [tuple(_cell(v) for v in row) for row in _rows(table)]
    numeric = [_is_number(t) for t in table.schema.types]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]

    def line(cells: tuple[str, ...] | list[str], header: bool = False) -> str:
        parts = [c.rjust(w) if num and not header else c.ljust(w)
                 for c, w, num in zip(cells, widths, numeric, strict=True)]
        return (" " + " | ".join(parts)).rstrip()

    out.write(line(names, header=True) + "\n")
    out.write("-" + "-+-".join("-" * w for w in widths) + "-\n")
    for row in rows:
        out.write(line(row) + "\n")
    out.write(f"({len(rows)} row{'' if len(rows) == 1 else 's'})\n")


def write_csv(table: pa.Table, out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    writer.writerows([_csv_value(v) for v in row] for row in _rows(table))


def write_json(table: pa.Table, out: IO[str]) -> None:
    names = table.column_names
    for row in _rows(table):
        record = {n: _json_value(v) for n, v in zip(names, row, strict=True)}
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")


def write_parquet(table: pa.Table, out: IO[bytes]) -> None:
    pq.write_table(table, out, compression="zstd")


WRITERS: dict[str, Callable[[pa.Table, IO[Any]], None]] = {
    "table": write_table, "csv": write_csv, "json": write_json, "parquet": write_parquet,
}


@contextmanager
def _destination(output: str | None, binary: bool) -> Iterator[IO[Any]]:
    if output is None:
        stream = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    with open(output, "wb") if binary else open(output, "w", encoding="utf-8",
                                                  newline="") as fh:
        yield fh


# ---- entry points --------------------------------------------------------------------


def run_sql(settings: Settings, query: str | None, fmt: str, output: str | None) -> int:
    """`pulse sql`: run `query` (or the prompt when None); returns the exit code."""
    try:
        session = Lake(settings.lake, settings)
        session.store.check()
    except LakeStoreError as exc:
        return _fail(f"pulse sql: {exc}", 2)
    try:
        if query is None:
            return _prompt(session, fmt, output)
        return _one_shot(session, query, fmt, output)
    except BrokenPipeError:  # e.g. `pulse sql ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        session.close()


def _one_shot(session: Lake, query: str, fmt: str, output: str | None) -> int:
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        return _fail("pulse sql: refusing to write Parquet to a terminal; use --output FILE "
                     "or redirect it: pulse sql --format parquet '...' > out.parquet", 2)
    answer = None
    try:
        for statement in session.statements(query):
            answer = session.run(statement)
    except duckdb.Error as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"pulse sql: cannot read the lake at {session.root}: {exc}", 1)
    try:
        with _destination(output, binary=fmt == "parquet") as out:
            if answer is not None:
                WRITERS[fmt](answer, out)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _fail(f"pulse sql: cannot write {output}: {exc.strerror or exc}", 1)
    return 0


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


# ---- the prompt ----------------------------------------------------------------------

HELP = """\
End a statement with ';' (it may span lines). Views: events, events_raw, dead_letters.
.tables          list views and tables
.schema [VIEW]   columns of a view (all three if none)
.help            this text
.quit            leave (or Ctrl-D)
"""


def _prompt(session: Lake, fmt: str, output: str | None) -> int:
    """Read statements from stdin; errors are shown and the prompt goes on.

    On a terminal there is line editing and history; fed from a pipe, there are no
    prompts and the exit code is 1 if any statement failed.
    """
    if fmt == "parquet":
        return _fail("pulse sql: the prompt prints table, csv or json; give a QUERY to write "
                     "Parquet", 2)
    interactive = sys.stdin.isatty()
    if interactive:
        _start_readline()
        print(f"pulse sql over {session.root} (DuckDB {duckdb.__version__}); "
              "views events, events_raw, dead_letters.\n.help for help, Ctrl-D to quit.",
              file=sys.stderr)
    failed = False
    with _destination(output, binary=False) as out:
        for text in _inputs(interactive):
            if text.startswith("."):
                keep_going, ok = _dot_command(session, text, fmt, out)
                if not keep_going:
                    break
            else:
                ok = _run_text(session, text, fmt, out)
            failed = failed or not ok
            out.flush()
    return 1 if failed and not interactive else 0


def _inputs(interactive: bool) -> Iterator[str]:
    """Complete statements (or dot commands) from stdin until EOF; Ctrl-C drops a draft."""
    buffer: list[str] = []
    while True:
        try:
            line = input((MORE if buffer else PROMPT) if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer.clear()
            print(file=sys.stderr)
            continue
        if not buffer and (not line.strip() or line.strip().startswith(".")):
            if line.strip():
                yield line.strip()
            continue
        buffer.append(line)
        text = "\n".join(buffer)
        if sqlite3.complete_statement(text):  # knows quotes and comments, as DuckDB's do
            buffer.clear()
            yield text
    if "".join(buffer).strip():
        yield "\n".join(buffer)
    if interactive:
        print(file=sys.stderr)


def _run_text(session: Lake, text: str, fmt: str, out: IO[str]) -> bool:
    """Run each statement of `text`, printing each answer; stop at the first error."""
    try:
        for statement in session.statements(text):
            answer = session.run(statement)
            if answer is not None:
                WRITERS[fmt](answer, out)
    except duckdb.Error as exc:
        print(str(exc), file=sys.stderr)
        return False
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return False
    except OSError as exc:
        print(f"cannot read the lake at {session.root}: {exc}", file=sys.stderr)
        return False
    return True


def _dot_command(session: Lake, command: str, fmt: str, out: IO[str]) -> tuple[bool, bool]:
    """Returns (keep going, succeeded)."""
    name, _, arg = command.partition(" ")
    arg = arg.strip().rstrip(";")
    if name in (".quit", ".exit", ".q"):
        return False, True
    if name == ".help":
        out.write(HELP)
        return True, True
    if name == ".tables":
        return True, _run_text(session, "SELECT name FROM (SHOW TABLES) ORDER BY name", fmt, out)
    if name == ".schema":
        views = [arg] if arg else list(VIEWS)
        return True, all([_run_text(session, "SELECT column_name, column_type FROM "
                                    f"(DESCRIBE {_ident(v)})", fmt, out) for v in views])
    print(f"unknown command {name}; .help lists the commands", file=sys.stderr)
    return True, False


def _start_readline() -> None:
    try:
        import readline
    except ImportError:  # e.g. Windows: plain input() still works
        return
    import atexit

    try:
        readline.read_history_file(HISTORY)
    except OSError:
        pass
    readline.set_history_length(1000)
    atexit.register(_save_history, readline)


def _save_history(readline: Any) -> None:
    try:
        readline.write_history_file(HISTORY)
    except OSError:
        pass
