"""The SQL that fills a hub table from its raw table, generated from the spec, per dialect.

Everything runs inside the warehouse: SQLite's JSON functions or PostgreSQL's ``jsonb``
operators read the payloads; no record passes through Python. The same statements serve a full
build (every raw row of the tenant) and an incremental one (raw rows changed after a watermark).

Conversions, the same on both warehouses:
- timestamps to UTC (a value without a zone is taken as UTC), millisecond precision;
- money and other decimals exactly, from the JSON text of the value (never through a float),
  to 4 decimal places (digits beyond the fourth are cut); a value that is not a plain decimal
  number becomes NULL;
- a value of the wrong shape (text where a timestamp belongs) becomes NULL rather than failing
  the build; the reconciliation checks count rows, not values.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from st_pipeline.transform.spec import Column, ColumnType, HubTable
from st_pipeline.transform.types import MONEY_SCALE

RAW_ALIAS = "r"
ELEMENT_ALIAS = "e"
_DECIMAL_PATTERN = "^[-+]?[0-9]+(\\.[0-9]*)?$"


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "$." + ".".join(f'"{part}"' for part in path)


def _pg_path(path: tuple[str, ...]) -> str:
    return "'{" + ",".join(path) + "}'"


def _source(column: Column, spec: HubTable, dialect: str) -> str:
    """The JSON document a column reads: the raw payload, or the exploded array element."""
    if spec.explode is None or column.from_parent:
        return f"{RAW_ALIAS}.payload"
    return f"{ELEMENT_ALIAS}.value"


def _sqlite_text(document: str, path: str) -> str:
    """The JSON value at ``path`` as the text it was written in: ``->`` keeps a number's literal and a
    string's quotes, which are cut (a decimal string holds no quote or escape)."""
    return f"trim({document} -> '{path}', '\"')"


def _sqlite_decimal(text: str) -> str:
    """A decimal number's text → integer ten-thousandths, by string arithmetic only."""
    digits = f"ltrim({text}, '+-')"
    dot = f"instr({digits}, '.')"
    whole = f"(CASE WHEN {dot} > 0 THEN substr({digits}, 1, {dot} - 1) ELSE {digits} END)"
    fraction = (
        f"(CASE WHEN {dot} > 0 THEN substr(substr({digits}, {dot} + 1) || '0000', 1, {MONEY_SCALE}) ELSE '0000' END)"
    )
    sign = f"(CASE WHEN substr({text}, 1, 1) = '-' THEN -1 ELSE 1 END)"
    valid = (
        f"{text} <> '' AND {digits} <> '' AND {digits} <> '.' AND {text} NOT GLOB '?*[+-]*' "
        f"AND {text} NOT GLOB '[+-][+-]*' AND {digits} NOT GLOB '*[^0-9.]*' AND {digits} NOT GLOB '*.*.*'"
    )
    scaled = f"CAST({whole} AS INTEGER) * {10**MONEY_SCALE} + CAST({fraction} AS INTEGER)"
    return f"(CASE WHEN {valid} THEN {sign} * ({scaled}) END)"


def _sqlite_value(column: Column, document: str) -> str:
    # One parse of the document per column: each JSON function call parses its argument again, so
    # no ``json_type`` guards. Values already passed the record models, so their JSON types are right.
    path = _sqlite_path(column.json_path)
    if column.type == ColumnType.TIMESTAMP:
        return f"strftime('%Y-%m-%d %H:%M:%f', json_extract({document}, '{path}'))"
    return f"json_extract({document}, '{path}')"


def _pg_value(column: Column, document: str) -> str:
    text = f"({document} #>> {_pg_path(column.json_path)})"
    kind = f"jsonb_typeof({document} #> {_pg_path(column.json_path)})"
    if column.type in (ColumnType.MONEY, ColumnType.DECIMAL):
        return f"(CASE WHEN {text} ~ '{_DECIMAL_PATTERN}' THEN trunc({text}::numeric, {MONEY_SCALE}) END)"
    if column.type == ColumnType.TIMESTAMP:
        # Fractions are cut to milliseconds in the text first: the cast would round a 7th digit
        # (23:59:59.9999999 to the next day), where SQLite and Python cut.
        cut = f"regexp_replace({text}, '(\\.[0-9]{{3}})[0-9]+', '\\1')"
        return f"(CASE WHEN {text} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' THEN ({cut})::timestamptz END)"
    if column.type == ColumnType.TEXT:
        return text
    if column.type == ColumnType.BOOLEAN:
        return f"(CASE {kind} WHEN 'boolean' THEN {text}::boolean END)"
    if column.type == ColumnType.INTEGER:
        return f"(CASE WHEN {kind} = 'number' AND {text} ~ '^-?[0-9]+$' THEN {text}::bigint END)"
    return f"(CASE {kind} WHEN 'number' THEN {text}::double precision END)"


def _is_decimal(column: Column) -> bool:
    return column.type in (ColumnType.MONEY, ColumnType.DECIMAL)


# Record fields the raw table already holds in columns of their own: read there, not parsed again.
_RAW_COLUMNS = {("id", ColumnType.INTEGER): "id", ("active", ColumnType.BOOLEAN): "active"}


def column_value(column: Column, spec: HubTable, dialect: str) -> str:
    """The SQL expression of one hub column (on SQLite, a decimal's text: see ``insert_statement``)."""
    if column.path == "#":
        return f"{ELEMENT_ALIAS}.key" if dialect == "sqlite" else f"{ELEMENT_ALIAS}.position"
    reads_record = spec.explode is None or column.from_parent
    raw_column = _RAW_COLUMNS.get((".".join(column.json_path), column.type))
    if reads_record and raw_column is not None:
        return f"{RAW_ALIAS}.{raw_column}"
    document = _source(column, spec, dialect)
    if dialect != "sqlite":
        return _pg_value(column, document)
    if _is_decimal(column):
        return _sqlite_text(document, _sqlite_path(column.json_path))
    return _sqlite_value(column, document)


def from_clause(spec: HubTable, raw_table: str, dialect: str) -> tuple[str, str]:
    """``FROM`` the raw table (joined with the exploded array's elements) and the join's condition.

    Exploded elements come with their 0-based position in the array.
    """
    raw = f"{raw_table} {RAW_ALIAS}"
    if spec.explode is None:
        return f"FROM {raw}", "1 = 1"
    if dialect == "sqlite":
        path = _sqlite_path(tuple(spec.explode.split(".")))
        # Array elements are the rows with an integer key (a scalar or null gives one row keyed NULL).
        return (
            f"FROM {raw}, json_each({RAW_ALIAS}.payload, '{path}') {ELEMENT_ALIAS}",
            f"typeof({ELEMENT_ALIAS}.key) = 'integer'",
        )
    array = f"{RAW_ALIAS}.payload #> {_pg_path(tuple(spec.explode.split('.')))}"
    return (
        f"FROM {raw} CROSS JOIN LATERAL (SELECT ordinality - 1 AS position, value FROM jsonb_array_elements("
        f"CASE jsonb_typeof({array}) WHEN 'array' THEN {array} ELSE '[]'::jsonb END) WITH ORDINALITY) {ELEMENT_ALIAS}",
        "1 = 1",
    )


def _changed_filter(incremental: bool) -> str:
    base = f"{RAW_ALIAS}.tenant_id = :tenant_id"
    return f"{base} AND {RAW_ALIAS}.extracted_at > :since" if incremental else base


def insert_statement(spec: HubTable, raw_table: str, dialect: str, *, incremental: bool) -> str:
    """``INSERT INTO hub … SELECT …`` the rows of the tenant's raw records (changed since ``:since``).

    On SQLite, decimals are converted from their text by string arithmetic, which names the text
    many times; the texts are extracted once, into a materialized CTE, and converted from there.
    """
    names = [c.name for c in spec.columns]
    values = [column_value(c, spec, dialect) for c in spec.columns]
    select = ",\n  ".join(f"{value} AS {name}" for value, name in zip(values, names, strict=True))
    source, joined = from_clause(spec, raw_table, dialect)
    inner = (
        f"SELECT {RAW_ALIAS}.tenant_id AS tenant_id,\n  {select},\n  {RAW_ALIAS}.deleted_at AS deleted_at, "
        f"{RAW_ALIAS}.modified_on AS source_modified_on\n{source}\nWHERE {_changed_filter(incremental)} AND {joined}"
    )
    target = f"INSERT INTO {spec.table_name} (tenant_id, {', '.join(names)}, deleted_at, source_modified_on, built_at)"
    if dialect != "sqlite":
        return f"{target}\nSELECT src.*, :built_at FROM ({inner}) src"
    outer = ", ".join(_sqlite_decimal(f"src.{c.name}") if _is_decimal(c) else f"src.{c.name}" for c in spec.columns)
    return (
        f"WITH src AS MATERIALIZED ({inner})\n{target}\n"
        f"SELECT src.tenant_id, {outer}, src.deleted_at, src.source_modified_on, :built_at FROM src"
    )


def delete_statement(spec: HubTable, raw_table: str, *, incremental: bool) -> str:
    """Delete the tenant's hub rows about to be rebuilt: all, or those of raw records changed since ``:since``."""
    if not incremental:
        return f"DELETE FROM {spec.table_name} WHERE tenant_id = :tenant_id"
    return (
        f"DELETE FROM {spec.table_name} WHERE tenant_id = :tenant_id AND {spec.parent_key_column} IN "
        f"(SELECT {RAW_ALIAS}.id FROM {raw_table} {RAW_ALIAS} WHERE {_changed_filter(True)})"
    )


def changed_count_statement(raw_table: str) -> str:
    """How many of the tenant's raw records changed since ``:since``."""
    return f"SELECT count(*) FROM {raw_table} {RAW_ALIAS} WHERE {_changed_filter(True)}"


def raw_text_statement(spec: HubTable, column: Column, raw_table: str, dialect: str) -> str:
    """Every value of a hub column's source as the JSON text it was received in (for reconciliation)."""
    document = _source(column, spec, dialect)
    if dialect == "sqlite":
        value = _sqlite_text(document, _sqlite_path(column.json_path))
    else:
        value = f"({document} #>> {_pg_path(column.json_path)})"
    source, joined = from_clause(spec, raw_table, dialect)
    return f"SELECT {value} {source} WHERE {RAW_ALIAS}.tenant_id = :tenant_id AND {joined}"


def raw_row_count_statement(spec: HubTable, raw_table: str, dialect: str) -> str:
    """How many hub rows the tenant's raw records make (records, or elements of the exploded array)."""
    source, joined = from_clause(spec, raw_table, dialect)
    return f"SELECT count(*) {source} WHERE {RAW_ALIAS}.tenant_id = :tenant_id AND {joined}"


def bind_types() -> dict[str, sa.types.TypeEngine[datetime]]:
    """Types of the statements' parameters, so timestamps bind in each warehouse's format."""
    from st_pipeline.sqltypes import UtcDateTime

    return {"since": UtcDateTime(), "built_at": UtcDateTime()}
