"""A real S3 server for benchmarks and tests: moto's `moto_server` (from the test
extra), a process on a free loopback port.

Never an in-process mock: the lake is written and read over HTTP exactly as on any
S3-compatible store, through the standard AWS variables. Each lake gets a bucket of
its own, so runs share the server and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from pulse.settings import Settings

from .harness import free_port

REGION = "us-east-1"


@dataclass
class S3Server:
    """One `moto_server` process and how to reach it."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.path.exists(server):
            raise RuntimeError("moto_server is missing: install the test extra "
                               "(pip install -e '.[test]') for an S3 server")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [server, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log,
                start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.log()}") from None
                time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The standard AWS variables a Pulse process needs for this server."""
        return {"AWS_ENDPOINT_URL_S3": endpoint or self.endpoint, "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "pulse-test", "AWS_SECRET_ACCESS_KEY": "pulse-test-secret"}

    def settings(self, settings: Settings, lake: str) -> Settings:
        """`settings` with its lake at `lake` on this server."""
        return settings.replace(lake=lake, s3_endpoint=self.endpoint, aws_region=REGION,
                                aws_access_key_id="pulse-test",
                                aws_secret_access_key="pulse-test-secret")

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http",
                                 region=REGION, access_key="pulse-test",
                                 secret_key="pulse-test-secret", allow_bucket_creation=True)

    def new_lake(self) -> str:
        """A fresh bucket; returns the `PULSE_LAKE` of a lake under a prefix in it."""
        bucket = f"lake-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(bucket)
        return f"s3://{bucket}/pulse"

    def pause(self) -> None:
        """SIGSTOP: the server keeps its port and data but answers nothing."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            self.process.wait(10)


def start_s3(folder: Path) -> S3Server:
    return S3Server(free_port(), folder / "moto.log")
