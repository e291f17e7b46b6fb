"""Scratch tables of one connection: temporary tables a build fills, joins with and drops.

Sets of ids (the records a listing returned, the records that changed, the mart entities they
reach) and partial sums travel between statements in temporary tables: no parameter limits, and
the warehouse joins with them. They live as long as the connection and no other session sees them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateTable, DropTable, ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler


class Analyze(ExecutableDDLElement):
    """``ANALYZE <table>``: refresh PostgreSQL's statistics of a table just filled in bulk."""

    inherit_cache = False

    def __init__(self, table: sa.Table) -> None:
        self.table = table


@compiles(Analyze)
def _analyze(element: Analyze, compiler: DDLCompiler, **kw: Any) -> str:
    return f"ANALYZE {compiler.preparer.format_table(element.table)}"


def analyze(conn: sa.Connection, table: sa.Table) -> None:
    """Refresh PostgreSQL's statistics of a table just filled in bulk (the next queries plan on them);
    SQLite plans without them."""
    if conn.dialect.name == "postgresql":
        conn.execute(Analyze(table))


def temporary_table(name: str, *columns: sa.Column[Any], index: tuple[str, ...] = ()) -> sa.Table:
    """A temporary table's definition (created by ``recreate``), optionally indexed on ``index``."""
    indexes = [sa.Index(f"{name}_key", *index)] if index else []
    return sa.Table(name, sa.MetaData(), *columns, *indexes, prefixes=["TEMPORARY"])


def recreate(conn: sa.Connection, table: sa.Table) -> sa.Table:
    """Create a temporary table empty, dropping what an earlier statement of the connection left."""
    conn.execute(DropTable(table, if_exists=True))
    table.create(conn)
    return table


def drop(conn: sa.Connection, *tables: sa.Table) -> None:
    """Drop temporary tables (those already gone are skipped)."""
    for table in tables:
        conn.execute(DropTable(table, if_exists=True))


def load_ids(conn: sa.Connection, name: str, ids: set[int]) -> sa.Table:
    """The temporary table ``name`` (one ``id`` column), filled with ``ids`` in place of what it held."""
    table = temporary_table(name, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False))
    conn.execute(CreateTable(table, if_not_exists=True))
    conn.execute(table.delete())
    ordered = sorted(ids)
    if conn.dialect.name == "postgresql":  # one statement with an array, not a round trip per id
        ids_array = sa.bindparam("ids", ordered, type_=sa.ARRAY(sa.BigInteger))
        conn.execute(table.insert().from_select(["id"], sa.select(sa.func.unnest(ids_array))))
        analyze(conn, table)  # temporary tables have no statistics otherwise
        return table
    for start in range(0, len(ordered), 5000):
        conn.execute(table.insert(), [{"id": i} for i in ordered[start : start + 5000]])
    return table
