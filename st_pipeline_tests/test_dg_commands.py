"""``dg check defs``, the validation Dagster 1.13 recommends, on this project as configured in
pyproject.toml (``[tool.dg]``): the definitions load, and a wrong deployment value stops the code
location with the one line naming the variable. (``dg launch`` and ``dg dev`` run in the quick-start
test, through ``make demo`` and ``make dev``.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from st_pipeline_tests.support import REPO_ROOT, unconfigured_environment

DG = Path(sys.executable).parent / "dg"


def _dg_check_defs(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DG), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_dg_check_defs_loads_the_definitions_and_names_a_wrong_variable(tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = unconfigured_environment()
    env.update(DAGSTER_HOME=str(dagster_home), ST_PIPELINE_HOME=str(tmp_path / "home"))

    loaded = _dg_check_defs(env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "All definitions loaded successfully." in loaded.stdout

    half_configured = _dg_check_defs({**env, "ST_PIPELINE_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}"})
    output = half_configured.stdout + half_configured.stderr
    assert half_configured.returncode != 0
    assert "ST_PIPELINE_REGISTRY_URL is not set but ST_PIPELINE_WAREHOUSE_URL is" in output
    assert "All definitions loaded successfully." not in output
