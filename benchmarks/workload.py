"""The synthetic workload every benchmark produces: realistic events of three tenants,
with exact duplicates and a few invalid messages, written without a JSON encoder so the
producer is not what a benchmark measures; and `produce`, as fast as the broker takes it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from aiokafka import AIOKafkaProducer

from pulse.kafka import CLIENT_DEFAULTS

from .harness import say

HOUR_MS = 3_600_000
TENANTS = ("acme", "globex", "initech")
TYPES = ("call_ended", "chat_ended", "intent_detected", "funnel_step", "funnel_step",
         "tag_changed", "usage")
INTENTS = ("buy", "cancel", "question", "callback", "complaint")
STEPS = ("picked_up", "interested", "qualified", "voicemail")


def events(n: int, seed: int = 1, duplicates: float = 0.05, invalid: float = 0.001,
           days: int = 7, now_ms: int | None = None,
           tenants: int = 3) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `n` messages: realistic events, exact duplicates, a few invalid.

    Written with string formatting rather than a JSON encoder: the producer should not
    be what a benchmark measures.
    """
    rnd = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    recent: list[tuple[bytes, bytes]] = []
    for i in range(n):
        r = rnd.random()
        if r < duplicates and recent:
            yield recent[rnd.randrange(len(recent))]
            continue
        if r < duplicates + invalid:
            yield b"bad", b'{"id": "broken-%d", "tenant_id": "acme"' % i
            continue
        tenant = TENANTS[i % tenants] if tenants <= len(TENANTS) else f"tenant{i % tenants}"
        kind = TYPES[rnd.randrange(7)]
        customer = f"c{rnd.randrange(20_000)}"
        at = now_ms - rnd.randrange(days * 24 * HOUR_MS)
        campaign = ("null", '"spring"', '"summer"', '"fall"')[rnd.randrange(4)]
        extra = ""
        if kind in ("call_ended", "chat_ended"):
            extra = f', "value": {rnd.random() * 300:.3f}'
        elif kind == "intent_detected":
            extra = f', "label": "{INTENTS[rnd.randrange(5)]}"'
        elif kind == "funnel_step":
            extra = f', "label": "{STEPS[rnd.randrange(4)]}"'
        elif kind == "tag_changed":
            extra = ', "label": "vip"'
        else:
            extra = f', "category": "call_minutes", "value": {rnd.random() * 5:.2f}'
        who = "" if kind == "usage" else f'"customer_id": "{customer}", '
        value = (f'{{"id": "ev-{seed}-{i}", "tenant_id": "{tenant}", "event_type": "{kind}", '
                 f'{who}"campaign_id": {campaign}, "occurred_at": {at}{extra}}}').encode()
        message = (customer.encode(), value)
        if len(recent) < 10_000:
            recent.append(message)
        else:
            recent[rnd.randrange(10_000)] = message
        yield message


async def produce(bootstrap: str, topic: str, messages: Iterator[tuple[bytes, bytes]],
                  total: int) -> float:
    """Send everything as fast as the broker takes it; returns seconds."""
    from pulse.streams.produce import Outbox

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                max_request_size=8 * 1024 * 1024, linger_ms=5, **CLIENT_DEFAULTS)
    await producer.start()
    started = time.perf_counter()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        outbox = Outbox(producer, topic, partitions)
        for i, (key, value) in enumerate(messages, 1):
            await outbox.put(key, value)
            if i % 200_000 == 0:
                say(f"  produced {i:,}/{total:,}")
        await outbox.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started
