"""Serve the simulator from its own process (for benchmarks), without the project's CLI.

    python -m st_pipeline.simulator --port 0 --seed 1 --scale 20 --tenant 1001 [--tenant 1002]

Every tenant's data is generated first; then one line ``READY <url>`` is printed to stdout,
followed by one line ``TENANT <id> <client_id> <client_secret>`` per tenant (simulator-only
credentials). The process serves until SIGTERM or SIGINT and then exits with status 0. Progress
notes go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from st_pipeline.servicetitan.catalogue import CORE_DATASETS
from st_pipeline.simulator.config import SimulatorConfig
from st_pipeline.simulator.faults import FaultPlan
from st_pipeline.simulator.server import Simulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m st_pipeline.simulator",
        description="Serve the ServiceTitan API simulator until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="record volume multiplier")
    parser.add_argument(
        "--tenant",
        type=int,
        action="append",
        required=True,
        metavar="ID",
        help="a tenant to serve (repeatable)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay of every response")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="R",
        help="API requests per second per tenant (default: unlimited)",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="chance of each kind of fault per API request (FaultPlan.uniform)",
    )
    parser.add_argument("--export-batch-size", type=int, default=500, metavar="N")
    parser.add_argument(
        "--datasets",
        choices=("core", "all"),
        default="core",
        help="core datasets only (default) or every catalogue dataset",
    )
    parser.add_argument("--app-key", default=None, help=f"the ST-App-Key to require ({SimulatorConfig.app_key})")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SimulatorConfig:
    """The simulator configuration the command line asks for."""
    return SimulatorConfig(
        tenants=[SimulatorConfig.demo_tenant(tenant, args.seed) for tenant in args.tenant],
        seed=args.seed,
        scale=args.scale,
        export_batch_size=args.export_batch_size,
        datasets=CORE_DATASETS if args.datasets == "core" else None,
        latency_s=args.latency_ms / 1000.0,
        rate_limit_per_s=args.rate_limit,
        faults=FaultPlan.uniform(args.fault_rate) if args.fault_rate > 0 else None,
        app_key=args.app_key or SimulatorConfig.app_key,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    simulator = Simulator(config, host=args.host, port=args.port)
    for tenant in config.tenants:
        started = time.perf_counter()
        counts = simulator.record_counts(tenant.tenant_id)  # generates the tenant's data
        print(
            f"tenant {tenant.tenant_id}: {sum(counts.values())} records in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if stop.is_set():
            return 0
    simulator.start()
    try:
        lines = [f"READY {simulator.url}"] + [
            f"TENANT {t.tenant_id} {t.client_id} {t.client_secret}" for t in config.tenants
        ]
        print("\n".join(lines), flush=True)
        while not stop.wait(timeout=1.0):
            pass
    finally:
        simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
