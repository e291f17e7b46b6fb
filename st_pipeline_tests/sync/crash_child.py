"""A tenant sync in a process of its own, for the crash tests (run with ``python -m``).

    python -m st_pipeline_tests.sync.crash_child API_URL TENANT_ID CLIENT_ID WAREHOUSE_URL RUN_ID [POINT:N]

The client secret comes on standard input. With ``POINT:N`` (e.g. ``rows_written:14``), the process
kills itself the N-th time the sync reaches that point (``st_pipeline_tests.killing``).
"""

from __future__ import annotations

import sys

from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.sync.extract import sync_tenant
from st_pipeline.sync.observer import NO_OBSERVER, SyncObserver
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.schema import ensure_raw_tables
from st_pipeline_tests.killing import KillAt

EXTRA_DATASETS = ("dispatch/zones",)  # a list endpoint with a modifiedOn watermark


def main() -> None:
    api_url, tenant_id, client_id, warehouse_url, run_id = sys.argv[1:6]
    observer: SyncObserver = KillAt.parse(sys.argv[6]) if len(sys.argv) > 6 else NO_OBSERVER
    catalogue = load_catalogue()
    datasets = [catalogue.dataset(key) for key in (*CORE_DATASETS, *EXTRA_DATASETS)]
    engine = create_warehouse_engine(warehouse_url)
    ensure_raw_tables(engine, datasets)
    settings = ApiSettings(api_url=api_url, auth_url=api_url + "/connect/token", app_key=SecretStr("ak1.simulator"))
    credentials = TenantCredentials(int(tenant_id), client_id, SecretStr(sys.stdin.readline().strip()))
    # Two extraction threads: pages interleave, so kill points land in different datasets.
    with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=1000)) as client:
        results = list(sync_tenant(client, engine, datasets, run_id=run_id, concurrency=2, observer=observer))
    print(sum(r.records for r in results), "records")


if __name__ == "__main__":
    main()
