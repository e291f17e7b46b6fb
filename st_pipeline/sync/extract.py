"""Extract a tenant's datasets concurrently into their raw tables.

Why threads: the HTTP side is I/O bound and must overlap (latency × sequential export pages
would otherwise dominate), while the warehouse side is synchronous SQLAlchemy with one writer
(SQLite allows one). So one thread per dataset fetches pages, all through the tenant's single
client (one rate limiter, token and connection pool), and hands them over a bounded queue to the
calling thread, which writes each page in its own transaction. The queue bound keeps memory at
a few pages whatever the tenant's size.
"""

from __future__ import annotations

import queue
from collections import Counter
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.errors import ServiceTitanError
from st_pipeline.servicetitan.models import PageValidation, validate_page
from st_pipeline.warehouse.loader import quarantine_rows, raw_rows, upsert_rows
from st_pipeline.warehouse.tables import quarantine_table, raw_table

DEFAULT_CONCURRENCY = 8


@dataclass
class ExtractResult:
    """What one dataset's extraction did, reported as materialization metadata."""

    dataset: Dataset
    records: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duration_s: float = 0.0
    rows_in_table: int = 0
    cursor: str | None = None
    quarantined: int = 0
    warnings: list[str] = field(default_factory=list)
    error: ServiceTitanError | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def endpoint_path(self) -> str:
        return self.dataset.extraction_endpoint.path

    @property
    def succeeded(self) -> bool:
        return self.error is None


_PAGE, _DONE, _FAILED = "page", "done", "failed"


def sync_tenant(
    client: ServiceTitanClient,
    engine: sa.Engine,
    datasets: list[Dataset],
    *,
    run_id: str,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Iterator[ExtractResult]:
    """Extract ``datasets`` of the client's tenant; yield each dataset's result as it completes.

    A dataset that fails (say, a missing scope) is yielded with its ``error`` and the others go
    on. An error that dooms the whole tenant (revoked credentials, open circuit) stops every
    extraction and is raised.
    """
    if not datasets:
        return
    handoff: queue.Queue[tuple[str, Dataset, object]] = queue.Queue(maxsize=2 * concurrency)
    cancelled = threading.Event()
    results = {dataset.key: ExtractResult(dataset) for dataset in datasets}
    tables = {dataset.key: raw_table(dataset) for dataset in datasets}
    catalogue = load_catalogue()
    keys = {dataset.key: catalogue.key_field(dataset) for dataset in datasets}
    seen: dict[str, Counter[int]] = {dataset.key: Counter() for dataset in datasets}

    def put(item: tuple[str, Dataset, object]) -> bool:
        while not cancelled.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce(dataset: Dataset) -> None:
        try:
            for page in client.iter_pages(dataset.extraction_endpoint):
                # Validation runs here, in the fetching threads, beside the network waits.
                validation = PageValidation(valid=page.records) if page.validated else validate_page(dataset, page.records)
                if not put((_PAGE, dataset, (page, validation))):
                    return
            put((_DONE, dataset, None))
        except BaseException as exc:  # handed to the writer thread, which decides
            put((_FAILED, dataset, exc))

    with ThreadPoolExecutor(max_workers=min(concurrency, len(datasets)), thread_name_prefix="st-extract") as pool:
        for dataset in datasets:
            pool.submit(produce, dataset)
        remaining = len(datasets)
        try:
            while remaining:
                kind, dataset, item = handoff.get()
                result = results[dataset.key]
                if kind == _PAGE:
                    page, validation = item  # type: ignore[misc]
                    _write_page(engine, tables[dataset.key], keys[dataset.key], seen[dataset.key], client.tenant_id,
                                dataset.key, validation, run_id)
                    result.records += len(page.records)
                    result.pages += 1
                    result.quarantined += len(validation.quarantined)
                    result.warnings.extend(validation.warnings)
                    result.cursor = page.continue_from or result.cursor
                    continue
                remaining -= 1
                if kind == _FAILED:
                    if not isinstance(item, ServiceTitanError) or item.fatal_for_tenant:
                        raise item  # type: ignore[misc]
                    result.error = item
                yield _finish(result, client, engine, tables[dataset.key])
        finally:
            cancelled.set()
            while not handoff.empty():  # unblock producers waiting on a full queue
                handoff.get_nowait()


def _write_page(
    engine: sa.Engine,
    table: sa.Table,
    key_field: str | None,
    seen: Counter[int],
    tenant_id: int,
    dataset_key: str,
    validation: PageValidation,
    run_id: str,
) -> None:
    """The page's valid records and its quarantined ones, in one transaction."""
    now = datetime.now(UTC)
    rows = raw_rows(tenant_id, validation.valid, extracted_at=now, run_id=run_id, key_field=key_field, seen=seen)
    with engine.begin() as conn:
        upsert_rows(conn, table, rows)
        if validation.quarantined:
            conn.execute(
                quarantine_table.insert(),
                quarantine_rows(tenant_id, dataset_key, validation.quarantined, run_id=run_id, at=now),
            )


def _finish(result: ExtractResult, client: ServiceTitanClient, engine: sa.Engine, table: sa.Table) -> ExtractResult:
    key = result.dataset.key
    result.requests = client.stats.by_endpoint.get(key, 0)
    result.retries = client.stats.retries_by_endpoint.get(key, 0)
    result.throttled = client.stats.throttled_by_endpoint.get(key, 0)
    result.duration_s = time.perf_counter() - result.started
    with engine.connect() as conn:
        result.rows_in_table = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == client.tenant_id)
        ).scalar_one()
    return result
