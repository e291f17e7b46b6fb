"""The points a tenant sync passes, for whoever wants to watch it (``sync_tenant(..., observer=...)``).

The writer (the thread that called ``sync_tenant``) tells its observer each time it reaches one of
the points below, in this order for each page, with the dataset concerned. The crash tests kill
the process there; progress reporting or tracing can hang off the same calls. The default
observer does nothing.

An observer runs on the writer's thread, inside the page's transaction for ``ROWS_WRITTEN`` and
``CURSOR_WRITTEN``: it must be quick, and an exception it raises stops the tenant's run (every
dataset not finished is closed ``cancelled``; the open transaction rolls back).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from st_pipeline.servicetitan.catalogue import Dataset


class SyncPoint(StrEnum):
    """Where a sync is, from a page's arrival to its dataset's end."""

    PAGE_RECEIVED = "page_received"  # a page arrived; nothing of it written
    ROWS_WRITTEN = "rows_written"  # its rows upserted, the transaction still open
    CURSOR_WRITTEN = "cursor_written"  # the cursor after it saved, not committed
    PAGE_COMMITTED = "page_committed"  # just after the commit (or the page had nothing to write)
    DATASET_FINISHED = "dataset_finished"  # the dataset's sync-log row closed and its result handed on


class SyncObserver(Protocol):
    """Told each point a sync reaches (see the module's docstring for where it runs)."""

    def reached(self, point: SyncPoint, dataset: Dataset) -> None: ...


class NoObserver:
    """The default: watches nothing."""

    def reached(self, point: SyncPoint, dataset: Dataset) -> None:
        return None


NO_OBSERVER: SyncObserver = NoObserver()
