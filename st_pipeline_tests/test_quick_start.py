"""The README's quick start, run literally on a copy of the project, as a new user would.

The commands come from the fenced blocks of the README's "Quick start" section, in order, each run
by bash exactly as written, in a copy of the project with no st_pipeline, Dagster or ServiceTitan
variable set and a fresh home directory: ``make demo``, then the command-line examples, which must
see the demo's tenant with no variable set; ``make dev`` is started and asked, through the
webserver's GraphQL API, whether it shows the demo's run in the ``servicetitan_sync`` job and the
tenant's materializations. ``make test`` is this suite and is not run again.

The copy shares the project's virtual environment (a symlink), so nothing is installed: ``make``
must find it up to date (run ``make install`` after changing pyproject.toml).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from st_pipeline_tests.support import REPO_ROOT, copy_project, free_port, unconfigured_environment, wait_for

DEMO_TENANT = "1001"
SYNC_RUNS = """{ runsOrError(filter: {pipelineName: "servicetitan_sync"}) {
  __typename ... on Runs { results { runId status tags { key value } } } } }"""
CUSTOMERS = """{ assetOrError(assetKey: {path: ["servicetitan", "raw", "crm", "customers"]}) {
  __typename ... on Asset { assetMaterializations(limit: 1) { runId partition metadataEntries { label } } } } }"""
LOCATION = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def quick_start_commands(readme: str) -> list[str]:
    """Every command line of the fenced blocks of the "Quick start" section, in order."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_quick_start_commands_are_the_documented_ones() -> None:
    commands = quick_start_commands((REPO_ROOT / "README.md").read_text())
    words = [command.split("#")[0].split() for command in commands]
    assert words[:2] == [["make", "demo"], ["make", "test"]], "the two commands come first"
    assert ["make", "dev"] in words
    cli = [w for w in words if w and w[0].endswith("st-pipeline")]
    assert cli and cli[0][1:] == ["tenant", "list"], "the first CLI command shows the demo's tenant"


@pytest.fixture()
def project_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the project sharing its virtual environment, and a clean environment to run it in."""
    copy = tmp_path / "st_pipeline"
    copy_project(copy)
    (copy / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = unconfigured_environment()
    env.pop("VIRTUAL_ENV", None)
    (tmp_path / "user-home").mkdir()
    env.update(HOME=str(tmp_path / "user-home"), SIM_PORT=str(free_port()), DEV_PORT=str(free_port()))
    up_to_date = subprocess.run(["make", "-q", "install"], cwd=copy, env=env, capture_output=True, check=False)
    assert up_to_date.returncode == 0, "the virtual environment is older than pyproject.toml: run `make install`"
    return copy, env


def _run(command: str, copy: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", command], cwd=copy, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, (
        f"`{command}` failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _graphql(port: str, query: str) -> dict:
    answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


def test_readme_quick_start_runs_literally(project_copy: tuple[Path, dict[str, str]]) -> None:
    copy, env = project_copy
    commands = quick_start_commands((copy / "README.md").read_text())
    outputs: dict[str, str] = {}
    for command in commands:
        words = command.split("#")[0].split()
        if words in (["make", "test"], ["make", "dev"]):
            continue
        outputs[" ".join(words[1:])] = _run(command, copy, env)

    assert "all counts equal the simulator's." in outputs["demo"]
    assert (copy / ".st_pipeline" / "registry.db").is_file(), "make demo keeps its state in the project"
    assert not (Path(env["HOME"]) / ".st_pipeline").exists(), "nothing went to ~/.st_pipeline"
    tenants = outputs["tenant list"]
    assert DEMO_TENANT in tenants and "Demo Heating & Air" in tenants, tenants
    status = outputs["status"]
    assert re.search(rf"^\s*{DEMO_TENANT}\s+enabled\s+\d{{4}}-\d\d-\d\d \d\d:\d\d\s+ok\s", status, re.M), status
    sync_log = outputs[f"sync-log --tenant {DEMO_TENANT}"]
    run_line = re.search(r"^run ([0-9a-f-]{36}) .*; (\d+) datasets: (\d+) succeeded", sync_log, re.M)
    assert run_line, sync_log
    assert int(run_line.group(2)) == int(run_line.group(3)) > 100, "one run, every dataset succeeded"
    assert "completed revenue" in outputs[f"kpis --tenant {DEMO_TENANT}"]

    _check_make_dev_shows_the_demo_run(copy, env, run_id=run_line.group(1))


def _check_make_dev_shows_the_demo_run(copy: Path, env: dict[str, str], run_id: str) -> None:
    """``make dev``: the UI's code location loads and shows the demo's run and materializations."""
    port = env["DEV_PORT"]
    log = copy / "make-dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            ["bash", "-c", "make dev"], cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def location_loaded() -> bool:
            try:
                entries = _graphql(port, LOCATION)["workspaceOrError"]["locationEntries"]
            except httpx.HTTPError:
                return False
            return bool(entries) and entries[0]["locationOrLoadError"] is not None

        wait_for(location_loaded, "make dev's webserver and code location", [dev], deadline_s=180)
        entries = _graphql(port, LOCATION)["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
            ("st_pipeline", "RepositoryLocation")
        ], entries
        # The demo's run in the job's history (the hourly schedule may have added one since).
        runs = {r["runId"]: r for r in _graphql(port, SYNC_RUNS)["runsOrError"]["results"]}
        assert runs[run_id]["status"] == "SUCCESS", runs
        assert {"key": "dagster/partition", "value": DEMO_TENANT} in runs[run_id]["tags"]
        materialization = _graphql(port, CUSTOMERS)["assetOrError"]["assetMaterializations"][0]
        assert (materialization["runId"], materialization["partition"]) == (run_id, DEMO_TENANT)
        assert "dagster/row_count" in {entry["label"] for entry in materialization["metadataEntries"]}
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=60)
