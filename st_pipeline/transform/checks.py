"""Checks of hub tables and marts for one tenant, run in the warehouse after each build.

Hub tables: the key is unique and never null; every reference points at an existing row
(``Reference`` in the spec; a NULL reference is not checked); the hub has exactly the rows its raw
records make (reconciliation); money columns sum to what the raw payloads say, read as the JSON
text they were received in and summed in Python with ``Decimal`` (a path independent of the SQL
that filled the hub). Marts: the key is unique.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from st_pipeline.transform import sql
from st_pipeline.transform.mart_build import mart_table
from st_pipeline.transform.mart_parts import Mart
from st_pipeline.transform.spec import HubTable
from st_pipeline.transform.tables import hub_table
from st_pipeline.transform.types import MONEY_SCALE

UNIQUE_KEY = "unique_key"
NON_NULL_KEY = "non_null_key"
REFERENCES = "referential_integrity"
RECONCILES_WITH_RAW = "reconciles_with_raw"
MONEY_RECONCILES = "money_reconciles_with_raw"

HUB_CHECKS: dict[str, str] = {
    UNIQUE_KEY: "No two rows of the tenant share the key.",
    NON_NULL_KEY: "No key column is NULL.",
    REFERENCES: "Every non-NULL reference (e.g. invoice → job) points at a row of the referenced hub table.",
    RECONCILES_WITH_RAW: "The tenant's hub rows are exactly those its raw records make (records, or array elements).",
    MONEY_RECONCILES: "Money columns sum, per tenant, to the amounts in the raw payloads (exact decimals).",
}
MART_CHECKS: dict[str, str] = {UNIQUE_KEY: "No two rows of the tenant share the mart's key."}
# Which checks fail a run when they fail (the rest warn): data lost or duplicated on the way.
ERROR_CHECKS = frozenset({UNIQUE_KEY, NON_NULL_KEY, RECONCILES_WITH_RAW, MONEY_RECONCILES})


@dataclass
class Verdict:
    """One check's result for one tenant."""

    check_name: str
    passed: bool
    description: str
    metadata: dict[str, int | float] = field(default_factory=dict)  # counts and sums, as check metadata

    @property
    def is_error(self) -> bool:
        return self.check_name in ERROR_CHECKS


def hub_checks_for(spec: HubTable) -> list[str]:
    """The checks a hub table has (references and money only where its spec declares some)."""
    names = [UNIQUE_KEY, NON_NULL_KEY, RECONCILES_WITH_RAW]
    if spec.references:
        names.append(REFERENCES)
    if spec.money_totals:
        names.append(MONEY_RECONCILES)
    return names


def _duplicates(conn: sa.Connection, table: sa.Table, key: tuple[str, ...], tenant_id: int) -> int:
    columns = [table.c[name] for name in key]
    grouped = sa.select(*columns).where(table.c.tenant_id == tenant_id).group_by(*columns).having(sa.func.count() > 1)
    return conn.execute(sa.select(sa.func.count()).select_from(grouped.subquery())).scalar_one()


def check_hub(conn: sa.Connection, spec: HubTable, tenant_id: int, raw_table: str) -> list[Verdict]:
    """Run every check of one hub table for one tenant."""
    table = hub_table(spec)
    verdicts = []
    duplicates = _duplicates(conn, table, spec.key, tenant_id)
    verdicts.append(
        Verdict(UNIQUE_KEY, duplicates == 0, f"{duplicates} duplicated keys", {"duplicated_keys": duplicates})
    )
    nulls = conn.execute(
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.tenant_id == tenant_id, sa.or_(*(table.c[name].is_(None) for name in spec.key)))
    ).scalar_one()
    verdicts.append(Verdict(NON_NULL_KEY, nulls == 0, f"{nulls} rows with a NULL key", {"null_keys": nulls}))

    dialect = conn.dialect.name
    expected = conn.execute(sql.raw_row_count_statement(spec, raw_table, dialect, tenant_id=tenant_id)).scalar_one()
    actual = conn.execute(
        sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
    ).scalar_one()
    verdicts.append(
        Verdict(
            RECONCILES_WITH_RAW,
            expected == actual,
            f"{actual} hub rows for {expected} expected from the raw records",
            {"hub_rows": actual, "expected_from_raw": expected},
        )
    )

    if spec.references:
        dangling: dict[str, int] = {}
        for ref in spec.references:
            target = sa.table(ref.table, sa.column("tenant_id"), sa.column(ref.target_column))
            exists = sa.exists().where(
                target.c.tenant_id == table.c.tenant_id, target.c[ref.target_column] == table.c[ref.column]
            )
            dangling[f"{ref.column} → {ref.table}"] = conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.tenant_id == tenant_id, table.c[ref.column].is_not(None), ~exists)
            ).scalar_one()
        bad = {name: count for name, count in dangling.items() if count}
        verdicts.append(
            Verdict(
                REFERENCES,
                not bad,
                "every reference resolves"
                if not bad
                else "dangling: " + ", ".join(f"{n} ({c})" for n, c in bad.items()),
                {name: count for name, count in dangling.items()},
            )
        )

    if spec.money_totals:
        mismatched: dict[str, str] = {}
        figures: dict[str, int | float] = {}
        for name in spec.money_totals:
            column = spec.column(name)
            raw_sum = Decimal(0)
            rows = conn.execute(sql.raw_text_statement(spec, column, raw_table, dialect, tenant_id=tenant_id))
            for (text,) in rows:
                if text is not None:
                    try:
                        raw_sum += Decimal(str(text)).quantize(Decimal(1).scaleb(-MONEY_SCALE), rounding="ROUND_DOWN")
                    except InvalidOperation:
                        continue  # not a decimal: NULL in the hub too
            hub_sum = conn.execute(sa.select(sa.func.sum(table.c[name])).where(table.c.tenant_id == tenant_id)).scalar()
            hub_sum = Decimal(hub_sum or 0)
            figures[f"{name}_raw"] = float(raw_sum)
            figures[f"{name}_hub"] = float(hub_sum)
            if hub_sum != raw_sum:
                mismatched[name] = f"hub {hub_sum} ≠ raw {raw_sum}"
        verdicts.append(
            Verdict(
                MONEY_RECONCILES,
                not mismatched,
                "sums match the raw payloads"
                if not mismatched
                else "; ".join(f"{k}: {v}" for k, v in mismatched.items()),
                figures,
            )
        )
    return verdicts


def check_mart(conn: sa.Connection, mart: Mart, tenant_id: int) -> list[Verdict]:
    """Run the checks of one mart for one tenant."""
    duplicates = _duplicates(conn, mart_table(mart), mart.key, tenant_id)
    return [Verdict(UNIQUE_KEY, duplicates == 0, f"{duplicates} duplicated keys", {"duplicated_keys": duplicates})]
