"""Feature flags: datasets and modules enabled or disabled globally and per tenant."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.tenants.endpoint_selection import EndpointSelection, UnknownTargetError
from st_pipeline.tenants.registry import Change
from st_pipeline.tenants.tables import EVERY_TENANT
from st_pipeline.tenants.validation import InvalidTenantInput

CHANGE = Change("test", actor="tester")

CATALOGUE = load_catalogue()
LEADS, PAYROLL = CATALOGUE.dataset("crm/leads"), CATALOGUE.dataset("payroll/gross-pay-items")
CUSTOMERS = CATALOGUE.dataset("crm/customers")


@pytest.fixture()
def selection(tmp_path: Path) -> EndpointSelection:
    return EndpointSelection(sa.create_engine(f"sqlite:///{tmp_path / 'registry.db'}"), config_disabled=[])


def _enabled(selection: EndpointSelection, tenant_id: int | None) -> dict[str, bool]:
    return {k: d.enabled for k, d in selection.decide([LEADS, PAYROLL, CUSTOMERS], tenant_id).items()}


def test_everything_extracted_is_enabled_by_default(selection: EndpointSelection) -> None:
    assert all(_enabled(selection, 1).values())
    excluded = CATALOGUE.dataset("pricebook/images")
    decision = selection.decide([excluded], 1)[excluded.key]
    assert not decision.enabled and "not extracted" in decision.why


def test_most_specific_flag_wins(selection: EndpointSelection) -> None:
    selection.set("payroll", enabled=False, reason="no payroll scopes", change=CHANGE)
    selection.set("crm/leads", enabled=False, tenant_id=1, change=CHANGE)
    selection.set("payroll/gross-pay-items", enabled=True, tenant_id=2, change=CHANGE)
    assert _enabled(selection, 1) == {"crm/leads": False, "payroll/gross-pay-items": False, "crm/customers": True}
    assert _enabled(selection, 2) == {"crm/leads": True, "payroll/gross-pay-items": True, "crm/customers": True}
    why = selection.decide([PAYROLL], 3)[PAYROLL.key].why
    assert "every tenant" in why and "no payroll scopes" in why


def test_configuration_disables_and_flags_override(tmp_path: Path) -> None:
    selection = EndpointSelection(sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}"), config_disabled=["crm"])
    assert _enabled(selection, 1)["crm/customers"] is False
    assert "ST_PIPELINE_DISABLED_ENDPOINTS" in selection.decide([CUSTOMERS], 1)[CUSTOMERS.key].why
    selection.set("crm/customers", enabled=True, tenant_id=1, change=CHANGE)
    assert _enabled(selection, 1)["crm/customers"] is True


def test_unknown_target_is_a_clear_error(selection: EndpointSelection) -> None:
    with pytest.raises(UnknownTargetError, match="st-pipeline endpoints"):
        selection.set("crm/nope", enabled=False, change=CHANGE)
    with pytest.raises(UnknownTargetError):
        EndpointSelection(selection.engine, config_disabled=["payrol"])


def test_tenant_zero_cannot_address_every_tenant(selection: EndpointSelection) -> None:
    """0 marks a flag for every tenant; it is not a tenant id anyone can name."""
    with pytest.raises(InvalidTenantInput, match="between 1 and"):
        selection.set("crm/leads", enabled=False, tenant_id=EVERY_TENANT, change=CHANGE)
    assert _enabled(selection, 5)["crm/leads"] is True
