"""Profile the writer side of a sync (the thread that upserts pages), 50,000 core records into SQLite.

    .venv/bin/python benchmarks/profile_writer.py

The simulator runs in this process; cProfile sees the calling thread only, which is the writer
(fetching and validation run in the extraction threads).
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time

from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import Simulator, SimulatorConfig
from st_pipeline.sync.extract import sync_tenant
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.schema import ensure_raw_tables, upgrade


def main() -> None:
    tenant = SimulatorConfig.demo_tenant(1)
    with Simulator(SimulatorConfig(tenants=[tenant], scale=5, datasets=CORE_DATASETS)) as sim:
        sim.record_counts(1)  # generate before timing
        engine = create_warehouse_engine(f"sqlite:///{tempfile.mkdtemp()}/profile.db")
        upgrade(engine)
        datasets = load_catalogue().core_datasets()
        ensure_raw_tables(engine, datasets)
        settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(sim.config.app_key))
        credentials = TenantCredentials(1, tenant.client_id, SecretStr(tenant.client_secret))
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=1e9)) as client:
            records = sum(r.records for r in sync_tenant(client, engine, datasets, run_id="profile"))
        profile.disable()
        print(f"{records} records in {time.perf_counter() - started:.2f} s")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(20)


if __name__ == "__main__":
    main()
