"""The project builds as a wheel that carries its catalogue and migrations, and that wheel installed
into a fresh virtual environment (dependencies from the package index) runs the CLI and the demo
outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from st_pipeline_tests.support import copy_project, unconfigured_environment


@pytest.mark.timeout(900)
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path: Path) -> None:
    # Built from a copy: setuptools' build/ left in the checkout by an earlier build could hide a
    # file that package-data no longer ships.
    source = tmp_path / "source"
    copy_project(source)
    wheels = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("st_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "st_pipeline/servicetitan/catalogue.json",
        "st_pipeline/warehouse/migrations/env.py",
        "st_pipeline/warehouse/migrations/script.py.mako",
        "st_pipeline/warehouse/migrations/versions/0001_quarantine.py",
        "st_pipeline/tenants/migrations/env.py",
        "st_pipeline/tenants/migrations/script.py.mako",
        "st_pipeline/tenants/migrations/versions/0001_initial.py",
        "st_pipeline/definitions.py",
    ):
        assert shipped in names, f"{shipped} is missing from the wheel"
    assert not any(name.startswith("st_pipeline_tests/") for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # Outside the checkout, with none of the project's variables: only the wheel can answer.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = unconfigured_environment()
    env["ST_PIPELINE_HOME"] = str(tmp_path / "home")
    cli = str(venv / "bin" / "st-pipeline")
    helped = subprocess.run(
        [cli, "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert "demo" in helped.stdout and "tenant" in helped.stdout
    demo = subprocess.run(
        [cli, "demo", "--port", "0", "--scale", "0.05"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "all counts equal the simulator's" in demo.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import st_pipeline; print(st_pipeline.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy ran, not the checkout's
