"""Extract one dataset of one tenant into its raw table, page by page."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Dataset
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.warehouse.loader import raw_rows, upsert_rows
from st_pipeline.warehouse.tables import raw_table


@dataclass
class ExtractResult:
    """What one dataset's extraction did, reported as materialization metadata."""

    dataset: Dataset
    records: int
    pages: int
    requests: int
    duration_s: float
    rows_in_table: int
    cursor: str | None

    @property
    def endpoint_path(self) -> str:
        return self.dataset.extraction_endpoint.path


def extract_dataset(
    client: ServiceTitanClient, engine: sa.Engine, dataset: Dataset, *, run_id: str
) -> ExtractResult:
    """Read every page of the dataset's extraction endpoint and upsert it.

    Each page is written in its own transaction as soon as it arrives, so memory holds one page
    at a time.
    """
    endpoint = dataset.extraction_endpoint
    table = raw_table(dataset)
    started = time.perf_counter()
    requests_before = client.stats.requests
    records = pages = 0
    cursor: str | None = None
    for page in client.iter_pages(endpoint):
        rows = raw_rows(client.tenant_id, page.records, extracted_at=datetime.now(UTC), run_id=run_id)
        with engine.begin() as conn:
            upsert_rows(conn, table, rows)
        records += len(page.records)
        pages += 1
        cursor = page.continue_from or cursor
    with engine.connect() as conn:
        rows_in_table = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == client.tenant_id)
        ).scalar_one()
    return ExtractResult(
        dataset=dataset,
        records=records,
        pages=pages,
        requests=client.stats.requests - requests_before,
        duration_s=time.perf_counter() - started,
        rows_in_table=rows_in_table,
        cursor=cursor,
    )
