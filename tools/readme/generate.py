"""README sections read from the Dagster definitions, and the command that writes them all.

``python -m tools.readme`` (``make readme``) rewrites every generated section of
README.md in place; ``--check`` changes nothing and exits 1 naming the sections that differ, each
with a diff. The sections listing assets, checks, schedules and sensors come from the code
location's ``Definitions`` (built with the default configuration, so that the crons shown are the
defaults); the rest come from ``tools.readme.markdown``.
"""

# No `from __future__ import annotations`: Dagster inspects the real type hints in this package.

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import annotated_types
import dagster as dg
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from st_pipeline.defs.checks import DEFAULT_QUARANTINE_ERROR_RATIO
from st_pipeline.defs.marketing_reports import MARKETING_REPORT_KEYS
from st_pipeline.defs.raw_assets import raw_asset_key, raw_group_name
from st_pipeline.defs.reports import REPORTS_GROUP, report_asset_key
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import load_settings
from st_pipeline.tenants.reports import ReportDeclaration
from tools.readme.markdown import (
    README_PATH,
    REGENERATE,
    ReadmeError,
    catalogue_sections,
    code,
    code_list,
    documented_value,
    markdown_table,
    plural,
    replace_sections,
    stale_sections,
)

# The README's report asset: it stands for each report a deployment declares.
REPORT_EXAMPLE = ReportDeclaration(
    tenant_id=1,
    name="name",
    category="category",
    report_id=1,
    parameters={},
    window_days=1,
    enabled=True,
    created_at=datetime(2020, 1, 1, tzinfo=UTC),
)

# How the README names the endpoint kinds of the raw assets (metadata ``endpoint_kind``).
_KIND_NAMES = {"export": "an export feed", "list": "a paged list", "lookup": "a lookup"}


def default_definitions() -> dg.Definitions:
    """The code location's definitions under the default configuration (no variable set), with one
    report asset standing for each declared report (``REPORT_EXAMPLE``)."""
    from st_pipeline.definitions import build_definitions

    return build_definitions(load_settings({}), reports=[REPORT_EXAMPLE])


def shown_key(key: dg.AssetKey) -> str:
    """How the README names an asset: the report example stands for any declared name."""
    if key == report_asset_key(REPORT_EXAMPLE.name):
        return "servicetitan/reports/<name>"
    return key.to_user_string()


def shown_description(key: dg.AssetKey, description: str | None) -> str:
    """The first line of an asset's description, the report example's name shown as a placeholder."""
    line = first_line(description)
    if key == report_asset_key(REPORT_EXAMPLE.name):
        line = line.replace(f"raw_report_{REPORT_EXAMPLE.name}", "raw_report_<name>").replace(
            f"declared as {REPORT_EXAMPLE.name} ", "declared as <name> "
        )
    return line


def first_line(text: str | None) -> str:
    """The first non-empty line of a description."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def raw_groups() -> set[str]:
    """The asset groups of the raw assets (one per ServiceTitan module)."""
    return {raw_group_name(dataset) for dataset in load_catalogue().extracted_datasets()}


def asset_specs(defs: dg.Definitions) -> list[dg.AssetSpec]:
    """Every asset of the definitions, in the order they are declared (not the asset graph's set order)."""
    declared: list[dg.AssetKey] = []
    for item in defs.assets or ():
        declared += [item.key] if isinstance(item, dg.AssetSpec) else sorted(getattr(item, "keys", ()))
    order = {key: index for index, key in enumerate(declared)}
    return sorted(defs.resolve_all_asset_specs(), key=lambda s: (order.get(s.key, len(order)), s.key.to_user_string()))


def _specs_by_group(defs: dg.Definitions) -> dict[str, list[dg.AssetSpec]]:
    grouped: dict[str, list[dg.AssetSpec]] = {}
    for spec in asset_specs(defs):
        grouped.setdefault(spec.group_name or "default", []).append(spec)
    return grouped


# -- assets ----------------------------------------------------------------------------------------


def assets_section(defs: dg.Definitions) -> str:
    """Every asset group: the non-raw assets one by one, the raw ones counted per module group."""
    grouped, raw = _specs_by_group(defs), raw_groups()
    parts = []
    for group, specs in grouped.items():
        if group not in raw:
            parts += [
                f"**{code(group)}**: {plural(len(specs), 'asset')}",
                "",
                markdown_table(
                    ["asset", "description"],
                    [(code(shown_key(s.key)), shown_description(s.key, s.description)) for s in specs],
                ),
                "",
            ]
    raw_specs = {group: specs for group, specs in sorted(grouped.items()) if group in raw}
    total = sum(len(specs) for specs in raw_specs.values())
    parts += [f"**Raw assets**: {total} in {plural(len(raw_specs), 'group')}, one per ServiceTitan module", ""]
    rows = [
        (
            code(group),
            len(specs),
            "<details><summary>keys</summary>" + code_list(s.key.to_user_string() for s in specs) + "</details>",
        )
        for group, specs in raw_specs.items()
    ]
    parts.append(markdown_table(["group", "assets", "keys"], rows))
    return "\n".join(parts)


def core_assets_section(defs: dg.Definitions) -> str:
    """The raw assets of the core datasets: key, group, the endpoint read."""
    specs = {spec.key: spec for spec in asset_specs(defs)}
    rows = []
    for dataset in load_catalogue().core_datasets():
        spec = specs[raw_asset_key(dataset)]
        rows.append((code(spec.key.to_user_string()), code(spec.group_name), code(spec.metadata.get("endpoint"))))
    return markdown_table(["asset", "group", "source"], rows)


# -- checks ----------------------------------------------------------------------------------------


def check_specs(defs: dg.Definitions) -> list[dg.AssetCheckSpec]:
    """Every asset check of the definitions, in the order they are declared."""
    graph = defs.resolve_asset_graph()
    order = {
        spec.key: index
        for index, spec in enumerate(spec for checks in defs.asset_checks or () for spec in checks.check_specs)
    }
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    return sorted(specs, key=lambda spec: (order.get(spec.key, len(order)), spec.key.to_user_string()))


def _check_rows(specs: Sequence[dg.AssetCheckSpec]) -> dict[tuple[str, str], list[dg.AssetKey]]:
    """(check name, description) → the assets carrying that check, in declaration order."""
    rows: dict[tuple[str, str], list[dg.AssetKey]] = {}
    for spec in specs:
        rows.setdefault((spec.name, first_line(spec.description)), []).append(spec.asset_key)
    return rows


def _raw_checks_on(keys: list[dg.AssetKey], raw_specs: dict[dg.AssetKey, dg.AssetSpec]) -> str:
    if len(keys) == len(raw_specs):
        return f"every raw asset ({len(keys)})"
    kinds = {raw_specs[key].metadata.get("endpoint_kind") for key in keys}
    if len(kinds) == 1:
        kind = _KIND_NAMES.get(str(next(iter(kinds))), str(next(iter(kinds))))
        return f"every raw asset read from {kind} ({len(keys)})"
    return plural(len(keys), "raw asset")


def raw_checks_section(defs: dg.Definitions) -> str:
    """The checks of the raw assets: name, which assets, what it checks."""
    raw = raw_groups()
    raw_specs = {spec.key: spec for spec in asset_specs(defs) if spec.group_name in raw}
    specs = [spec for spec in check_specs(defs) if spec.asset_key in raw_specs]
    rows = [
        (code(name), _raw_checks_on(keys, raw_specs), description)
        for (name, description), keys in _check_rows(specs).items()
    ]
    report_specs = [spec for spec in check_specs(defs) if spec.asset_key == report_asset_key(REPORT_EXAMPLE.name)]
    rows += [(code(spec.name), code(shown_key(spec.asset_key)), first_line(spec.description)) for spec in report_specs]
    marketing_specs = [spec for spec in check_specs(defs) if spec.asset_key in MARKETING_REPORT_KEYS]
    rows += [
        (code(name), ", ".join(code(key.to_user_string()) for key in keys), description)
        for (name, description), keys in _check_rows(marketing_specs).items()
    ]
    return "\n".join(
        [
            markdown_table(["check", "on", "what it checks"], rows),
            "",
            f"The quarantine ratio is the tenant sync's run config `quarantine_error_ratio` (default "
            f"{DEFAULT_QUARANTINE_ERROR_RATIO:.0%} of the records received).",
        ]
    )


def _model_checks_on(keys: list[dg.AssetKey], specs: dict[dg.AssetKey, dg.AssetSpec]) -> str:
    groups = {specs[key].group_name for key in keys}
    if len(groups) == 1:
        group = next(iter(groups))
        if len(keys) == sum(spec.group_name == group for spec in specs.values()):
            return f"every asset of group {code(group)} ({len(keys)})"
    return code_list(specs[key].metadata.get("dagster/table_name", key.to_user_string()) for key in keys)


def model_checks_section(defs: dg.Definitions) -> str:
    """The checks of the hub tables and marts (their descriptions say what a failure does)."""
    raw = raw_groups()
    model_specs = {
        spec.key: spec
        for spec in defs.resolve_all_asset_specs()
        if spec.group_name not in raw and spec.group_name != REPORTS_GROUP and spec.metadata.get("dagster/table_name")
    }
    specs = [spec for spec in check_specs(defs) if spec.asset_key in model_specs]
    rows = [
        (code(name), _model_checks_on(keys, model_specs), description)
        for (name, description), keys in _check_rows(specs).items()
    ]
    return markdown_table(["check", "on", "what it checks"], rows)


# -- schedules and sensors -----------------------------------------------------------------------------


def _status(value: object) -> str:
    return str(getattr(value, "value", value)).lower()


def schedules_section(defs: dg.Definitions) -> str:
    """Every schedule and sensor: job, default timing, default status, description."""
    rows = []
    for s in defs.schedules or ():
        assert isinstance(s, dg.ScheduleDefinition)  # st_pipeline builds its schedules resolved, with dg.schedule
        rows.append(
            (
                code(s.name),
                "schedule",
                code(s.job_name),
                f"cron {code(s.cron_schedule)} ({s.execution_timezone or 'UTC'})",
                _status(s.default_status),
                first_line(s.description),
            )
        )
    for sensor in defs.sensors or ():
        job = code(sensor.job_name) if sensor.has_jobs else "—"
        rows.append(
            (
                code(sensor.name),
                "sensor",
                job,
                f"every {sensor.minimum_interval_seconds} s",
                _status(sensor.default_status),
                first_line(sensor.description),
            )
        )
    return markdown_table(["name", "kind", "job", "runs", "starts", "what it does"], rows)


# -- run configuration ---------------------------------------------------------------------------------


def _bound(value: object) -> str:
    return documented_value(value).strip("`")


def _range(field: FieldInfo) -> str:
    """The bounds pydantic enforces on a field, as ``0 < x ≤ 60``; empty when unbounded."""
    low = high = ""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Gt):
            low = f"{_bound(bound.gt)} <"
        elif isinstance(bound, annotated_types.Ge):
            low = f"{_bound(bound.ge)} ≤"
        elif isinstance(bound, annotated_types.Lt):
            high = f"< {_bound(bound.lt)}"
        elif isinstance(bound, annotated_types.Le):
            high = f"≤ {_bound(bound.le)}"
    return " ".join(part for part in (low, "x", high) if part) if low or high else ""


def _config_rows(prefix: str, model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    return [
        (
            code(f"{prefix}.{name}"),
            documented_value(field.get_default(call_default_factory=True)),
            _range(field),
            field.description or "",
        )
        for name, field in model.model_fields.items()
    ]


def run_config_section(defs: dg.Definitions) -> str:
    """What a run may tune: the ServiceTitan resource's fields and the two steps' config, bounded."""
    from st_pipeline.defs.models import TENANT_MODELS_KEY, TenantModelsConfig
    from st_pipeline.defs.raw_assets import TENANT_SYNC_KEY
    from st_pipeline.defs.resources import ServiceTitanResource
    from st_pipeline.defs.tenant_sync import TenantSyncConfig

    rows = [
        *_config_rows("resources.servicetitan.config", ServiceTitanResource),
        *_config_rows(f"ops.{TENANT_SYNC_KEY.to_python_identifier()}.config", TenantSyncConfig),
        *_config_rows(f"ops.{TENANT_MODELS_KEY.to_python_identifier()}.config", TenantModelsConfig),
    ]
    return markdown_table(["run config", "default", "range", "meaning"], rows)


# -- all sections, and the command ---------------------------------------------------------------------


DAGSTER_SECTIONS: dict[str, Callable[[dg.Definitions], str]] = {
    "core-assets": core_assets_section,
    "assets": assets_section,
    "checks": raw_checks_section,
    "model-checks": model_checks_section,
    "schedules": schedules_section,
    "run-config": run_config_section,
}


def render_sections(defs: dg.Definitions | None = None) -> dict[str, str]:
    """Every generated README section, by name, as the code reports it now."""
    defs = defs if defs is not None else default_definitions()
    return {**catalogue_sections(), **{name: render(defs) for name, render in DAGSTER_SECTIONS.items()}}


def main(argv: Sequence[str] | None = None, readme: Path = README_PATH) -> int:
    """Rewrite README.md's generated sections, or with ``--check`` report those that differ."""
    parser = argparse.ArgumentParser(prog="python -m tools.readme", description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a section differs")
    args = parser.parse_args(argv)
    text = readme.read_text(encoding="utf-8")
    rendered = render_sections()
    try:
        if args.check:
            stale = stale_sections(text, rendered)
            for diff in stale.values():
                print(diff)
            if stale:
                print(f"{readme.name}: sections out of date: {', '.join(stale)}; run `{REGENERATE}`", file=sys.stderr)
                return 1
            return 0
        updated = replace_sections(text, rendered)
    except ReadmeError as exc:
        print(f"{readme.name}: {exc}", file=sys.stderr)
        return 1
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
    print(f"{readme.name}: {len(rendered)} generated sections {'rewritten' if updated != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
