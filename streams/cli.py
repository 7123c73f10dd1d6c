"""`pulse broker`: the embedded broker in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from pulse.settings import Settings

from .broker import BrokerError, EmbeddedBroker, ensure_topics

log = logging.getLogger("pulse.broker")


def run_broker(settings: Settings) -> int:
    host, port = settings.bootstrap_host_port
    broker = EmbeddedBroker(host, port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker.start()
        topics = asyncio.run(ensure_topics(settings))
    except BrokerError as exc:
        log.error("%s", exc)
        broker.stop()
        return 1
    print(f"pulse broker: Kafka-compatible broker (Tansu, in memory) on {broker.bootstrap}",
          flush=True)
    print(f"pulse broker: topics ready ({settings.partitions} partitions): {', '.join(topics)}",
          flush=True)
    print("pulse broker: data lives in memory only; Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.alive():
                log.error("the embedded broker exited unexpectedly")
                return 1
    finally:
        broker.stop()
    print("pulse broker: stopped", flush=True)
    return 0
