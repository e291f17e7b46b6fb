"""A mart whose definition changed is rebuilt in full once, and only then; the build remembers the
marts' fingerprints per version of the code instead of compiling every query on every run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from st_pipeline.transform.build import FINGERPRINT_STATE_PREFIX, build_tenant
from st_pipeline.transform.expressions import live, utc_day
from st_pipeline.transform.hubs import hub
from st_pipeline.transform.mart_build import mart_fingerprint
from st_pipeline.transform.mart_parts import Scope
from st_pipeline.transform.marts import MARTS, MARTS_BY_NAME
from st_pipeline.transform.tables import hub_table
from st_pipeline.warehouse.engine import create_warehouse_engine
from st_pipeline.warehouse.schema import upgrade
from st_pipeline.warehouse.tables import transform_state_table

TENANT = 31


def _sales_of_large_estimates(scope: Scope) -> sa.Select[Any]:
    """The sales mart's facts, counting only estimates above 1,000 (a changed definition)."""
    e = hub_table(hub("estimates")).alias("e")
    return sa.select(
        e.c.id.label("entity_id"),
        utc_day(e.c.sold_on).label("day"),
        e.c.business_unit_id,
        sa.literal_column("1").label("sold_estimates"),
        e.c.sub_total.label("sales"),
    ).where(scope.tenant(e), live(e), e.c.status == "Sold", e.c.sub_total > 1000, scope.chosen(e.c.id))


def _remembered(engine: sa.Engine) -> dict[str, str]:
    t = transform_state_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.table_name, t.c.fingerprint).where(
                t.c.tenant_id == 0, t.c.table_name.like(f"{FINGERPRINT_STATE_PREFIX}/%")
            )
        ).tuples()
        return {name.rsplit("/", 1)[1]: fingerprint for name, fingerprint in rows}


def _built(engine: sa.Engine, marts: tuple[Any, ...]) -> dict[str, str]:
    return {m.table: m.mode for m in build_tenant(engine, TENANT, "run", marts=marts).marts}


def test_a_changed_mart_definition_rebuilds_that_mart_once(tmp_path: Path) -> None:
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    upgrade(engine)
    # First build: every mart is new, so built in full; each fingerprint is remembered, exactly as
    # compiled from its queries.
    assert set(_built(engine, MARTS).values()) == {"full"}
    remembered = _remembered(engine)
    assert remembered == {m.table_name: mart_fingerprint(m, engine.dialect) for m in MARTS}
    # Nothing changed: nothing is built, and nothing is compiled again — a remembered value is used
    # as it stands (overwritten here, the overwrite is what the build compares with).
    t = transform_state_table
    with engine.begin() as conn:
        conn.execute(
            t.update().where(t.c.tenant_id == 0, t.c.table_name.like("%/mart_sales")).values(fingerprint="overwritten")
        )
    assert _built(engine, MARTS) == {"mart_sales": "full"}  # "overwritten" is not the sales mart's state
    assert _built(engine, MARTS) == {}
    # The sales mart's facts change (defined in this module, so a new version of the code): that
    # mart alone is rebuilt, once, and its new fingerprint remembered under the new version.
    changed = dataclasses.replace(MARTS_BY_NAME["sales"], facts=_sales_of_large_estimates)
    marts = tuple(changed if m.name == "sales" else m for m in MARTS)
    assert _built(engine, marts) == {"mart_sales": "full"}
    assert _built(engine, marts) == {}
    now = _remembered(engine)
    assert now["mart_sales"] == mart_fingerprint(changed, engine.dialect) != remembered["mart_sales"]
    assert {name: now[name] for name in now if name != "mart_sales"} == {
        name: fp for name, fp in remembered.items() if name != "mart_sales"
    }
    engine.dispose()
