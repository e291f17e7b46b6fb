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

import json
import math
from dataclasses import dataclass, field
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, NotRequired, Required, Union, get_args, get_origin

import orjson
from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError, with_config
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict, is_typeddict

from st_pipeline.servicetitan.catalogue import Dataset, Endpoint, load_catalogue
from st_pipeline.servicetitan.timestamps import parse_timestamp

_NON_FINITE = {"NaN", "nan", "Infinity", "-Infinity", "inf", "-inf"}
_MAX_DEPTH = 8


def _timestamp(value: str) -> str:
    if parse_timestamp(value) is None:
        raise ValueError("not an ISO-8601 timestamp")
    return value


Timestamp = Annotated[str, AfterValidator(_timestamp)]


# TypedDicts, not BaseModels: validation returns plain dicts (about twice as fast, and the
# payload we store stays exactly what ServiceTitan sent). Strict: a wrong type is an error.
_RECORD_CONFIG = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


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
            return int if kind == "integer" else str  # the values, not the enum: new members load
        if kind == "integer":
            return int
        if kind == "number":
            return float
        if kind == "boolean":
            return bool
        if kind == "string":
            return Timestamp if schema.get("format") == "date-time" else str
        if kind == "array":
            return list[self.type_of(schema.get("items", {}), depth + 1)]  # type: ignore[misc]  # a type built at run time
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
            annotation = self.type_of(prop_schema, depth)
            fields[prop] = Required[int] if prop == key_field else NotRequired[annotation | None]
        model_name = "".join(part for part in name.replace(".", "_").split("_") if part)[:120] or "Record"
        model = TypedDict(model_name, fields)  # type: ignore[misc]  # built at run time; mypy needs a literal name
        with_config(_RECORD_CONFIG)(model)  # sets the __pydantic_config__ pydantic reads
        return model


@cache
def _builder(module: str) -> _ModelBuilder:
    return _ModelBuilder(module, load_catalogue().schemas(module))


@cache
def _record_type(module: str, schema_name: str | None) -> Any:
    schema = load_catalogue().schemas(module).get(schema_name or "")
    if not schema or "properties" not in schema:
        return None
    key = "id" if "id" in schema["properties"] else None
    return _builder(module).object_model(schema_name or module, schema, 1, key_field=key)


def record_model(dataset_key: str) -> Any:
    """The TypedDict of one dataset's records, or None when the catalogue has no schema for it."""
    dataset = load_catalogue().dataset(dataset_key)
    return _record_type(dataset.module, dataset.extraction_endpoint.record_schema)


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def field_types(dataset_key: str) -> dict[str, str]:
    """The JSON type of each field of a dataset's records, read from its record model.

    One of integer, number, string, date-time, boolean, object, array, or any (several types, or
    none known); empty when the catalogue has no schema for the dataset.
    """
    model = record_model(dataset_key)
    if model is None:
        return {}
    return {name: _json_type(annotation) for name, annotation in model.__annotations__.items()}


def _json_type(annotation: Any) -> str:
    if annotation == Timestamp:
        return "date-time"
    origin = get_origin(annotation)
    if origin in (Required, NotRequired, Union, UnionType):  # unwrap "may be missing" and "or null"
        options = [arg for arg in get_args(annotation) if arg is not NoneType]
        return _json_type(options[0]) if len(options) == 1 else "any"
    if origin is list:
        return "array"
    if origin is dict or is_typeddict(annotation):
        return "object"
    return _JSON_TYPES.get(annotation, "any")


@cache
def _page_adapter(dataset_key: str) -> TypeAdapter[list[Any]] | None:
    model = record_model(dataset_key)
    return None if model is None else TypeAdapter(list[model])  # type: ignore[valid-type]  # a run-time record type


@cache
def _record_adapter(dataset_key: str) -> TypeAdapter[Any]:
    return TypeAdapter(record_model(dataset_key))


@cache
def _envelope_adapter(module: str, schema_name: str | None, kind: str) -> TypeAdapter[Any] | None:
    record = _record_type(module, schema_name)
    if record is None:
        return None
    if kind == "lookup":
        return TypeAdapter(list[record])  # type: ignore[valid-type]  # a record type built at run time
    fields: dict[str, Any] = {"hasMore": bool, "data": list[record]}  # type: ignore[valid-type]  # a run-time record type
    if kind == "export":
        fields["continueFrom"] = NotRequired[str | None]
    else:
        fields.update(page=NotRequired[int], pageSize=NotRequired[int], totalCount=NotRequired[int | None])
    envelope = TypedDict(f"{kind.title()}Envelope", fields)  # type: ignore[misc]  # built at run time; mypy needs a literal name
    with_config(_RECORD_CONFIG)(envelope)  # sets the __pydantic_config__ pydantic reads
    return TypeAdapter(envelope)


_SMALL_BODY = 512


_TOO_DEEP = "is JSON nested deeper than 1,024 levels"


class UnusableBody(ValueError):
    """A body no retry can make readable (``reason`` says why): not UTF-8, or nested too deep."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_response(endpoint: Endpoint, content: bytes) -> tuple[Any, bool]:
    """Parse a response body; returns ``(body, every_record_valid)``.

    The fast path parses and validates in one pass (pydantic-core, from the bytes). When any
    record is off, the body is parsed leniently instead and the records are validated one by one
    later (``validate_page``). Raises ``UnusableBody`` for bytes that are not UTF-8 or JSON nested
    deeper than the parsers go (1,024 levels), and ``ValueError`` for other text that is not JSON
    (a truncated body, which another attempt may fix).
    """
    if len(content) <= _SMALL_BODY:
        # An empty page (the common answer of a quiet hour) needs no record model.
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
        if body == [] or (isinstance(body, dict) and body.get("data") == []):
            return body, True
    adapter = _envelope_adapter(endpoint.module, endpoint.record_schema, endpoint.kind)
    if adapter is not None:
        try:
            return adapter.validate_json(content), True
        except ValidationError:
            pass
    try:
        return orjson.loads(content), False
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise UnusableBody(_TOO_DEEP) from None
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnusableBody(f"is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(content), False  # what orjson refuses but Python reads: NaN, Infinity
    except RecursionError:
        raise UnusableBody(_TOO_DEEP) from None


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
        outcome.quarantined = [
            Quarantined(r, "record is not a JSON object") for r in records if not isinstance(r, dict)
        ]
        return outcome
    try:
        adapter.validate_python(records)
    except ValidationError as exc:
        problems: dict[int | str, list[ErrorDetails]] = {}
        for error in exc.errors(include_input=False, include_url=False):
            problems.setdefault(error["loc"][0], []).append(error)
        single = _record_adapter(dataset.key)
        for index, record in enumerate(records):
            errors = problems.get(index)
            if errors is None:
                outcome.valid.append(record)
                continue
            reason = _repair_or_reason(record, errors, outcome.warnings)
            if reason is None:
                try:
                    single.validate_python(record)
                except ValidationError as again:
                    reason = _reason(again.errors(include_input=False, include_url=False), offset=0)
            if reason is None:
                outcome.valid.append(record)
            else:
                outcome.quarantined.append(Quarantined(record, reason))
        return outcome
    outcome.valid = records
    return outcome


def _repair_or_reason(record: Any, errors: list[ErrorDetails], warnings: list[str]) -> str | None:
    """Null out non-finite numbers (warning); return a reason if anything else is wrong."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    others = []
    for error in errors:
        path = error["loc"][1:]
        if _is_non_finite_at(record, path):
            _set_null(record, path)
            warnings.append(
                f"id {record.get('id')}: {'.'.join(map(str, path))} was not a finite number; stored as null"
            )
        else:
            others.append(error)
    return _reason(others, offset=1) if others else None


def _reason(errors: list[ErrorDetails], *, offset: int) -> str:
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
