"""Bulk upsert of raw records, one page per transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from st_pipeline.servicetitan.timestamps import parse_timestamp


class RecordKeyError(ValueError):
    """A record lacks a usable integer ``id``."""


def raw_rows(
    tenant_id: int, records: list[dict[str, Any]], *, extracted_at: datetime, run_id: str
) -> list[dict[str, Any]]:
    """Turn API records into raw-table rows, one per id (the last one of a page wins)."""
    rows: dict[int, dict[str, Any]] = {}
    for record in records:
        record_id = record.get("id")
        if not isinstance(record_id, int) or isinstance(record_id, bool):
            raise RecordKeyError(f"a record of tenant {tenant_id} has no integer id (got {type(record_id).__name__})")
        active = record.get("active")
        rows[record_id] = {
            "tenant_id": tenant_id,
            "id": record_id,
            "modified_on": parse_timestamp(record.get("modifiedOn")),
            "active": active if isinstance(active, bool) else None,
            "payload": record,
            "extracted_at": extracted_at,
            "run_id": run_id,
        }
    return list(rows.values())


def upsert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows or update existing ones with the same ``(tenant_id, id)``.

    An existing row is only replaced by one at least as recent (``modified_on``), so a stale
    copy of a record never overwrites a newer one.
    """
    if not rows:
        return 0
    dialect = conn.dialect.name
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:
        raise NotImplementedError(f"the warehouse does not support {dialect!r}; use SQLite or PostgreSQL")
    excluded = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.id],
        set_={name: excluded[name] for name in ("modified_on", "active", "payload", "extracted_at", "run_id")},
        where=sa.or_(
            table.c.modified_on.is_(None),
            excluded.modified_on.is_(None),
            excluded.modified_on >= table.c.modified_on,
        ),
    )
    conn.execute(statement, rows)
    return len(rows)
