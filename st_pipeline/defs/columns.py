"""Column schemas of warehouse tables as the Dagster UI shows them (``dagster/column_schema``)."""

from collections.abc import Mapping

import dagster as dg
import sqlalchemy as sa


def table_columns(
    table: sa.Table, types: Mapping[str, str], descriptions: Mapping[str, str] | None = None
) -> list[dg.TableColumn]:
    """The columns of ``table``: type (``types``, else SQLAlchemy's), description, nullability, primary key."""
    descriptions = descriptions or {}
    key = [c.name for c in table.primary_key.columns]
    key_note = [f"primary key ({', '.join(key)})"]
    return [
        dg.TableColumn(
            name=c.name,
            type=types.get(c.name) or str(c.type).lower(),
            description=descriptions.get(c.name),
            constraints=dg.TableColumnConstraints(
                nullable=c.nullable is not False,
                unique=key == [c.name],
                other=key_note if c.name in key else None,
            ),
        )
        for c in table.columns
    ]
