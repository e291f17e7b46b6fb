"""What the Dagster UI's catalog shows, pinned: a snapshot of the asset graph, and descriptions everywhere.

``asset_graph.snapshot.json`` (beside this file) holds one line per asset: its key, group, whether
it is partitioned, whether it can be materialized, its checks and the first sentence of its
description; then the names of the jobs, schedules and sensors. Renaming, adding, removing or
regrouping an asset, rewording the start of its description or changing its checks fails
``test_the_asset_graph_matches_its_snapshot`` with a diff. When the change is meant, rewrite the
snapshot and commit it with the change::

    ST_PIPELINE_UPDATE_SNAPSHOT=1 .venv/bin/pytest -q st_pipeline_tests/defs/test_asset_graph.py

The other tests check, without the snapshot, that everything the UI lists has a description and
that every asset's name fits in a node of the asset graph.
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from st_pipeline.definitions import build_definitions
from st_pipeline.defs.raw_assets import MAX_NAME_LENGTH
from st_pipeline.settings import load_settings
from st_pipeline.tenants.reports import ReportDeclaration

SNAPSHOT = Path(__file__).with_name("asset_graph.snapshot.json")
UPDATE_VARIABLE = "ST_PIPELINE_UPDATE_SNAPSHOT"
# Long enough to tell descriptions apart, short enough that a rewording further on changes nothing.
SUMMARY_LENGTH = 100
# Report assets come from the registry's declarations: the graph is pinned with these two.
DECLARED = [
    ReportDeclaration(7001, name, category, report_id, {}, 1, True, datetime(2026, 1, 1, tzinfo=UTC))
    for name, category, report_id in [("bu_performance", "operations", 1001), ("technician_hours", "custom", 1005)]
]
defs = build_definitions(load_settings({}), reports=DECLARED)


def summary(description: str | None) -> str:
    """The first sentence of a description, cut to ``SUMMARY_LENGTH`` characters."""
    first = (description or "").strip().split(". ", 1)[0]
    return first if len(first) <= SUMMARY_LENGTH else first[: SUMMARY_LENGTH - 1] + "…"


def graph_entries(definitions: dg.Definitions) -> dict[str, list[Any]]:
    """The snapshot's content: the assets (sorted by key), then the job, schedule and sensor names."""
    graph = definitions.resolve_asset_graph()
    checks: dict[dg.AssetKey, list[str]] = {}
    for check_key in graph.asset_check_keys:
        checks.setdefault(check_key.asset_key, []).append(check_key.name)
    assets = [
        {
            "key": key.to_user_string(),
            "group": graph.get(key).group_name,
            "partitioned": graph.get(key).partitions_def is not None,
            "executable": graph.get(key).is_executable,
            "checks": sorted(checks.get(key, [])),
            "description": summary(graph.get(key).description),
        }
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string())
    ]
    repository = definitions.get_repository_def()
    return {
        "assets": assets,
        "jobs": sorted(job.name for job in _jobs(repository)),
        "schedules": sorted(schedule.name for schedule in repository.schedule_defs),
        "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
    }


def render(entries: dict[str, list[Any]]) -> str:
    """JSON with one line per entry, so that a diff names each changed asset on its own line."""
    sections = []
    for name, items in entries.items():
        lines = ",\n".join(f"    {json.dumps(item, ensure_ascii=False)}" for item in items)
        sections.append(f'  "{name}": [\n{lines}\n  ]')
    return "{\n" + ",\n".join(sections) + "\n}\n"


def _jobs(repository: dg.RepositoryDefinition) -> list[dg.JobDefinition]:
    """The jobs a user sees (not Dagster's implicit asset job)."""
    return [job for job in repository.get_all_jobs() if not job.name.startswith("__")]


def test_the_asset_graph_matches_its_snapshot() -> None:
    current = render(graph_entries(defs))
    if os.environ.get(UPDATE_VARIABLE) == "1":
        SNAPSHOT.write_text(current)
    recorded = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            recorded.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=f"{SNAPSHOT.name} (recorded)",
            tofile="the definitions now",
            n=0,
        )
    )
    if diff:
        pytest.fail(
            f"the asset graph differs from its snapshot; if that is meant, run with {UPDATE_VARIABLE}=1 and commit "
            f"{SNAPSHOT.name}:\n{diff}",
            pytrace=False,
        )


def test_every_asset_has_a_description() -> None:
    graph = defs.resolve_asset_graph()
    missing = [
        key.to_user_string() for key in graph.get_all_asset_keys() if not (graph.get(key).description or "").strip()
    ]
    assert not missing, f"assets without a description: {missing}"


def test_every_check_shows_a_description_in_the_ui() -> None:
    """Read from the check specs of the asset graph Dagster resolves (what the UI lists)."""
    graph = defs.resolve_asset_graph()
    shown = {key: graph.get_check_spec(key).description for key in graph.asset_check_keys}
    modelled = {spec.key for spec in defs.resolve_all_asset_specs() if spec.tags.get("layer") in ("hub", "mart")}
    assert modelled and modelled <= {key.asset_key for key in shown}  # every hub table and mart has checks
    missing = sorted(key.to_user_string() for key, description in shown.items() if not (description or "").strip())
    assert not missing, f"{len(missing)} checks without a description, e.g. {missing[:5]}"


def test_every_check_definition_job_schedule_and_sensor_has_a_description() -> None:
    repository = defs.get_repository_def()
    described = {
        **{f"checks {c.node_def.name}": c.node_def.description for c in repository.asset_checks_defs_by_key.values()},
        **{
            f"assets {a.node_def.name}": a.node_def.description
            for a in repository.assets_defs_by_key.values()
            if a.is_executable
        },
        **{f"job {job.name}": job.description for job in _jobs(repository)},
        **{f"schedule {s.name}": s.description for s in repository.schedule_defs},
        **{f"sensor {s.name}": s.description for s in repository.sensor_defs},
    }
    # The freshness checks, the sync's and the models' multi-assets, 4 jobs, 6 schedules, 3 sensors.
    assert len(described) >= 1 + 2 + 4 + 6 + 3
    missing = sorted(name for name, description in described.items() if not (description or "").strip())
    assert not missing, f"without a description: {missing}"


def test_every_asset_name_fits_a_graph_node_and_is_unique_in_its_group() -> None:
    """The asset graph shows only a key's last part, cut in the middle when longer than about 28 characters."""
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    too_long = sorted(key.to_user_string() for key in keys if len(key.path[-1]) > MAX_NAME_LENGTH)
    assert not too_long, f"last key part longer than {MAX_NAME_LENGTH} characters: {too_long}"
    names = Counter((graph.get(key).group_name, key.path[-1]) for key in keys)
    assert not [name for name, count in names.items() if count > 1]
