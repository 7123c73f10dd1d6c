"""`pulse up`: the whole system on one machine, as child processes of this one.

The broker (unless `--kafka` names one), a worker, the API and, with `--simulate`,
demo traffic each run as `pulse <command>` in a process group of their own, so Ctrl-C
in the terminal reaches only this supervisor, which then stops them in order: traffic
first, the broker last, so the worker can flush the lake while Kafka is still there.
Their output goes to log files under the state dir; if one dies, everything stops and
its last lines are shown.

With `--simulate`, the demo traffic first backfills a history, and the dashboard URL
is printed once the rollups hold all of it, so the first look shows every panel full.
A lake that already holds events gets no second history on top of the first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .lakefs import LakeStore
from .lakefs import tenants as lake_tenants
from .settings import Settings

STOP_TIMEOUT = 20.0
HISTORY_TIMEOUT = 600.0
"""Longest wait for the rollups to hold the backfilled history before the URL is shown."""
_BACKFILL_SENT = re.compile(rb"backfill sent: ([\d,]+) messages")
_READ = re.compile(r'^pulse_events\{outcome="read"\} (\S+)$', re.MULTILINE)


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, env: dict[str, str]) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pulse.cli", *self.args], env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    def __init__(self, settings: Settings, external_kafka: bool, simulate: bool,
                 rate: float, insecure: bool, backfill_days: float = 30.0) -> None:
        self.settings = settings
        self.external_kafka = external_kafka
        self.simulate = simulate
        self.rate = rate
        self.backfill_days = backfill_days
        self.insecure = insecure
        self.logs = Path(settings.state_dir) / "logs"
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def say(self, text: str) -> None:
        print(f"pulse up: {text}", flush=True)

    def run(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        env = self._env()
        try:
            return self._start_all(env) or self._watch()
        finally:
            self._stop_all()

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = {**os.environ, "PULSE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "PULSE_LAKE": s.lake,
               "PULSE_STATE_DIR": s.state_dir, "PULSE_PARTITIONS": str(s.partitions),
               "PULSE_API_HOST": s.api_host, "PULSE_API_PORT": str(s.api_port)}
        if self.settings.read_api_keys() is None and not self.insecure:
            from pulse.api.auth import Keys

            self.admin_key, keys = Keys.generate_admin()
            env["PULSE_API_KEYS"] = ",".join(f"{k}={t}" for k, t in keys.items())
        else:
            self.admin_key = None
        return env

    def _start_all(self, env: dict[str, str]) -> int:
        """Start every child in order; returns an exit code if one failed, else 0."""
        s = self.settings
        from pulse.api.server import check_port, dashboard_url

        try:
            check_port(s)
        except SystemExit as exc:
            self.say(str(exc))
            return 1
        if not self.external_kafka:
            from pulse.streams.broker import port_free

            host, port = s.bootstrap_host_port
            if not port_free(host, port):
                self.say(f"port {port} on {host} is already in use, so the embedded broker "
                         "cannot listen there; set PULSE_KAFKA_BOOTSTRAP to another HOST:PORT, "
                         "or use --kafka HOST:PORT to run against a broker that is already up")
                return 1
            broker = self._spawn("broker", ["broker"], env)
            if not self._wait_for(broker, lambda: b"topics ready" in _read(broker.log), 30):
                return 1
            self.say(f"broker    Tansu, in memory, on {s.kafka_bootstrap}  (log {broker.log})")
        else:
            self.say(f"broker    your Kafka at {s.kafka_bootstrap}")
        worker = self._spawn("worker", ["worker"], env)
        api_args = ["api", "--insecure"] if self.insecure else ["api"]
        api = self._spawn("api", api_args, env)
        self.say(f"worker    lake {os.path.abspath(s.lake)}, state "
                 f"{os.path.abspath(s.state_dir)}  (log {worker.log})")
        local = f"http://{'127.0.0.1' if s.api_host in ('0.0.0.0', '::') else s.api_host}:" \
                f"{s.api_port}"
        if not self._wait_for(api, lambda: _http_ok(f"{local}/readyz"), 120):
            return 1
        self.say(f"api       http://{s.api_host}:{s.api_port}/  (log {api.log})")
        if self.simulate and not self._start_simulate(env, local):
            return 1
        self.say(f"dashboard {dashboard_url(s, self.admin_key)}")
        self.say("Ctrl-C stops everything")
        return 0

    def history_days(self) -> float:
        """Days of demo history to backfill: none on top of a lake that holds events (a
        second `pulse up --simulate` would otherwise double every number)."""
        lake = LakeStore.open(self.settings.lake, self.settings)
        return 0.0 if lake_tenants(lake) else self.backfill_days

    def _start_simulate(self, env: dict[str, str], api: str) -> bool:
        """Demo traffic; with a history, wait until the rollups hold all of it."""
        days = self.history_days()
        if days != self.backfill_days:
            self.say(f"simulate  the lake {os.path.abspath(self.settings.lake)} already holds "
                     "events, so no history is backfilled on top of them (point PULSE_LAKE "
                     "at an empty folder for a fresh demo)")
        live = f"{self.rate:g} events/s" if self.rate else "the history's pace"
        sim = self._spawn("simulate", ["simulate", "--rate", f"{self.rate:g}",
                                       "--backfill-days", f"{days:g}"], env)
        if not days:
            self.say(f"simulate  demo traffic at {live}  (log {sim.log})")
            return True
        span = f"{days:g} day" + ("" if days == 1 else "s")
        self.say(f"simulate  {span} of history first, then live at {live}  (log {sim.log})")
        started = time.monotonic()
        sent: list[int] = []
        if not self._wait_for(sim, lambda: _backfill_sent(sim.log, sent), HISTORY_TIMEOUT):
            return False
        if self._wait_for_history(sim, api, time.time(), sent[0]):
            self.say(f"history   {sent[0]:,} messages over the last {span}, in the dashboard "
                     f"after {time.monotonic() - started:.0f} s")
        elif not self.stopping.is_set():
            self.say(f"history   {sent[0]:,} messages over the last {span} sent; the worker "
                     "is still catching up, so the dashboard fills in as it does")
        return not self.stopping.is_set()

    def _wait_for_history(self, sim: Child, api: str, sent_at: float, messages: int) -> bool:
        """Until the API's answers are complete up to `sent_at` (their `as_of`: everything
        produced before it is in the numbers), saying how far the rollups are meanwhile;
        False if that took longer than `HISTORY_TIMEOUT`, or was interrupted."""
        key, admin = self._probe_key()
        deadline = time.monotonic() + HISTORY_TIMEOUT
        said = time.monotonic()
        while not self.stopping.is_set() and sim.alive() and time.monotonic() < deadline:
            as_of = _complete_up_to(api, key, admin)
            if as_of is not None and as_of >= sent_at:
                return True
            if time.monotonic() - said >= 10:
                self.say(f"history   {_messages_read(f'{api}/metrics'):,} of {messages:,} "
                         "messages read by the rollups so far")
                said = time.monotonic()
            time.sleep(0.5)
        return False

    def _probe_key(self) -> tuple[str | None, bool]:
        """A key to ask the API with (None: auth is off), and whether it is an admin's."""
        if self.admin_key or self.insecure:
            return self.admin_key, True
        keys = self.settings.read_api_keys() or {}
        admin = next((k for k, tenant in keys.items() if tenant == "*"), None)
        return (admin, True) if admin else (next(iter(keys), None), False)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(name, args, self.logs / f"{name}.log")
        child.start(env)
        self.children.append(child)
        return child

    def _wait_for(self, child: Child, ready: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set():
            if ready():  # type: ignore[operator]
                return True
            if not child.alive():
                self.say(f"{child.name} exited while starting:\n{child.tail()}")
                return False
            if time.monotonic() > deadline:
                self.say(f"{child.name} was not ready after {timeout:.0f} s:\n{child.tail()}")
                return False
            time.sleep(0.2)
        return False

    def _watch(self) -> int:
        while not self.stopping.wait(0.5):
            for child in self.children:
                if not child.alive():
                    if child.name == "simulate" and child.process and child.process.returncode == 0:
                        self.children.remove(child)
                        self.say("simulate finished")
                        break
                    self.say(f"{child.name} stopped unexpectedly:\n{child.tail()}")
                    return 1
        return 0

    def _stop_all(self) -> None:
        if any(c.alive() for c in self.children):
            self.say("stopping...")
        for child in reversed(self.children):
            child.stop()
        if self.children:
            self.say("stopped")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _backfill_sent(log: Path, found: list[int]) -> bool:
    """True once `pulse simulate` has said its history is sent; its size goes to `found`."""
    match = _BACKFILL_SENT.search(_read(log))
    if match:
        found.append(int(match.group(1).replace(b",", b"")))
    return match is not None


def _complete_up_to(api: str, key: str | None, admin: bool) -> float | None:
    """The `as_of` (epoch seconds) of an overview of the last hour, as a dashboard gets it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    tenant = ""
    if admin:
        tenants = (_get_json(f"{api}/analytics/tenants", headers) or {}).get("tenants")
        if not tenants:
            return None
        tenant = f"tenant={urllib.parse.quote(tenants[0])}&"
    hour = int(time.time()) // 3600 * 3600
    frm, to = (time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(t))
               for t in (hour - 3600, hour + 3600))
    answer = _get_json(f"{api}/analytics/overview?{tenant}from={frm}&to={to}", headers)
    as_of = (answer or {}).get("as_of")
    return datetime.fromisoformat(as_of.replace("Z", "+00:00")).timestamp() if as_of else None


def _get_json(url: str, headers: dict[str, str]) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as response:
            answer = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def _messages_read(metrics: str) -> int:
    """Input messages the API's rollups account for (`pulse_events{outcome="read"}`)."""
    try:
        with urllib.request.urlopen(metrics, timeout=2) as response:
            match = _READ.search(response.read().decode())
    except (urllib.error.URLError, OSError):
        return 0
    return int(float(match.group(1))) if match else 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
