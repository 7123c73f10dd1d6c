"""Every `PULSE_*` setting, read once from an injectable environment.

This module is a leaf: it imports nothing from Pulse, so every layer can take a
`Settings` without pulling in Kafka, Faust or Starlette. Nothing reads the environment
at import time; `Settings.from_env()` is called by the CLI (flags override it) and by
tests with a plain dict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulse.schemas.events import is_tenant_id


class SettingsError(ValueError):
    """A setting has a value Pulse cannot use; the message names the variable."""


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be greater than 0, got {value}")
    return value


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port (1-65535), got {value}")
    return value


def _non_negative_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def _positive_float(name: str, raw: str) -> float:
    value = _non_negative_float(name, raw)
    if value == 0:
        raise SettingsError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _raw(name: str, raw: str) -> str:
    return raw


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise SettingsError(f"{name} must not be empty")
    return raw.strip()


def _secret(name: str, raw: str) -> str:
    if len(raw) < 16:
        raise SettingsError(f"{name} must be at least 16 characters long (it signs page "
                            f"cursors; e.g. the output of `openssl rand -hex 32`)")
    return raw


LOG_LEVELS = ("debug", "info", "warning", "error")


def _lake(name: str, raw: str) -> str:
    root = _text(name, raw)
    if "://" in root and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", root):
        raise SettingsError(f"{name} must be a folder or s3://bucket/prefix (a bucket name of "
                            f"lowercase letters, digits, dots and dashes), got {raw!r}")
    return root


def _endpoint(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    match = re.fullmatch(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:(\d{1,5}))?", url)
    if match is None or (match.group(4) and not 0 < int(match.group(4)) < 65536):
        raise SettingsError(f"{name} must be http(s)://HOST[:PORT] (the S3 endpoint), got "
                            f"{raw!r}")
    return url


def _catalog(name: str, raw: str) -> str:
    url = raw.strip()
    if url.lower() == "none":
        return "none"
    if not re.fullmatch(r"(sqlite|postgresql(\+[a-z0-9]+)?)://.*", url):
        raise SettingsError(f"{name} must be none, sqlite:///PATH or postgresql://USER:PASSWORD@"
                            f"HOST:PORT/DB (an Iceberg SQL catalog), got {raw!r}")
    return url


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise SettingsError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _bootstrap(name: str, raw: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"{name} must be HOST:PORT[,HOST:PORT...], got {raw!r}")
    if not servers:
        raise SettingsError(f"{name} must not be empty")
    return ",".join(servers)


def _funnel_steps(name: str, raw: str) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in raw.split(",") if s.strip())
    if not steps:
        raise SettingsError(f"{name} must list at least one step, e.g. picked_up,interested")
    if len(set(steps)) != len(steps):
        raise SettingsError(f"{name} lists a step twice: {raw!r}")
    if len(steps) > 16:
        raise SettingsError(f"{name} allows at most 16 steps, got {len(steps)}")
    if any(len(s) > 128 for s in steps):
        raise SettingsError(f"{name}: a step label is longer than 128 characters")
    return steps


def parse_api_keys(name: str, raw: str) -> dict[str, str]:
    """`key1=tenantA,key2=*` -> {key: tenant}; `*` is the admin scope."""
    keys: dict[str, str] = {}
    for item in raw.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        key, sep, tenant = item.partition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not tenant:
            raise SettingsError(f"{name} entries must look like key=tenant or key=*, got {item!r}")
        if len(key) < 8:
            raise SettingsError(f"{name}: every key must be at least 8 characters long")
        if tenant != "*" and not is_tenant_id(tenant):
            raise SettingsError(f"{name}: {tenant!r} is not a valid tenant id")
        if key in keys:
            raise SettingsError(f"{name}: a key is listed twice")
        keys[key] = tenant
    return keys


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one Pulse process; each field's default is the setting's."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "analytics-events"
    dlq_topic: str = "analytics-events-dlq"
    lake: str = "./lake"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_keys: str | None = None
    """The raw `PULSE_API_KEYS` text: only `pulse api` and `pulse up` read keys, so only
    they parse it (`read_api_keys`); one environment file serves every process."""
    api_keys_file: str | None = None
    funnel_steps: tuple[str, ...] = ("picked_up", "interested", "qualified")
    engaged_seconds: float = 30.0
    state_dir: str = "./state"
    partitions: int = 8
    replication_factor: int = 1
    retention_days: int = 35
    lake_flush_rows: int = 200_000
    lake_flush_seconds: float = 5.0
    journal_retention_hours: int = 72
    checkpoint_seconds: float = 60.0
    group: str = "pulse"
    log_level: str = "info"
    iceberg_catalog: str | None = None
    """None: the default (sqlite in a folder lake, no Iceberg for an s3:// lake)."""
    iceberg_commit_seconds: float = 30.0
    lake_cache_mb: float = 2048.0
    s3_endpoint: str | None = None
    aws_region: str = "us-east-1"
    aws_max_attempts: int = 3
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    cursor_secret: str | None = field(default=None, repr=False)
    """The raw `PULSE_CURSOR_SECRET` text: only the API signs cursors, so only it checks
    it (`read_cursor_secret`), as with `api_keys`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every `PULSE_*` variable once; `overrides` (from flags) win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            if raw is not None and raw != "":
                values[setting.attr] = setting.parse(setting.env, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def read_api_keys(self) -> dict[str, str] | None:
        """The API keys of `PULSE_API_KEYS`, else of `PULSE_API_KEYS_FILE` (None: neither).

        Raises `SettingsError` naming the variable when an entry is not usable.
        """
        if self.api_keys is not None:
            return parse_api_keys("PULSE_API_KEYS", self.api_keys)
        if self.api_keys_file is not None:
            return _read_keys_file(self.api_keys_file)
        return None

    def read_cursor_secret(self) -> bytes | None:
        """The key of `PULSE_CURSOR_SECRET` (None: unset, so each API process makes its own).

        Raises `SettingsError` naming the variable when it is too short to be a secret.
        """
        if self.cursor_secret is None:
            return None
        return _secret("PULSE_CURSOR_SECRET", self.cursor_secret).encode()

    @property
    def ingest_group(self) -> str:
        """The ingest stage's consumer group; `PULSE_GROUP` itself is the rollups'."""
        return f"{self.group}-ingest"

    @property
    def client_id(self) -> str:
        """The Kafka client id of this worker's consumers, the same on every start on this
        host with this `PULSE_STATE_DIR`: a broker names each group member after its
        client id, so a restarted worker can find the members its killed run left in
        the groups (see `pulse.kafka.evict_members`). Workers on other hosts, or with
        other state folders (as each worker must have), have other ids."""
        place = f"{socket.gethostname()}\0{os.path.realpath(self.state_dir)}"
        return f"pulse-{hashlib.sha256(place.encode()).hexdigest()[:12]}"

    @property
    def bootstrap_host_port(self) -> tuple[str, int]:
        host, _, port = self.kafka_bootstrap.split(",")[0].rpartition(":")
        return host.strip("[]"), int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _as_env(value: object) -> str:
    """A default as it would be written in the environment."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Setting:
    """One environment variable: the field it sets, what it means and how it is read."""

    env: str
    attr: str
    help: str
    parse: Callable[[str, str], Any]

    @property
    def default(self) -> str | None:
        """The field's default as an environment value (None: unset by default)."""
        value = _FIELDS[self.attr].default
        return None if value is None else _as_env(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("PULSE_KAFKA_BOOTSTRAP", "kafka_bootstrap",
            "Kafka bootstrap servers (HOST:PORT[,HOST:PORT])", _bootstrap),
    Setting("PULSE_TOPIC", "topic", "input topic", _text),
    Setting("PULSE_DLQ_TOPIC", "dlq_topic", "dead-letter topic", _text),
    Setting("PULSE_LAKE", "lake", "root of the Parquet lake: a folder or s3://bucket/prefix",
            _lake),
    Setting("PULSE_API_HOST", "api_host", "API bind host", _text),
    Setting("PULSE_API_PORT", "api_port", "API bind port", _port),
    Setting("PULSE_API_KEYS", "api_keys",
            "key1=tenantA,key2=tenantB,key3=* (* = admin, all tenants); read by "
            "pulse api and pulse up only", _raw),
    Setting("PULSE_API_KEYS_FILE", "api_keys_file",
            "file holding PULSE_API_KEYS entries (one per line), kept out of process lists",
            _text),
    Setting("PULSE_FUNNEL_STEPS", "funnel_steps", "ordered funnel steps", _funnel_steps),
    Setting("PULSE_ENGAGED_SECONDS", "engaged_seconds",
            "a conversation of at least this many seconds is engaged", _non_negative_float),
    Setting("PULSE_STATE_DIR", "state_dir", "worker-local state (a cache)", _text),
    Setting("PULSE_PARTITIONS", "partitions", "partitions of every topic Pulse creates",
            _positive_int),
    Setting("PULSE_REPLICATION_FACTOR", "replication_factor",
            "replicas of every topic Pulse creates (3 on a production cluster)", _positive_int),
    Setting("PULSE_RETENTION_DAYS", "retention_days",
            "days of event time the rollups keep (older ranges come from the lake)",
            _positive_int),
    Setting("PULSE_LAKE_FLUSH_ROWS", "lake_flush_rows",
            "rows buffered per input partition before a lake flush", _positive_int),
    Setting("PULSE_LAKE_FLUSH_SECONDS", "lake_flush_seconds",
            "longest time an event waits in memory before its lake flush", _positive_float),
    Setting("PULSE_JOURNAL_RETENTION_HOURS", "journal_retention_hours",
            "hours the rollup journal and the keyed topic keep records (checkpoints cover "
            "what they drop)", _positive_int),
    Setting("PULSE_CHECKPOINT_SECONDS", "checkpoint_seconds",
            "longest time between two checkpoints of a keyed partition's state", _positive_float),
    Setting("PULSE_GROUP", "group",
            "consumer-group prefix and Faust app id; workers sharing it share the load", _text),
    Setting("PULSE_LOG_LEVEL", "log_level", "debug, info, warning or error", _log_level),
    Setting("PULSE_ICEBERG_CATALOG", "iceberg_catalog",
            "SQLAlchemy URL of the Iceberg SQL catalog (sqlite:///<lake>/catalog.db for a "
            "folder lake; none for s3:// unless set); none turns Iceberg off", _catalog),
    Setting("PULSE_ICEBERG_COMMIT_SECONDS", "iceberg_commit_seconds",
            "longest time a lake file waits before it is committed to Iceberg",
            _positive_float),
    Setting("PULSE_LAKE_CACHE_MB", "lake_cache_mb",
            "most megabytes of local copies of an s3:// lake's files that each API "
            "process keeps under PULSE_STATE_DIR/lake-cache (0: none)",
            _non_negative_float),
    # The standard AWS variables, for an s3:// lake (pyarrow does not read the endpoint
    # ones itself). The S3-specific endpoint comes last, so it wins over the general one.
    Setting("AWS_ENDPOINT_URL", "s3_endpoint", "S3 endpoint of a non-AWS store", _endpoint),
    Setting("AWS_ENDPOINT_URL_S3", "s3_endpoint",
            "S3 endpoint of a non-AWS store (path-style addressing)", _endpoint),
    Setting("AWS_DEFAULT_REGION", "aws_region", "region to sign S3 requests for", _text),
    Setting("AWS_REGION", "aws_region", "region to sign S3 requests for", _text),
    Setting("AWS_MAX_ATTEMPTS", "aws_max_attempts",
            "tries of one S3 request before its error is reported", _positive_int),
    Setting("AWS_ACCESS_KEY_ID", "aws_access_key_id", "S3 access key", _text),
    Setting("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key", "S3 secret key", _text),
    Setting("AWS_SESSION_TOKEN", "aws_session_token", "S3 session token", _text),
    Setting("PULSE_CURSOR_SECRET", "cursor_secret",
            "secret (16+ characters) signing page cursors; the same on every API process "
            "behind one address (unset: random per process); read by pulse api and pulse "
            "up only", _raw),
)
SETTING_OF = {s.attr: s for s in SETTINGS if s.env.startswith("PULSE_")}
"""Each setting by the `Settings` field it sets (the CLI's flags document themselves
from it)."""


def _read_keys_file(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_api_keys("PULSE_API_KEYS_FILE", fh.read())
    except OSError as exc:
        raise SettingsError(f"PULSE_API_KEYS_FILE: cannot read {path}: {exc.strerror}") from None
