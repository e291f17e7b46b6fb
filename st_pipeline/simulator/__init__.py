"""An embedded ServiceTitan API simulator: a real HTTP server with spec-shaped data.

    config = SimulatorConfig(tenants=[SimulatorConfig.demo_tenant(1001)], scale=0.1)
    with Simulator(config) as sim:
        ...  # point a client at sim.url / sim.auth_url; compare with sim.ground_truth(...)

The data is generated from the record schemas in the endpoint catalogue, deterministically per
(seed, tenant, scale). For production-grade clients the simulator can also be hostile: latency,
a per-tenant rate limit, reproducible random faults (``FaultPlan``) and revoked credentials
(see ``SimulatorConfig``), and at run time queued faults (also at the token endpoint), hidden
modules, denied scopes and misbehaving datasets (see ``Simulator``). The Reporting API's reports
are computed from the same records (see ``reports``).
``python -m st_pipeline.simulator`` serves it from its own process.
This package does not depend on Dagster.
"""

from st_pipeline.simulator.config import SimulatedTenant, SimulatorConfig
from st_pipeline.simulator.faults import FaultPlan
from st_pipeline.simulator.reports import ReportField
from st_pipeline.simulator.server import Simulator
from st_pipeline.simulator.stats import SimulatorStats

__all__ = ["FaultPlan", "ReportField", "SimulatedTenant", "Simulator", "SimulatorConfig", "SimulatorStats"]
