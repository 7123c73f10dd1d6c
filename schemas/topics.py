"""Names of the topics Pulse uses, shared by the worker, the API and the broker command.

Internal topics are named after the input topic, so two Pulse deployments on one
Kafka cluster with different `PULSE_TOPIC`s never share state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Named(Protocol):
    """What names the topics: the input and dead-letter topics of the settings."""

    @property
    def topic(self) -> str: ...
    @property
    def dlq_topic(self) -> str: ...


@dataclass(frozen=True)
class Topics:
    input: str
    dlq: str

    @classmethod
    def of(cls, settings: Named) -> Topics:
        """The topics of a deployment's settings (`PULSE_TOPIC`, `PULSE_DLQ_TOPIC`)."""
        return cls(settings.topic, settings.dlq_topic)

    @property
    def keyed(self) -> str:
        """The rollup agent's input: valid events keyed by their (tenant, id) digest, and
        counted funnel steps keyed by their journey, in batches."""
        return f"{self.input}-keyed"

    @property
    def rollups(self) -> str:
        """The rollup journal: one record per processed batch (see rollups.journal)."""
        return f"{self.input}-rollups-changelog"

    @property
    def meta(self) -> str:
        """One-partition log whose first record names this Kafka incarnation (the epoch)."""
        return f"{self.input}-pulse-meta"

    def all(self) -> tuple[str, ...]:
        return (self.input, self.dlq, self.keyed, self.rollups, self.meta)
