"""Records kept as JSON bytes: projections into other endpoints' shapes stay exact."""

from __future__ import annotations

import json

from st_pipeline.simulator import Simulator, SimulatorConfig
from st_pipeline.simulator.store import Shape, StoredRecord, join_json

TENANT = 6001


def test_cutting_active_out_of_the_json_equals_the_decoded_projection() -> None:
    datasets = ("jpm/jobs", "crm/leads", "jpm/projects", "service-agreements/service-agreements")
    tenants = [SimulatorConfig.demo_tenant(TENANT)]
    simulator = Simulator(SimulatorConfig(tenants=tenants, scale=0.05, datasets=datasets))
    generators = simulator._generators  # noqa: SLF001 - the shapes are internal
    checked = 0
    for key in datasets:
        store = simulator._tenant_data(TENANT).stores[key]  # noqa: SLF001
        shapes = [shape for shape in generators[key].shapes.values() if shape.drops_active]
        assert shapes, key
        for shape in shapes:
            for record in store.records():
                served = list(json.loads(record.json(shape)).items())
                assert served == list(shape.project(record).items()), (key, record.id)
                checked += 1
    assert checked > 100


def record(data: dict) -> StoredRecord:
    return StoredRecord.from_data(1, 0, 0, bool(data.get("active")), data)


def test_active_is_cut_wherever_it_stands_and_only_when_unambiguous() -> None:
    shape = Shape("list", ("id", "name"), drops_active=True)
    for data in (
        {"active": True, "id": 1, "name": "a"},
        {"id": 1, "active": False, "name": "a"},
        {"id": 1, "name": "a", "active": True},
    ):
        assert json.loads(record(data).json(shape)) == {"id": 1, "name": "a"}
    only = Shape("list", (), drops_active=True)
    assert record({"active": True}).json(only) == b"{}"
    # The same member nested: the record is decoded and projected instead.
    nested = {"id": 1, "tag": {"active": True}, "name": "x", "active": True}
    shape = Shape("list", ("id", "tag", "name"), drops_active=True)
    assert json.loads(record(nested).json(shape)) == {"id": 1, "tag": {"active": True}, "name": "x"}


def test_pages_are_joined_from_the_stored_json() -> None:
    records = [record({"id": n, "active": True}) for n in (1, 2)]
    assert join_json(records) == b'{"id":1,"active":true},{"id":2,"active":true}'
    assert records[0].copy_data() == {"id": 1, "active": True}
    assert records[0].copy_data() is not records[0].copy_data()
