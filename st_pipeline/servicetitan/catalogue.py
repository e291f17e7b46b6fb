"""The endpoint catalogue: which ServiceTitan datasets exist and how to read each one.

Loaded from ``catalogue.json``, which ``spec_import`` generates from the official OpenAPI
documents. A *dataset* is one resource of one module (``crm/customers``); it may be served by an
export feed, a paged list, an unpaged lookup list, or several of these. The export feed is
preferred because it returns inactive and deleted rows and resumes from a continuation token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")

EndpointKind = Literal["export", "list", "lookup"]

# The first slice of datasets extracted end to end (issue 2); later issues widen this to the
# whole catalogue. Ordered so that referenced entities come before the ones that point to them.
CORE_DATASETS: tuple[str, ...] = (
    "settings/business-units",
    "settings/technicians",
    "crm/customers",
    "crm/locations",
    "jpm/jobs",
    "jpm/appointments",
    "accounting/invoices",
    "accounting/payments",
)

# How each "include inactive rows" filter is spelled, per query parameter name.
_INACTIVE_FILTERS = {"active": "Any", "activeState": "All", "activeOnly": "false", "includeInactive": "true"}

# Values for query parameters some endpoints require although they do not select a slice.
REQUIRED_PARAM_DEFAULTS = {"descending": "false", "activeOnly": "false"}
# Parameters the client sets itself on every paged request.
PAGING_PARAMS = frozenset({"page", "pageSize", "includeTotal"})

# Datasets of the catalogue that are not extracted, and why. Everything else is.
EXCLUDED_DATASETS: dict[str, str] = {
    "equipmentsystems/installed-equipment/attachments": "downloads one file by path; not records",
    "findings/assets": "downloads one file by path; not records",
    "pricebook/images": "downloads one file by path; not records",
    "dispatch/technician-tracking": "a live tracking link for one technician and appointment (both required)",
    "jpm/work-breakdown-structure/budget-codes/match": "matches the budget codes it is given (`codes` required)",
    "jpm/jobs/cancel-reasons": "reasons of given jobs (`ids` required); the reasons are jpm/job-cancel-reasons",
    "jpm/jobs/hold-reasons": "reasons of given jobs (`ids` required); the reasons are jpm/job-hold-reasons",
    "marketing/campaign-cost-summary": "a report over a required date range (`from`, `to`): read per day by the "
    "servicetitan/marketing/campaign_cost_summary asset",
    "marketing/email-channel-cost": "a report over a required date range (`from`, `to`)",
    "marketingads/attributed-leads": "a report over a required date range (`fromUtc`, `toUtc`): read per day by "
    "the servicetitan/marketingads/attributed_leads asset",
    "marketingads/performance": "a report over a required date range and segmentation: read per day by the "
    "servicetitan/marketingads/performance asset",
    "accounting/inventory-bills/paginated": "the paged twin of the accounting/inventory-bills export feed",
    "settings/business-units/intacct": "Intacct mappings only: pages start at 0 and need includeTotal; "
    "the business units themselves are settings/business-units",
}


@dataclass(frozen=True)
class Endpoint:
    """One GET operation at tenant level."""

    module: str
    resource: str
    kind: EndpointKind
    path: str
    scopes: tuple[str, ...]
    query_params: dict[str, Any] = field(hash=False, compare=False)
    page_size_max: int | None
    record_schema: str | None
    required_params: tuple[str, ...] = ()

    @property
    def dataset_key(self) -> str:
        return f"{self.module}/{self.resource}"

    @property
    def inactive_filter(self) -> tuple[str, str] | None:
        """The query parameter and value that ask for active and inactive rows alike."""
        for name, value in _INACTIVE_FILTERS.items():
            if name in self.query_params:
                return name, value
        return None

    @property
    def cursor_kind(self) -> str:
        """How the endpoint is followed incrementally: export token, watermark, or full refresh."""
        if self.kind == "export":
            return "export token"
        if self.watermark_param:
            return self.watermark_param.removesuffix("OnOrAfter") + "On watermark"
        return "full refresh"

    @property
    def fixed_params(self) -> dict[str, str]:
        """Required parameters that do not select a slice, with the values that read everything."""
        return {name: REQUIRED_PARAM_DEFAULTS[name] for name in self.required_params if name in REQUIRED_PARAM_DEFAULTS}

    @property
    def watermark_param(self) -> str | None:
        """The filter usable as an incremental watermark: ``modifiedOnOrAfter``, if the list has it.

        A ``createdOnOrAfter`` filter is not one: it never returns a record changed after it was
        created, so a list that only has that filter is read in full every run.
        """
        return "modifiedOnOrAfter" if "modifiedOnOrAfter" in self.query_params else None

    def url_path(self, tenant_id: int) -> str:
        return self.path.replace("{tenant}", str(int(tenant_id)))


@dataclass(frozen=True)
class Dataset:
    """One resource of one module and the endpoints that serve it."""

    module: str
    resource: str
    export: Endpoint | None
    list: Endpoint | None
    lookup: Endpoint | None

    @property
    def key(self) -> str:
        return f"{self.module}/{self.resource}"

    @property
    def extraction_endpoint(self) -> Endpoint:
        """The endpoint the pipeline reads: export feed, else paged list, else lookup."""
        endpoint = self.export or self.list or self.lookup
        assert endpoint is not None  # a dataset always has at least one endpoint
        return endpoint

    @property
    def excluded_reason(self) -> str | None:
        return EXCLUDED_DATASETS.get(self.key)

    @property
    def slug(self) -> str:
        """``crm/customers/contacts`` → ``crm_customers_contacts`` (table and asset names)."""
        return self.key.replace("/", "_").replace("-", "_")

    @property
    def resource_slug(self) -> str:
        return self.resource.replace("/", "_").replace("-", "_")


@dataclass(frozen=True)
class Coverage:
    """How much of the catalogue the pipeline extracts, by the kind of endpoint it reads.

    Counted once here for everything that reports it (``st-pipeline endpoints``, the README).
    """

    datasets: int
    extracted: int
    export_feeds: int
    paged_lists: int
    lookups: int
    per_parent_endpoints: int

    @property
    def excluded(self) -> int:
        """Catalogued datasets not extracted (each has its reason in ``EXCLUDED_DATASETS``)."""
        return self.datasets - self.extracted

    def summary(self) -> str:
        """One line: what is extracted, how, and what is not."""
        return (
            f"{self.extracted} of {self.datasets} datasets extracted ({self.export_feeds} export feeds, "
            f"{self.paged_lists} paged lists, {self.lookups} lookups); {self.excluded} excluded with a reason; "
            f"{self.per_parent_endpoints} per-parent endpoints (notes, contacts of one record, …) not covered"
        )


class Catalogue:
    """All catalogued endpoints and the (stripped) record schemas they refer to."""

    def __init__(self, document: dict[str, Any]) -> None:
        self._modules: dict[str, Any] = document["modules"]
        self._per_parent: list[dict[str, Any]] = document.get("per_parent_endpoints", [])
        self.endpoints: tuple[Endpoint, ...] = tuple(
            Endpoint(
                module=e["module"],
                resource=e["resource"],
                kind=e["kind"],
                path=e["path"],
                scopes=tuple(e["scopes"]),
                query_params=e["query_params"],
                page_size_max=e["page_size_max"],
                record_schema=e["record_schema"],
                required_params=tuple(e.get("required_params", ())),
            )
            for e in document["endpoints"]
        )
        self.datasets: dict[str, Dataset] = self._group_datasets()

    def _group_datasets(self) -> dict[str, Dataset]:
        grouped: dict[str, dict[str, Endpoint]] = {}
        for endpoint in self.endpoints:
            slot = grouped.setdefault(endpoint.dataset_key, {})
            current = slot.get(endpoint.kind)
            # Two export paths can name one dataset (``export/estimates`` and the legacy
            # ``estimates/export``); the ``/export/`` form is the documented one.
            if current is None or "/export/" in endpoint.path:
                slot[endpoint.kind] = endpoint
        return {
            key: Dataset(
                module=key.split("/", 1)[0],
                resource=key.split("/", 1)[1],
                export=slot.get("export"),
                list=slot.get("list"),
                lookup=slot.get("lookup"),
            )
            for key, slot in sorted(grouped.items())
        }

    def dataset(self, key: str) -> Dataset:
        try:
            return self.datasets[key]
        except KeyError:
            raise KeyError(f"unknown ServiceTitan dataset {key!r}; see `st-pipeline endpoints`") from None

    def schemas(self, module: str) -> dict[str, Any]:
        """The record schemas of one module, by name (``$ref`` values are names in this dict)."""
        return self._modules[module]["schemas"]

    def core_datasets(self) -> list[Dataset]:
        return [self.dataset(key) for key in CORE_DATASETS]

    def extracted_datasets(self) -> list[Dataset]:
        """Every dataset the pipeline extracts: the catalogue less ``EXCLUDED_DATASETS``.

        Core datasets come first (referenced entities before the ones pointing to them).
        """
        rest = [d for key, d in self.datasets.items() if key not in CORE_DATASETS and d.excluded_reason is None]
        return self.core_datasets() + rest

    def coverage(self) -> Coverage:
        """The extracted datasets counted by the kind of endpoint read (see ``Dataset.extraction_endpoint``)."""
        extracted = self.extracted_datasets()
        kinds = [dataset.extraction_endpoint.kind for dataset in extracted]
        return Coverage(
            datasets=len(self.datasets),
            extracted=len(extracted),
            export_feeds=kinds.count("export"),
            paged_lists=kinds.count("list"),
            lookups=kinds.count("lookup"),
            per_parent_endpoints=len(self.per_parent_endpoints),
        )

    def read_in_full(self) -> list[Dataset]:
        """Extracted datasets with no incremental cursor: read in full every run."""
        return [d for d in self.extracted_datasets() if d.extraction_endpoint.cursor_kind == "full refresh"]

    def keyless_datasets(self) -> list[Dataset]:
        """Extracted datasets whose records carry no ``id`` (keyed by a hash of their content)."""
        return [d for d in self.extracted_datasets() if self.key_field(d) is None]

    def record_schema(self, dataset: Dataset) -> dict[str, Any] | None:
        """The stripped JSON schema of the dataset's records (of its extraction endpoint)."""
        return self.schemas(dataset.module).get(dataset.extraction_endpoint.record_schema or "")

    def key_field(self, dataset: Dataset) -> str | None:
        """``"id"`` when the records carry one; None for the few keyless datasets."""
        schema = self.record_schema(dataset) or {}
        return "id" if "id" in schema.get("properties", {}) else None

    @property
    def per_parent_endpoints(self) -> list[dict[str, Any]]:
        """GET endpoints below one parent record (notes, contacts of one customer, …): not extracted."""
        return self._per_parent


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    """The catalogue shipped with the package (parsed once per process)."""
    return Catalogue(json.loads(path.read_text()))
