"""Benchmark: a full sync of one tenant against the simulator, into SQLite and PostgreSQL.

    python benchmarks/bench_sync.py                       # the whole matrix (make bench)
    python benchmarks/bench_sync.py --records 200000 --warehouse sqlite --setting a

Settings: (a) no latency and no rate limit — the CPU-bound case; (b) 100 ms latency per request
and ServiceTitan's 60 requests/s, enforced by the simulator. The simulator runs in its own
process; the sync runs in a child process so that its peak RSS is its own. The sync is the same
code a Dagster run executes (`st_pipeline.sync.extract.sync_tenant`), called without Dagster.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

CORE_RECORDS_AT_SCALE_1 = 10_133  # core datasets of one tenant at simulator scale 1.0
TENANT_ID = 5001
POSTGRES_ADMIN_URL = os.environ.get("ST_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class Setting(TypedDict):
    latency_ms: int  # added to every simulator response
    rate_limit: int | None  # requests/s the simulator allows; None: no limit


SETTINGS: dict[str, Setting] = {"a": {"latency_ms": 0, "rate_limit": None}, "b": {"latency_ms": 100, "rate_limit": 60}}


@dataclass
class SimulatorProcess:
    process: subprocess.Popen[str]
    url: str
    client_id: str
    client_secret: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_simulator/stats", timeout=30) as response:  # loopback only
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_simulator(records: int, setting: str) -> SimulatorProcess:
    scale = records / CORE_RECORDS_AT_SCALE_1
    args = [
        sys.executable,
        "-m",
        "st_pipeline.simulator",
        "--port",
        "0",
        "--seed",
        "11",
        "--scale",
        f"{scale:.4f}",
        "--tenant",
        str(TENANT_ID),
        "--datasets",
        "core",
    ]
    if SETTINGS[setting]["latency_ms"]:
        args += ["--latency-ms", str(SETTINGS[setting]["latency_ms"])]
    if SETTINGS[setting]["rate_limit"]:
        args += ["--rate-limit", str(SETTINGS[setting]["rate_limit"])]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    url = client_id = client_secret = ""
    assert process.stdout is not None
    for line in process.stdout:
        parts = line.split()
        if parts[:1] == ["TENANT"]:
            client_id, client_secret = parts[2], parts[3]
        if parts[:1] == ["READY"]:
            url = parts[1]
        if url and client_id:
            break
    if not url:
        raise RuntimeError("the simulator did not start")
    return SimulatorProcess(process, url, client_id, client_secret)


def warehouse_url(kind: str, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A fresh warehouse; returns its URL and a cleanup callable."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"

        def remove() -> None:
            for p in workdir.glob(path.name + "*"):
                p.unlink(missing_ok=True)

        return f"sqlite:///{path}", remove
    import sqlalchemy as sa

    name = f"st_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


def child(args: argparse.Namespace) -> None:
    """Run one sync in this process and print its measurements as JSON."""
    from pydantic import SecretStr

    from st_pipeline.servicetitan.auth import TenantCredentials
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.servicetitan.client import ClientOptions, ServiceTitanClient
    from st_pipeline.servicetitan.settings import ApiSettings
    from st_pipeline.sync.extract import sync_tenant
    from st_pipeline.warehouse.engine import create_warehouse_engine
    from st_pipeline.warehouse.schema import ensure_raw_tables, upgrade

    datasets = load_catalogue().core_datasets()
    engine = create_warehouse_engine(args.warehouse_url)
    upgrade(engine)
    ensure_raw_tables(engine, datasets)
    settings = ApiSettings(
        api_url=args.api_url, auth_url=args.api_url + "/connect/token", app_key=SecretStr("ak1.simulator")
    )
    credentials = TenantCredentials(TENANT_ID, args.client_id, SecretStr(args.client_secret))
    rate = args.client_rate or 1e9
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    per_dataset = {}
    with ServiceTitanClient(settings, credentials, options=ClientOptions(requests_per_second=rate)) as client:
        for result in sync_tenant(client, engine, datasets, run_id="bench"):
            if result.error:
                raise result.error
            per_dataset[result.dataset.key] = {
                "records": result.records,
                "pages": result.pages,
                "rows_written": result.rows_written,
                "kind": result.dataset.extraction_endpoint.kind,
            }
        stats = client.stats
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "records": stats.records,
                "requests": stats.requests,
                "retries": stats.retries,
                "throttled": stats.throttled,
                "token_requests": client.tokens.token_requests,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "datasets": per_dataset,
            }
        )
    )


def run_one(records: int, warehouse: str, setting: str, workdir: Path, incremental: bool = False) -> dict[str, Any]:
    """A full sync; with ``incremental``, then 1% of every dataset changed and a second sync."""
    sim = start_simulator(records, setting)
    url, cleanup = warehouse_url(warehouse, workdir)
    try:
        result = _child_sync(sim, url, setting)
        result["simulator"] = sim.stats()
        if incremental:
            request = urllib.request.Request(
                sim.url + f"/_simulator/tenants/{TENANT_ID}/changes?fraction=0.01", method="POST"
            )
            with urllib.request.urlopen(request, timeout=600) as response:  # loopback only
                changed = json.loads(response.read())
            again = _child_sync(sim, url, setting)
            again["changed_records"] = sum(changed.values())
            result["incremental"] = again
    finally:
        sim.stop()
        cleanup()
    result.update(records_target=records, warehouse=warehouse, setting=setting)
    return result


def _child_sync(sim: SimulatorProcess, url: str, setting: str) -> dict[str, Any]:
    rate = SETTINGS[setting]["rate_limit"]
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--api-url",
            sim.url,
            "--client-id",
            sim.client_id,
            "--client-secret",
            sim.client_secret,
            "--warehouse-url",
            url,
            "--client-rate",
            str(rate or 0),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def lower_bound_s(result: dict[str, Any], setting: str) -> float:
    """max(total requests / rate limit, longest chain of sequential requests × latency)."""
    latency = SETTINGS[setting]["latency_ms"] / 1000
    rate = SETTINGS[setting]["rate_limit"]
    chain = 0
    for stats in result["datasets"].values():
        # Export pages follow each other's continuation token; list pages after the first run 4 at a time.
        pages = stats["pages"]
        chain = max(chain, pages if stats["kind"] == "export" else 1 + -(-(pages - 1) // 4))
    return max(result["requests"] / rate if rate else 0.0, chain * latency)


def _row(result: dict[str, Any]) -> str:
    sim = result["simulator"]
    return (
        f"| {result['records']:,} | {result['warehouse']} | ({result['setting']}) | {result['wall_s']:.1f} | "
        f"{result['cpu_s']:.1f} | {result['requests'] / result['wall_s']:.1f} | "
        f"{result['records'] / result['wall_s']:,.0f} | {result['peak_rss_mb']:.0f} | "
        f"{sim.get('throttled', '?')} | {result['token_requests']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="*", default=[200_000, 1_000_000])
    parser.add_argument("--warehouse", nargs="*", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--setting", nargs="*", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="after each full sync in setting (a), change 1%% of the records and sync again",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--client-secret", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse-url", help=argparse.SUPPRESS)
    parser.add_argument("--client-rate", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(os.environ.get("ST_BENCH_DIR", "/tmp"))
    results = []
    columns = (
        "records | warehouse | setting | wall s | CPU s | requests/s | records/s | peak RSS MB | 429s | token requests"
    )
    print(f"| {columns} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for records in args.records:
        for warehouse in args.warehouse:
            by_setting = {}
            for setting in args.setting:
                result = run_one(records, warehouse, setting, workdir, incremental=args.incremental and setting == "a")
                by_setting[setting] = result
                results.append(result)
                print(_row(result), flush=True)
                if "incremental" in result:
                    again = result["incremental"]
                    print(
                        f"|  | {warehouse} | (a) 1% incremental: {again['changed_records']:,} records changed | "
                        f"{again['wall_s']:.2f} | {again['cpu_s']:.2f} | {again['requests']} requests = "
                        f"{again['requests'] / result['requests']:.1%} of the full sync's {result['requests']} | "
                        f"{again['records']:,} records read | "
                        f"wall {again['wall_s'] / result['wall_s']:.1%} of full |  |  |  |",
                        flush=True,
                    )
            if "b" in by_setting:
                b = by_setting["b"]
                bound = lower_bound_s(b, "b")
                reference = max(bound, by_setting["a"]["wall_s"]) if "a" in by_setting else bound
                b["lower_bound_s"], b["ratio"] = bound, b["wall_s"] / reference
                print(
                    f"|  | {warehouse} | (b) ratio | {b['ratio']:.2f} = {b['wall_s']:.1f} s / max(lower bound "
                    f"{bound:.1f} s, (a) {by_setting.get('a', {}).get('wall_s', 0):.1f} s) |  |  |  |  |  |  |",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
