"""Which checks are failing for each tenant, so that their alert is one per tenant, not one per check.

A systemic problem (say a wrong ``totalCount`` on every list) fails the same check on many assets
at once; an alert per asset would be a storm. ``FailingChecks`` keeps the set of failing (asset,
check) pairs per tenant in the registry database: a failed evaluation adds its pair, a passing
one removes it. The alerting sensor opens one incident per tenant while the set is not empty,
listing what fails, and resolves it when the set empties.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.alerts.incidents import metadata
from st_pipeline.database import upsert_state
from st_pipeline.sqltypes import UtcDateTime

failing_checks_table = sa.Table(
    "st_failing_checks",
    metadata,
    sa.Column("tenant_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("asset", sa.String(500), primary_key=True),
    sa.Column("check_name", sa.String(200), primary_key=True),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("run_id", sa.String(200), nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
)


@dataclass(frozen=True)
class CheckVerdict:
    """One evaluated check of one tenant's asset."""

    tenant_id: int
    asset: str
    check_name: str
    passed: bool
    severity: str
    description: str | None
    run_id: str


@dataclass(frozen=True)
class FailingCheck:
    asset: str
    check_name: str
    severity: str
    description: str | None
    run_id: str
    since: datetime


class FailingChecks:
    """The failing checks of every tenant, in the registry database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[failing_checks_table])

    def record(self, verdicts: Iterable[CheckVerdict]) -> set[int]:
        """Apply verdicts in order (the latest wins); returns the tenants they concerned."""
        table, now = failing_checks_table, datetime.now(UTC)
        tenants: set[int] = set()
        with self.engine.begin() as conn:
            for verdict in verdicts:
                tenants.add(verdict.tenant_id)
                where = sa.and_(
                    table.c.tenant_id == verdict.tenant_id,
                    table.c.asset == verdict.asset,
                    table.c.check_name == verdict.check_name,
                )
                if verdict.passed:
                    conn.execute(table.delete().where(where))
                    continue
                values = {"severity": verdict.severity, "description": verdict.description, "run_id": verdict.run_id}
                key = {"tenant_id": verdict.tenant_id, "asset": verdict.asset, "check_name": verdict.check_name}
                upsert_state(conn, table, key, values, on_insert={"since": now})
        return tenants

    def failing(self, tenant_id: int) -> list[FailingCheck]:
        """The tenant's failing checks, oldest first."""
        table = failing_checks_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                table.select()
                .where(table.c.tenant_id == tenant_id)
                .order_by(table.c.since, table.c.asset, table.c.check_name)
            )
            return [
                FailingCheck(row.asset, row.check_name, row.severity, row.description, row.run_id, row.since)
                for row in rows
            ]
