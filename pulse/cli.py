"""The `pulse` command. Each subcommand imports its layer lazily, so `pulse api` never
loads Faust and `pulse sql` needs no broker.

Every flag falls back to its `PULSE_*` variable (shown in `--help`); nothing reads the
environment at import time.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from .settings import SETTING_OF, Settings, SettingsError

_FLAGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "kafka": ("--kafka", "kafka_bootstrap", {"metavar": "HOST:PORT"}),
    "lake": ("--lake", "lake", {"metavar": "PATH"}),
    "state_dir": ("--state-dir", "state_dir", {"metavar": "PATH"}),
    "partitions": ("--partitions", "partitions", {"type": int}),
}
"""Flag -> (option, the `Settings` field it overrides, click options)."""


def settings_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the flags that override settings; each says what it sets and its env name."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            option, attr, extra = _FLAGS[name]
            setting = SETTING_OF[attr]
            fn = click.option(option, help=f"{setting.help} [env: {setting.env}]", **extra)(fn)
        return fn

    return decorate


def load_settings(**flags: Any) -> Settings:
    overrides = {_FLAGS[k][1]: v for k, v in flags.items() if k in _FLAGS}
    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def check_api_keys(settings: Settings) -> None:
    """`pulse api` and `pulse up` read the keys and the cursor secret: refuse bad ones
    before starting anything (no other command reads them, so none other refuses them)."""
    try:
        settings.read_api_keys()
        settings.read_cursor_secret()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="campaign-pulse", prog_name="pulse")
def main() -> None:
    """Pulse: streaming analytics for conversational campaigns."""


@main.command()
@settings_options("kafka", "partitions")
def broker(**flags: Any) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) and create the topics.

    Listens on the host and port of PULSE_KAFKA_BOOTSTRAP; Ctrl-C stops it.
    """
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    from pulse.streams.broker import run_broker

    sys.exit(run_broker(settings))


@main.command()
@settings_options("lake", "state_dir", "partitions")
@click.option("--kafka", metavar="HOST:PORT",
              help="use this Kafka instead of starting the embedded broker")
@click.option("--simulate", is_flag=True,
              help="also run demo traffic (pulse simulate), after a history of it")
@click.option("--backfill-days", default=30.0, show_default=True,
              help="days of history --simulate sends first (0: none, or the lake has events)")
@click.option("--rate", default=0.0, show_default=True,
              help="live demo messages per second (0 = as dense as the history)")
@click.option("--insecure", is_flag=True, help="API without keys (loopback only)")
def up(kafka: str | None, simulate: bool, backfill_days: float, rate: float, insecure: bool,
       **flags: Any) -> None:
    """Run everything on this machine: broker, worker, API (and demo traffic).

    The embedded broker listens on PULSE_KAFKA_BOOTSTRAP unless --kafka names a
    broker that is already running. With --simulate, the dashboard URL comes once the
    history is in. Ctrl-C or SIGTERM stops everything.
    """
    settings = load_settings(kafka=kafka, **flags)
    check_api_keys(settings)
    from .supervisor import Supervisor

    sys.exit(Supervisor(settings, external_kafka=kafka is not None, simulate=simulate,
                        rate=rate, insecure=insecure, backfill_days=backfill_days).run())


@main.command()
@settings_options("kafka", "partitions")
@click.option("--wait", default=120.0, show_default=True,
              help="seconds to wait for the broker to answer")
def topics(wait: float, **flags: Any) -> None:
    """Create every topic Pulse needs on PULSE_KAFKA_BOOTSTRAP (idempotent), then exit."""
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    import asyncio

    from pulse.kafka import BrokerUnavailable, wait_for_broker
    from pulse.streams.broker import BrokerError, ensure_topics

    async def go() -> list[str]:
        await wait_for_broker(settings.kafka_bootstrap, wait, "pulse topics")
        return await ensure_topics(settings)

    try:
        names = asyncio.run(go())
    except (BrokerUnavailable, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"pulse topics: ready on {settings.kafka_bootstrap} "
               f"({settings.partitions} partitions): {', '.join(names)}")


@main.command()
@settings_options("kafka", "lake", "state_dir", "partitions")
def worker(**flags: Any) -> None:
    """Run one worker (any number may share the load; each needs its own state dir)."""
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    from pulse.streams.worker import run_worker

    run_worker(settings)


@main.command()
@settings_options("kafka", "lake")
@click.option("--host", help=f"{SETTING_OF['api_host'].help} [env: {SETTING_OF['api_host'].env}]")
@click.option("--port", type=int,
              help=f"{SETTING_OF['api_port'].help} [env: {SETTING_OF['api_port'].env}]")
@click.option("--insecure", is_flag=True,
              help="no API keys at all (refused unless the host is loopback)")
def api(host: str | None, port: int | None, insecure: bool, **flags: Any) -> None:
    """Serve the HTTP API and the dashboard (run as many as you like)."""
    settings = load_settings(**flags).replace(
        **{k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None})
    check_api_keys(settings)
    setup_logging(settings.log_level)
    from pulse.api.server import run_api

    run_api(settings, insecure=insecure)


@main.command()
@settings_options("kafka")
@click.option("--tenants", default=3, show_default=True, help="number of tenants")
@click.option("--campaigns", default=3, show_default=True, help="campaigns per tenant")
@click.option("--customers", default=1000, show_default=True,
              help="customers each tenant works at a time")
@click.option("--backfill-days", default=None, type=float,
              help="first send this many days of history (event times over the last N days), "
                   "as fast as the broker takes it  [default: 0, or 2 with --rate 0]")
@click.option("--rate", default=200.0, show_default=True,
              help="live messages per second after the history (0 = the history's own pace)")
@click.option("--duration", default=None, type=float, help="stop after this many seconds")
@click.option("--events", default=None, type=int,
              help="stop after this many messages (duplicates and invalid ones included); "
                   "with --rate 0 they make up the whole history")
@click.option("--seed", default=None, type=int, help="same seed -> same events, ids included")
@click.option("--start", default=None,
              help="where the history starts, or live traffic when there is none "
                   "(RFC 3339 or YYYY-MM-DD); default: --backfill-days ago")
@click.option("--duplicates", default=0.02, show_default=True, help="share of events sent twice")
@click.option("--late", default=0.02, show_default=True, help="share of events hours to days late")
@click.option("--invalid", default=0.005, show_default=True, help="share of invalid messages")
def simulate(**flags: Any) -> None:
    """Run customer and tenant actors that produce realistic events to PULSE_TOPIC."""
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    from pulse.streams.simulate import run_simulate

    options = {k: v for k, v in flags.items() if k not in _FLAGS}
    sys.exit(run_simulate(settings, **options))


@main.command()
@settings_options("lake")
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", show_default=True, help="output format")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="write to this file (required for parquet unless stdout is a pipe)")
def sql(query: str | None, fmt: str, output: str | None, **flags: Any) -> None:
    """Run DuckDB SQL over the lake: views events, events_raw, dead_letters.

    With no QUERY, opens an interactive prompt.
    """
    settings = load_settings(**flags)
    from pulse.api.sql import run_sql

    sys.exit(run_sql(settings, query, fmt, output))


@main.command()
@settings_options("kafka", "lake")
@click.option("--min-age", default=600.0, show_default=True,
              help="only merge files older than this many seconds")
@click.option("--dry-run", is_flag=True, help="say what would be merged, change nothing")
def compact(min_age: float, dry_run: bool, **flags: Any) -> None:
    """Merge small lake files, per folder and input partition, safely under readers; then
    summarize each tenant's final days, which long ranges and funnels read."""
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    from pulse.streams.compact import run_compact

    sys.exit(run_compact(settings, min_age=min_age, dry_run=dry_run))


@main.command()
@settings_options("kafka", "lake", "partitions")
@click.option("--force", is_flag=True,
              help="run even though the journal was written to seconds ago")
def replay(force: bool, **flags: Any) -> None:
    """Rebuild the rollups from the lake (stop the workers first). Idempotent."""
    settings = load_settings(**flags)
    setup_logging(settings.log_level)
    from pulse.streams.replay import run_replay

    sys.exit(run_replay(settings, force))


@main.group()
def bench() -> None:
    """Benchmarks; each prints one line with its ratio to a baseline run beside it."""
    # SIGTERM as Ctrl-C: unwind, so the broker and workers a benchmark started stop too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


LAKE_KINDS = click.Choice(["folder", "s3"])


@bench.command("ingest")
@click.option("--events", "n", default=2_000_000, show_default=True, help="messages to ingest")
@click.option("--lake", type=LAKE_KINDS, default="folder", show_default=True,
              help="s3: also ingest into an s3:// lake (a local moto_server), beside the folder")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_ingest(n: int, lake: str, quick: bool) -> None:
    """One worker vs a bare aiokafka getmany() drain of the same topic."""
    from pulse.benchmarks.ingest import run_ingest

    sys.exit(run_ingest(50_000 if quick else n, quick, lake))


@bench.command("query")
@click.option("--events", "n", default=10_000_000, show_default=True,
              help="events in the generated lake (100 days, 3 tenants)")
@click.option("--runs", default=20, show_default=True, help="timed runs of each query")
@click.option("--lake", type=LAKE_KINDS, default="folder", show_default=True,
              help="s3: Pulse over the same files in an s3:// lake (a local moto_server) "
              "vs over the folder")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_query(n: int, runs: int, lake: str, quick: bool) -> None:
    """Lake-backed reports vs hand-written DuckDB over the same files, before and after
    compaction; then 90-day answers at 1 and 4 clients, with and without summaries."""
    from pulse.benchmarks.query import run_query

    sys.exit(run_query(200_000 if quick else n, 3 if quick else runs, quick, lake))


@bench.command("api")
@click.option("--seconds", default=20.0, show_default=True, help="load duration per target")
@click.option("--clients", default=32, show_default=True, help="concurrent clients")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_api(seconds: float, clients: int, quick: bool) -> None:
    """A rollup-backed endpoint vs a Starlette hello-JSON served the same way."""
    from pulse.benchmarks.api import run_api_bench

    sys.exit(run_api_bench(3.0 if quick else seconds, 8 if quick else clients, quick))


@bench.command("freshness")
@click.option("--rate", default=5000, show_default=True, help="events produced per second")
@click.option("--seconds", default=60.0, show_default=True, help="how long to produce")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_freshness(rate: int, seconds: float, quick: bool) -> None:
    """Time from produce to visible in an API answer, at a steady rate."""
    from pulse.benchmarks.freshness import run_freshness

    sys.exit(run_freshness(1000 if quick else rate, 10.0 if quick else seconds, quick))


@bench.command("peers")
@click.option("--events", "n", default=500_000, show_default=True, help="messages to process")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_peers(n: int, quick: bool) -> None:
    """The ingest job written for each system a user might pick instead, beside Pulse."""
    from pulse.benchmarks.peers import run_peers

    sys.exit(run_peers(20_000 if quick else n, quick))


@bench.command("iceberg")
@click.option("--rate", default=2000, show_default=True, help="events produced per second")
@click.option("--seconds", default=90.0, show_default=True, help="how long to produce")
@click.option("--commit-seconds", default=30.0, show_default=True,
              help="PULSE_ICEBERG_COMMIT_SECONDS of both workers")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_iceberg(rate: int, seconds: float, commit_seconds: float, quick: bool) -> None:
    """Iceberg commit lag (file written -> in a snapshot) with two workers committing."""
    from pulse.benchmarks.iceberg import run_iceberg

    sys.exit(run_iceberg(500 if quick else rate, 15.0 if quick else seconds,
                         3.0 if quick else commit_seconds, quick))


@bench.command("memory")
@click.option("--sizes", default="10000000,50000000", show_default=True,
              help="events held inside rollup retention, comma-separated")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_memory(sizes: str, quick: bool) -> None:
    """Worker peak RSS per event held inside rollup retention."""
    from pulse.benchmarks.memory import run_memory

    counts = [100_000] if quick else [int(s) for s in sizes.split(",") if s.strip()]
    sys.exit(run_memory(counts, quick))


@bench.command("recovery")
@click.option("--events", "n", default=20_000_000, show_default=True,
              help="events the worker holds when it is killed (and a tenth of it first)")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_recovery(n: int, quick: bool) -> None:
    """Worker restart after kill -9, and a fresh API's start, at N and N/10 events."""
    from pulse.benchmarks.recovery import run_recovery

    sys.exit(run_recovery(20_000 if quick else n, quick))


@bench.command("scale")
@click.option("--events", "n", default=400_000, show_default=True, help="events per run")
@click.option("--tenants", default=1, show_default=True, help="tenants the events belong to")
@click.option("--workers", default="1,2,4", show_default=True,
              help="worker counts to run, comma-separated")
@click.option("--quick", is_flag=True, help="a small run that checks it works (CI)")
def bench_scale(n: int, tenants: int, workers: str, quick: bool) -> None:
    """Each worker's share of one tenant's events, for 1, 2 and 4 workers."""
    from pulse.benchmarks.scale import run_scale

    counts = [2] if quick else [int(w) for w in workers.split(",") if w.strip()]
    sys.exit(run_scale(20_000 if quick else n, tenants, counts, quick))


@main.command()
def schema() -> None:
    """Print the JSON Schema of an event, for producers."""
    import json

    from pulse.schemas.jsonschema import event_json_schema

    click.echo(json.dumps(event_json_schema(), indent=2))


if __name__ == "__main__":
    main()
