"""Compiles record schemas (the catalogue's stripped JSON schemas) into record generators.

A schema is walked once: objects become dict literals, arrays comprehensions, nullable values
``None`` about a fifth of the time, and leaves come from ``values`` (chosen by type, format and
field name). Field names also carry the meaning the schemas cannot express: ``customerId``,
``jobId``… and nested ``customer``/``job``… objects point at generated records of the core
datasets (see ``RefTarget``). Recursive schemas stop at a depth limit.
"""

from __future__ import annotations

from typing import Any

from st_pipeline.servicetitan.catalogue import Catalogue
from st_pipeline.simulator import values
from st_pipeline.simulator.codegen import combine, combine_object, expression
from st_pipeline.simulator.values import Gen, GenContext

# Integer (or id-string) fields that point at a record of a core dataset.
REF_ID_FIELDS: dict[str, str] = {
    "businessUnitId": "settings/business-units",
    "technicianId": "settings/technicians",
    "customerId": "crm/customers",
    "locationId": "crm/locations",
    "jobId": "jpm/jobs",
    "appointmentId": "jpm/appointments",
    "invoiceId": "accounting/invoices",
    "appliedTo": "accounting/invoices",  # a payment's appliedTo entries name invoices
}
# Nested objects whose ``id`` points at a record of a core dataset.
REF_OBJECT_FIELDS: dict[str, str] = {
    "businessUnit": "settings/business-units",
    "customer": "crm/customers",
    "location": "crm/locations",
    "job": "jpm/jobs",
}

NULL_SHARE = 0.2  # nullable values are null this often
MAX_DEPTH = 6  # nesting beyond this (recursive schemas) ends in null or []


class RefTarget:
    """A generated core record that others may point at, with the references it was made from.

    Kept for every core record of a tenant, so it is small: the references are a tuple of
    targets (each knows its kind) rather than a dict per record.
    """

    __slots__ = ("id", "kind", "name", "links")

    def __init__(self, record_id: int, kind: str, name: str | None, refs: dict[str, RefTarget]) -> None:
        self.id = record_id
        self.kind = kind
        self.name = name
        # The targets of ``refs``, then this record itself (so it wins over an older entry).
        self.links: tuple[RefTarget, ...] = (*refs.values(), self)

    def references(self) -> dict[str, RefTarget]:
        """Kind → target: the records this one was made from, and itself under its own kind."""
        return {target.kind: target for target in self.links}


class UnsupportedDataset(Exception):
    """The dataset's records cannot be generated (the reason is the message)."""


_TERMINAL: Gen = expression("None")  # where the schema cannot be followed further


def _maybe_null(gen: Gen) -> Gen:
    return combine(f"None if r() < {NULL_SHARE!r} else {{0}}", gen)


def _pooled(gen: Gen, size: int = 16) -> Gen:
    """A value drawn from a small set made once per generation run: for nested references to
    entities the simulator does not model (a GL account, a batch), which should repeat."""
    key = object()

    def pick(c: GenContext) -> Any:
        pool = c.shared.get(key)
        if pool is None:
            pool = c.shared[key] = [gen(c) for _ in range(size)]
        return pool[int(c.r() * size)]

    return pick


def _is_small_entity(schema: dict[str, Any]) -> bool:
    """``{id, name, …}`` with a few scalar properties: a reference to some other entity."""
    properties = schema.get("properties") or {}
    return (
        "id" in properties
        and ("name" in properties or "number" in properties)
        and len(properties) <= 8
        and all(
            "$ref" not in node
            and "oneOf" not in node
            and node.get("type") not in ("object", "array", ["array", "null"], ["object", "null"])
            for node in properties.values()
        )
    )


def _split_nullable(node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``{"type": ["string","null"]}`` → ``({"type": "string"}, True)``; same for ``oneOf``."""
    kind = node.get("type")
    if isinstance(kind, list):
        others = [t for t in kind if t != "null"]
        stripped = dict(node, type=others[0] if len(others) == 1 else others)
        return stripped, len(others) < len(kind)
    alternatives = node.get("oneOf") or node.get("anyOf")
    if alternatives:
        non_null = [a for a in alternatives if a.get("type") != "null"]
        if len(non_null) < len(alternatives):
            if len(non_null) == 1:
                return non_null[0], True
            return {"oneOf": non_null}, True
    return node, False


class SchemaCompiler:
    """Compiles the record schemas of one module into generators."""

    def __init__(
        self,
        catalogue: Catalogue,
        module: str,
        resource_title: str,
        available: frozenset[str],
        core: bool,
    ) -> None:
        self.schemas: dict[str, Any] = catalogue.schemas(module)
        self.module = module
        self.resource_title = resource_title
        self.available = available  # core kinds already generated when this dataset is
        self.core = core
        self._named: dict[tuple[str, str], Gen] = {}

    def resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Follow nullable wrappers and ``$ref`` names to the schema that describes a value."""
        nullable = False
        for _ in range(MAX_DEPTH):
            node, maybe = _split_nullable(node)
            nullable = nullable or maybe
            ref = node.get("$ref")
            if ref is None:
                alternatives = node.get("oneOf")
                if alternatives and len(alternatives) == 1:
                    node = alternatives[0]
                    continue
                return node, nullable
            node = self.schemas.get(ref, {})
        return node, nullable

    def record(self, schema_name: str) -> Gen:
        schema = self.schemas.get(schema_name)
        if schema is None:
            raise UnsupportedDataset(f"record schema {schema_name!r} is not in the catalogue")
        if schema.get("type") != "object" or not schema.get("properties"):
            raise UnsupportedDataset(f"record schema {schema_name!r} is not an object schema")
        return self._object(schema, 0, (schema_name,), self.resource_title, top=True)

    def properties(self, properties: dict[str, Any]) -> Gen:
        """A generator of an object with just these properties (used for endpoint extras)."""
        return self._object({"properties": properties}, 0, (), self.resource_title, top=True)

    # -- nodes -----------------------------------------------------------------------------

    def _node(self, node: dict[str, Any], field: str, depth: int, stack: tuple[str, ...], title: str) -> Gen:
        node, nullable = _split_nullable(node)
        gen = self._non_null(node, field, depth, stack, title)
        return _maybe_null(gen) if nullable and gen is not _TERMINAL else gen

    def _non_null(self, node: dict[str, Any], field: str, depth: int, stack: tuple[str, ...], title: str) -> Gen:
        """``title`` names the enclosing object (``Job``, ``Custom field``) for text values."""
        ref = node.get("$ref")
        if ref is not None:
            return self._ref(ref, field, depth, stack)
        alternatives = node.get("oneOf") or node.get("anyOf")
        if alternatives:
            options = [self._node(a, field, depth, stack, title) for a in alternatives]
            options = [o for o in options if o is not _TERMINAL] or [_TERMINAL]
            if len(options) == 1:
                return options[0]
            return expression(f"$options[int(r() * {len(options)})](c)", options=options)
        if "enum" in node:
            return values.choice(node["enum"]) if node["enum"] else _TERMINAL
        kind = node.get("type")
        if isinstance(kind, list):  # e.g. ["string", "integer"]: any one will do
            kind = kind[0] if kind else None
        fmt = node.get("format")
        if kind == "object" or "properties" in node:
            if depth > MAX_DEPTH:
                return _TERMINAL
            return self._object(node, depth, stack, title_of(field))
        if kind == "array":
            return self._array(node, field, depth, stack, 0, 2)
        if kind == "integer":
            return values.integer(field, fmt)
        if kind == "number":
            return values.number(field)
        if kind == "boolean":
            return values.boolean()
        if kind == "string":
            return values.string(field, fmt, self.module, title)
        return _TERMINAL

    def _ref(self, name: str, field: str, depth: int, stack: tuple[str, ...]) -> Gen:
        if name in stack or depth > MAX_DEPTH:
            return _TERMINAL  # recursive schema: stop here
        title = title_of(field)
        gen = self._named.get((name, title))
        if gen is None:
            schema = self.schemas.get(name)
            if schema is None:
                return _TERMINAL
            gen = self._non_null(schema, field, depth, stack + (name,), title)
            self._named[(name, title)] = gen
        return gen

    def _array(
        self,
        node: dict[str, Any],
        field: str,
        depth: int,
        stack: tuple[str, ...],
        low: int,
        high: int,
    ) -> Gen:
        item = self._node(node.get("items", {}), field, depth + 1, stack, title_of(field))
        if item is _TERMINAL:
            return expression("[]")
        return combine(f"[{{0}} for _ in range({low} + int(r() * {high - low + 1}))]", item)

    def _object(
        self,
        node: dict[str, Any],
        depth: int,
        stack: tuple[str, ...],
        title: str,
        top: bool = False,
    ) -> Gen:
        fields = tuple(
            (name, self._property(name, schema, depth + 1, stack, title, top))
            for name, schema in node.get("properties", {}).items()
        )
        return combine_object(fields)

    def _property(
        self,
        name: str,
        node: dict[str, Any],
        depth: int,
        stack: tuple[str, ...],
        title: str,
        top: bool,
    ) -> Gen:
        resolved, _ = self.resolve(node)
        kind = resolved.get("type")
        target = REF_ID_FIELDS.get(name)
        if target in self.available and kind in ("integer", "string"):
            return _ref_id(target, as_text=kind == "string")
        target = REF_OBJECT_FIELDS.get(name)
        if target in self.available and "id" in resolved.get("properties", {}):
            inner = self._non_null(_split_nullable(node)[0], name, depth, stack, title)
            return _ref_object(target, inner, "name" in resolved["properties"])
        target = REF_ID_FIELDS.get(name[:-1]) if name.endswith("Ids") else None
        if target in self.available and kind == "array":
            return _ref_id_list(target)
        if _is_small_entity(resolved):
            node, nullable = _split_nullable(node)
            gen = _pooled(self._non_null(node, name, depth, stack, title))
            return _maybe_null(gen) if nullable else gen
        if kind == "array" and top and self.core and name in ("items", "appliedTo"):
            # Invoices and estimates have line items; payments are applied to something.
            low, high = (1, 4) if name == "items" else (1, 2)
            return self._array(_split_nullable(node)[0], name, depth, stack, low, high)
        return self._node(node, name, depth, stack, title)


def _pick(c: GenContext, kind: str) -> RefTarget:
    target = c.refs.get(kind)
    if target is None:
        pool = c.pools[kind]
        target = pool[int(c.r() * len(pool))]
        c.refs[kind] = target
    return target


def _any_id(c: GenContext, kind: str) -> int:
    pool = c.pools[kind]
    return pool[int(c.r() * len(pool))].id


def _ref_id(kind: str, as_text: bool) -> Gen:
    if as_text:
        return expression("str($pick(c, $kind).id)", pick=_pick, kind=kind)
    return expression("$pick(c, $kind).id", pick=_pick, kind=kind)


def _ref_id_list(kind: str) -> Gen:
    return expression("[$any(c, $kind) for _ in range(int(r() * 3))]", any=_any_id, kind=kind)


def _ref_object(kind: str, inner: Gen, has_name: bool) -> Gen:
    def gen(c: GenContext) -> Any:
        value = inner(c)
        value = dict(value) if isinstance(value, dict) else {}
        target = _pick(c, kind)
        value["id"] = target.id
        if has_name and target.name is not None:
            value["name"] = target.name
        return value

    return gen


def referenced_kinds(catalogue: Catalogue, module: str, schema_name: str) -> set[str]:
    """The core datasets a record schema refers to by field name (anywhere in its tree)."""
    schemas = catalogue.schemas(module)
    found: set[str] = set()
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref not in seen:
            seen.add(ref)
            walk(schemas.get(ref))
        for name, child in (node.get("properties") or {}).items():
            for table in (REF_ID_FIELDS, REF_OBJECT_FIELDS):
                if name in table:
                    found.add(table[name])
            if name.endswith("Ids") and name[:-1] in REF_ID_FIELDS:
                found.add(REF_ID_FIELDS[name[:-1]])
            walk(child)
        for key in ("items", "oneOf", "anyOf"):
            if key in node:
                walk(node[key])

    walk(schemas.get(schema_name))
    return found


def title_of(name: str) -> str:
    """A singular label for values inside ``name``: ``business-units``, ``businessUnits`` →
    ``Business unit``; ``jobs/timesheets`` → ``Timesheet``."""
    text = values.humanize(name.rsplit("/", 1)[-1].replace("-", "_"))
    if text.endswith("ies"):
        return text[:-3] + "y"
    if text.endswith("s") and not text.endswith(("ss", "us")):
        return text[:-1]
    return text
