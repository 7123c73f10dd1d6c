"""Which (tenant_id, id) pairs a partition has already counted, inside retention.

Ids are kept as 128-bit BLAKE2b digests (a false match is a 2^-128 event, not a
rounding error) with a 32-bit digest of the content, to tell a producer's retry from a
conflicting copy, and the UTC day of the event, to expire by retention. Entries live
in sorted numpy runs of 24 bytes each, merged like a binary counter, so a lookup is a
few vectorized binary searches and memory stays near 24 bytes per event; a Python
set of digests would take four times that.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

_ENTRY = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("content", "<u4"), ("day", "<i4")])


def id_digest(tenant_id: str, event_id: str) -> bytes:
    """16-byte identity of an event; `\\x00` cannot occur in a tenant id, so it separates."""
    return hashlib.blake2b(
        f"{tenant_id}\x00{event_id}".encode(errors="surrogatepass"), digest_size=16
    ).digest()


def content_digest(encoded_event: bytes) -> int:
    return zlib.crc32(encoded_event)


class _Run:
    __slots__ = ("hi", "lo", "content", "day")

    def __init__(self, entries: np.ndarray) -> None:
        order = np.lexsort((entries["lo"], entries["hi"]))
        sorted_entries = entries[order]
        self.hi = np.ascontiguousarray(sorted_entries["hi"])
        self.lo = np.ascontiguousarray(sorted_entries["lo"])
        self.content = np.ascontiguousarray(sorted_entries["content"])
        self.day = np.ascontiguousarray(sorted_entries["day"])

    def __len__(self) -> int:
        return len(self.hi)

    def entries(self) -> np.ndarray:
        out = np.empty(len(self.hi), _ENTRY)
        out["hi"], out["lo"], out["content"], out["day"] = self.hi, self.lo, self.content, self.day
        return out

    def find(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Index of each (hi, lo) in this run, or -1."""
        n = len(self.hi)
        at = np.searchsorted(self.hi, hi)
        inside = at < n
        safe = np.where(inside, at, 0)
        same_hi = inside & (self.hi[safe] == hi)
        hit = same_hi & (self.lo[safe] == lo)
        result = np.where(hit, safe, -1)
        # Two digests sharing their high 64 bits (about 1 in 2^64 per pair) sit next to
        # each other; look past the first for the rare query that lands there.
        for i in np.flatnonzero(same_hi & ~hit):
            j = int(safe[i]) + 1
            while j < n and self.hi[j] == hi[i]:
                if self.lo[j] == lo[i]:
                    result[i] = j
                    break
                j += 1
        return result


class SeenSet:
    """Digests of counted events: a dict of recent ones, and sorted runs of older ones.

    New digests go to the dict (a batch's in-batch duplicates are found there too);
    once it holds `RECENT_LIMIT` entries they are sorted into a run, so sorting is paid
    once per many batches and memory stays at the run's 24 bytes per event.
    """

    RECENT_LIMIT = 65_536

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._recent: dict[bytes, tuple[int, int]] = {}

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs) + len(self._recent)

    def lookup_runs(self, hi: np.ndarray, lo: np.ndarray) -> tuple[list[bool], list[int]]:
        """(found, stored content digest) in the sorted runs, for each queried digest."""
        found = np.zeros(len(hi), bool)
        content = np.zeros(len(hi), np.uint32)
        for run in self._runs:
            at = run.find(hi, lo)
            hit = at >= 0
            found |= hit
            content[hit] = run.content[at[hit]]
        return found.tolist(), content.tolist()

    def recent(self, digest: bytes) -> int | None:
        """The stored content digest of `digest` among the recent entries, if there."""
        entry = self._recent.get(digest)
        return None if entry is None else entry[0]

    def add_recent(self, digest: bytes, content: int, day: int) -> None:
        self._recent[digest] = (content, day)

    def settle(self) -> None:
        """Move the recent entries into a sorted run once there are enough of them."""
        if len(self._recent) >= self.RECENT_LIMIT:
            self._add_run(self._recent_entries())
            self._recent = {}

    def add(self, entries: np.ndarray) -> None:
        """Add packed entries (see `pack_entries`) known to be absent: journal folds."""
        if len(entries):
            self._add_run(entries)

    def _add_run(self, entries: np.ndarray) -> None:
        self._runs.append(_Run(entries))
        while len(self._runs) >= 2 and len(self._runs[-2]) <= len(self._runs[-1]):
            last, before = self._runs.pop(), self._runs.pop()
            self._runs.append(_Run(np.concatenate([before.entries(), last.entries()])))

    def _recent_entries(self) -> np.ndarray:
        values = list(self._recent.values())
        return pack_entries(list(self._recent), [c for c, _ in values], [d for _, d in values])

    def expire(self, min_day: int) -> None:
        """Forget events of UTC days before `min_day` (outside retention)."""
        kept: list[_Run] = []
        for run in self._runs:
            keep = run.day >= min_day
            if keep.all():
                kept.append(run)
            elif keep.any():
                kept.append(_Run(run.entries()[keep]))
        self._runs = kept
        self._recent = {d: v for d, v in self._recent.items() if v[1] >= min_day}

    def to_bytes(self) -> bytes:
        parts = [run.entries() for run in self._runs] + [self._recent_entries()]
        return np.concatenate(parts).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SeenSet:
        seen = cls()
        seen.add(entries_from_bytes(data))
        return seen


def pack_entries(digests: list[bytes], contents: list[int], days: list[int]) -> np.ndarray:
    """Parallel lists -> the packed layout of runs and journals."""
    out = np.empty(len(digests), _ENTRY)
    if digests:
        halves = np.frombuffer(b"".join(digests), "<u8").reshape(-1, 2)
        out["hi"], out["lo"] = halves[:, 0], halves[:, 1]
        out["content"] = np.array(contents, dtype=np.uint32)
        out["day"] = np.array(days, dtype=np.int32)
    return out


def entries_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, _ENTRY)
