"""Record models built from the catalogue's schemas (pydantic v2), tolerant where the API is loose.

The models are generated at import time from ``catalogue.json`` (itself generated from the
official specs), so a new ServiceTitan release needs no hand edits here. Tolerance rules:

- unknown fields are kept (``extra="allow"``); every field may be missing or null, except ``id``;
- integers are 64-bit; timestamps stay the strings the API sent (up to 7 fractional digits) but
  must parse; accounting money stays a string; enums are plain strings;
- a number that is ``NaN``/``Infinity`` (literal or string) becomes null, with a warning.

``validate_page`` splits a page into valid records and quarantined ones (with a reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from st_pipeline.servicetitan.catalogue import Dataset, load_catalogue
from st_pipeline.servicetitan.timestamps import parse_timestamp

_NON_FINITE = {"NaN", "nan", "Infinity", "-Infinity", "inf", "-inf"}
_MAX_DEPTH = 8


def _timestamp(value: str) -> str:
    if parse_timestamp(value) is None:
        raise ValueError("not an ISO-8601 timestamp")
    return value


Timestamp = Annotated[str, AfterValidator(_timestamp)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False)


class _ModelBuilder:
    """Turns the stripped JSON schemas of one module into pydantic types."""

    def __init__(self, module: str, schemas: dict[str, Any]) -> None:
        self.module = module
        self.schemas = schemas
        self.models: dict[str, Any] = {}

    def type_of(self, schema: dict[str, Any], depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            return Any
        if "$ref" in schema:
            return self.named(schema["$ref"], depth)
        for combinator in ("oneOf", "anyOf", "allOf"):
            if combinator in schema:
                options = [s for s in schema[combinator] if s.get("type") != "null"]
                return self.type_of(options[0], depth) if len(options) == 1 else Any
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        if "enum" in schema:
            return str
        if kind == "integer":
            return int
        if kind == "number":
            return float
        if kind == "boolean":
            return bool
        if kind == "string":
            return Timestamp if schema.get("format") == "date-time" else str
        if kind == "array":
            return list[self.type_of(schema.get("items", {}), depth + 1)]  # type: ignore[misc]
        if kind == "object" and "properties" in schema:
            return self.object_model(f"Anonymous{depth}", schema, depth + 1)
        if kind == "object":
            return dict[str, Any]
        return Any

    def named(self, name: str, depth: int) -> Any:
        if name in self.models:
            return self.models[name]
        schema = self.schemas.get(name)
        if schema is None:
            return Any
        if "properties" not in schema:
            resolved = self.type_of(schema, depth)
            self.models[name] = resolved
            return resolved
        self.models[name] = Any  # guards recursive schemas while building
        model = self.object_model(name, schema, depth + 1)
        self.models[name] = model
        return model

    def object_model(self, name: str, schema: dict[str, Any], depth: int, *, key_field: str | None = None) -> Any:
        fields: dict[str, Any] = {}
        for prop, prop_schema in schema.get("properties", {}).items():
            if not prop.isidentifier() or prop.startswith("_") or prop in ("model_config", "model_fields"):
                continue  # odd names still pass through as extra fields
            annotation = self.type_of(prop_schema, depth)
            if prop == key_field:
                fields[prop] = (int, ...)
            else:
                fields[prop] = (annotation | None, None)
        model_name = "".join(part for part in name.replace(".", "_").split("_") if part)[:120] or "Record"
        return create_model(model_name, __base__=_Record, **fields)


@cache
def _builder(module: str) -> _ModelBuilder:
    return _ModelBuilder(module, load_catalogue().schemas(module))


@cache
def record_model(dataset_key: str) -> type[BaseModel] | None:
    """The model of one dataset's records, or None when the catalogue has no schema for it."""
    dataset = load_catalogue().dataset(dataset_key)
    endpoint = dataset.extraction_endpoint
    schema = load_catalogue().schemas(dataset.module).get(endpoint.record_schema or "")
    if not schema or "properties" not in schema:
        return None
    key = "id" if "id" in schema["properties"] else None
    return _builder(dataset.module).object_model(endpoint.record_schema or dataset.key, schema, 1, key_field=key)


@cache
def _page_adapter(dataset_key: str) -> TypeAdapter[list[Any]] | None:
    model = record_model(dataset_key)
    return None if model is None else TypeAdapter(list[model])  # type: ignore[valid-type]


@dataclass
class Quarantined:
    """A record that failed validation, with why."""

    record: Any
    reason: str


@dataclass
class PageValidation:
    """The outcome of validating one page."""

    valid: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate_page(dataset: Dataset, records: list[Any]) -> PageValidation:
    """Validate a page against the dataset's model; bad records are set aside, not raised.

    Non-finite numbers are replaced by null in the record itself (so the stored payload is valid
    JSON) and reported as warnings.
    """
    adapter = _page_adapter(dataset.key)
    outcome = PageValidation()
    if adapter is None:
        outcome.valid = [r for r in records if isinstance(r, dict)]
        outcome.quarantined = [Quarantined(r, "record is not a JSON object") for r in records if not isinstance(r, dict)]
        return outcome
    try:
        adapter.validate_python(records)
    except ValidationError as exc:
        problems: dict[int, list[dict[str, Any]]] = {}
        for error in exc.errors(include_input=False, include_url=False):
            problems.setdefault(error["loc"][0], []).append(error)  # type: ignore[arg-type]
        model = record_model(dataset.key)
        for index, record in enumerate(records):
            errors = problems.get(index)
            if errors is None:
                outcome.valid.append(record)
                continue
            reason = _repair_or_reason(record, errors, outcome.warnings)
            if reason is None and model is not None:
                try:
                    model.model_validate(record)
                except ValidationError as again:
                    reason = _reason(again.errors(include_input=False, include_url=False), offset=0)
            if reason is None:
                outcome.valid.append(record)
            else:
                outcome.quarantined.append(Quarantined(record, reason))
        return outcome
    outcome.valid = records
    return outcome


def _repair_or_reason(record: Any, errors: list[dict[str, Any]], warnings: list[str]) -> str | None:
    """Null out non-finite numbers (warning); return a reason if anything else is wrong."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    others = []
    for error in errors:
        path = error["loc"][1:]
        if error["type"] == "finite_number" or (error["type"] == "float_parsing" and _is_non_finite_at(record, path)):
            _set_null(record, path)
            warnings.append(f"id {record.get('id')}: {'.'.join(map(str, path))} was not a finite number; stored as null")
        else:
            others.append(error)
    return _reason(others, offset=1) if others else None


def _reason(errors: list[dict[str, Any]], *, offset: int) -> str:
    parts = []
    for error in errors[:5]:
        location = ".".join(str(p) for p in error["loc"][offset:]) or "record"
        parts.append(f"{location}: {error['msg']}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _is_non_finite_at(record: Any, path: tuple[Any, ...]) -> bool:
    value = record
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return False
    return (isinstance(value, str) and value in _NON_FINITE) or (isinstance(value, float) and not math.isfinite(value))


def _set_null(record: Any, path: tuple[Any, ...]) -> None:
    target = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = None
