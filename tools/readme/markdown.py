"""README sections generated from the code, so that the numbers and lists in it cannot drift.

A generated section sits between two markers::

    <!-- generated:coverage (written by `make readme` from the code: edit the code, not this) -->
    …
    <!-- end generated:coverage -->

This module holds the marker handling, the Markdown table helper and the sections that need no
Dagster (catalogue coverage, the configuration tables, hub tables, the simulator's datasets).
The sections read from the Dagster definitions, and the command that rewrites or checks
README.md, are in ``tools.readme.generate`` (``make readme``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

README_PATH = Path(__file__).resolve().parents[2] / "README.md"
REGENERATE = "make readme"
BEGIN_MARKER = "<!-- generated:{name} (written by `make readme` from the code: edit the code, not this) -->"
END_MARKER = "<!-- end generated:{name} -->"

_BEGIN = re.compile(r"^<!-- generated:(?P<name>[a-z0-9-]+)\b.*-->[ \t]*$", re.MULTILINE)


class ReadmeError(ValueError):
    """The README's markers are broken, or name a section the generator does not know."""


# -- markers ---------------------------------------------------------------------------------------


def _spans(text: str) -> dict[str, tuple[int, int, int, int]]:
    """Per section: (begin marker start, body start, body end, end marker end), in text order."""
    spans: dict[str, tuple[int, int, int, int]] = {}
    position = 0
    while (begin := _BEGIN.search(text, position)) is not None:
        name = begin.group("name")
        if name in spans:
            raise ReadmeError(f"generated section {name!r} appears twice")
        end_marker = END_MARKER.format(name=name)
        end = text.find(end_marker, begin.end())
        if end < 0:
            raise ReadmeError(f"generated section {name!r} has no `{end_marker}` line")
        spans[name] = (begin.start(), begin.end(), end, end + len(end_marker))
        position = end + len(end_marker)
    return spans


def read_sections(text: str) -> dict[str, str]:
    """The body of every generated section of ``text``, by name (without the markers)."""
    return {name: text[start:end].strip("\n") for name, (_, start, end, _) in _spans(text).items()}


def _check_names(present: Iterable[str], rendered: Mapping[str, str]) -> None:
    unknown = sorted(set(present) - set(rendered))
    if unknown:
        raise ReadmeError(f"README.md has generated sections no code renders: {', '.join(unknown)}")
    missing = sorted(set(rendered) - set(present))
    if missing:
        raise ReadmeError(
            f"README.md lacks the generated sections {', '.join(missing)}: add a pair of markers "
            f"(`{BEGIN_MARKER.format(name=missing[0])}` … `{END_MARKER.format(name=missing[0])}`) where each belongs"
        )


def replace_sections(text: str, rendered: Mapping[str, str]) -> str:
    """``text`` with every generated section's markers and body rewritten from ``rendered``."""
    spans = _spans(text)
    _check_names(spans, rendered)
    pieces, position = [], 0
    for name, (begin, _, _, end) in spans.items():
        pieces += [
            text[position:begin],
            BEGIN_MARKER.format(name=name),
            "\n",
            rendered[name].strip("\n"),
            "\n",
            END_MARKER.format(name=name),
        ]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def stale_sections(text: str, rendered: Mapping[str, str]) -> dict[str, str]:
    """The sections of ``text`` that differ from ``rendered``, each with a readable diff."""
    current = read_sections(text)
    _check_names(current, rendered)
    return {
        name: section_diff(name, current[name], rendered[name].strip("\n"))
        for name in rendered
        if current[name] != rendered[name].strip("\n")
    }


def section_diff(name: str, current: str, expected: str) -> str:
    """A unified diff from the README's section to what the code renders."""
    lines = difflib.unified_diff(
        current.splitlines(),
        expected.splitlines(),
        fromfile=f"README.md [{name}]",
        tofile=f"generated [{name}]",
        lineterm="",
    )
    return "\n".join(lines)


# -- Markdown --------------------------------------------------------------------------------------


def cell(value: object) -> str:
    """Text fit for one table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are escaped with ``cell``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: object) -> str:
    """``text`` as inline code."""
    return f"`{text}`"


def code_list(items: Iterable[object]) -> str:
    """``a``, ``b``, ``c`` as inline code, comma-separated."""
    return ", ".join(code(item) for item in items)


def documented_value(value: object) -> str:
    """A default as the documentation shows it: ``—`` for none or empty, else inline code
    (booleans in lower case, whole numbers without a decimal point and with thousands separators)."""
    if value is None or value in ((), []):
        return "—"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return code(f"{value:,}" if isinstance(value, int) else value)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 dataset``, ``2 datasets``."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


# -- sections without Dagster ------------------------------------------------------------------------


def configuration_section(table: str) -> str:
    """The variables of one documentation table (``Settings.documented_variables``)."""
    from st_pipeline.settings import Settings

    rows = [
        (code(v.name), v.meaning, v.doc_default or documented_value(v.default))
        for v in Settings.documented_variables()
        if v.table == table
    ]
    return markdown_table(["variable", "meaning", "default"], rows)


def coverage_section() -> str:
    """What the raw assets cover of the catalogue, what is excluded and why."""
    from st_pipeline.servicetitan.catalogue import load_catalogue

    catalogue = load_catalogue()
    coverage = catalogue.coverage()
    excluded = [
        (code(key), dataset.excluded_reason)
        for key, dataset in catalogue.datasets.items()
        if dataset.excluded_reason is not None
    ]
    return "\n".join(
        [
            f"Extracted: **{coverage.extracted} of the {coverage.datasets} datasets** of the catalogue, read from "
            f"{plural(coverage.export_feeds, 'export feed')}, {plural(coverage.paged_lists, 'paged list')} and "
            f"{plural(coverage.lookups, 'lookup')} (unpaged lists). Not extracted: "
            f"{plural(coverage.excluded, 'dataset')}, each with its reason in `EXCLUDED_DATASETS` "
            "(`servicetitan/catalogue.py`) and in `st-pipeline endpoints`:",
            "",
            markdown_table(["dataset", "why not"], excluded),
            "",
            f"Nor are the {coverage.per_parent_endpoints} per-parent endpoints (notes, contacts or history of one "
            "record, reads of one record by id): the catalogue lists them as not covered.",
        ]
    )


def read_in_full_section() -> str:
    """The datasets without an incremental cursor, counted by why."""
    from st_pipeline.servicetitan.catalogue import load_catalogue

    datasets = load_catalogue().read_in_full()
    created_only = [d for d in datasets if "createdOnOrAfter" in d.extraction_endpoint.query_params]
    return (
        f"Read in full: {plural(len(datasets), 'dataset')}, {len(datasets) - len(created_only)} without "
        f"a date filter and {len(created_only)} whose only one is `createdOnOrAfter` (which would never show a "
        f"change to an existing record): {code_list(d.key for d in datasets)}."
    )


def raw_tables_section() -> str:
    """How many raw tables there are, and which are keyed by a content hash."""
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.warehouse.tables import raw_table_name

    catalogue = load_catalogue()
    keyless = catalogue.keyless_datasets()
    return (
        f"There are {len(catalogue.extracted_datasets())} raw tables, one per extracted dataset; "
        f"{len(keyless)} of them hold records without `id`, keyed by the content hash: "
        f"{code_list(raw_table_name(d) for d in keyless)}."
    )


def simulator_section() -> str:
    """Which catalogued datasets the simulator serves, and why it does not serve the others."""
    from st_pipeline.servicetitan.catalogue import load_catalogue
    from st_pipeline.simulator.data import plan_for

    catalogue = load_catalogue()
    plan = plan_for(catalogue)
    lines = [
        f"Served: {len(plan.served)} of the {len(catalogue.datasets)} catalogued datasets, each both as export "
        f"feed and as paged list. Not served:{' none.' if not plan.unsupported else ''}"
    ]
    lines += [f"- {code(key)}: {reason}" for key, reason in sorted(plan.unsupported.items())]
    return "\n".join(lines)


def hub_tables_section() -> str:
    """Every hub table: its source dataset and its key."""
    from st_pipeline.transform.hubs import HUB_TABLES

    rows = [
        (
            code(spec.table_name),
            code(spec.source) + (f" (one row per element of `{spec.explode}`)" if spec.explode else ""),
            code(", ".join(spec.primary_key)),
        )
        for spec in HUB_TABLES
    ]
    return markdown_table(["hub table", "from", "key"], rows)


def alert_kinds_section() -> str:
    """The kinds of alert incidents st_pipeline opens, and what opens and resolves each."""
    from st_pipeline.alerts.model import KINDS

    return markdown_table(["kind", "opened when, resolved when"], [(code(kind), what) for kind, what in KINDS.items()])


def catalogue_sections() -> dict[str, str]:
    """Every generated section that needs no Dagster, by name."""
    from st_pipeline.settings import ALERTS_TABLE, CONFIGURATION_TABLE

    return {
        "configuration": configuration_section(CONFIGURATION_TABLE),
        "alerts": configuration_section(ALERTS_TABLE),
        "alert-kinds": alert_kinds_section(),
        "coverage": coverage_section(),
        "read-in-full": read_in_full_section(),
        "raw-tables": raw_tables_section(),
        "hub-tables": hub_tables_section(),
        "simulator": simulator_section(),
    }
