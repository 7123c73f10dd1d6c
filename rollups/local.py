"""Every keyed partition in one process: what the worker does across topics, by hand.

The worker routes each event to the partition of its id digest, and each counted funnel
step on to the partition of its journey, through Kafka. `LocalPartitions` does the same
routing with lists, so tests, benchmarks and tools get exactly the worker's rollups (and
its journal) from a list of events, without a broker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pulse.schemas.events import Event

from .columns import ColumnBatch, from_events
from .dedup import MemoryRuns, SeenSet, content_digest, id_digest, keyed_partition
from .journal import Claim, Delta, LakeMark, Record
from .partition import KeyedMessage, Outcome, PartitionState, RollupSpec, StepBatch, merge_steps
from .store import RollupStore

Entry = tuple[int, int, Event | str]
"""(source partition, source offset, event or dead-letter reason)."""


def event_batch(rows: list[tuple[int, int, Event]], dead: list[tuple[int, int, str]],
                progress: dict[int, int] | None = None,
                lake: dict[int, LakeMark] | None = None) -> ColumnBatch:
    """A batch as the ingest stage builds it (digests computed here)."""
    return from_events([r[0] for r in rows], [r[1] for r in rows],
                       b"".join(id_digest(e.tenant_id, e.id) for _, _, e in rows),
                       [content_digest(e) for _, _, e in rows],
                       [e for _, _, e in rows], dead, progress, lake)


class LocalPartitions:
    """The keyed partitions of one worker, fed by hand; each keeps its journal."""

    def __init__(self, spec: RollupSpec, session: str = "local") -> None:
        self.spec = spec
        self.session = session
        self.states = {q: PartitionState(spec, q, SeenSet(MemoryRuns()))
                       for q in range(spec.partitions)}
        self.keyed: dict[int, list[KeyedMessage]] = defaultdict(list)
        """Each partition's keyed topic: every message it was sent, in order."""
        self.journals: dict[int, list[Record]] = {q: [Claim(session)]
                                                  for q in range(spec.partitions)}

    def route(self, entries: Iterable[Entry]) -> dict[int, ColumnBatch]:
        """One poll's entries as the ingest stage forwards them, per keyed partition."""
        rows: dict[int, list[tuple[int, int, Event]]] = defaultdict(list)
        dead: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        n = self.spec.partitions
        for source, offset, item in entries:
            if isinstance(item, str):
                dead[source % n].append((source, offset, item))
            else:
                rows[keyed_partition(id_digest(item.tenant_id, item.id), n)].append(
                    (source, offset, item))
        return {q: event_batch(rows.get(q, []), dead.get(q, []))
                for q in sorted(set(rows) | set(dead))}

    def send(self, entries: Iterable[Entry]) -> None:
        """Forward one poll and process everything it causes, steps included."""
        for q, batch in self.route(entries).items():
            self.deliver(q, batch)

    def send_grouped(self, entries: Iterable[Entry]) -> None:
        """Forward one poll as the rollup agent does: every message processed, then the
        steps they forwarded sent once per destination (`merge_steps`)."""
        forwards = [item for q, batch in self.route(entries).items()
                    for item in self._process(q, batch).forwards.items()]
        for j, steps in merge_steps(forwards).items():
            self.deliver(j, steps)

    def deliver(self, q: int, message: KeyedMessage) -> Delta | None:
        """Append `message` to partition `q`'s keyed topic and process it, then every
        step batch it forwards; returns `q`'s delta."""
        outcome = self._process(q, message)
        for j, steps in outcome.forwards.items():
            self.deliver(j, steps)
        return outcome.delta

    def _process(self, q: int, message: KeyedMessage) -> Outcome:
        offset = len(self.keyed[q])
        self.keyed[q].append(message)
        outcome = self.states[q].process(message, offset, self.session)
        if outcome.delta is not None:
            self.journals[q].append(outcome.delta)
        return outcome

    def store(self) -> RollupStore:
        """A reader's rollups, folded from every partition's journal."""
        store = RollupStore()
        for q, records in self.journals.items():
            fold = store.fold(q)
            for offset, record in enumerate(records):
                fold.feed(record, offset)
        return store

    def heartbeat(self, progress: dict[int, int]) -> None:
        """What the ingest stage and the agent send every few seconds when idle: every
        partition hears `progress`, and every partition's `as_of` reaches every other."""
        for q in range(self.spec.partitions):
            self.deliver(q, event_batch([], [], progress))
        for q, state in self.states.items():
            for j in range(self.spec.partitions):
                self.deliver(j, StepBatch(q, state.as_of(), []))
