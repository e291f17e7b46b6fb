"""The README's generated sections are what the code reports now (``make readme`` rewrites them), and its
example of an asset on ours runs and computes what SQL computes."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from st_pipeline.cli import main as st_pipeline
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import Settings
from st_pipeline_tests.conftest import TENANT_A
from st_pipeline_tests.support import deployment
from tools.readme import generate
from tools.readme.markdown import (
    BEGIN_MARKER,
    END_MARKER,
    README_PATH,
    ReadmeError,
    read_sections,
    replace_sections,
    stale_sections,
)


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return generate.default_definitions()


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return read_sections(README_PATH.read_text(encoding="utf-8"))


def _row_names(text: str) -> list[str]:
    """The first cell of every table row, when it is inline code."""
    return re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)


def _readme(*sections: tuple[str, str]) -> str:
    body = "\n\n".join(f"{BEGIN_MARKER.format(name=n)}\n{text}\n{END_MARKER.format(name=n)}" for n, text in sections)
    return f"# Title\n\nProse before.\n\n{body}\n\nProse after.\n"


# -- the README against the code ---------------------------------------------------------------------


def test_generated_sections_equal_what_the_code_renders(defs: dg.Definitions) -> None:
    stale = stale_sections(README_PATH.read_text(encoding="utf-8"), generate.render_sections(defs))
    assert not stale, (
        f"README.md's generated sections {', '.join(stale)} differ from the code; run `make readme`.\n\n"
        + "\n\n".join(stale.values())
    )


def test_every_variable_is_in_exactly_one_generated_table(sections: dict[str, str]) -> None:
    listed = [name for text in sections.values() for name in _row_names(text)]
    for variable in Settings.variables():
        assert listed.count(variable) == 1, f"{variable} is in {listed.count(variable)} generated tables of README.md"


def test_every_check_schedule_sensor_and_asset_is_listed(defs: dg.Definitions, sections: dict[str, str]) -> None:
    checks = set(_row_names(sections["checks"]) + _row_names(sections["model-checks"]))
    assert {spec.name for spec in generate.check_specs(defs)} <= checks
    automations = set(_row_names(sections["schedules"]))
    assert {schedule.name for schedule in defs.schedules or ()} <= automations
    assert {sensor.name for sensor in defs.sensors or ()} <= automations
    keys = set(re.findall(r"`([a-z_]+(?:/[a-z0-9_<>]+)+)`", sections["assets"]))
    assert {generate.shown_key(spec.key) for spec in defs.resolve_all_asset_specs()} <= keys
    assert "servicetitan/reports/<name>" in keys  # the report assets, one per declared name


def test_every_run_config_field_is_listed_with_its_default(sections: dict[str, str]) -> None:
    from st_pipeline.defs.models import TenantModelsConfig
    from st_pipeline.defs.resources import ServiceTitanResource
    from st_pipeline.defs.tenant_sync import TenantSyncConfig

    rows = {row.split(" | ")[0].strip("| `"): row.split(" | ")[1] for row in sections["run-config"].splitlines()[2:]}
    for prefix, model in (
        ("resources.servicetitan.config", ServiceTitanResource),
        ("ops.servicetitan__tenant_sync.config", TenantSyncConfig),
        ("ops.servicetitan__tenant_models.config", TenantModelsConfig),
    ):
        assert {f"{prefix}.{name}" for name in model.model_fields} <= set(rows)
    assert rows["resources.servicetitan.config.requests_per_second"] == "`60`"
    assert rows["ops.servicetitan__tenant_sync.config.full_refresh"] == "`false`"


def test_the_cli_reports_the_coverage_the_readme_shows(local_env: Path) -> None:
    result = CliRunner().invoke(st_pipeline, ["endpoints"], prog_name="st-pipeline")
    assert result.exit_code == 0, result.output
    summary = next(line for line in result.stdout.splitlines() if line.startswith("coverage: "))
    assert summary == "coverage: " + load_catalogue().coverage().summary()


# -- the example of an asset on ours ---------------------------------------------------------------


def _python_block(text: str, containing: str) -> str:
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} python blocks of README.md contain {containing!r}"
    return blocks[0]


def test_the_example_asset_on_ours_materializes_exact_figures(
    local_env: Path, built_warehouse: Callable[[str], str]
) -> None:
    from st_pipeline.defs.models import MARTS_BY_KEY
    from st_pipeline.defs.partitions import add_tenant_partition, tenant_partitions
    from st_pipeline.defs.resources import WarehouseResource

    url = built_warehouse("sqlite")
    namespace: dict[str, Any] = {}
    code = _python_block(README_PATH.read_text(encoding="utf-8"), "warehouse.frame(")
    # As a module of its own: not under this file's `from __future__ import annotations` (Dagster reads the hints).
    exec(compile(code, str(README_PATH), "exec", dont_inherit=True), namespace)
    asset = namespace["monthly_revenue_by_business_unit"]
    assert isinstance(asset, dg.AssetsDefinition) and asset.partitions_def == tenant_partitions
    (spec,) = asset.specs
    upstream = [dep.asset_key for dep in spec.deps]
    assert upstream == [dg.AssetKey(["servicetitan", "mart", "revenue_by_business_unit"])]
    assert upstream[0] in MARTS_BY_KEY  # a real asset of ours
    with deployment(warehouse_url=url), dg.instance_for_test() as instance:
        add_tenant_partition(instance, TENANT_A.tenant_id)
        result = dg.materialize(
            [asset],
            partition_key=str(TENANT_A.tenant_id),
            instance=instance,
            resources={"warehouse": WarehouseResource()},
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node(asset.node_def.name)

    # The same figures in plain SQL: SQLite keeps days as ISO text and money as integer ten-thousandths.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sums = conn.execute(
            sa.text(
                "SELECT substr(day, 1, 7), business_unit_id, sum(completed_revenue) FROM mart_revenue_by_business_unit "
                "WHERE tenant_id = :t GROUP BY 1, 2"
            ),
            {"t": TENANT_A.tenant_id},
        ).all()
    engine.dispose()
    expected = sorted((month, unit, Decimal(total).scaleb(-4)) for month, unit, total in sums)
    assert len({month for month, _, _ in expected}) > 1 and len({unit for _, unit, _ in expected}) > 1
    metadata = materialization.metadata
    table = metadata["by_month"]
    assert isinstance(table, dg.TableMetadataValue)
    reported = sorted((r.data["month"], r.data["business_unit_id"], r.data["completed_revenue"]) for r in table.records)
    assert reported == [(month, unit, float(total)) for month, unit, total in expected]
    assert metadata["completed_revenue"].value == float(sum(total for _, _, total in expected)) > 0
    assert metadata["dagster/row_count"].value == len(expected)


# -- the markers -------------------------------------------------------------------------------------


def test_replace_rewrites_bodies_and_markers_and_keeps_the_prose() -> None:
    text = _readme(("one", "old 1"), ("two", "old 2")).replace("(written by", "(hand-edited, written by", 1)
    updated = replace_sections(text, {"one": "new 1\n", "two": "new 2"})
    assert read_sections(updated) == {"one": "new 1", "two": "new 2"}
    assert updated == _readme(("one", "new 1"), ("two", "new 2"))
    assert replace_sections(updated, {"one": "new 1", "two": "new 2"}) == updated


def test_stale_sections_name_the_section_with_a_diff() -> None:
    text = _readme(("one", "same"), ("two", "52 export feeds"))
    stale = stale_sections(text, {"one": "same", "two": "53 export feeds"})
    assert list(stale) == ["two"]
    assert "-52 export feeds" in stale["two"] and "+53 export feeds" in stale["two"]
    assert "README.md [two]" in stale["two"]


@pytest.mark.parametrize(
    ("text", "rendered", "message"),
    [
        (_readme(("one", "x")), {"one": "x", "two": "y"}, "lacks the generated sections two"),
        (_readme(("one", "x"), ("two", "y")), {"one": "x"}, "no code renders: two"),
        (_readme(("one", "x"), ("one", "x")), {"one": "x"}, "appears twice"),
        (BEGIN_MARKER.format(name="one") + "\nx\n", {"one": "x"}, "has no `<!-- end generated:one -->` line"),
    ],
)
def test_broken_markers_are_refused(text: str, rendered: dict[str, str], message: str) -> None:
    with pytest.raises(ReadmeError, match=re.escape(message)):
        replace_sections(text, rendered)


def test_the_command_checks_then_rewrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(_readme(("coverage", "134 of 147"), ("checks", "same")))
    monkeypatch.setattr(generate, "render_sections", lambda: {"coverage": "135 of 148", "checks": "same"})
    assert generate.main(["--check"], readme=readme) == 1
    output = capsys.readouterr()
    assert "sections out of date: coverage; run `make readme`" in output.err and "+135 of 148" in output.out
    assert generate.main([], readme=readme) == 0
    assert read_sections(readme.read_text()) == {"coverage": "135 of 148", "checks": "same"}
    assert generate.main(["--check"], readme=readme) == 0
