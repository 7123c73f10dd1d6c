"""An API process started as users start it (`start_api`), its answers held against the
oracle (`overview_differences`), and the memory peaks of a process tree."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from pulse.benchmarks.harness import free_port
from pulse.schemas.events import Event
from pulse.schemas.lake import us_to_datetime
from tests import oracle
from tests.deployment import Proc, Pulse
from tests.streams.test_pipeline import STEPS

ADMIN_KEY = "fault-admin-key-0001"
OVERVIEW_KEYS = ("conversations", "engagement", "intents", "funnel")


@dataclass
class Api:
    """One `pulse api` process of a deployment, asked with an admin key."""

    proc: Proc
    url: str

    def get(self, path: str, timeout: float = 30, **query: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{self.url}{path}?{urllib.parse.urlencode(query)}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body)
            except ValueError:
                return error.code, {"raw": body.decode(errors="replace")}

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return response.read().decode()

    def overview(self, tenant: str, frm: int, to: int) -> tuple[int, dict]:
        return self.get("/analytics/overview", tenant=tenant, **{"from": iso(frm), "to": iso(to)})

    def wait_until_read(self, n: int, timeout: float = 60) -> None:
        """Wait until this process's replica has folded `n` input messages."""
        deadline = time.monotonic() + timeout
        read = -1
        while time.monotonic() < deadline:
            status, body = self.get("/analytics/status")
            if status == 200:
                read = body["totals"]["read"]
                if read >= n:
                    return
            time.sleep(0.3)
        raise AssertionError(f"the API folded {read} of {n} messages in {timeout} s:\n"
                             f"{self.proc.log()[-3000:]}")


def start_api(pulse: Pulse, timeout: float = 60) -> Api:
    port = free_port()
    proc = pulse.start("api", name=f"api-{port}", PULSE_API_PORT=str(port),
                       PULSE_API_KEYS=f"{ADMIN_KEY}=*")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return Api(proc, url)
        except (urllib.error.URLError, OSError):
            pass
        assert proc.alive(), proc.log()[-3000:]
        assert time.monotonic() < deadline, f"pulse api not ready in {timeout} s"
        time.sleep(0.2)


def iso(us: int) -> str:
    return us_to_datetime(us).isoformat().replace("+00:00", "Z")


def overview_differences(api: Api, valid: list[Event], tenants: tuple[str, ...],
                         ranges: list[tuple[int, int]]) -> list[str]:
    """Ask `/analytics/overview` for each tenant and range; what differs from the oracle."""
    differences = []
    for tenant in tenants:
        for frm, to in ranges:
            status, body = api.overview(tenant, frm, to)
            want = oracle.overview(valid, tenant, None, False, frm, to, STEPS, 30.0)
            got = {k: body.get(k) for k in OVERVIEW_KEYS}
            if status != 200 or not oracle.approx_equal(got, want):
                differences.append(f"{tenant} [{iso(frm)}, {iso(to)}) {body.get('source')}: "
                                   f"status {status}, got {got}, want {want}")
    return differences


def peak_rss_mib(pid: int) -> dict[int, float]:
    """VmHWM (peak resident set, MiB) of `pid` and each of its children, by pid."""
    peaks = {}
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = fh.read().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peaks[p] = int(line.split()[1]) / 1024
        except OSError:
            pass  # it just exited
    return peaks
