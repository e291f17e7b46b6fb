"""The SQL expressions of the transform layer whose text differs between SQLite and PostgreSQL.

Hub statements and mart queries are SQLAlchemy Core; where the two warehouses spell a thing
differently — reading a JSON path, exact decimals from text, the UTC or local day of a timestamp, a
rate, an amount per count or share — they use one of the constructs below, and SQLAlchemy compiles it per dialect
(``@compiles``). Everything else is plain Core and reads the same on both.

Conversions, the same on both warehouses:
- timestamps to UTC (a value without a zone is taken as UTC), millisecond precision;
- money and other decimals exactly, from the JSON text of the value (never through a float), to
  4 decimal places (digits beyond the fourth are cut); a value that is not a plain decimal number
  becomes NULL;
- a value of the wrong shape (text where a timestamp belongs) becomes NULL rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from st_pipeline.database import SQLITE_LOCAL_DAY
from st_pipeline.transform.spec import ColumnType
from st_pipeline.transform.types import MONEY_SCALE

_DECIMAL_PATTERN = "^[-+]?[0-9]+(\\.[0-9]*)?$"
_DECIMAL_KINDS = (ColumnType.MONEY, ColumnType.DECIMAL)


def _sqlite_path(path: tuple[str, ...]) -> str:
    return "'$." + ".".join(f'"{part}"' for part in path) + "'"


def _pg_path(path: tuple[str, ...]) -> str:
    return "'{" + ",".join(path) + "}'"


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    """The construct's arguments compiled, each in parentheses unless it is a plain column or value
    (the SQL around them may bind tighter than the operators inside them)."""
    return [
        compiler.process(argument, **kw)
        if isinstance(argument, sa.ColumnClause | sa.BindParameter)
        else f"({compiler.process(argument, **kw)})"
        for argument in element.clauses
    ]


class _JsonPath(ColumnElement[Any]):
    """A value read from a JSON document column at a fixed path."""

    inherit_cache = True
    _traverse_internals = [  # the path is part of the SQL, so of the statement's cache key
        ("document", InternalTraversal.dp_clauseelement),
        ("path", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, document: ColumnElement[Any], path: tuple[str, ...]) -> None:
        self.document = document
        self.path = path

    @property
    def _from_objects(self) -> list[sa.FromClause]:  # the FROM it needs: the document's table
        return self.document._from_objects


class json_text(_JsonPath):  # noqa: N801  (named like the SQL functions it stands beside)
    """The JSON value at ``path`` as the text it was written in: a number's literal, a string unquoted."""

    inherit_cache = True
    type = sa.Text()


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    # ``->`` keeps a number's literal and a string's quotes, which are cut (a decimal string holds no
    # quote or escape).
    return f"trim({compiler.process(element.document, **kw)} -> {_sqlite_path(element.path)}, '\"')"


@compiles(json_text, "postgresql")
def _json_text_pg(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.document, **kw)} #>> {_pg_path(element.path)})"


class json_value(_JsonPath):  # noqa: N801
    """The JSON value at ``path`` converted to a hub column type (not a decimal: see ``decimal_from_text``)."""

    inherit_cache = True
    _traverse_internals = [*_JsonPath._traverse_internals, ("kind", InternalTraversal.dp_plain_obj)]

    def __init__(self, document: ColumnElement[Any], path: tuple[str, ...], kind: ColumnType) -> None:
        if kind in _DECIMAL_KINDS:
            raise ValueError("decimals are read with decimal_from_text(json_text(...))")
        super().__init__(document, path)
        self.kind = kind


@compiles(json_value, "sqlite")
def _json_value_sqlite(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    # One parse of the document per column: each JSON function call parses its argument again, so
    # no ``json_type`` guards. Values already passed the record models, so their JSON types are right.
    value = f"json_extract({compiler.process(element.document, **kw)}, {_sqlite_path(element.path)})"
    if element.kind == ColumnType.TIMESTAMP:
        return f"strftime('%Y-%m-%d %H:%M:%f', {value})"
    return value


@compiles(json_value, "postgresql")
def _json_value_pg(element: json_value, compiler: SQLCompiler, **kw: Any) -> str:
    document = compiler.process(element.document, **kw)
    text = f"({document} #>> {_pg_path(element.path)})"
    kind = f"jsonb_typeof({document} #> {_pg_path(element.path)})"
    if element.kind == ColumnType.TIMESTAMP:
        # Fractions are cut to milliseconds in the text first: the cast would round a 7th digit
        # (23:59:59.9999999 to the next day), where SQLite and Python cut.
        cut = f"regexp_replace({text}, '(\\.[0-9]{{3}})[0-9]+', '\\1')"
        return f"(CASE WHEN {text} ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' THEN ({cut})::timestamptz END)"
    if element.kind == ColumnType.TEXT:
        return text
    if element.kind == ColumnType.BOOLEAN:
        return f"(CASE {kind} WHEN 'boolean' THEN {text}::boolean END)"
    if element.kind == ColumnType.INTEGER:
        return f"(CASE WHEN {kind} = 'number' AND {text} ~ '^-?[0-9]+$' THEN {text}::bigint END)"
    return f"(CASE {kind} WHEN 'number' THEN {text}::double precision END)"


class decimal_from_text(FunctionElement[Any]):  # noqa: N801
    """A decimal number's text as an exact amount: integer ten-thousandths on SQLite (by string
    arithmetic only), NUMERIC cut to 4 places on PostgreSQL; NULL when it is not a plain decimal."""

    name = "decimal_from_text"
    inherit_cache = True


@compiles(decimal_from_text, "sqlite")
def _decimal_sqlite(element: decimal_from_text, compiler: SQLCompiler, **kw: Any) -> str:
    (text,) = _args(element, compiler, **kw)
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


@compiles(decimal_from_text, "postgresql")
def _decimal_pg(element: decimal_from_text, compiler: SQLCompiler, **kw: Any) -> str:
    (text,) = _args(element, compiler, **kw)
    return f"(CASE WHEN {text} ~ '{_DECIMAL_PATTERN}' THEN trunc({text}::numeric, {MONEY_SCALE}) END)"


class utc_day(FunctionElement[Any]):  # noqa: N801
    """The UTC calendar day of a timestamp column, as a value of the marts' ``day`` columns."""

    name = "utc_day"
    type = sa.Date()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (timestamp,) = _args(element, compiler, **kw)
    return f"substr({timestamp}, 1, 10)"  # timestamps are stored as UTC text


@compiles(utc_day, "postgresql")
def _utc_day_pg(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (timestamp,) = _args(element, compiler, **kw)
    return f"(({timestamp}) AT TIME ZONE 'UTC')::date"


class local_day(FunctionElement[Any]):  # noqa: N801
    """The calendar day of a timestamp column in an IANA time zone (a bound parameter), as a ``day`` value.

    SQLite has no time zones: there it calls ``st_local_day``, a Python function every warehouse
    connection registers (``st_pipeline.database``).
    """

    name = "local_day"
    type = sa.Date()
    inherit_cache = True


@compiles(local_day, "sqlite")
def _local_day_sqlite(element: local_day, compiler: SQLCompiler, **kw: Any) -> str:
    timestamp, zone = _args(element, compiler, **kw)
    return f"{SQLITE_LOCAL_DAY}({timestamp}, {zone})"


@compiles(local_day, "postgresql")
def _local_day_pg(element: local_day, compiler: SQLCompiler, **kw: Any) -> str:
    timestamp, zone = _args(element, compiler, **kw)
    return f"(({timestamp}) AT TIME ZONE {zone})::date"


def calendar_day(timestamp: ColumnElement[Any], time_zone: str) -> ColumnElement[Any]:
    """The day of ``timestamp`` in ``time_zone``: the UTC day itself when the zone is UTC (no conversion)."""
    if time_zone == "UTC":
        return utc_day(timestamp)
    return local_day(timestamp, sa.literal(time_zone, sa.Text()))


class as_day(FunctionElement[Any]):  # noqa: N801
    """A date parameter as a value of the ``day`` columns (text on SQLite, ``date`` on PostgreSQL)."""

    name = "as_day"
    type = sa.Date()
    inherit_cache = True


@compiles(as_day, "sqlite")
def _as_day_sqlite(element: as_day, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return value


@compiles(as_day, "postgresql")
def _as_day_pg(element: as_day, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = _args(element, compiler, **kw)
    return f"CAST({value} AS DATE)"


class days_between(FunctionElement[Any]):  # noqa: N801
    """Whole days from the second day to the first (both ``day`` values)."""

    name = "days_between"
    type = sa.Integer()
    inherit_cache = True


@compiles(days_between, "sqlite")
def _days_between_sqlite(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _args(element, compiler, **kw)
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


@compiles(days_between, "postgresql")
def _days_between_pg(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _args(element, compiler, **kw)
    return f"(({later})::date - ({earlier})::date)"


class minutes_between(FunctionElement[Any]):  # noqa: N801
    """Whole minutes from the second timestamp to the first (rounded; negative when the first is earlier)."""

    name = "minutes_between"
    type = sa.BigInteger()
    inherit_cache = True


@compiles(minutes_between, "sqlite")
def _minutes_between_sqlite(element: minutes_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _args(element, compiler, **kw)
    return f"CAST(ROUND((julianday({later}) - julianday({earlier})) * 1440) AS INTEGER)"


@compiles(minutes_between, "postgresql")
def _minutes_between_pg(element: minutes_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = _args(element, compiler, **kw)
    return f"CAST(ROUND(EXTRACT(EPOCH FROM (({later}) - ({earlier}))) / 60) AS BIGINT)"


class month_day(FunctionElement[Any]):  # noqa: N801
    """Day ``n`` (0-based) of a month given by year and month numbers, as a ``day`` value; NULL past the
    month's last day."""

    name = "month_day"
    type = sa.Date()
    inherit_cache = True


@compiles(month_day, "sqlite")
def _month_day_sqlite(element: month_day, compiler: SQLCompiler, **kw: Any) -> str:
    year, month, n = _args(element, compiler, **kw)
    day = f"date(printf('%04d-%02d-01', {year}, {month}), '+' || ({n}) || ' days')"
    return f"(CASE WHEN CAST(strftime('%m', {day}) AS INTEGER) = {month} THEN {day} END)"


@compiles(month_day, "postgresql")
def _month_day_pg(element: month_day, compiler: SQLCompiler, **kw: Any) -> str:
    year, month, n = _args(element, compiler, **kw)
    day = f"(make_date(CAST({year} AS INTEGER), CAST({month} AS INTEGER), 1) + CAST({n} AS INTEGER))"
    return f"(CASE WHEN EXTRACT(MONTH FROM {day}) = {month} THEN {day} END)"


class ratio(FunctionElement[Any]):  # noqa: N801
    """numerator / denominator as a floating-point rate, NULL when there is nothing to divide by."""

    name = "ratio"
    type = sa.Float()
    inherit_cache = True


@compiles(ratio)
def _ratio(element: ratio, compiler: SQLCompiler, **kw: Any) -> str:
    numerator, denominator = _args(element, compiler, **kw)
    cast = "REAL" if compiler.dialect.name == "sqlite" else "double precision"
    return f"(CAST({numerator} AS {cast}) / NULLIF({denominator}, 0))"


class money_per(FunctionElement[Any]):  # noqa: N801
    """An amount divided by a count, exact to 4 decimals (cut, not rounded, on both warehouses)."""

    name = "money_per"
    inherit_cache = True


@compiles(money_per, "sqlite")
def _money_per_sqlite(element: money_per, compiler: SQLCompiler, **kw: Any) -> str:
    amount, count = _args(element, compiler, **kw)
    return f"({amount} / NULLIF({count}, 0))"  # integer ten-thousandths: integer division cuts


@compiles(money_per, "postgresql")
def _money_per_pg(element: money_per, compiler: SQLCompiler, **kw: Any) -> str:
    amount, count = _args(element, compiler, **kw)
    return f"trunc({amount} / NULLIF({count}, 0), {MONEY_SCALE})"


class money_share(FunctionElement[Any]):  # noqa: N801
    """An amount times a percentage (a ``DECIMAL`` column, 0 to 100), exact to 4 decimals (cut)."""

    name = "money_share"
    inherit_cache = True


@compiles(money_share, "sqlite")
def _money_share_sqlite(element: money_share, compiler: SQLCompiler, **kw: Any) -> str:
    amount, percent = _args(element, compiler, **kw)
    # Both are integer ten-thousandths: amount × percent / (100 × 10^4) stays in ten-thousandths.
    return f"(({amount}) * ({percent}) / {100 * 10**MONEY_SCALE})"


@compiles(money_share, "postgresql")
def _money_share_pg(element: money_share, compiler: SQLCompiler, **kw: Any) -> str:
    amount, percent = _args(element, compiler, **kw)
    return f"trunc(({amount}) * ({percent}) / 100, {MONEY_SCALE})"


class unindexed(FunctionElement[Any]):  # noqa: N801
    """A column SQLite's planner must not pick an index for (``+column``); the column elsewhere.

    SQLite would otherwise walk an index on that column (one tested with ``IS NOT NULL``, or grouped
    by) instead of looking the rows up by the key the query narrows them with.
    """

    name = "unindexed"
    inherit_cache = True


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = _args(element, compiler, **kw)
    return f"+{column}"


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = _args(element, compiler, **kw)
    return column


def flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """1 when the condition holds, else 0 (a count's contribution)."""
    return sa.case((condition, sa.literal_column("1")), else_=sa.literal_column("0"))


def live(table: sa.FromClause) -> ColumnElement[bool]:
    """A hub row that counts: not deleted, not inactive (voided, deactivated)."""
    return sa.and_(table.c.deleted_at.is_(None), sa.func.coalesce(table.c.active, sa.true()))


@dataclass(frozen=True)
class ArrayElements:
    """A raw table joined with the elements of an array in each of its documents."""

    source: sa.FromClause  # the raw table joined with its elements
    position: ColumnElement[int]  # 0-based position of the element in its array
    value: ColumnElement[Any]  # the element (a JSON document)
    condition: ColumnElement[bool]  # the join's rows that are elements of an array


def array_elements(
    dialect: str, raw: sa.FromClause, document: ColumnElement[Any], path: tuple[str, ...]
) -> ArrayElements:
    """Join ``raw`` with the elements of the array at ``path`` of ``document`` (a scalar, null or
    missing value there gives none). The warehouses' set-returning JSON functions differ in shape,
    so this is the one place where a statement's structure depends on the dialect."""
    if dialect == "sqlite":
        each = sa.func.json_each(document, sa.literal_column(_sqlite_path(path))).table_valued("key", "value", name="e")
        # Array elements are the rows with an integer key (a scalar or null gives one row keyed NULL).
        return ArrayElements(
            sa.join(raw, each, sa.true()), each.c.key, each.c.value, sa.func.typeof(each.c.key) == "integer"
        )
    array: ColumnElement[Any] = sa.literal_column(_pg_path(path))
    at_path = document.op("#>")(array)
    safe = sa.case((sa.func.jsonb_typeof(at_path) == "array", at_path), else_=sa.literal_column("'[]'::jsonb"))
    elements = sa.func.jsonb_array_elements(safe).table_valued("value", with_ordinality="ordinality")
    lateral = sa.select((elements.c.ordinality - 1).label("position"), elements.c.value).lateral("e")
    return ArrayElements(sa.join(raw, lateral, sa.true()), lateral.c.position, lateral.c.value, sa.true())
