"""One tenant's hub table or mart as a pandas DataFrame, typed from the table's declaration.

For assets built on ours (a forecast, a bonus calculation, a board report): ``read_frame`` reads
any hub table (``hub_<name>``) or mart (``mart_<name>``) of one tenant, every column or some, and
gives each column the dtype its declared type maps to (``DTYPES``), the same on SQLite and
PostgreSQL:

- integers: pandas' nullable ``Int64`` (ids stay exact; NULL is ``<NA>``);
- text: ``string``; booleans: nullable ``boolean``;
- timestamps (UTC in the warehouse): ``datetime64[ns, UTC]``;
- days (a mart's ``day``, ``as_of``: the tenant's calendar days): ``datetime64[ns]`` at midnight,
  with no time zone, so ``.dt.to_period("M")`` and resampling work on them;
- money: an ``object`` column of ``decimal.Decimal`` (four decimals), exact, as stored: sums of it
  (``frame["revenue"].sum()``, a ``groupby`` sum) stay exact, where a float would not; NULL is None;
- other decimals (quantities, percentages such as a job split) and rates, coordinates: ``float64``
  (NULL is NaN).

Rows come in key order. A hub table's rows are all of the tenant's, as the table holds them:
those flagged deleted (``deleted_at``) and inactive ones (``active``) included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from st_pipeline.transform.hubs import HUB_TABLES, HUBS_BY_NAME
from st_pipeline.transform.mart_build import mart_table
from st_pipeline.transform.marts import MARTS, MARTS_BY_NAME
from st_pipeline.transform.spec import BOOKKEEPING_COLUMNS, ColumnType
from st_pipeline.transform.tables import hub_table

if TYPE_CHECKING:  # imported when a frame is read: the table lookups (``built_table``) do without it
    import pandas as pd

# The dtype of each declared column type (see the module's docstring).
DTYPES: dict[ColumnType, str] = {
    ColumnType.INTEGER: "Int64",
    ColumnType.TEXT: "string",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "datetime64[ns, UTC]",
    ColumnType.DATE: "datetime64[ns]",
    ColumnType.MONEY: "object",
    ColumnType.DECIMAL: "float64",
    ColumnType.COORDINATE: "float64",
}

# The bookkeeping columns every hub table has after its own, and a mart's build time.
_HUB_BOOKKEEPING = dict.fromkeys(BOOKKEEPING_COLUMNS, ColumnType.TIMESTAMP) | {"tenant_id": ColumnType.INTEGER}


class UnknownTableError(ValueError):
    """No hub table or mart has this name."""


class TableNotBuiltError(LookupError):
    """The table is declared but not (or not in this shape) in the warehouse yet."""


@dataclass(frozen=True)
class FrameTable:
    """A readable table: its definition, each column's declared type, its key and its asset."""

    table: sa.Table
    types: dict[str, ColumnType]
    key: tuple[str, ...]
    asset: str  # the asset that builds it, e.g. ``servicetitan/mart/sales``

    @property
    def name(self) -> str:
        return self.table.name


def frame_table_names() -> tuple[str, ...]:
    """Every table ``read_frame`` reads: the hub tables, then the marts."""
    return (*(spec.table_name for spec in HUB_TABLES), *(mart.table_name for mart in MARTS))


def frame_table(table_name: str) -> FrameTable:
    """The hub table or mart named ``table_name`` (``hub_jobs``, ``mart_sales``), or UnknownTableError."""
    if table_name.startswith("hub_") and table_name.removeprefix("hub_") in HUBS_BY_NAME:
        spec = HUBS_BY_NAME[table_name.removeprefix("hub_")]
        types = {c.name: c.type for c in spec.columns} | _HUB_BOOKKEEPING
        return FrameTable(hub_table(spec), types, spec.primary_key, f"servicetitan/hub/{spec.name}")
    if table_name.startswith("mart_") and table_name.removeprefix("mart_") in MARTS_BY_NAME:
        mart = MARTS_BY_NAME[table_name.removeprefix("mart_")]
        types = {c.name: c.type for c in mart.columns} | {"built_at": ColumnType.TIMESTAMP}
        return FrameTable(mart_table(mart), types, mart.key, f"servicetitan/mart/{mart.name}")
    raise UnknownTableError(_unknown(table_name))


def _unknown(table_name: str) -> str:
    known = frame_table_names()
    hint = ""
    if table_name.endswith("__facts") and table_name.removesuffix("__facts") in known:
        hint = f" ({table_name} holds a mart's facts, kept for its incremental upkeep: read {table_name[:-7]})"
    elif f"hub_{table_name}" in known or f"mart_{table_name}" in known:
        hint = f" (did you mean {f'hub_{table_name}' if f'hub_{table_name}' in known else f'mart_{table_name}'}?)"
    return f"no table {table_name!r}{hint}: the hub tables and marts are {', '.join(known)}"


def built_table(conn: sa.Connection, table_name: str) -> FrameTable:
    """The hub table or mart, once it is in the warehouse with its declared columns; else TableNotBuiltError."""
    table = frame_table(table_name)
    try:
        have = [c["name"] for c in sa.inspect(conn).get_columns(table.name)]
    except sa.exc.NoSuchTableError:
        raise TableNotBuiltError(
            f"{table.name} is not built yet in this warehouse: materialize {table.asset} for the tenant "
            "(or run the servicetitan_sync job, which builds every hub table and mart after the sync)"
        ) from None
    if have != [c.name for c in table.table.columns]:
        raise TableNotBuiltError(
            f"{table.name} in this warehouse has other columns than this version of st_pipeline declares "
            f"(built by another version): materialize {table.asset} for the tenant to rebuild it"
        )
    return table


def read_frame(
    connectable: sa.Engine | sa.Connection, table_name: str, tenant_id: int, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of tenant ``tenant_id`` in hub table or mart ``table_name``, as a typed DataFrame.

    ``columns`` picks some columns, in that order (default: all, in the table's order). Each column's
    dtype follows its declared type (``DTYPES``): ``Int64``, ``string``, ``boolean``, timestamps as
    ``datetime64[ns, UTC]``, days as ``datetime64[ns]``, decimals and rates as ``float64``, and money
    as ``object`` columns of ``decimal.Decimal`` — exact, so sums of it are too. Rows are in key
    order; a tenant without rows gives an empty frame with the same columns and dtypes.

    Raises ``UnknownTableError`` (a ValueError) for a name that is no hub table or mart, listing
    those there are; ``TableNotBuiltError`` (a LookupError) for a table not built in this warehouse
    yet, naming the asset to materialize; ValueError for a column the table does not have.
    """
    import pandas as pd

    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            return read_frame(conn, table_name, tenant_id, columns)
    table = built_table(connectable, table_name)
    names = [c.name for c in table.table.columns] if columns is None else list(columns)
    missing = [name for name in names if name not in table.types]
    if missing or len(set(names)) != len(names):
        raise ValueError(
            f"{table.name} has no column {', '.join(map(repr, missing))}: its columns are {', '.join(table.types)}"
            if missing
            else f"a column is asked for twice: {', '.join(names)}"
        )
    t = table.table
    query = sa.select(*(t.c[name] for name in names)).where(t.c.tenant_id == int(tenant_id))
    rows = connectable.execute(query.order_by(*(t.c[name] for name in table.key))).all()
    values = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    data = {name: _series(table, name, list(column)) for name, column in zip(names, values, strict=True)}
    return pd.DataFrame(data, columns=names)


def _series(table: FrameTable, name: str, values: list[Any]) -> pd.Series:
    import pandas as pd

    kind = table.types[name]
    dtype: Any = DTYPES[kind]  # (pandas' annotations take dtypes as literals)
    if kind is ColumnType.MONEY:
        return pd.Series(values, dtype=object, name=name)
    if kind is ColumnType.DECIMAL:
        values = [None if v is None else float(Decimal(v)) for v in values]
    if kind in (ColumnType.TIMESTAMP, ColumnType.DATE):
        try:
            stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=kind is ColumnType.TIMESTAMP)
        except pd.errors.OutOfBoundsDatetime as exc:
            raise ValueError(
                f"{table.name}.{name} holds a time outside pandas' nanosecond range (1677-09-21 to 2262-04-11): "
                f"{exc}; read the other columns (columns=...), or this one with SQL"
            ) from None
        return stamps.astype(dtype).rename(name)
    return pd.Series(values, dtype=dtype, name=name)
