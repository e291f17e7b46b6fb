"""SQL column types of hub and mart tables, exact for money on every warehouse."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

import sqlalchemy as sa

from st_pipeline.sqltypes import UtcDateTime
from st_pipeline.transform.spec import ColumnType

# SQLite has no exact decimal type: money is kept as an integer count of ten-thousandths there,
# so sums in SQL stay exact. PostgreSQL keeps NUMERIC(19, 4).
MONEY_SCALE = 4
_SCALE_FACTOR = 10**MONEY_SCALE


class Money(sa.TypeDecorator[Decimal]):
    """An exact amount: NUMERIC(19, 4) on PostgreSQL, integer ten-thousandths on SQLite; read as Decimal."""

    impl = sa.BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(19, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | str | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        amount = Decimal(value)
        if dialect.name == "sqlite":
            return int(amount.scaleb(MONEY_SCALE).to_integral_value(rounding=ROUND_DOWN))  # cut, as the SQL does
        return amount

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-MONEY_SCALE)
        return Decimal(value)


def sql_type(kind: ColumnType) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type of a hub or mart column."""
    types: dict[ColumnType, sa.types.TypeEngine[Any]] = {
        ColumnType.TEXT: sa.Text(),
        ColumnType.INTEGER: sa.BigInteger(),
        ColumnType.BOOLEAN: sa.Boolean(),
        ColumnType.TIMESTAMP: UtcDateTime(),
        ColumnType.DATE: sa.Date(),
        ColumnType.MONEY: Money(),
        ColumnType.DECIMAL: Money(),
        ColumnType.COORDINATE: sa.Float(),
    }
    return types[kind]


def column_type_name(kind: ColumnType) -> str:
    """The type as shown in the Dagster UI's column schema."""
    return {
        ColumnType.TEXT: "text",
        ColumnType.INTEGER: "bigint",
        ColumnType.BOOLEAN: "boolean",
        ColumnType.TIMESTAMP: "timestamp (UTC)",
        ColumnType.DATE: "date",
        ColumnType.MONEY: "numeric(19,4)",
        ColumnType.DECIMAL: "numeric(19,4)",
        ColumnType.COORDINATE: "double",
    }[kind]
