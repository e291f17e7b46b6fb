"""The README's generated sections are what the code reports now (``make readme`` rewrites them)."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from st_pipeline.cli import main as st_pipeline
from st_pipeline.servicetitan.catalogue import load_catalogue
from st_pipeline.settings import Settings
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
    keys = set(re.findall(r"`([a-z_]+(?:/[a-z0-9_]+)+)`", sections["assets"]))
    assert {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()} <= keys


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
