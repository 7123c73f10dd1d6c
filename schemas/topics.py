"""Names of the topics Pulse uses, shared by the worker, the API and the broker command.

Internal topics are named after the input topic, so two Pulse deployments on one
Kafka cluster with different `PULSE_TOPIC`s never share state.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    input: str
    dlq: str

    @property
    def by_tenant(self) -> str:
        """Valid events, re-keyed by tenant, in batches: the rollup agent's input."""
        return f"{self.input}-by-tenant"

    @property
    def rollups(self) -> str:
        """The rollup journal: one record per processed batch (see rollups.journal)."""
        return f"{self.input}-rollups-changelog"

    @property
    def meta(self) -> str:
        """One-partition log whose first record names this Kafka incarnation (the epoch)."""
        return f"{self.input}-pulse-meta"

    def all(self) -> tuple[str, ...]:
        return (self.input, self.dlq, self.by_tenant, self.rollups, self.meta)


def tenant_partition(tenant_id: str, partitions: int) -> int:
    """The keyed partition that owns a tenant's dedup, journeys and rollups.

    crc32 rather than Python's `hash`, which is salted per process.
    """
    return zlib.crc32(tenant_id.encode()) % partitions
