"""Generate the endpoint catalogue from ServiceTitan's OpenAPI documents.

Run ``python -m st_pipeline.servicetitan.spec_import [SPEC_DIR]`` (or ``make catalogue``) after a
new ServiceTitan release. It reads ``../shared/servicetitan-specs/*.json`` by default and writes
``st_pipeline/servicetitan/catalogue.json``: facts only (paths, parameters, field names, types,
enums, scopes). Descriptions, summaries and examples of the specs are deliberately dropped.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "servicetitan-specs"
CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")

# Schema keywords that carry facts about shape and type; everything else (prose, examples,
# generator hints) is dropped.
_SCHEMA_KEYS = {
    "type",
    "format",
    "properties",
    "required",
    "items",
    "$ref",
    "oneOf",
    "anyOf",
    "allOf",
    "enum",
    "additionalProperties",
    "minimum",
    "maximum",
    "maxLength",
    "maxItems",
    "maxProperties",
}
_REF_PREFIX = "#/components/schemas/"


def _strip_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    stripped: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "$ref":
            stripped[key] = value.removeprefix(_REF_PREFIX)
        elif key == "properties":
            stripped[key] = {name: _strip_schema(prop) for name, prop in value.items()}
        elif key in ("required", "enum"):
            stripped[key] = list(value)
        else:
            stripped[key] = _strip_schema(value)
    return stripped


def _refs_in(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.removeprefix(_REF_PREFIX))
            else:
                found |= _refs_in(value)
    elif isinstance(node, list):
        for item in node:
            found |= _refs_in(item)
    return found


def _module_name(server_url: str) -> tuple[str, str]:
    """``https://api.servicetitan.io/crm/v2`` → (``crm``, ``/crm/v2``)."""
    base_path = "/" + server_url.split("://", 1)[1].split("/", 1)[1]
    return base_path.strip("/").split("/")[0], base_path


def _resource_of(path: str) -> tuple[str, bool]:
    """The dataset part of a tenant-level path and whether it is an export feed."""
    tail = path.split("/tenant/{tenant}/", 1)[1]
    if tail.startswith("export/"):
        return tail.removeprefix("export/"), True
    if tail.endswith("/export"):
        return tail.removesuffix("/export"), True
    return tail, False


def _response_schema(operation: dict[str, Any]) -> str | None:
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if not schema:
        return None
    if "$ref" in schema:
        return schema["$ref"].removeprefix(_REF_PREFIX)
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        return "[]" + schema["items"]["$ref"].removeprefix(_REF_PREFIX)
    return None


def _item_schema(envelope: str | None, schemas: dict[str, Any]) -> str | None:
    """The record schema inside an export/paged envelope, an ``items`` envelope or an unpaged array."""
    if envelope is None:
        return None
    if envelope.startswith("[]"):
        return envelope[2:]
    properties = schemas.get(envelope, {}).get("properties", {})
    data = properties.get("data", {})
    if not data and set(properties) == {"items"}:  # an unpaged report: {"items": [...]} and nothing else
        data = properties["items"]
    ref = data.get("items", {}).get("$ref")
    return ref.removeprefix(_REF_PREFIX) if ref else envelope


def _param_schema(param: dict[str, Any]) -> dict[str, Any]:
    return _strip_schema(param.get("schema", {}))


_MAXIMUM_IN_TEXT = re.compile(r"[Mm]aximum (?:value )?(?:is )?(\d+)")


def _page_size_max(query_params: list[dict[str, Any]]) -> int | None:
    """The documented page-size ceiling: the schema's ``maximum``, else the number stated for it."""
    for param in query_params:
        if param["name"] != "pageSize":
            continue
        maximum = param.get("schema", {}).get("maximum")
        if maximum is not None:
            return int(maximum)
        match = _MAXIMUM_IN_TEXT.search(param.get("description", ""))
        return int(match.group(1)) if match else None
    return None


def _endpoint(
    module: str, base_path: str, path: str, operation: dict[str, Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    resource, is_export = _resource_of(path)
    query_list = [p for p in operation.get("parameters", []) if p["in"] == "query"]
    query = {p["name"]: _param_schema(p) for p in query_list}
    envelope = _response_schema(operation)
    if is_export:
        kind = "export"
    elif "page" in query:
        kind = "list"
    else:
        kind = "lookup"
    scopes = sorted({s for req in operation.get("security", []) for s in req.get("oauth", [])})
    return {
        "module": module,
        "resource": resource,
        "kind": kind,
        "path": base_path + path,
        "operation_id": operation.get("operationId"),
        "scopes": scopes,
        "query_params": query,
        "required_params": sorted(p["name"] for p in query_list if p.get("required")),
        "page_size_max": _page_size_max(query_list),
        "record_schema": _item_schema(envelope, schemas),
        "envelope_schema": envelope,
    }


def build_catalogue(spec_dir: Path) -> dict[str, Any]:
    """Read every spec in ``spec_dir`` and return the catalogue document."""
    modules: dict[str, Any] = {}
    endpoints: list[dict[str, Any]] = []
    not_covered: list[dict[str, Any]] = []
    for spec_file in sorted(spec_dir.glob("*.json")):
        spec = json.loads(spec_file.read_text())
        module, base_path = _module_name(spec["servers"][0]["url"])
        schemas = spec.get("components", {}).get("schemas", {})
        module_endpoints = []
        for path, item in spec["paths"].items():
            operation = item.get("get")
            if operation is None or "/tenant/{tenant}" not in path:
                continue
            path_params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            if path_params != ["tenant"]:
                # Reads one parent's children or one record by id: reachable only per parent.
                not_covered.append({"module": module, "path": base_path + path, "path_params": path_params})
                continue
            module_endpoints.append(_endpoint(module, base_path, path, operation, schemas))
        # Keep only the schemas reachable from the catalogued records.
        reachable: set[str] = set()
        pending = {e["record_schema"] for e in module_endpoints if e["record_schema"]}
        pending |= {r for e in module_endpoints for r in _refs_in(e["query_params"])}
        while pending:
            name = pending.pop()
            if name in reachable or name not in schemas:
                continue
            reachable.add(name)
            pending |= _refs_in(schemas[name])
        modules[module] = {
            "spec_file": spec_file.name,
            "base_path": base_path,
            "schemas": {name: _strip_schema(schemas[name]) for name in sorted(reachable)},
        }
        endpoints.extend(module_endpoints)
    endpoints.sort(key=lambda e: (e["module"], e["resource"], e["kind"]))
    not_covered.sort(key=lambda e: (e["module"], e["path"]))
    return {
        "generated_from": "servicetitan-specs (OpenAPI 3.1)",
        "modules": modules,
        "endpoints": endpoints,
        "per_parent_endpoints": not_covered,
    }


def render(catalogue: dict[str, Any]) -> str:
    """Serialise deterministically, so a regenerated file diffs cleanly."""
    return json.dumps(catalogue, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_dir = Path(args[0]) if args else DEFAULT_SPEC_DIR
    if not spec_dir.is_dir():
        print(f"spec directory not found: {spec_dir}", file=sys.stderr)
        return 2
    catalogue = build_catalogue(spec_dir)
    CATALOGUE_PATH.write_text(render(catalogue))
    kinds: dict[str, int] = {}
    for endpoint in catalogue["endpoints"]:
        kinds[endpoint["kind"]] = kinds.get(endpoint["kind"], 0) + 1
    print(f"wrote {CATALOGUE_PATH} ({len(catalogue['endpoints'])} endpoints: {kinds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
