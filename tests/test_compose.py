"""The production deployment files, checked statically (no Docker engine, no broker).

`docker-compose.kafka.yml` runs Apache Kafka (KRaft) and the Pulse image built from
`Dockerfile`. Nothing here can build or start them, so these tests hold the files to
the code instead: every `PULSE_*` name is a real setting, the shared defaults are the
defaults of `pulse/settings.py`, every Pulse service resolves to the same topics
(`topic_specs`), the commands and their options exist in the CLI, and the image
installs the package with `pulse` as its entrypoint.

Compose variables are resolved here the way `docker compose` resolves them
(`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `$$`), from a
host environment given by each test, never from the one running pytest.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pulse.cli import main
from pulse.settings import SETTINGS, Settings, parse_api_keys
from pulse.streams.broker import topic_specs

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.kafka.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTING_NAMES = {s.env for s in SETTINGS}
DEFAULTS = {s.env: s.default for s in SETTINGS}
API_ONLY = {"PULSE_API_HOST", "PULSE_API_PORT", "PULSE_API_KEYS", "PULSE_API_KEYS_FILE",
            "PULSE_CURSOR_SECRET"}
"""Settings only `pulse api` reads; every other setting is one the worker needs."""
SECRETS = {"PULSE_API_KEYS", "PULSE_API_KEYS_FILE", "PULSE_CURSOR_SECRET"}

FIXED = {
    "PULSE_KAFKA_BOOTSTRAP": "kafka:9092",
    "PULSE_LAKE": "s3://pulse-lake/lake",
    "AWS_ENDPOINT_URL_S3": "http://minio:9000",
    "AWS_REGION": "us-east-1",
    "PULSE_STATE_DIR": "/data/state",
}
"""Shared values that belong to the deployment (listener, bucket, store, volume path),
not to settings.py; every other shared value is `${NAME:-settings.py default}`, or one
of `DEPLOYMENT` below."""
STORE_KEYS = {"AWS_ACCESS_KEY_ID": ("MINIO_ROOT_USER", "pulse"),
              "AWS_SECRET_ACCESS_KEY": ("MINIO_ROOT_PASSWORD", "pulse-minio-secret")}
"""The lake's keys are MinIO's root credentials, overridable under MinIO's names."""
CATALOG = "postgresql+psycopg2://pulse:pulse-catalog@catalog:5432/iceberg"
"""PULSE_ICEBERG_CATALOG: the catalog service (its password from CATALOG_PASSWORD)."""
ALTERNATES = {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"}
"""Settings the block need not set: the more specific AWS_ENDPOINT_URL_S3 and
AWS_REGION are set, and MinIO's keys are not temporary."""

ROLES = {"topics": ["topics"], "worker": ["worker"], "api": ["api"],
         "simulate": ["simulate", "--rate", "200"]}
"""The Pulse services and the command each runs."""

KEYS = "0123456789abcdef=*,fedcba9876543210=tenant-a"
HOST = {"PULSE_API_KEYS": KEYS}
"""The host environment of a correct deployment: only the API keys are set."""

HOST_OVERRIDES = {
    **HOST,
    "PULSE_TOPIC": "orders",
    "PULSE_DLQ_TOPIC": "orders-dead",
    "PULSE_GROUP": "acme",
    "PULSE_PARTITIONS": "12",
    "PULSE_FUNNEL_STEPS": "opened,replied",
}


# --- reading the files ---------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, host: Mapping[str, str]) -> str:
    """One string as `docker compose` interpolates it from the host environment."""

    def resolve(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        have = host.get(name)
        if op is None:
            return have or ""
        if op in (":-", ":?", ":+"):
            have = have or None  # the colon forms treat empty like unset
        if op.endswith("-"):
            return arg if have is None else have
        if op.endswith("+"):
            return "" if have is None else arg
        if have is None:  # ? and :?
            raise ValueError(f"{name} is required: {arg}")
        return have

    out = _VAR.sub(resolve, value)
    assert "${" not in out, f"interpolation this test does not understand: {value!r}"
    return out


def resolve_tree(node: Any, host: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, host)
    if isinstance(node, list):
        return [resolve_tree(item, host) for item in node]
    if isinstance(node, dict):
        return {key: resolve_tree(value, host) for key, value in node.items()}
    return node


def load_compose(host: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file, YAML anchors merged; interpolated when `host` is given."""
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict), f"{COMPOSE.name} is not a YAML mapping"
    return doc if host is None else resolve_tree(doc, host)


def env_of(service: Mapping[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    """The environment a service's container gets (map or KEY=VALUE list form)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.partition("=") for item in raw]
        raw = {k: (v if sep else None) for k, sep, v in pairs}
    env = {}
    for key, value in raw.items():
        if value is None:  # `KEY:` alone passes the host's value through, if any
            if key in host:
                env[key] = host[key]
        else:
            env[key] = str(value)
    return env


def settings_of(service: Mapping[str, Any], host: Mapping[str, str]) -> Settings:
    """What `Settings.from_env()` reads inside that service's container."""
    return Settings.from_env(env_of(service, host))


def shared_env() -> dict[str, Any]:
    block = load_compose().get("x-pulse-env")
    assert isinstance(block, dict), "the shared Pulse variables live in an x-pulse-env block"
    return block


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):  # comments, even inside continuations
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    pairs = []
    for text in logical:
        word, _, args = text.partition(" ")
        pairs.append((word.upper(), args.strip()))
    return pairs


def pulse_services(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in ROLES:
        assert name in doc["services"], f"{COMPOSE.name} has no `{name}` service"
        yield name, doc["services"][name]


# --- the compose file ----------------------------------------------------------------


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    doc = load_compose(HOST)
    services = doc["services"]
    for name, service in services.items():
        assert "zookeeper" not in name.lower(), f"service {name}: KRaft needs no ZooKeeper"
        assert "zookeeper" not in str(service.get("image", "")).lower()
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:(3\.9\.\d+|4\.\d+\.\d+)", kafka["image"]), (
        f"kafka must be a pinned apache/kafka 3.9.x or 4.x image, not {kafka['image']}")
    env = env_of(kafka, HOST)
    assert not [k for k in env if "ZOOKEEPER" in k], "KRaft mode has no zookeeper settings"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key in ("KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS",
                "KAFKA_CONTROLLER_LISTENER_NAMES", "CLUSTER_ID"):
        assert env.get(key), f"KRaft needs {key}"

    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                     .split(","))
    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert set(advertised) <= set(listeners)
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rpartition(":")[2]
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]].endswith(f":{voter_port}")

    # Pulse's bootstrap is an advertised listener named after the kafka service, so
    # it resolves on the compose network.
    bootstrap = shared_env()["PULSE_KAFKA_BOOTSTRAP"]
    assert bootstrap in advertised.values(), (
        f"PULSE_KAFKA_BOOTSTRAP={bootstrap} is not an advertised listener: {advertised}")
    assert bootstrap.rpartition(":")[0] in {"kafka", kafka.get("hostname")}
    # ... and every other advertised listener (the host's) is published.
    published = {str(p).rpartition(":")[2] for p in kafka.get("ports", [])}
    for name, address in advertised.items():
        if address != bootstrap:
            assert listeners[name].rpartition(":")[2] in published, (
                f"listener {name} is advertised to the host but its port is not published")

    test = kafka["healthcheck"]["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", command)
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", (
        "Pulse creates its topics with the partition counts it relies on")
    # The producers of streams/ingest.py and streams/app.py allow 8 MiB requests.
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= 8 * 1024 * 1024


def test_every_pulse_name_in_the_deployment_files_is_a_real_setting() -> None:
    for path in (COMPOSE, DOCKERFILE):
        used = set(re.findall(r"\bPULSE_[A-Z0-9_]+\b", path.read_text()))
        unknown = used - SETTING_NAMES
        assert not unknown, f"{path.name} uses {sorted(unknown)}, not in pulse.settings.SETTINGS"
    doc = load_compose(HOST)
    for name, service in doc["services"].items():
        env = env_of(service, HOST)
        unknown = {k for k in env if k.startswith("PULSE_")} - SETTING_NAMES
        assert not unknown, f"service {name} sets {sorted(unknown)}"


def test_shared_env_block_sets_every_setting_the_worker_needs() -> None:
    shared = shared_env()
    missing = SETTING_NAMES - API_ONLY - ALTERNATES - set(shared)
    assert not missing, (
        f"x-pulse-env does not set {sorted(missing)}: add them as ${{NAME:-default}} "
        "(or to API_ONLY in this test if only `pulse api` reads them)")
    leaked = SECRETS & set(shared)
    assert not leaked, f"{sorted(leaked)} must reach the api service only"
    # Every Pulse service uses the block, value for value.
    doc = load_compose()
    for name, service in pulse_services(doc):
        env = service.get("environment") or {}
        assert isinstance(env, dict), f"service {name}: use the x-pulse-env mapping"
        for key, value in shared.items():
            assert env.get(key) == value, f"service {name}: {key} differs from x-pulse-env"
        for key in SECRETS & set(env):
            assert name == "api", f"service {name} gets {key}"


def test_shared_defaults_are_the_settings_defaults() -> None:
    shared = shared_env()
    for key, raw in shared.items():
        if key in FIXED:
            assert raw == FIXED[key], f"{key} should be {FIXED[key]!r}, not {raw!r}"
            continue
        if key in STORE_KEYS:
            name, default = STORE_KEYS[key]
            assert raw == f"${{{name}:-{default}}}", f"{key} should come from {name}"
            continue
        if key == "PULSE_ICEBERG_CATALOG":
            assert interpolate(raw, {}) == CATALOG, raw
            continue
        m = re.fullmatch(r"\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}", str(raw))
        assert m, f"{key}: write ${{{key}:-default}} so the host can override it, not {raw!r}"
        assert m["name"] == key, f"{key} is read from ${{{m['name']}}}"
        assert m["default"] == DEFAULTS[key], (
            f"{key} defaults to {m['default']!r} here but {DEFAULTS[key]!r} in settings.py")

    # The whole configuration, as each Pulse service reads it (only the keys are set).
    doc = load_compose(HOST)
    expected = Settings().replace(
        kafka_bootstrap=FIXED["PULSE_KAFKA_BOOTSTRAP"], lake=FIXED["PULSE_LAKE"],
        state_dir=FIXED["PULSE_STATE_DIR"], s3_endpoint=FIXED["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=STORE_KEYS["AWS_ACCESS_KEY_ID"][1],
        aws_secret_access_key=STORE_KEYS["AWS_SECRET_ACCESS_KEY"][1],
        iceberg_catalog=CATALOG)
    for name, service in pulse_services(doc):
        settings = settings_of(service, HOST)
        if name == "api":
            assert settings.read_api_keys() == parse_api_keys("PULSE_API_KEYS", KEYS)
            settings = settings.replace(api_host=Settings().api_host, api_keys=None)
        assert settings == expected, f"service {name} reads {settings}"


@pytest.mark.parametrize("host", [HOST, HOST_OVERRIDES], ids=["defaults", "overridden"])
def test_every_service_uses_the_topics_the_code_derives(host: dict[str, str]) -> None:
    doc = load_compose(host)
    # The topics of a plain `pulse` process given the same PULSE_TOPIC, PULSE_DLQ_TOPIC,
    # PULSE_GROUP and PULSE_PARTITIONS as the compose file resolves to.
    names = ("PULSE_TOPIC", "PULSE_DLQ_TOPIC", "PULSE_GROUP", "PULSE_PARTITIONS")
    same = Settings.from_env({k: host.get(k) or DEFAULTS[k] or "" for k in names})
    expected = [(s.name, s.partitions) for s in topic_specs(same)]
    assert expected[0][0] == same.topic and expected[1][0] == same.dlq_topic
    for name, service in pulse_services(doc):
        settings = settings_of(service, host)
        assert (settings.topic, settings.dlq_topic) == (same.topic, same.dlq_topic)
        got = [(s.name, s.partitions) for s in topic_specs(settings)]
        assert got == expected, f"service {name} would use topics {got}, not {expected}"
    if host == HOST:
        assert expected == [(s.name, s.partitions) for s in topic_specs(Settings())]


def test_services_run_the_cli_commands() -> None:
    doc = load_compose(HOST)
    for name, service in pulse_services(doc):
        command = service.get("command")
        assert command == ROLES[name], f"service {name} runs {command!r}, not {ROLES[name]}"
        assert command[0] in main.commands, f"`pulse {command[0]}` does not exist"
        # The options parse as the CLI would parse them (nothing is run).
        cli = main.commands[command[0]]
        try:
            cli.make_context(command[0], list(command[1:]))
        except click.UsageError as exc:
            pytest.fail(f"service {name}: `pulse {shlex.join(command)}`: {exc}")
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"service {name} must run the image built from this repository"
        assert "entrypoint" not in service, f"service {name}: keep the image's `pulse` entrypoint"


def test_dependencies_and_restarts() -> None:
    services = load_compose(HOST)["services"]
    assert "healthcheck" in services["kafka"]
    expect = {
        "topics": {"kafka": "service_healthy"},
        "worker": {"kafka": "service_healthy", "topics": "service_completed_successfully"},
        "api": {"kafka": "service_healthy", "topics": "service_completed_successfully"},
        "simulate": {"kafka": "service_healthy", "topics": "service_completed_successfully"},
    }
    for name, wanted in expect.items():
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"service {name}: depends_on with conditions"
        for dep, condition in wanted.items():
            assert depends.get(dep, {}).get("condition") == condition, (
                f"service {name} must wait for {dep}: {condition}")
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"service {name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    # A one-shot must not be restarted after it succeeded.
    assert services["topics"].get("restart", "no") in ("no", "on-failure")
    assert services["simulate"].get("profiles") == ["demo"]
    for name in ("kafka", "topics", "worker", "api"):
        assert not services[name].get("profiles"), f"{name} must run without a profile"


def test_volumes_lake_shared_and_state_per_worker() -> None:
    doc = load_compose(HOST)
    services = doc["services"]
    state = FIXED["PULSE_STATE_DIR"]

    def mounts(service: Mapping[str, Any]) -> dict[str, tuple[str | None, str]]:
        found = {}
        for item in service.get("volumes", []):
            parts = item.split(":")
            if len(parts) == 1:
                found[parts[0]] = (None, "rw")  # anonymous volume
            else:
                found[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
        return found

    worker, api = mounts(services["worker"]), mounts(services["api"])
    # The lake is the bucket on the minio service (a named volume there), made by the
    # one-shot bucket service before any worker or API starts; no lake volume.
    assert FIXED["PULSE_LAKE"].startswith("s3://pulse-lake/")
    assert "pulse-lake" in " ".join(services["bucket"]["command"])
    store = mounts(services["minio"])
    assert store["/data"][0] in (doc.get("volumes") or {}), "the objects are a named volume"
    for name in ("worker", "api"):
        after = services[name]["depends_on"]
        assert after["bucket"]["condition"] == "service_completed_successfully", name
    assert services["worker"]["depends_on"]["catalog"]["condition"] == "service_healthy"
    assert not any(path.startswith("/data/lake") for path in [*worker, *api])
    # Each worker container gets its own state dir, so `--scale worker=N` is safe.
    assert worker.get(state) == (None, "rw"), (
        f"{state} must be an anonymous volume of the worker (one per container)")
    assert state not in api
    assert "container_name" not in services["worker"], "container_name prevents --scale"


def test_api_is_reachable_and_keyed() -> None:
    raw = load_compose()["services"]["api"]["environment"]
    assert re.fullmatch(r"\$\{PULSE_API_KEYS(:?[-?][^}]*)?\}", str(raw.get("PULSE_API_KEYS"))), (
        "PULSE_API_KEYS comes from the host environment or .env, never written in the file")
    assert re.search(r"PULSE_API_KEYS must be set", COMPOSE.read_text()), (
        "say at the top of the compose file that PULSE_API_KEYS must be set")
    service = load_compose(HOST)["services"]["api"]
    settings = settings_of(service, HOST)
    assert settings.api_host == "0.0.0.0"
    assert settings.read_api_keys() == parse_api_keys("PULSE_API_KEYS", KEYS)
    assert "--insecure" not in service["command"]
    targets = {str(p).rpartition(":")[2] for p in service.get("ports", [])}
    assert str(settings.api_port) in targets, f"the API port {settings.api_port} is published"


# --- the image -----------------------------------------------------------------------


def test_dockerfile_installs_pulse_with_its_entrypoint() -> None:
    steps = dockerfile_instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    runs = " && ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"pip install (--\S+ )*--no-cache-dir (--\S+ )*\.(\s|$)", runs), (
        "the image installs the package: pip install --no-cache-dir .")
    assert not re.search(r"\b(npm|node|yarn)\b", runs), "the dashboard ships prebuilt"
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["pulse"]
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    workdirs = [args for word, args in steps if word == "WORKDIR"]
    assert workdirs[-1] == "/data"

    # Everything pyproject.toml builds the package from is copied into the image.
    copied = set()
    for word, args in steps:
        if word == "COPY":
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            copied |= {s.rstrip("/") for s in sources}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["setuptools"]["package-dir"].values())
    assert "." in copied or needed <= copied, f"the Dockerfile does not copy {needed - copied}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative, with /) out of the build context."""

    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!").strip("/"))
        if any(rx.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_and_the_package_whole() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    for path in (".venv/bin/python", "dashboard/node_modules/react/index.js",
                 "lake/events/x.parquet", "state/faust/x", ".git/HEAD",
                 "tests/artifacts/log.txt", ".env", "api/__pycache__/app.cpython-311.pyc",
                 ".pytest_cache/v", ".ruff_cache/x"):
        assert _ignored(path, patterns), f".dockerignore should exclude {path}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    files = ["pyproject.toml", project["project"]["readme"], "Dockerfile"]
    for folder in folders:
        files += [p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts]
    dropped = [f for f in files if _ignored(f, patterns)]
    assert not dropped, f".dockerignore drops files the image is built from: {dropped[:5]}"
