"""How a hub table is described: once, declaratively, and everything else follows from it.

A ``HubTable`` names its source raw dataset, its key and its columns (each a JSON path into the
raw payload and a type). From that one description come the table definition (``tables.py``),
the SQL that fills it inside the warehouse (``sql.py``), the column schema the Dagster UI shows
and the checks (unique and non-null key, references, reconciliation with the raw table).

A hub table either maps one raw record to one row, or explodes an array embedded in each raw
record into one row per element (``explode``): invoice items, payment applications, estimate
items. Exploded rows carry the parent's id and their position in the array.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field


class ColumnType(enum.Enum):
    """Column types of hub and mart tables (see ``types.sql_type`` for the SQL types)."""

    TEXT = "text"
    INTEGER = "integer"  # 64-bit
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"  # UTC, millisecond precision
    DATE = "date"
    MONEY = "money"  # exact: NUMERIC(19, 4) on PostgreSQL, integer ten-thousandths on SQLite
    DECIMAL = "decimal"  # exact non-money quantities (quantities, percentages): as MONEY
    COORDINATE = "coordinate"  # latitude / longitude: the only floating-point columns


@dataclass(frozen=True)
class Column:
    """One hub column: its snake_case name, where it comes from and its type.

    ``path`` is a dotted JSON path inside the record (``address.city``); for an exploded table
    it is relative to the array element, and ``parent.<path>`` reads from the parent record.
    """

    name: str
    path: str
    type: ColumnType
    description: str = ""

    @property
    def from_parent(self) -> bool:
        return self.path.startswith("parent.")

    @property
    def json_path(self) -> tuple[str, ...]:
        path = self.path.removeprefix("parent.")
        return tuple(path.split("."))


@dataclass(frozen=True)
class Reference:
    """A column that points at another hub table's key (checked: referential integrity)."""

    column: str
    table: str  # the referenced hub table's name, e.g. ``hub_jobs``
    target_column: str = "id"


@dataclass(frozen=True)
class HubTable:
    """One hub table: ``hub_<name>``, partitioned by tenant, built from one raw dataset."""

    name: str
    source: str  # the raw dataset key, e.g. ``crm/customers``
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ("id",)
    explode: str | None = None  # JSON path of the embedded array whose elements become rows
    references: tuple[Reference, ...] = ()
    money_totals: tuple[str, ...] = field(default=())  # money columns reconciled with the raw payloads

    @property
    def table_name(self) -> str:
        return f"hub_{self.name}"

    @property
    def primary_key(self) -> tuple[str, ...]:
        """``tenant_id`` first, then the record's own key."""
        return ("tenant_id", *self.key)

    @property
    def parent_key_column(self) -> str:
        """The column holding the raw record's id (``id``, or the parent's id when exploded)."""
        return self.key[0]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.table_name} has no column {name!r}")

    def fingerprint(self) -> str:
        """Changes whenever the table's shape or its mapping changes (then it is rebuilt in full)."""
        shape = {
            "source": self.source,
            "key": self.key,
            "explode": self.explode,
            "columns": [(c.name, c.path, c.type.value) for c in self.columns],
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


# Every hub table also has these, after its own columns.
BOOKKEEPING_COLUMNS = ("tenant_id", "deleted_at", "source_modified_on", "built_at")
