"""`pulse worker`: wait for the broker, create topics, learn the epoch, run the app."""

from __future__ import annotations

import asyncio
import logging
import os

from pulse.kafka import evict_members, wait_for_broker
from pulse.lakefs import LakeStore, LakeStoreError
from pulse.schemas.topics import Topics
from pulse.settings import Settings

log = logging.getLogger("pulse.worker")

_FAUST_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "warn": "warn",
                 "error": "error", "critical": "crit"}


async def wait_for_lake(settings: Settings) -> None:
    """Until the lake's store answers: a wrong setting is logged in one line naming the
    variable to fix, and tried again with backoff (an operator may be fixing it, or the
    store may still be starting)."""
    store = LakeStore.open(settings.lake, settings)
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(store.check, True)
            return
        except LakeStoreError as exc:
            log.error("%s; retrying in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)


async def prepare(settings: Settings, broker_timeout: float = 300.0) -> str:
    """Everything the app needs before it starts; returns the epoch."""
    from pulse.epoch import current_epoch

    from .broker import ensure_topics

    await wait_for_lake(settings)
    await wait_for_broker(settings.kafka_bootstrap, broker_timeout, "pulse worker")
    await ensure_topics(settings)
    await evict_members(settings.kafka_bootstrap, settings.group, settings.client_id)
    return await current_epoch(settings.kafka_bootstrap, Topics.of(settings))


def run_worker(settings: Settings) -> None:
    from .ingest_process import collect_garbage_rarely, use_system_allocator

    use_system_allocator()
    os.makedirs(os.path.join(settings.state_dir, "faust"), exist_ok=True)
    # FINDINGS: uvloop helps only when its policy is set before faust is imported.
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    epoch = loop.run_until_complete(prepare(settings))

    import faust

    from .app import create_app

    app = create_app(settings, epoch)
    collect_garbage_rarely()
    log.info("worker starting: epoch %s, lake %s, state %s", epoch, settings.lake,
             settings.state_dir)
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel=_FAUST_LEVELS.get(settings.log_level.lower(), "info"),
        quiet=True,
    )
    worker.execute_from_commandline()
