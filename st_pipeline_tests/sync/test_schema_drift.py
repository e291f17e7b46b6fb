"""What the pipeline does when ServiceTitan sends something its spec did not promise.

Documented outcomes: unknown fields are kept; missing optional fields are kept; a non-finite
number (``NaN``, ``"NaN"``, ``Infinity``) is stored as null with a warning; a wrong type or a missing
id sends the record to ``raw_quarantine`` with the reason. None of it fails the asset.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from st_pipeline.servicetitan.auth import TenantCredentials
from st_pipeline.servicetitan.catalogue import CORE_DATASETS, load_catalogue
from st_pipeline.servicetitan.client import ServiceTitanClient
from st_pipeline.servicetitan.models import validate_page
from st_pipeline.servicetitan.ratelimit import RateLimiter
from st_pipeline.servicetitan.settings import ApiSettings
from st_pipeline.simulator import SimulatedTenant, Simulator, SimulatorConfig
from st_pipeline.sync.extract import sync_tenant
from st_pipeline.warehouse.tables import quarantine_table, raw_table
from st_pipeline_tests.support import prepared_warehouse

TENANT = SimulatedTenant(tenant_id=7101, client_id="cid.drift", client_secret="cs1.drift-secret")
CUSTOMERS = load_catalogue().dataset("crm/customers")


def _drop(field: str):  # noqa: ANN202 - tiny edit factories
    return lambda record: record.pop(field)


def _set(field: str, value: object):  # noqa: ANN202
    return lambda record: record.__setitem__(field, value)


def test_drift_outcomes_through_a_real_sync(tmp_path: Path) -> None:
    config = SimulatorConfig(tenants=[TENANT], seed=9, scale=0.03, export_batch_size=10, datasets=CORE_DATASETS)
    with Simulator(config) as sim:
        ids = [r["id"] for r in sim.ground_truth(TENANT.tenant_id, CUSTOMERS.key)][:7]
        sim.tamper_records(
            TENANT.tenant_id,
            CUSTOMERS.key,
            {
                ids[0]: _set("brandNewField", {"nested": [1, 2]}),  # unknown field → kept
                ids[1]: _drop("mergedToId"),  # optional field missing → kept
                ids[2]: _set("balance", "NaN"),  # → null, warning
                ids[3]: _set("balance", float("nan")),  # bare NaN literal → null, warning
                ids[4]: _set("creditLimit", float("inf")),  # Infinity → null, warning
                ids[5]: _set("createdById", "not-a-number"),  # wrong type → quarantined
                ids[6]: _drop("id"),  # no id → quarantined
            },
        )
        engine = prepared_warehouse(f"sqlite:///{tmp_path / 'w.db'}", [CUSTOMERS])
        settings = ApiSettings(api_url=sim.url, auth_url=sim.auth_url, app_key=SecretStr(config.app_key))
        credentials = TenantCredentials(TENANT.tenant_id, TENANT.client_id, SecretStr(TENANT.client_secret))
        with ServiceTitanClient(settings, credentials, limiter=RateLimiter(1000)) as client:
            [result] = list(sync_tenant(client, engine, [CUSTOMERS], run_id="drift"))
        truth_count = len(sim.ground_truth(TENANT.tenant_id, CUSTOMERS.key))

    assert result.succeeded
    assert result.records == truth_count and result.quarantined == 2
    assert len(result.warnings) == 3 and all("stored as null" in w for w in result.warnings)
    table = raw_table(CUSTOMERS)
    with engine.connect() as conn:
        rows = {r.id: r.payload for r in conn.execute(sa.select(table))}
        quarantined = {r.record_id: r for r in conn.execute(sa.select(quarantine_table))}
    assert len(rows) == truth_count - 2
    assert rows[ids[0]]["brandNewField"] == {"nested": [1, 2]}
    assert "mergedToId" not in rows[ids[1]]
    assert rows[ids[2]]["balance"] is None and rows[ids[3]]["balance"] is None
    assert rows[ids[4]]["creditLimit"] is None
    assert ids[5] not in rows and "createdById" in quarantined[ids[5]].reason
    assert None in quarantined and "id" in quarantined[None].reason
    assert quarantined[None].dataset == CUSTOMERS.key and quarantined[None].tenant_id == TENANT.tenant_id


@pytest.mark.parametrize(
    ("edit", "outcome"),
    [
        (lambda r: r.update(unknown=1), "kept"),
        (lambda r: r.pop("paymentTermId", None), "kept"),
        (lambda r: r.update(balance=math.inf), "nulled"),
        (lambda r: r.update(balance="Infinity"), "nulled"),
        (lambda r: r.update(tagTypeIds="1,2"), "quarantined"),
        (lambda r: r.update(address={"street": 5}), "quarantined"),
        (lambda r: r.update(id="12"), "quarantined"),
        (lambda r: r.update(createdOn="yesterday"), "quarantined"),
    ],
)
def test_validate_page_outcomes(simulator: Simulator, edit, outcome: str) -> None:  # noqa: ANN001
    records = [dict(r) for r in simulator.ground_truth(4101, CUSTOMERS.key)[:3]]
    edit(records[1])
    validation = validate_page(CUSTOMERS, records)
    if outcome == "quarantined":
        assert len(validation.valid) == 2 and len(validation.quarantined) == 1
        assert validation.quarantined[0].reason
    else:
        assert len(validation.valid) == 3 and not validation.quarantined
        assert bool(validation.warnings) == (outcome == "nulled")
        if outcome == "nulled":
            assert records[1]["balance"] is None
