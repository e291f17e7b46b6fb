"""What a sync counts, named once: of a client's traffic, of a dataset's extraction, of a sync-log row.

``SyncCounters`` is the one vocabulary: the client counts requests, retries, 429s and pages into
it (``client.stats``), each dataset's extraction adds what it received and wrote
(``ExtractResult``), the sync log stores it (``DatasetClose``) and a raw asset's materialization
shows it (``metadata``). A new counter is a new field here; each of those places then carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, Self

# Where a counter shows in a raw asset's materialization metadata: always, only when it is not 0,
# or not at all (it has a check or a column of its own).
Shown = Literal["always", "if not 0", "never"]


def _counter(*, metadata_key: str | None = None, shown: Shown = "always") -> Any:
    """A counter field (0 by default); ``metadata_key`` is its name in the metadata if not its own."""
    return field(default=0, metadata={"metadata_key": metadata_key, "shown": shown})


@dataclass(kw_only=True)
class SyncCounters:
    """Counts of a sync, of one dataset or of a whole client; added with ``+`` and ``+=``."""

    records: int = _counter()  # records received
    rows_written: int = _counter()  # raw rows inserted or changed (a record read again unchanged writes nothing)
    pages: int = _counter()  # pages received
    requests: int = _counter()  # HTTP requests sent, every attempt counted
    quarantined: int = _counter()  # records that failed their record model, kept in the quarantine table
    retries: int = _counter()  # attempts made again after a failure
    throttled: int = _counter(metadata_key="throttled_429s")  # 429 answers
    rows_deleted: int = _counter(metadata_key="rows_flagged_deleted", shown="if not 0")  # by a reconciliation
    duplicates: int = _counter(shown="never")  # records that arrived more than once in this sync (a check)
    reauthentications: int = _counter(shown="never")  # fresh tokens fetched after a 401 (the client's)

    def counters(self) -> SyncCounters:
        """The counters alone, a copy (of a subclass too: a result, the client's totals)."""
        return SyncCounters(**{name: getattr(self, name) for name in COUNTER_NAMES})

    def add(self, other: SyncCounters) -> None:
        """Add ``other``'s counters to these, in place."""
        for name in COUNTER_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __add__(self, other: SyncCounters) -> SyncCounters:
        total = self.counters()
        total.add(other)
        return total

    def __iadd__(self, other: SyncCounters) -> Self:  # in place: a result stays a result
        self.add(other)
        return self

    def metadata(self) -> dict[str, int]:
        """The counters as a raw asset's materialization shows them: plain ints, under their metadata names."""
        shown = {}
        for counter in fields(SyncCounters):
            value = getattr(self, counter.name)
            if counter.metadata["shown"] == "always" or (counter.metadata["shown"] == "if not 0" and value):
                shown[counter.metadata["metadata_key"] or counter.name] = value
        return shown


COUNTER_NAMES: tuple[str, ...] = tuple(counter.name for counter in fields(SyncCounters))
