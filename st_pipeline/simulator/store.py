"""The records of one dataset of one tenant, kept in the orders the endpoints read them in.

A record is kept as its serialized JSON (``bytes``) plus the keys it is ordered and filtered by;
it is decoded only when a caller needs a dict (ground truth, projections into another
endpoint's shape). A page of the dataset's own endpoints is therefore a join of ready-made
fragments, and a million records cost little more than their JSON text.

A store holds an immutable *snapshot* (records by id and by ``(modifiedOn, id)``, plus lazily
built views); a change replaces the whole snapshot, so readers on other threads never lock and
never see a half-applied change.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_VIEW_CACHE_LIMIT = 64  # cached views per snapshot …
_VIEW_CACHE_ENTRIES = 4_000_000  # … and record references in all of them (8 bytes each)

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def dumps(value: Any) -> str:
    """Compact JSON, the way every response body is serialized."""
    return _encoder.encode(value)


def dumpb(value: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes."""
    return _encoder.encode(value).encode()


@dataclass(frozen=True)
class Shape:
    """How one endpoint presents a dataset's records: its keys, in its schema's order.

    ``extra_keys`` are the keys whose schema differs from the dataset's own record schema; their
    values live in ``StoredRecord.extras[name]`` instead of the record itself. ``drops_active``
    says that the shape is the full record without its top-level ``active`` (so the stored JSON
    can be served with that one member cut out, without decoding it).
    """

    name: str
    keys: tuple[str, ...]
    extra_keys: frozenset[str] = frozenset()
    drops_active: bool = False

    def project(self, record: StoredRecord) -> dict[str, Any]:
        """The record (decoded) in this shape."""
        data = record.copy_data()
        extras = record.extras_of(self.name) if self.extra_keys else {}
        return {
            key: (extras.get(key) if key in self.extra_keys else data[key])
            for key in self.keys
            if key in self.extra_keys or key in data
        }


class StoredRecord:
    """One record: its JSON and the internal keys it is ordered and filtered by.

    ``extras`` maps an endpoint path to the JSON of the properties that endpoint's schema
    defines differently (``None`` when no endpoint needs any). Never mutated once stored: a
    change makes a new ``StoredRecord``. (While a tenant is generated, a job's record gets its
    invoice's id and total once the invoices exist: see ``business``.)
    """

    __slots__ = ("id", "created", "modified", "active", "blob", "extras")

    def __init__(
        self,
        record_id: int,
        created: int,
        modified: int,
        active: bool,
        blob: bytes,
        extras: dict[str, bytes] | None = None,
    ) -> None:
        self.id = record_id
        self.created = created  # ticks
        self.modified = modified  # ticks
        self.active = active
        self.blob = blob
        self.extras = extras

    @classmethod
    def from_data(
        cls,
        record_id: int,
        created: int,
        modified: int,
        active: bool,
        data: dict[str, Any],
        extras: dict[str, dict[str, Any]] | None = None,
    ) -> StoredRecord:
        """A record serialized from ``data`` (and its per-endpoint extras)."""
        packed = {path: dumpb(value) for path, value in extras.items()} if extras else None
        return cls(record_id, created, modified, active, dumpb(data), packed)

    def json(self, shape: Shape | None = None) -> bytes:
        """The record serialized in ``shape`` (``None``: the full record, as stored)."""
        if shape is None:
            return self.blob
        if shape.drops_active:
            cut = _without_member(self.blob, _ACTIVE_MEMBERS[self.active])
            if cut is not None:
                return cut
        return dumpb(shape.project(self))

    def copy_data(self) -> dict[str, Any]:
        """The full record, decoded (a fresh copy every call)."""
        return json.loads(self.blob)

    def extras_of(self, path: str) -> dict[str, Any]:
        """The extra properties of the endpoint at ``path``, decoded (``{}`` if none)."""
        packed = self.extras.get(path) if self.extras else None
        return json.loads(packed) if packed is not None else {}


_ACTIVE_MEMBERS = {True: b'"active":true', False: b'"active":false'}


def _without_member(blob: bytes, member: bytes) -> bytes | None:
    """``blob`` (a JSON object) without ``member`` (``"key":value``), if it occurs only once.

    A quote inside a JSON string is always escaped, so ``member`` can only match a real member;
    when it occurs once it is the top-level one the caller knows to be there. ``None`` when it
    is ambiguous (a nested object has the same member).
    """
    start = blob.find(member)
    if start < 0 or blob.find(member, start + 1) >= 0:
        return None
    end = start + len(member)
    if blob[start - 1] == 0x2C:  # a comma before it: not the first member
        return blob[: start - 1] + blob[end:]
    if blob[end] == 0x2C:  # the first member, followed by others
        return blob[:start] + blob[end + 1 :]
    return blob[:start] + blob[end:]


def join_json(records: Iterable[StoredRecord], shape: Shape | None = None) -> bytes:
    """The records' JSON, comma-separated (the inside of a JSON array)."""
    if shape is None:
        return b",".join([record.blob for record in records])
    return b",".join([record.json(shape) for record in records])


Position = tuple[int, int]  # (modified ticks, id): a place in an export feed


def _position(record: StoredRecord) -> Position:
    return record.modified, record.id


def _record_id(record: StoredRecord) -> int:
    return record.id


class _Snapshot:
    __slots__ = ("by_id", "by_modified", "views", "view_entries", "views_lock")

    def __init__(self, by_id: list[StoredRecord]) -> None:
        self.by_id = by_id
        self.by_modified = sorted(by_id, key=_position)
        self.views: dict[Hashable, list[StoredRecord]] = {}
        self.view_entries = 0
        self.views_lock = threading.Lock()


class DatasetStore:
    """The current records of one dataset of one tenant."""

    def __init__(self, key: str, records: Sequence[StoredRecord]) -> None:
        self.key = key
        self._snapshot = _Snapshot(sorted(records, key=_record_id))
        self._write_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._snapshot.by_id)

    def records(self) -> list[StoredRecord]:
        """Every record, ordered by id (do not mutate the list)."""
        return self._snapshot.by_id

    def get(self, record_id: int) -> StoredRecord | None:
        by_id = self._snapshot.by_id
        index = bisect_left(by_id, record_id, key=_record_id)
        if index < len(by_id) and by_id[index].id == record_id:
            return by_id[index]
        return None

    def max_id(self) -> int:
        by_id = self._snapshot.by_id
        return by_id[-1].id if by_id else 0

    def max_modified(self) -> int:
        by_modified = self._snapshot.by_modified
        return by_modified[-1].modified if by_modified else 0

    def export_batch(
        self, after: Position, limit: int, active: bool | None = None
    ) -> tuple[list[StoredRecord], Position, bool]:
        """Up to ``limit`` records after ``after`` in ``(modified, id)`` order.

        Returns the records, the position of the last one (``after`` when none), and whether
        more records follow. ``active`` filters by the active flag when not ``None``.
        """
        ordered = self._snapshot.by_modified
        start = bisect_right(ordered, after, key=_position)
        if active is None:
            batch = ordered[start : start + limit]
            has_more = start + limit < len(ordered)
        else:
            batch = []
            has_more = False
            for index in range(start, len(ordered)):
                record = ordered[index]
                if record.active is not active:
                    continue
                if len(batch) == limit:
                    has_more = True
                    break
                batch.append(record)
        position = _position(batch[-1]) if batch else after
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
            full = len(snapshot.views) >= _VIEW_CACHE_LIMIT
            if full or snapshot.view_entries + len(result) > _VIEW_CACHE_ENTRIES:
                snapshot.views.clear()
                snapshot.view_entries = 0
            snapshot.views[cache_key] = result
            snapshot.view_entries += len(result)
        return result

    def apply(
        self,
        changed: Sequence[StoredRecord] = (),
        added: Sequence[StoredRecord] = (),
        removed: Sequence[int] = (),
    ) -> None:
        """Replace ``changed`` records (matched by id), add ``added`` ones, drop ``removed`` ids."""
        with self._write_lock:
            replacements = {record.id: record for record in changed}
            gone = set(removed)
            current = [r for r in self._snapshot.by_id if r.id not in gone]
            records = [replacements.pop(r.id, r) for r in current]
            if replacements:
                raise KeyError(f"{self.key}: no records with ids {sorted(replacements)}")
            existing = {record.id for record in current}
            duplicates = [record.id for record in added if record.id in existing]
            if duplicates:
                raise KeyError(f"{self.key}: ids already exist: {duplicates}")
            records.extend(added)
            records.sort(key=_record_id)
            self._snapshot = _Snapshot(records)
