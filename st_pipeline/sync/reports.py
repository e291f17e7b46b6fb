"""Reading a declared report for one period into its report table.

The definition is read first: its fields are the schema of the rows. Rows stored under another
definition are never mixed with new ones: a changed definition is an error that says what changed
and how to start over. The period's rows are written in one transaction that replaces the
period's old rows, so re-reading a period changes nothing when the report did not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import ErrorContext, RequestError
from st_pipeline.servicetitan.reports import (
    PERIOD_PARAMETERS,
    ReportDefinition,
    ReportPacer,
    ReportPages,
    fetch_definition,
    iter_report_rows,
)
from st_pipeline.warehouse.report_tables import (
    ensure_report_table,
    replace_period,
    report_table_name,
    stored_definitions,
)


class ReportDefinitionChanged(RequestError):
    """The report's fields are not those its stored rows were read under."""


@dataclass(frozen=True)
class ReportRead:
    """One declared report and period read into its table."""

    name: str
    table: str
    period: tuple[date, date]
    definition: ReportDefinition
    rows: int
    replaced: int  # rows of the period stored before, now replaced
    requests: int
    paced_s: float  # seconds waited for the report's turn (its per-report limit)


def read_report(
    client: ServiceTitanClient,
    engine: sa.Engine,
    *,
    name: str,
    category: str,
    report_id: int,
    parameters: Mapping[str, str],
    period: tuple[date, date],
    run_id: str,
    pacer: ReportPacer,
) -> ReportRead:
    """Read the report ``name`` for ``period`` (its From and To days) and store its rows."""
    definition = fetch_definition(client, category, report_id)
    where: ErrorContext = {"tenant_id": client.tenant_id, "endpoint": f"report {name} ({category}/{report_id})"}
    missing = [p for p in definition.required_parameters if p not in parameters and p not in PERIOD_PARAMETERS]
    if missing:
        raise RequestError(
            f"report {definition.name!r} requires the parameters {missing}, which its declaration does not set: "
            f"declare it again with --param NAME=VALUE for each",
            **where,
        )
    if not set(PERIOD_PARAMETERS) <= set(definition.parameters):
        raise RequestError(
            f"report {definition.name!r} has no From and To parameters, so it cannot be read per period "
            f"(its parameters: {list(definition.parameters)})",
            **where,
        )
    table = ensure_report_table(engine, name)
    with engine.connect() as conn:
        stored = stored_definitions(conn, table, client.tenant_id)
    if stored and definition.fingerprint not in stored:
        raise ReportDefinitionChanged(
            f"the definition of report {definition.name!r} changed since its rows in {table.name} were read: its "
            f"fields are now {list(definition.field_names)}. Rows of two definitions are not mixed; to start over "
            f"under the new one, `st-pipeline report reset --tenant {client.tenant_id} --name {name}` drops the "
            "tenant's stored rows of this report, and the next runs read them again",
            **where,
        )
    progress = ReportPages()
    rows = list(iter_report_rows(client, definition, period, parameters, pacer=pacer, progress=progress))
    with engine.begin() as conn:
        replaced = replace_period(
            conn,
            table,
            tenant_id=client.tenant_id,
            report_id=report_id,
            period=period,
            rows=rows,
            definition=definition.fingerprint,
            extracted_at=datetime.now(UTC),
            run_id=run_id,
        )
    return ReportRead(
        name=name,
        table=report_table_name(name),
        period=period,
        definition=definition,
        rows=len(rows),
        replaced=replaced,
        requests=progress.requests + 1,  # the definition, and the data pages
        paced_s=progress.paced_s,
    )


def reset_report(engine: sa.Engine, tenant_id: int, name: str) -> int:
    """Delete the tenant's stored rows of report ``name`` (all periods); returns how many."""
    table = ensure_report_table(engine, name)
    with engine.begin() as conn:
        return int(conn.execute(sa.delete(table).where(table.c.tenant_id == tenant_id)).rowcount or 0)
