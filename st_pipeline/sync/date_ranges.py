"""Reading one day of a date-range dataset into its table.

The day's rows are read whole (every page), validated, and only then written, in one
transaction that replaces the day's previous rows: re-reading a day changes nothing when the
figures did not change, and a failed read (a malformed answer, an error) leaves the previous rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.date_ranges import DateRangeDataset, RangeProgress, day_range, iter_range_rows
from st_pipeline.warehouse.date_range_tables import date_range_table
from st_pipeline.warehouse.period_tables import ensure_period_table, period_payloads, replace_period_rows


@dataclass(frozen=True)
class DayRead:
    """One day of a date-range dataset read into its table."""

    key: str
    table: str
    day: date
    range_start: datetime
    range_end: datetime
    rows: int
    replaced: int  # rows of the day stored before, now replaced
    pages: int


def read_day(
    client: ServiceTitanClient,
    engine: sa.Engine,
    dataset: DateRangeDataset,
    *,
    day: date,
    zone: str | None,
    run_id: str,
) -> DayRead:
    """Read ``day`` (the tenant's calendar, IANA ``zone``) of ``dataset`` and replace its stored rows."""
    table = ensure_period_table(engine, date_range_table(dataset.dataset.slug))
    start, end = day_range(day, zone)
    progress = RangeProgress()
    rows = list(iter_range_rows(client, dataset, dataset.query(day, zone), progress))
    extracted_at = datetime.now(UTC)
    with engine.begin() as conn:
        replaced = replace_period_rows(
            conn,
            table,
            tenant_id=client.tenant_id,
            period=(day, day),
            rows=[
                {"range_start": start, "range_end": end, "payload": row, "extracted_at": extracted_at, "run_id": run_id}
                for row in rows
            ],
        )
    return DayRead(dataset.key, table.name, day, start, end, len(rows), replaced, progress.pages)


def stored_day(engine: sa.Engine, dataset: DateRangeDataset, tenant_id: int, day: date) -> list[dict]:
    """The stored rows of one day, in the order they were served."""
    table = ensure_period_table(engine, date_range_table(dataset.dataset.slug))
    with engine.connect() as conn:
        return period_payloads(conn, table, tenant_id, (day, day))
