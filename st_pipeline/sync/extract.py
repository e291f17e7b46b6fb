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
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.client import Page, ServiceTitanClient
from st_pipeline.servicetitan.counters import SyncCounters
from st_pipeline.servicetitan.errors import MissingScopeError, NotFoundError, ServiceTitanError
from st_pipeline.servicetitan.models import PageValidation, validate_page
from st_pipeline.servicetitan.timestamps import parse_timestamp
from st_pipeline.sync.observer import NO_OBSERVER, SyncObserver, SyncPoint
from st_pipeline.sync.state import (
    CANCELLED,
    FAILED,
    NOT_LOADABLE,
    SKIPPED,
    SUCCEEDED,
    UNAVAILABLE,
    DatasetClose,
    close_dataset,
    load_cursors,
    log_page,
    open_log,
    save_cursor,
)
from st_pipeline.warehouse.loader import mark_missing_deleted, quarantine_rows, raw_rows, upsert_rows
from st_pipeline.warehouse.tables import quarantine_table, raw_table

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DEFAULT_CONCURRENCY = 8


@dataclass(kw_only=True)
class ExtractResult(SyncCounters):
    """What one dataset's extraction did: its counters (``SyncCounters``), then where it left off and how it ended."""

    dataset: Dataset = field(kw_only=False)
    duration_s: float = 0.0  # from this dataset's first request to its end
    cursor: str | None = None  # after this sync (unchanged when nothing new)
    cursor_before: str | None = None
    reported_total: int | None = None  # a paged list's totalCount, when it gave one
    warnings: list[str] = field(default_factory=list)
    error: ServiceTitanError | None = None
    status: str = ""  # as the sync log records it
    started: float | None = field(default=None, repr=False)  # perf_counter at the first request

    @property
    def endpoint_path(self) -> str:
        return self.dataset.extraction_endpoint.path

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        """Whether the warehouse changed, or something was seen that a check should judge."""
        return bool(
            self.rows_written
            or self.rows_deleted
            or self.quarantined
            or self.duplicates
            or self.warnings
            or (self.reported_total is not None and self.reported_total != self.records)
            or (self.error is not None and self.status not in NOT_LOADABLE)
        )


_PAGE, _DONE, _FAILED = "page", "done", "failed"
# What a fetching thread hands the writer: (_PAGE, dataset, (page, its validation)), (_DONE, dataset,
# None) or (_FAILED, dataset, the exception).
_Handoff = tuple[str, Dataset, tuple[Page, PageValidation] | BaseException | None]
# List watermarks are re-read with this overlap: a record committed upstream a little after its
# modifiedOn is still picked up. The duplicates it brings are harmless (upserts).
DEFAULT_WATERMARK_OVERLAP = timedelta(minutes=5)


@dataclass(frozen=True)
class SyncOptions:
    """How a run treats the saved cursors."""

    full_refresh: bool = False  # ignore every cursor: read from the beginning
    reconcile_deletes: bool = False  # lists without export feed: read fully, flag missing rows deleted
    watermark_overlap: timedelta = DEFAULT_WATERMARK_OVERLAP


@dataclass
class _Progress:
    """Per-dataset state of the writer thread."""

    dataset: Dataset
    key_field: str | None
    log_id: int
    reconcile: bool
    seen_content: Counter[int] = field(default_factory=Counter)
    watermark: str | None = None  # the largest modifiedOn/createdOn seen in a list
    seen_ids: set[int] = field(default_factory=set)  # ids received in this sync (duplicates, reconciliation)

    @property
    def table(self) -> sa.Table:
        return raw_table(self.dataset)  # built on first use: a quiet dataset never needs it


def sync_tenant(
    client: ServiceTitanClient,
    engine: sa.Engine,
    datasets: list[Dataset],
    *,
    run_id: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    options: SyncOptions = SyncOptions(),
    observer: SyncObserver = NO_OBSERVER,
) -> Iterator[ExtractResult]:
    """Extract ``datasets`` of the client's tenant; yield each dataset's result as it completes.

    Each dataset resumes from its saved cursor (export token, or list watermark minus an overlap)
    unless ``options.full_refresh``. A dataset that fails (say, a missing scope) is yielded with
    its ``error`` and the others go on. An error that dooms the whole tenant (revoked credentials,
    too many consecutive failures) stops every extraction and is raised. ``observer`` is told each
    point the sync reaches (``SyncPoint``), on this thread.
    """
    if not datasets:
        return
    tenant_id = client.tenant_id
    catalogue = load_catalogue()
    saved = {} if options.full_refresh else load_cursors(engine, tenant_id)
    log_ids = open_log(engine, run_id, tenant_id, datasets, saved)
    progress = {
        d.key: _Progress(
            dataset=d, key_field=catalogue.key_field(d), log_id=log_ids[d.key], reconcile=_reconciles(d, options)
        )
        for d in datasets
    }
    results = {
        dataset.key: ExtractResult(dataset, cursor=saved.get(dataset.key), cursor_before=saved.get(dataset.key))
        for dataset in datasets
    }
    handoff: queue.Queue[_Handoff] = queue.Queue(maxsize=2 * concurrency)
    cancelled = threading.Event()

    def put(item: _Handoff) -> bool:
        while not cancelled.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce(dataset: Dataset) -> None:
        results[dataset.key].started = time.perf_counter()
        try:
            pages = _pages(client, dataset, saved.get(dataset.key), options)
            for page in pages:
                # Validation runs here, in the fetching threads, beside the network waits.
                validation = (
                    PageValidation(valid=page.records) if page.validated else validate_page(dataset, page.records)
                )
                if not put((_PAGE, dataset, (page, validation))):
                    return
            put((_DONE, dataset, None))
        except BaseException as exc:  # handed to the writer thread, which decides
            put((_FAILED, dataset, exc))

    finished: set[str] = set()
    with ThreadPoolExecutor(max_workers=min(concurrency, len(datasets)), thread_name_prefix="st-extract") as pool:
        for dataset in datasets:
            pool.submit(produce, dataset)
        try:
            while len(finished) < len(datasets):
                kind, dataset, item = handoff.get()
                result = results[dataset.key]
                if kind == _PAGE:
                    assert isinstance(item, tuple)  # a page comes with its validation
                    page, validation = item
                    observer.reached(SyncPoint.PAGE_RECEIVED, dataset)
                    _write_page(
                        engine, dataset, progress[dataset.key], tenant_id, page, validation, run_id, result, observer
                    )
                    observer.reached(SyncPoint.PAGE_COMMITTED, dataset)
                    continue
                if kind == _FAILED and (not isinstance(item, ServiceTitanError) or item.fatal_for_tenant):
                    # The tenant's run ends here: this dataset failed with the cause, the others
                    # are closed as cancelled, each with what it had done.
                    assert isinstance(item, BaseException)  # a failure comes with its exception
                    result.error = item if isinstance(item, ServiceTitanError) else None
                    _finish(result, client, engine, progress[dataset.key], run_id, tenant_id, FAILED, str(item))
                    finished.add(dataset.key)
                    raise item
                finished.add(dataset.key)
                if kind == _FAILED:
                    assert isinstance(item, ServiceTitanError)  # any other failure ended the run above
                    result.error = item
                yield _finish(result, client, engine, progress[dataset.key], run_id, tenant_id)
                observer.reached(SyncPoint.DATASET_FINISHED, dataset)
        except BaseException as exc:
            cancelled.set()
            client.cancel()  # requests still retrying for the other datasets stop now
            reason = f"stopped: {exc}" if str(exc) else f"stopped: {type(exc).__name__}"
            for dataset in datasets:
                if dataset.key not in finished:
                    _finish(
                        results[dataset.key],
                        client,
                        engine,
                        progress[dataset.key],
                        run_id,
                        tenant_id,
                        CANCELLED,
                        reason,
                    )
            raise
        finally:
            cancelled.set()
            while not handoff.empty():  # unblock producers waiting on a full queue
                handoff.get_nowait()


def _status(result: ExtractResult) -> str:
    if result.error is None:
        return SUCCEEDED
    if isinstance(result.error, MissingScopeError):
        return SKIPPED
    return UNAVAILABLE if isinstance(result.error, NotFoundError) else FAILED


def _reconciles(dataset: Dataset, options: SyncOptions) -> bool:
    return options.reconcile_deletes and dataset.extraction_endpoint.kind != "export"


def _pages(client: ServiceTitanClient, dataset: Dataset, cursor: str | None, options: SyncOptions) -> Iterator[Page]:
    """The endpoint's pages from where the last committed sync left off."""
    endpoint = dataset.extraction_endpoint
    if endpoint.kind == "export":
        return client.iter_export(endpoint, from_token=cursor)
    if endpoint.kind == "list":
        params = {}
        since = parse_timestamp(cursor) if cursor and not _reconciles(dataset, options) else None
        if since is not None and endpoint.watermark_param:
            params[endpoint.watermark_param] = (since - options.watermark_overlap).isoformat().replace("+00:00", "Z")
        return client.iter_list(endpoint, params=params)
    return client.iter_pages(endpoint)


def _write_page(
    engine: sa.Engine,
    dataset: Dataset,
    progress: _Progress,
    tenant_id: int,
    page: Page,
    validation: PageValidation,
    run_id: str,
    result: ExtractResult,
    observer: SyncObserver,
) -> None:
    """One transaction: the page's rows, its quarantined records, the cursor after it, its log line
    and the pair's row count; the page is counted in ``result``. A page with nothing to write and
    no new cursor writes nothing."""
    now = datetime.now(UTC)
    endpoint = dataset.extraction_endpoint
    rows = raw_rows(
        tenant_id,
        validation.valid,
        extracted_at=now,
        run_id=run_id,
        key_field=progress.key_field,
        seen=progress.seen_content,
    )
    cursor: str | None = None
    if endpoint.kind == "export":
        cursor = page.continue_from
    elif endpoint.watermark_param:
        field_name = endpoint.watermark_param.removesuffix("OnOrAfter") + "On"
        progress.watermark = (
            max(
                [progress.watermark or "", *(r.get(field_name) or "" for r in validation.valid)],
                key=lambda text: parse_timestamp(text) or _EPOCH,
            )
            or None
        )
        if not page.has_more:
            cursor = progress.watermark  # a list's watermark moves only once the listing is complete
    page_ids = [row["id"] for row in rows]
    if progress.key_field:  # content-keyed records repeat on purpose (identical records stay rows)
        result.duplicates += sum(1 for record_id in page_ids if record_id in progress.seen_ids)
    progress.seen_ids.update(page_ids)
    received = SyncCounters(pages=1, records=len(page.records))
    result += received
    if page.number == 1 and page.total_count is not None:
        result.reported_total = page.total_count
    finishes_reconciliation = progress.reconcile and not page.has_more
    if not rows and not validation.quarantined and cursor in (None, result.cursor) and not finishes_reconciliation:
        return  # nothing to write and the cursor stands: no transaction (the common page of a quiet hour)
    deleted = 0
    with engine.begin() as conn:
        counts = upsert_rows(conn, progress.table, rows)
        observer.reached(SyncPoint.ROWS_WRITTEN, dataset)
        if validation.quarantined:
            conn.execute(
                quarantine_table.insert(),
                quarantine_rows(tenant_id, dataset.key, validation.quarantined, run_id=run_id, at=now),
            )
        if cursor is not None:
            save_cursor(conn, tenant_id, dataset, cursor, run_id)
            observer.reached(SyncPoint.CURSOR_WRITTEN, dataset)
        if finishes_reconciliation:
            deleted = mark_missing_deleted(conn, progress.table, tenant_id, progress.seen_ids, at=now)
        written = SyncCounters(
            rows_written=counts.written, rows_deleted=deleted, quarantined=len(validation.quarantined)
        )
        log_page(
            conn,
            progress.log_id,
            tenant_id,
            dataset.key,
            received + written,
            rows_inserted=counts.inserted,
            cursor=cursor,
        )
    result += written
    result.warnings.extend(validation.warnings)
    result.cursor = cursor or result.cursor


def _finish(
    result: ExtractResult,
    client: ServiceTitanClient,
    engine: sa.Engine,
    progress: _Progress,
    run_id: str,
    tenant_id: int,
    status: str | None = None,
    error: str | None = None,
) -> ExtractResult:
    """Close the dataset's log and status rows with its true outcome (``status``/``error`` override)."""
    key = result.dataset.key
    result += client.stats.of(key)  # what its requests counted (once: the dataset ends here)
    result.duration_s = time.perf_counter() - result.started if result.started is not None else 0.0
    result.status = status or _status(result)
    progress.seen_ids = set()  # no longer needed: free it before the next dataset
    close_dataset(
        engine,
        run_id,
        tenant_id,
        key,
        progress.log_id,
        DatasetClose(
            status=result.status,
            counts=result.counters(),
            reported_total=result.reported_total,
            duration_s=result.duration_s,
            changed=bool(result.rows_written or result.rows_deleted),
            error=error or (str(result.error) if result.error else None),
            error_kind=type(result.error).__name__ if result.error else None,
        ),
    )
    return result
