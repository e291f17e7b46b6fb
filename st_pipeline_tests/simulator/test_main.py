"""``python -m st_pipeline.simulator``: a simulator in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from st_pipeline.servicetitan.catalogue import CORE_DATASETS
from st_pipeline.simulator import SimulatorConfig


def test_serves_until_sigterm_and_prints_the_credentials() -> None:
    command = [
        sys.executable,
        "-m",
        "st_pipeline.simulator",
        "--port",
        "0",
        "--seed",
        "4",
        "--scale",
        "0.01",
        "--tenant",
        "7001",
        "--tenant",
        "7002",
        "--latency-ms",
        "1",
        "--rate-limit",
        "1000",
        "--fault-rate",
        "0",
        "--export-batch-size",
        "2",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "READY" and ready[1].startswith("http://127.0.0.1:")
        tenants = [process.stdout.readline().split() for _ in range(2)]
        expected = SimulatorConfig.demo_tenant(7002, seed=4)
        assert tenants[1] == ["TENANT", "7002", expected.client_id, expected.client_secret]
        _, tenant_id, client_id, client_secret = tenants[0]
        with httpx.Client(base_url=ready[1]) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
            token = http.post("/connect/token", data=form).json()["access_token"]
            headers = {"ST-App-Key": "ak1.simulator", "Authorization": token}
            body = http.get(f"/crm/v2/tenant/{tenant_id}/export/customers", headers=headers).json()
            assert len(body["data"]) == 2 and body["hasMore"] is True
            counts = http.get(f"/_simulator/tenants/{tenant_id}/counts").json()
            assert set(counts) == set(CORE_DATASETS)  # the default: --datasets core
            assert http.get("/_simulator/stats").json()["api_requests"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
