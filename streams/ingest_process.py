"""The ingest stage in a child process, owned by a service of the worker's Faust app.

Decoding, routing and Parquet encoding run under the child's own GIL, so the rollup
agent keeps the Faust app's process to itself and a two-core machine uses both cores.
The Faust app still owns the stage's lifecycle: the service starts the child with the
app, restarts it if it dies, and on shutdown asks it (SIGTERM) to drain the lake and
commit before the app stops. The child dies with its parent even on kill -9
(`PR_SET_PDEATHSIG`), so no orphan ever keeps consuming.

The child is a plain `python -m pulse.streams.ingest_process` that reads its settings
from its stdin, not a `multiprocessing` process: spawning that way also starts
multiprocessing's resource tracker, a third process of 13 MiB that the stage never uses.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

from mode import Service

from pulse.kafka import raw_records
from pulse.settings import Settings

log = logging.getLogger("pulse.ingest")

STOP_SECONDS = 60.0
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def die_with(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies, however it dies (safe in a
    `preexec_fn`: it imports nothing)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request above
        os._exit(1)


def use_system_allocator() -> None:
    """Give Arrow the C library's allocator rather than its default (mimalloc), in this
    process and the ones it starts, by the variable Arrow reads when it first allocates
    (an operator's own choice stands). Setting it does not load pyarrow, which the rollup
    process does without (see `pulse.lakefs`).

    The worker's processes allocate and free Arrow buffers poll after poll; mimalloc
    keeps the freed pages, so a process's resident memory settled about 45 MiB higher
    at the same live data (measured: `pulse bench ingest` at 500 k), for no speed gain
    here (7.96 vs 8.24 µs of CPU per message)."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def collect_garbage_rarely() -> None:
    """Run Python's cycle collector every 20,000 new container objects rather than every
    700, and never again over what exists now (the modules' objects, frozen).

    Every poll creates tens of thousands of short-lived objects (aiokafka's records,
    decoded events), which set off a young collection every 700 and, every few polls,
    an old one over the whole heap: 1.2 µs of the ingest process's CPU per message
    (8.2 -> 6.9 µs, `pulse bench ingest` at 1.5 M). The stages make next to no cycles,
    so the rarer collections hold little garbage."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def child_main(settings: Settings, epoch: str, parent: int) -> None:
    die_with(parent)
    use_system_allocator()
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format=_LOG_FORMAT, stream=sys.stderr)
    import uvloop

    from .ingest import Ingest

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Ingest(settings, epoch).run(stop)

    collect_garbage_rarely()
    with raw_records():  # the ingest stage reads only offsets, timestamps and values
        uvloop.run(run())


class IngestProcess(Service):
    """Starts, watches and stops the ingest child."""

    def __init__(self, settings: Settings, epoch: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.epoch = epoch
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _spawn(self) -> None:
        process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE)
        assert process.stdin is not None
        self._process = process
        try:
            with process.stdin:
                pickle.dump((self.settings, self.epoch, os.getpid()), process.stdin)
        except BrokenPipeError:
            pass  # it died at once; `_watch` restarts it

    async def on_start(self) -> None:
        self._spawn()

    @Service.task
    async def _watch(self) -> None:
        delay = 1.0
        while not self.should_stop:
            await asyncio.sleep(0.5)
            process = self._process
            if process is None or process.poll() is None or self.should_stop:
                continue
            self.restarts += 1
            log.error("the ingest process exited (code %s); restarting it in %.0f s",
                      process.returncode, delay)
            started = time.monotonic()
            await asyncio.sleep(delay)
            self._spawn()
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)

    async def on_stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: drain the lake and commit
        try:
            await asyncio.to_thread(process.wait, STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the ingest process did not stop in %.0f s; killing it "
                        "(what it had not committed is read again)", STOP_SECONDS)
            process.kill()
            await asyncio.to_thread(process.wait)


if __name__ == "__main__":
    child_main(*pickle.load(sys.stdin.buffer))
