"""The route table: request paths of the served endpoints, with the tenant id as a parameter."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from st_pipeline.servicetitan.catalogue import Catalogue, Endpoint
from st_pipeline.simulator.data import DatasetGenerator
from st_pipeline.simulator.store import Shape

_TENANT_IN_PATH = re.compile(r"^(/.+?/tenant/)([^/]+)(/.*)?$")


@dataclass(frozen=True)
class Route:
    """One served endpoint: how to read it and how its records are shaped."""

    endpoint: Endpoint
    dataset_key: str
    shape: Shape | None  # None: the dataset's full record


def tenant_in_path(path: str) -> int | None:
    """The tenant id of ``/module/v2/tenant/{tenant}/…``; ``None`` if there is none."""
    match = _TENANT_IN_PATH.match(path)
    if match is None or not match.group(2).isdigit():
        return None
    return int(match.group(2))


class RouteTable:
    """Every catalogued endpoint of the served datasets, keyed by its path template."""

    def __init__(self, catalogue: Catalogue, generators: Iterable[DatasetGenerator]) -> None:
        self._routes: dict[str, Route] = {}
        by_key = {generator.key: generator for generator in generators}
        for endpoint in catalogue.endpoints:
            generator = by_key.get(endpoint.dataset_key)
            if generator is None or endpoint.record_schema is None:
                continue
            shape = generator.shapes.get(endpoint.path)
            if shape is not None and shape.keys == generator.full_shape.keys:
                if not shape.extra_keys:
                    shape = None  # same keys in the same order: serve the full record
            self._routes[endpoint.path] = Route(endpoint, endpoint.dataset_key, shape)

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, path: str) -> Route | None:
        """The route of a request path (``/crm/v2/tenant/42/customers``), if any."""
        match = _TENANT_IN_PATH.match(path)
        if match is None or not match.group(2).isdigit():
            return None
        return self._routes.get(match.group(1) + "{tenant}" + (match.group(3) or ""))
