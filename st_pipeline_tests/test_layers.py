"""The package's import graph keeps the layering the README's *Architecture* table states.

The table is the rule, written once: each row names a layer, its modules and the layers it may
import. Here every ``import`` of every module of ``st_pipeline`` (type-checking imports and imports
inside functions included) is checked against it.
"""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "st_pipeline"
DAGSTER = "Dagster"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # "database.py" or "servicetitan/", relative to st_pipeline/
    may_import: frozenset[str]  # layer names, and DAGSTER


def readme_layers(readme: str) -> dict[str, Layer]:
    """The layer table: the first table of *## Architecture* whose header has a ``may import`` column."""
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| layer | modules |"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[-1] == "may import", header
    layers: dict[str, Layer] = {}
    names: list[str] = []
    for line in rows[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names.append(cells[0])
    for line in rows[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        allowed = cells[-1]
        if allowed.startswith("every layer"):
            targets = {name for name in names if name != cells[0]}
            targets |= {DAGSTER} if DAGSTER in allowed else set()
        else:
            targets = {part.strip() for part in allowed.split(",") if part.strip() not in ("", "—")}
        layers[cells[0]] = Layer(cells[0], tuple(re.findall(r"`([^`]+)`", cells[1])), frozenset(targets))
    return layers


def layer_of(module: str, layers: dict[str, Layer]) -> str | None:
    """The layer of a dotted module name under st_pipeline (``st_pipeline.sync.extract`` → sync)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    for layer in layers.values():
        # "cli.py" also holds a package cli/ that replaced the module: a split keeps its row.
        if any(parts[0] == entry.removesuffix("/").removesuffix(".py") for entry in layer.modules):
            return layer.name
    return None


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file of ``module``, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from package import module`` imports the module: each name is taken as a part of the target.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def violations(package: Path, layers: dict[str, Layer]) -> list[str]:
    """Every import that crosses the table's rule, and every module the table has no row for."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module, layers)
        where = path.relative_to(package.parent)
        if own is None:
            if module != package.name:
                problems.append(f"{where}: no row of the layer table holds this module")
            continue
        for line, target in imports_of(path, module):
            if target.split(".")[0] == "dagster" or target.startswith("dagster_"):
                if DAGSTER not in layers[own].may_import:
                    problems.append(f"{where}:{line}: the {own} layer imports Dagster ({target})")
            elif target.split(".")[0] == package.name:
                theirs = layer_of(target, layers)
                if theirs is None:
                    problems.append(f"{where}:{line}: imports {target}, which no row of the table holds")
                elif theirs != own and theirs not in layers[own].may_import:
                    problems.append(f"{where}:{line}: the {own} layer imports {target} ({theirs})")
    return problems


@pytest.fixture(scope="module")
def layers() -> dict[str, Layer]:
    return readme_layers((REPO / "README.md").read_text(encoding="utf-8"))


def test_no_module_imports_a_layer_it_may_not(layers: dict[str, Layer]) -> None:
    assert violations(PACKAGE, layers) == []


def test_the_table_is_a_ladder_with_no_cycle(layers: dict[str, Layer]) -> None:
    # Each row may import only rows above it: a cycle between layers cannot be written down.
    seen: set[str] = set()
    for name, layer in layers.items():
        assert layer.may_import - {DAGSTER} <= seen, f"{name} may import a layer below it"
        seen.add(name)
    assert {"base", "servicetitan", "defs", "application"} <= seen


def test_the_check_sees_an_upward_import_and_an_unplaced_module(layers: dict[str, Layer], tmp_path: Path) -> None:
    package = tmp_path / "st_pipeline"
    for relative, text in {
        "__init__.py": "",
        "warehouse/__init__.py": "",
        "warehouse/tables.py": "from st_pipeline.sync.state import x\nimport dagster\n",
        "warehouse/loader.py": "from ..sync import state\n",
        "sync/__init__.py": "",
        "sync/state.py": "from ..warehouse import tables\n",
        "servicetitan/__init__.py": "",
        "servicetitan/client.py": "def f():\n    from st_pipeline.defs import resources\n",
        "servicetitan/auth.py": "from st_pipeline import sync, sqltypes\n",  # a module from the package
        "newthing.py": "",
    }.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    assert violations(package, layers) == [
        "st_pipeline/newthing.py: no row of the layer table holds this module",
        "st_pipeline/servicetitan/auth.py:1: the servicetitan layer imports st_pipeline.sync (sync)",
        "st_pipeline/servicetitan/client.py:2: the servicetitan layer imports st_pipeline.defs.resources (defs)",
        "st_pipeline/warehouse/loader.py:1: the warehouse layer imports st_pipeline.sync.state (sync)",
        "st_pipeline/warehouse/tables.py:1: the warehouse layer imports st_pipeline.sync.state.x (sync)",
        "st_pipeline/warehouse/tables.py:2: the warehouse layer imports Dagster (dagster)",
    ]


def test_the_simulator_imports_without_the_rest_of_the_pipeline() -> None:
    # The embedded simulator is the demo's and the tests' ServiceTitan; a benchmark or another
    # project can start it with no Dagster, database or settings loaded.
    probe = (
        "import sys, st_pipeline.simulator; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('st_pipeline.')})); "
        "print(sorted(m for m in ('dagster', 'sqlalchemy') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    packages, heavy = (ast.literal_eval(line) for line in loaded.stdout.splitlines())
    allowed = {"servicetitan", "simulator", "database", "home", "redaction", "sqltypes"}
    assert "simulator" in packages and set(packages) <= allowed, packages
    assert heavy == []
