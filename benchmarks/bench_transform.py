"""Benchmark: hub tables and marts of one tenant, full and after a 1% change, SQLite and PostgreSQL.

    python benchmarks/bench_transform.py                      # 200k and 1M records, both warehouses
    python benchmarks/bench_transform.py --records 200000 --warehouse sqlite

For each size and warehouse: the simulator (its own process; the 8 core datasets, seed 11, as in
``bench_sync.py``) is synced in full into a fresh warehouse; then the hub tables and marts are
built in full (``st_pipeline.transform.build.build_tenant``, what ``servicetitan/tenant_models``
runs); then 1% of every dataset changes in the simulator, the tenant syncs again and the build
runs incrementally. Reported: build wall and CPU time (this process; the warehouse server's own
CPU is not in it for PostgreSQL), raw rows read per second of the full build, hub rows written,
and the incremental build's reprocessed rows and time as shares of the full build's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_sync import TENANT_ID, _child_sync, start_simulator, warehouse_url  # noqa: E402


def _build(url: str, full: bool) -> dict[str, Any]:
    from st_pipeline.transform.build import build_tenant
    from st_pipeline.warehouse.engine import create_warehouse_engine

    engine = create_warehouse_engine(url)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        built = build_tenant(engine, TENANT_ID, "bench", full=full)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        engine.dispose()
    hubs = [h for h in built.hubs if h.mode != "missing_source"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "raw_rows": sum(h.source_rows_total for h in hubs),
        "reprocessed": sum(h.source_rows_changed for h in hubs),
        "hub_rows_written": sum(h.rows_inserted for h in hubs),
        "hub_tables": len(hubs),
        "marts": len(built.marts),
    }


def run_one(records: int, warehouse: str, workdir: Path) -> dict[str, Any]:
    sim = start_simulator(records, "a")
    url, cleanup = warehouse_url(warehouse, workdir)
    try:
        _child_sync(sim, url, "a")
        full = _build(url, full=True)
        request = urllib.request.Request(
            sim.url + f"/_simulator/tenants/{TENANT_ID}/changes?fraction=0.01", method="POST"
        )
        with urllib.request.urlopen(request, timeout=600) as response:  # loopback only
            changed = sum(json.loads(response.read()).values())
        _child_sync(sim, url, "a")
        incremental = _build(url, full=False)
    finally:
        sim.stop()
        cleanup()
    return {
        "records": records,
        "warehouse": warehouse,
        "changed_records": changed,
        "full": full,
        "incremental": incremental,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="*", default=[200_000, 1_000_000])
    parser.add_argument("--warehouse", nargs="*", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    args = parser.parse_args()
    workdir = Path(os.environ.get("ST_BENCH_DIR", "/tmp"))
    results = []
    columns = (
        "records | warehouse | full build s (CPU s) | raw rows/s | hub rows | 1% changed records | "
        "incremental s (CPU s) | reprocessed rows | incremental / full time"
    )
    print(f"| {columns} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for records in args.records:
        for warehouse in args.warehouse:
            result = run_one(records, warehouse, workdir)
            results.append(result)
            full, incremental = result["full"], result["incremental"]
            print(
                f"| {records:,} | {warehouse} | {full['wall_s']:.1f} ({full['cpu_s']:.1f}) | "
                f"{full['raw_rows'] / full['wall_s']:,.0f} | {full['hub_rows_written']:,} | "
                f"{result['changed_records']:,} | "
                f"{incremental['wall_s']:.2f} ({incremental['cpu_s']:.2f}) | {incremental['reprocessed']:,} "
                f"({incremental['reprocessed'] / incremental['raw_rows']:.1%}) | "
                f"{incremental['wall_s'] / full['wall_s']:.1%} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
