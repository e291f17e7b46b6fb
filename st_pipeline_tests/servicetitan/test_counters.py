"""The one counter vocabulary: addition, the client's per-dataset shares, the metadata it shows."""

from __future__ import annotations

import threading

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.servicetitan.client import RequestStats
from st_pipeline.servicetitan.counters import COUNTER_NAMES, SyncCounters

CUSTOMERS = load_catalogue().dataset("crm/customers").extraction_endpoint
ZONES = load_catalogue().dataset("dispatch/zones").extraction_endpoint


def test_counters_add_field_by_field() -> None:
    one = SyncCounters(records=3, pages=1, rows_deleted=2)
    other = SyncCounters(records=4, requests=2, duplicates=1)
    assert one + other == SyncCounters(records=7, pages=1, requests=2, rows_deleted=2, duplicates=1)
    assert one == SyncCounters(records=3, pages=1, rows_deleted=2)  # `+` leaves both alone
    total = SyncCounters()
    for _ in range(3):
        total += one
    assert total == SyncCounters(records=9, pages=3, rows_deleted=6)
    assert set(COUNTER_NAMES) >= {"records", "pages", "requests", "retries", "throttled", "quarantined"}


def test_the_metadata_keeps_the_names_the_ui_shows() -> None:
    """Plain ints under the raw assets' metadata keys (README, *Assets*); rows flagged deleted only when some were."""
    counts = SyncCounters(records=5, rows_written=4, pages=2, requests=3, quarantined=1, retries=1, throttled=2)
    assert counts.metadata() == {
        "records": 5,
        "rows_written": 4,
        "pages": 2,
        "requests": 3,
        "quarantined": 1,
        "retries": 1,
        "throttled_429s": 2,
    }
    assert (counts + SyncCounters(rows_deleted=2, duplicates=7)).metadata()["rows_flagged_deleted"] == 2
    assert all(type(value) is int for value in counts.metadata().values())


def test_the_client_counts_totals_and_each_datasets_share_across_threads() -> None:
    stats = RequestStats()

    def traffic() -> None:
        for _ in range(500):
            stats.add(SyncCounters(requests=1), CUSTOMERS)
            stats.add(SyncCounters(throttled=1), ZONES)
            stats.add(SyncCounters(pages=1, records=10))  # no dataset: the totals only

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.counters() == SyncCounters(requests=2000, throttled=2000, pages=2000, records=20000)
    assert stats.of(CUSTOMERS.dataset_key) == SyncCounters(requests=2000)
    assert stats.of(ZONES.dataset_key) == SyncCounters(throttled=2000)
    assert stats.of("crm/never-asked") == SyncCounters()
    share = stats.of(CUSTOMERS.dataset_key)
    share.requests += 1  # a copy: the client's count stands
    assert stats.of(CUSTOMERS.dataset_key).requests == 2000
