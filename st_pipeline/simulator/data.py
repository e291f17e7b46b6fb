"""Deterministic, spec-shaped records for every dataset the simulator serves.

Nothing here is written per endpoint: each dataset's record schema (from the catalogue) is
compiled once (see ``schema``) into a generator that then produces records for any tenant. This
module decides how many records, their ids, timestamps and active flags, and which core records
each one points at, so that references agree with one another (an invoice's customer, location
and business unit are those of its job, a job's customer is its location's, and so on). Then
``business`` rewrites the fields KPIs are computed from (statuses, dates, money), so that they
agree too: an invoice's items add up to its total, a payment never exceeds what is owed, a
booked call names a real job, and so on.
"""

from __future__ import annotations

import gc
import json
import random
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from st_pipeline.servicetitan.catalogue import CORE_DATASETS, Catalogue, Dataset, Endpoint
from st_pipeline.simulator import marketing_reports
from st_pipeline.simulator.business import DEPENDENCIES, TenantBusiness
from st_pipeline.simulator.clock import (
    HISTORY_TICKS,
    REFERENCE_END_TICKS,
    REFERENCE_START_TICKS,
    format_ticks,
)
from st_pipeline.simulator.schema import (
    RefTarget,
    SchemaCompiler,
    UnsupportedDataset,
    referenced_kinds,
    title_of,
)
from st_pipeline.simulator.store import DatasetStore, Shape, StoredRecord, dumpb
from st_pipeline.simulator.values import Gen, GenContext

# Records per dataset at scale 1.0.
BASE_VOLUMES: dict[str, int] = {
    "settings/business-units": 8,
    "settings/technicians": 25,
    "crm/customers": 1000,
    "crm/locations": 1200,
    "jpm/jobs": 2000,
    "jpm/appointments": 2400,
    "accounting/invoices": 2000,
    "accounting/payments": 1500,
    # Other datasets KPIs are computed from.
    "jpm/job-types": 12,
    "marketing/campaigns": 10,
    "memberships/membership-types": 5,
    "memberships/memberships": 300,
    "sales/estimates": 600,
    "telecom/calls": 800,
    "crm/leads": 200,
    "crm/bookings": 200,
}
DEFAULT_VOLUME = 20
MIN_CORE_VOLUME = 3
MIN_OTHER_VOLUME = 1
# Datasets that need more records than that at any scale.
MIN_VOLUMES: dict[str, int] = {
    "jpm/job-types": 4,
    "marketing/campaigns": 3,
    "memberships/membership-types": 3,
}

# When a record references several of these, the most specific one (first here) is picked and
# the others are taken from it, which is what makes the references consistent.
ANCHOR_ORDER = (
    "accounting/invoices",
    "jpm/appointments",
    "jpm/jobs",
    "crm/locations",
    "crm/customers",
)

ACTIVE_SHARE = 0.95
TIE_SHARE = 0.02  # records that reuse the previous record's modifiedOn, as real feeds do
ID_RANGE = 10_000_000  # each dataset draws ids from its own range of this size


def volume_of(key: str, scale: float) -> int:
    """Records of dataset ``key`` at ``scale`` (datasets of embedded items excepted: they have
    as many as the records that embed them)."""
    base = BASE_VOLUMES.get(key, DEFAULT_VOLUME)
    minimum = MIN_VOLUMES.get(key, MIN_CORE_VOLUME if key in CORE_DATASETS else MIN_OTHER_VOLUME)
    return max(minimum, round(base * scale))


def _differing_properties(
    catalogue: Catalogue, endpoint: Endpoint, base: dict[str, Any]
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The keys of ``endpoint``'s record schema, and those whose schema differs from ``base``."""
    assert endpoint.record_schema is not None
    schema = catalogue.schemas(endpoint.module).get(endpoint.record_schema) or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    base_properties = base.get("properties") or {}
    differing = {
        name: node
        for name, node in properties.items()
        if name not in base_properties
        or json.dumps(node, sort_keys=True) != json.dumps(base_properties[name], sort_keys=True)
    }
    return tuple(properties), differing


class DatasetGenerator:
    """Generates the records of one dataset, for any tenant."""

    def __init__(
        self,
        catalogue: Catalogue,
        dataset: Dataset,
        available: frozenset[str],
        id_base: int,
    ) -> None:
        self.dataset = dataset
        self.key = dataset.key
        self.core = self.key in CORE_DATASETS
        self.id_base = id_base
        endpoint = dataset.extraction_endpoint
        if endpoint.record_schema is None:
            raise UnsupportedDataset(f"{endpoint.path} has no JSON record schema (it serves files, not records)")
        compiler = SchemaCompiler(catalogue, dataset.module, title_of(dataset.resource), available, self.core)
        self._gen = compiler.record(endpoint.record_schema)
        schema = compiler.schemas[endpoint.record_schema]
        properties = schema["properties"]
        self.full_shape = Shape(name=endpoint.path, keys=tuple(properties))
        self._has = {name: name in properties for name in ("id", "createdOn", "modifiedOn", "active")}
        kinds = referenced_kinds(catalogue, dataset.module, endpoint.record_schema) & available
        self._anchor = next((kind for kind in ANCHOR_ORDER if kind in kinds), None)
        self.references = frozenset(kinds)

        # Other endpoints of the dataset present the same records in their own schema; the
        # properties that schema defines differently are generated separately, per endpoint.
        self.shapes: dict[str, Shape] = {endpoint.path: self.full_shape}
        self._extra_gens: dict[str, Gen] = {}
        for other in _endpoints_of(catalogue, dataset):
            if other.path == endpoint.path or other.record_schema is None:
                continue
            keys, differing = _differing_properties(catalogue, other, schema)
            if differing:
                self._extra_gens[other.path] = compiler.properties(differing)
            # Most list endpoints show the export record without ``active``: cut from the JSON.
            drops_active = (
                not differing and "active" in properties and keys == tuple(key for key in properties if key != "active")
            )
            self.shapes[other.path] = Shape(other.path, keys, frozenset(differing), drops_active)

    def volume(self, scale: float) -> int:
        return volume_of(self.key, scale)

    def generate(
        self,
        seed: int,
        tenant_id: int,
        scale: float,
        pools: dict[str, list[RefTarget]],
        business: TenantBusiness | None = None,
    ) -> list[StoredRecord]:
        """The dataset's records for one tenant; core records are added to ``pools``.

        ``business`` (the tenant's, shared by all its datasets) applies the business rules;
        without it the records are as the schemas alone make them.
        """
        rules = business.rules_for(self.key) if business is not None else None
        records: list[StoredRecord]
        if rules is not None and rules.derived:
            records = rules.derived_records(self.full_shape.keys)
            self._add_extras(records, seed, tenant_id, pools)
            return records
        rng = random.Random(f"{seed}:{tenant_id}:{self.key}")
        c = GenContext(rng, pools)
        r = c.r
        count = self.volume(scale)
        if rules is not None:  # datasets whose records stand for facts of others have as many
            count = rules.count(count)
        ids = rules.ids(count) if rules is not None else None
        if rules is not None:
            rules.begin(count)
        next_id = self.id_base + (tenant_id % 1000) * 1000
        # Ids grow with creation time, as they do in ServiceTitan.
        created_ticks = sorted(REFERENCE_START_TICKS + int(r() * HISTORY_TICKS) for _ in range(count))
        if rules is not None:
            created_ticks = rules.created_ticks(created_ticks)
        anchors = pools.get(self._anchor, []) if self._anchor else []
        has_id, has_created, has_modified, has_active = (
            self._has["id"],
            self._has["createdOn"],
            self._has["modifiedOn"],
            self._has["active"],
        )
        own_pool: list[RefTarget] | None = [] if self.core else None
        records = []
        previous_modified: int | None = None
        for index in range(count):
            next_id += 1 + int(r() * 3)
            if anchors:
                # Walk the anchors once before picking at random, so every customer gets a
                # location, every location a job, and so on (while there are enough records).
                if index < len(anchors):
                    anchor = anchors[index]
                else:
                    anchor = anchors[int(r() * len(anchors))]
                c.refs = anchor.references()
            else:
                c.refs = {}
            data = self._gen(c)
            created = created_ticks[index]
            if previous_modified is not None and r() < TIE_SHARE:
                modified = previous_modified
                created = min(created, modified)
            elif has_modified:
                modified = created + int((REFERENCE_END_TICKS - created) * r() ** 2)
            else:
                modified = created  # no modifiedOn: the feed orders such records by creation
            previous_modified = modified
            active = r() < ACTIVE_SHARE if has_active else True
            record_id = next_id if ids is None else ids[index]
            if has_id:
                data["id"] = record_id
            if has_created:
                data["createdOn"] = format_ticks(created)
            if has_modified:
                data["modifiedOn"] = format_ticks(modified)
            if has_active:
                data["active"] = active
            if rules is not None:  # its own random stream: the records' ids are unchanged
                rules.apply(data, c.refs, index, created, modified, rules.r)
            # Serialized at once: only the JSON is kept (see ``store``).
            record = StoredRecord(record_id, created, modified, active, dumpb(data))
            records.append(record)
            target = None
            if own_pool is not None:
                name = data.get("name")
                target = RefTarget(record_id, self.key, name if isinstance(name, str) else None, c.refs)
                own_pool.append(target)
            if rules is not None:
                rules.stored(record, target)
        if own_pool is not None:
            pools[self.key] = own_pool
        if rules is not None:
            rules.finish()
        self._add_extras(records, seed, tenant_id, pools)
        return records

    def _add_extras(
        self,
        records: list[StoredRecord],
        seed: int,
        tenant_id: int,
        pools: dict[str, list[RefTarget]],
    ) -> None:
        for path, gen in self._extra_gens.items():
            c = GenContext(random.Random(f"{seed}:{tenant_id}:{self.key}:{path}"), pools)
            for record in records:
                c.refs = {}
                if record.extras is None:
                    record.extras = {}
                record.extras[path] = dumpb(gen(c))

    def new_record(
        self,
        rng: random.Random,
        pools: dict[str, list[RefTarget]],
        record_id: int,
        ticks: int,
        business: TenantBusiness | None = None,
    ) -> StoredRecord:
        """One more record, created and modified at ``ticks`` (for simulated changes).

        With the tenant's ``business`` its business fields follow the rules (simply: a new job
        is scheduled, a new invoice is unpaid, a new payment is not yet applied…).
        """
        c = GenContext(rng, pools)
        anchors = pools.get(self._anchor, []) if self._anchor else []
        c.refs = anchors[int(c.r() * len(anchors))].references() if anchors else {}
        data = self._gen(c)
        if self._has["id"]:
            data["id"] = record_id
        stamp = format_ticks(ticks)
        if self._has["createdOn"]:
            data["createdOn"] = stamp
        if self._has["modifiedOn"]:
            data["modifiedOn"] = stamp
        if self._has["active"]:
            data["active"] = True
        rules = business.rules_for(self.key) if business is not None else None
        if rules is not None:
            rules.apply(data, c.refs, -1, ticks, ticks, c.r)
        extras: dict[str, Any] = {}
        for path, gen in self._extra_gens.items():
            c.refs = {}
            extras[path] = gen(c)
        return StoredRecord.from_data(record_id, ticks, ticks, True, data, extras)

    def changed_record(self, record: StoredRecord, ticks: int, active: bool | None = None) -> StoredRecord:
        """``record`` modified at ``ticks`` (and (de)activated when ``active`` is given)."""
        data = record.copy_data()
        if self._has["modifiedOn"]:
            data["modifiedOn"] = format_ticks(ticks)
        new_active = record.active if active is None or not self._has["active"] else active
        if self._has["active"]:
            data["active"] = new_active
        return StoredRecord(record.id, record.created, ticks, new_active, dumpb(data), record.extras)


def _endpoints_of(catalogue: Catalogue, dataset: Dataset) -> Iterable[Endpoint]:
    """Every catalogued endpoint of a dataset (including a legacy duplicate export path)."""
    return (e for e in catalogue.endpoints if e.dataset_key == dataset.key)


# Datasets answered with figures computed from other datasets' records, not generated records.
COMPUTED_DATASETS = {
    key: "a report over a date range, computed from the records of other datasets (simulator.marketing_reports)"
    for key in (marketing_reports.COST_SUMMARY, marketing_reports.PERFORMANCE, marketing_reports.ATTRIBUTED_LEADS)
}


@dataclass
class GenerationPlan:
    """Which datasets are served, which are generated (served + core dependencies), in order."""

    generators: list[DatasetGenerator]
    served: tuple[str, ...]
    unsupported: dict[str, str]
    id_bases: dict[str, int]  # where each catalogue dataset's ids start

    @classmethod
    def build(cls, catalogue: Catalogue, datasets: Iterable[str] | None = None) -> GenerationPlan:
        all_keys = sorted(catalogue.datasets)
        if datasets is None:
            wanted = set(all_keys)
        else:
            wanted = set(datasets)
            unknown = sorted(wanted - set(all_keys))
            if unknown:
                raise ValueError(f"unknown datasets: {', '.join(unknown)}")
        order = list(CORE_DATASETS) + _after_dependencies([key for key in all_keys if key not in CORE_DATASETS])
        id_bases = {key: ID_RANGE * (index + 1) for index, key in enumerate(all_keys)}
        compiled = _with_dependencies(wanted, set(all_keys))

        generators: dict[str, DatasetGenerator] = {}
        unsupported: dict[str, str] = {}
        available: set[str] = set()
        for key in order:
            # Core datasets are compiled even when not served, in case a served one needs them.
            if key not in compiled and key not in CORE_DATASETS:
                continue
            if key in COMPUTED_DATASETS:
                unsupported[key] = COMPUTED_DATASETS[key]
                continue
            try:
                generators[key] = DatasetGenerator(
                    catalogue, catalogue.dataset(key), frozenset(available), id_bases[key]
                )
            except UnsupportedDataset as exc:
                unsupported[key] = str(exc)
                continue
            if key in CORE_DATASETS:
                available.add(key)

        needed = {key for key in wanted if key in generators}
        while True:  # what the needed datasets refer to, and what their business rules use
            grown = set(needed)
            for key in needed:
                grown |= generators[key].references
                grown |= {d for d in DEPENDENCIES.get(key, ()) if d in generators}
            if grown == needed:
                break
            needed = grown
        return cls(
            generators=[generators[key] for key in order if key in needed],
            served=tuple(key for key in order if key in wanted and key in generators),
            unsupported={key: reason for key, reason in unsupported.items() if key in wanted},
            id_bases=id_bases,
        )


def _after_dependencies(order: list[str]) -> list[str]:
    """``order`` (the non-core datasets, which come after the core ones), with each dataset
    moved after the datasets its business rules depend on if they came later; the rest keep
    their places (a membership's status changes come after the memberships, although they sort
    before them)."""
    result: list[str] = []
    placed: set[str] = set()
    waiting: list[str] = []
    present = set(order)

    def ready(key: str) -> bool:
        return all(d in placed or d not in present for d in DEPENDENCIES.get(key, ()))

    for key in order:
        if not ready(key):
            waiting.append(key)
            continue
        result.append(key)
        placed.add(key)
        for other in list(waiting):
            if ready(other):
                waiting.remove(other)
                result.append(other)
                placed.add(other)
    return result + waiting


def _with_dependencies(wanted: set[str], known: set[str]) -> set[str]:
    """``wanted`` and every dataset their business rules depend on (see ``business``)."""
    result = set(wanted)
    pending = list(wanted)
    while pending:
        for dependency in DEPENDENCIES.get(pending.pop(), ()):
            if dependency in known and dependency not in result:
                result.add(dependency)
                pending.append(dependency)
    return result


_plans: weakref.WeakKeyDictionary[Catalogue, dict[tuple[str, ...] | None, GenerationPlan]] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def plan_for(catalogue: Catalogue, datasets: Iterable[str] | None = None) -> GenerationPlan:
    """The generation plan for ``datasets`` of ``catalogue``, compiled once per process.

    Plans hold no tenant data, so simulators with the same catalogue and datasets share one.
    """
    key = None if datasets is None else tuple(sorted(set(datasets)))
    with _plans_lock:
        plans = _plans.setdefault(catalogue, {})
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = GenerationPlan.build(catalogue, key)
    return plan


@dataclass
class TenantData:
    """The generated datasets of one tenant, and the core records new ones may point at."""

    stores: dict[str, DatasetStore]
    pools: dict[str, list[RefTarget]]
    business: TenantBusiness | None = None


def generate_tenant(plan: GenerationPlan, seed: int, tenant_id: int, scale: float) -> TenantData:
    """Every planned dataset of one tenant (core dependencies included)."""
    pools: dict[str, list[RefTarget]] = {}
    business = TenantBusiness(
        seed,
        tenant_id,
        pools,
        planned=frozenset(generator.key for generator in plan.generators),
        volume=lambda key: volume_of(key, scale),
        id_base=lambda key: plan.id_bases.get(key, ID_RANGE),
    )
    # Generation allocates millions of containers (the pools and records it keeps, the record
    # dicts it frees once serialized); the cyclic garbage collector would rescan the kept ones
    # over and over (this roughly halves the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        # A job's record is completed (its invoice) while the invoices are generated, before
        # anyone reads the stores.
        stores = {
            generator.key: DatasetStore(generator.key, generator.generate(seed, tenant_id, scale, pools, business))
            for generator in plan.generators
        }
        business.close()
    finally:
        if collecting:
            gc.enable()
    return TenantData(stores, pools, business)
