"""The records of one dataset of one tenant, kept in the orders the endpoints read them in.

A store holds an immutable *snapshot* (records by id and by ``(modifiedOn, id)``, plus lazily
built views); a change replaces the whole snapshot, so readers on other threads never lock and
never see a half-applied change. Records cache their own JSON per response shape, so a page is
a join of ready-made fragments.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

_VIEW_CACHE_LIMIT = 64


def dumps(value: Any) -> str:
    """Compact JSON, the way every response body is serialized."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Shape:
    """How one endpoint presents a dataset's records: its keys, in its schema's order.

    ``extra_keys`` are the keys whose schema differs from the dataset's own record schema; their
    values live in ``StoredRecord.extras[name]`` instead of the record itself.
    """

    name: str
    keys: tuple[str, ...]
    extra_keys: frozenset[str] = frozenset()

    def project(self, record: StoredRecord) -> dict[str, Any]:
        data = record.data
        extras = record.extras.get(self.name, {}) if self.extra_keys else {}
        return {
            key: (extras.get(key) if key in self.extra_keys else data[key])
            for key in self.keys
            if key in self.extra_keys or key in data
        }


class StoredRecord:
    """One record and the internal keys it is ordered and filtered by."""

    __slots__ = ("id", "created", "modified", "active", "data", "extras", "_json")

    def __init__(
        self,
        record_id: int,
        created: int,
        modified: int,
        active: bool,
        data: dict[str, Any],
        extras: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.id = record_id
        self.created = created  # ticks
        self.modified = modified  # ticks
        self.active = active
        self.data = data  # never mutated once stored: a change makes a new StoredRecord
        self.extras = extras or {}
        self._json: dict[str | None, str] = {}

    def json(self, shape: Shape | None = None) -> str:
        """The record serialized in ``shape`` (``None``: the full record), cached."""
        key = None if shape is None else shape.name
        text = self._json.get(key)
        if text is None:
            text = dumps(self.data if shape is None else shape.project(self))
            self._json[key] = text
        return text

    def copy_data(self) -> dict[str, Any]:
        """A deep copy of the full record."""
        return json.loads(self.json())


Position = tuple[int, int]  # (modified ticks, id): a place in an export feed


class _Snapshot:
    __slots__ = ("by_id", "ids", "by_modified", "positions", "views", "views_lock")

    def __init__(self, by_id: list[StoredRecord]) -> None:
        self.by_id = by_id
        self.ids = [record.id for record in by_id]
        self.by_modified = sorted(by_id, key=lambda r: (r.modified, r.id))
        self.positions: list[Position] = [(r.modified, r.id) for r in self.by_modified]
        self.views: dict[Hashable, list[StoredRecord]] = {}
        self.views_lock = threading.Lock()


class DatasetStore:
    """The current records of one dataset of one tenant."""

    def __init__(self, key: str, records: Sequence[StoredRecord]) -> None:
        self.key = key
        self._snapshot = _Snapshot(sorted(records, key=lambda r: r.id))
        self._write_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._snapshot.by_id)

    def records(self) -> list[StoredRecord]:
        """Every record, ordered by id (do not mutate the list)."""
        return self._snapshot.by_id

    def get(self, record_id: int) -> StoredRecord | None:
        snapshot = self._snapshot
        index = bisect_left(snapshot.ids, record_id)
        if index < len(snapshot.ids) and snapshot.ids[index] == record_id:
            return snapshot.by_id[index]
        return None

    def max_id(self) -> int:
        ids = self._snapshot.ids
        return ids[-1] if ids else 0

    def max_modified(self) -> int:
        positions = self._snapshot.positions
        return positions[-1][0] if positions else 0

    def export_batch(
        self, after: Position, limit: int, active: bool | None = None
    ) -> tuple[list[StoredRecord], Position, bool]:
        """Up to ``limit`` records after ``after`` in ``(modified, id)`` order.

        Returns the records, the position of the last one (``after`` when none), and whether
        more records follow. ``active`` filters by the active flag when not ``None``.
        """
        snapshot = self._snapshot
        start = bisect_right(snapshot.positions, after)
        if active is None:
            batch = snapshot.by_modified[start : start + limit]
            has_more = start + limit < len(snapshot.by_modified)
        else:
            batch = []
            has_more = False
            for record in snapshot.by_modified[start:]:
                if record.active is not active:
                    continue
                if len(batch) == limit:
                    has_more = True
                    break
                batch.append(record)
        position = (batch[-1].modified, batch[-1].id) if batch else after
        return batch, position, has_more

    def select(
        self,
        order: str = "id",
        descending: bool = False,
        filter_key: Hashable = None,
        predicate: Callable[[StoredRecord], bool] | None = None,
    ) -> list[StoredRecord]:
        """Records in ``order`` (``id``, ``modified`` or ``created``) that pass ``predicate``.

        Results are cached per ``(order, descending, filter_key)`` for the life of the current
        snapshot, so following the pages of one query costs one scan, not one per page.
        ``filter_key`` must identify ``predicate``.
        """
        snapshot = self._snapshot
        cache_key = (order, descending, filter_key)
        cached = snapshot.views.get(cache_key)
        if cached is not None:
            return cached
        if order == "id":
            ordered = snapshot.by_id
        elif order == "modified":
            ordered = snapshot.by_modified
        elif order == "created":
            ordered = sorted(snapshot.by_id, key=lambda r: (r.created, r.id))
        else:
            raise ValueError(f"unknown order {order!r}")
        result = list(filter(predicate, ordered)) if predicate is not None else list(ordered)
        if descending:
            result.reverse()
        with snapshot.views_lock:
            if len(snapshot.views) >= _VIEW_CACHE_LIMIT:
                snapshot.views.clear()
            snapshot.views[cache_key] = result
        return result

    def apply(
        self, changed: Sequence[StoredRecord] = (), added: Sequence[StoredRecord] = ()
    ) -> None:
        """Replace ``changed`` records (matched by id) and add ``added`` ones."""
        with self._write_lock:
            replacements = {record.id: record for record in changed}
            records = [replacements.pop(r.id, r) for r in self._snapshot.by_id]
            if replacements:
                raise KeyError(f"{self.key}: no records with ids {sorted(replacements)}")
            existing = set(self._snapshot.ids)
            duplicates = [record.id for record in added if record.id in existing]
            if duplicates:
                raise KeyError(f"{self.key}: ids already exist: {duplicates}")
            records.extend(added)
            records.sort(key=lambda r: r.id)
            self._snapshot = _Snapshot(records)
