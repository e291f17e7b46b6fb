"""The statements that fill a hub table from its raw table, made from the hub's spec (SQLAlchemy Core).

Everything runs inside the warehouse: SQLite's JSON functions or PostgreSQL's ``jsonb`` operators
read the payloads (see ``expressions``); no record passes through Python. The same statements
serve a full build (every raw row of the tenant) and an incremental one (raw rows extracted after
a watermark, ``since``). A value of the wrong shape becomes NULL rather than failing the build;
the reconciliation checks count rows, not values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.expressions import array_elements, decimal_from_text, json_text, json_value
from st_pipeline.transform.spec import Column, ColumnType, HubTable
from st_pipeline.transform.tables import hub_table
from st_pipeline.warehouse.tables import PayloadType


def raw_source(name: str) -> sa.TableClause:
    """A raw table by name, with the columns the hub statements read."""
    return sa.table(
        name,
        sa.column("tenant_id", sa.BigInteger()),
        sa.column("id", sa.BigInteger()),
        sa.column("active", sa.Boolean()),
        sa.column("payload", PayloadType),
        sa.column("modified_on", UtcDateTime()),
        sa.column("extracted_at", UtcDateTime()),
        sa.column("deleted_at", UtcDateTime()),
    )


@dataclass(frozen=True)
class _Rows:
    """Where a hub table's rows come from: the raw records, or the elements of an array in each."""

    raw: sa.FromClause
    source: sa.FromClause
    condition: ColumnElement[bool]
    element: ColumnElement[Any] | None = None  # the array element (exploded tables)
    position: ColumnElement[int] | None = None


def _rows(spec: HubTable, raw_name: str, dialect: str) -> _Rows:
    raw = raw_source(raw_name).alias("r")
    if spec.explode is None:
        return _Rows(raw, raw, sa.true())
    elements = array_elements(dialect, raw, raw.c.payload, tuple(spec.explode.split(".")))
    return _Rows(raw, elements.source, elements.condition, elements.value, elements.position)


def _document(column: Column, rows: _Rows) -> ColumnElement[Any]:
    """The JSON document a column reads: the raw payload, or the exploded array element."""
    if rows.element is None or column.from_parent:
        return rows.raw.c.payload
    return rows.element


def _is_decimal(column: Column) -> bool:
    return column.type in (ColumnType.MONEY, ColumnType.DECIMAL)


# Record fields the raw table already holds in columns of their own: read there, not parsed again.
_RAW_COLUMNS = {("id", ColumnType.INTEGER): "id", ("active", ColumnType.BOOLEAN): "active"}


def _extracted(column: Column, rows: _Rows) -> ColumnElement[Any]:
    """A hub column as read from the JSON (a decimal as its text: converted in a second step)."""
    if column.path == "#":
        assert rows.position is not None, "'#' (position) is a column of exploded tables only"
        return rows.position
    raw_column = _RAW_COLUMNS.get((".".join(column.json_path), column.type))
    if (rows.element is None or column.from_parent) and raw_column is not None:
        return rows.raw.c[raw_column]
    if _is_decimal(column):
        return json_text(_document(column, rows), column.json_path)
    return json_value(_document(column, rows), column.json_path, column.type)


def _tenant_rows(rows: _Rows, tenant_id: int, since: datetime | None) -> ColumnElement[bool]:
    """The tenant's raw rows, or those extracted after ``since``."""
    condition = rows.raw.c.tenant_id == tenant_id
    if since is not None:
        condition = sa.and_(condition, rows.raw.c.extracted_at > since)
    return condition


def insert_statement(
    spec: HubTable, raw_name: str, dialect: str, *, tenant_id: int, since: datetime | None, built_at: datetime
) -> sa.Insert:
    """``INSERT INTO hub … SELECT …`` the rows of the tenant's raw records (those extracted after ``since``).

    The values are read from the JSON first, into a CTE, and decimals converted from their text
    there: the conversion names the text many times, and SQLite would extract it again each time
    (so the CTE is materialized on SQLite; PostgreSQL inlines it).
    """
    rows = _rows(spec, raw_name, dialect)
    extracted = (
        sa.select(
            rows.raw.c.tenant_id,
            *(_extracted(c, rows).label(c.name) for c in spec.columns),
            rows.raw.c.deleted_at,
            rows.raw.c.modified_on.label("source_modified_on"),
        )
        .select_from(rows.source)
        .where(_tenant_rows(rows, tenant_id, since), rows.condition)
        .cte("src")
        .prefix_with("MATERIALIZED", dialect="sqlite")
    )
    values = [decimal_from_text(extracted.c[c.name]) if _is_decimal(c) else extracted.c[c.name] for c in spec.columns]
    hub = hub_table(spec)
    select = sa.select(
        extracted.c.tenant_id,
        *values,
        extracted.c.deleted_at,
        extracted.c.source_modified_on,
        sa.literal(built_at, UtcDateTime()),
    )
    names = ["tenant_id", *(c.name for c in spec.columns), "deleted_at", "source_modified_on", "built_at"]
    return hub.insert().from_select(names, select)


def delete_statement(spec: HubTable, raw_name: str, *, tenant_id: int, since: datetime | None) -> sa.Delete:
    """Delete the tenant's hub rows about to be rebuilt: all, or those of raw records extracted after ``since``."""
    hub = hub_table(spec)
    statement = hub.delete().where(hub.c.tenant_id == tenant_id)
    if since is None:
        return statement
    raw = raw_source(raw_name).alias("r")
    changed = sa.select(raw.c.id).where(raw.c.tenant_id == tenant_id, raw.c.extracted_at > since)
    return statement.where(hub.c[spec.parent_key_column].in_(changed))


def changed_ids_statement(raw_name: str, *, tenant_id: int, since: datetime) -> sa.Select[tuple[int]]:
    """The ids of the tenant's raw records extracted after ``since``."""
    raw = raw_source(raw_name).alias("r")
    return sa.select(raw.c.id).where(raw.c.tenant_id == tenant_id, raw.c.extracted_at > since)


def changed_count_statement(raw_name: str, *, tenant_id: int, since: datetime) -> sa.Select[tuple[int]]:
    """How many of the tenant's raw records were extracted after ``since``."""
    return sa.select(sa.func.count()).select_from(
        changed_ids_statement(raw_name, tenant_id=tenant_id, since=since).subquery()
    )


def raw_row_count_statement(spec: HubTable, raw_name: str, dialect: str, *, tenant_id: int) -> sa.Select[tuple[int]]:
    """How many hub rows the tenant's raw records make (records, or elements of the exploded array)."""
    rows = _rows(spec, raw_name, dialect)
    return (
        sa.select(sa.func.count()).select_from(rows.source).where(_tenant_rows(rows, tenant_id, None), rows.condition)
    )


def raw_text_statement(
    spec: HubTable, column: Column, raw_name: str, dialect: str, *, tenant_id: int
) -> sa.Select[tuple[str]]:
    """Every value of a hub column's source as the JSON text it was received in (for reconciliation)."""
    rows = _rows(spec, raw_name, dialect)
    return (
        sa.select(json_text(_document(column, rows), column.json_path))
        .select_from(rows.source)
        .where(_tenant_rows(rows, tenant_id, None), rows.condition)
    )


def raw_max_extracted_statement(raw_name: str, *, tenant_id: int) -> sa.Select[tuple[datetime | None]]:
    """The newest ``extracted_at`` of the tenant's raw records (a hub build's next watermark)."""
    raw = raw_source(raw_name)
    return sa.select(sa.func.max(raw.c.extracted_at)).where(raw.c.tenant_id == tenant_id)


def raw_count_statement(raw_name: str, *, tenant_id: int) -> sa.Select[tuple[int]]:
    """How many raw records the tenant has."""
    raw = raw_source(raw_name)
    return sa.select(sa.func.count()).select_from(raw).where(raw.c.tenant_id == tenant_id)
