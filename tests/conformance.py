"""Traceability of the CDS Hooks 2.0 service requirements to the tests that verify them.

Every requirement that binds a CDS service is a row of ``docs/cds-hooks_2.0_service-requirements.csv``
(reference ``cds-hooks_2.0@N``). A test claims the rows it verifies with a marker::

    @pytest.mark.requirement("cds-hooks_2.0@83", "cds-hooks_2.0@88")

A row no test can verify because it does not bind this service (a client obligation, transport handled by
the deployment, a feature the service never uses) is listed in ``docs/conformance-exclusions.csv`` with a
one-line reason. This module collects the markers with pytest's own collection (so class-level markers,
``pytestmark`` and parametrized tests count exactly as pytest sees them) and writes the coverage matrix
``docs/conformance.md``::

    python -m tests.conformance            # regenerate docs/conformance.md
    python -m tests.conformance --check    # exit 1 when the matrix is stale or a row is untraced

``tests/test_conformance.py`` runs the check, so CI fails on a SHALL / SHALL NOT / SHOULD / SHOULD NOT
row with neither a test nor a reason, and on a matrix that no longer matches the tests.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_CSV = ROOT / "docs" / "cds-hooks_2.0_service-requirements.csv"
EXCLUSIONS_CSV = ROOT / "docs" / "conformance-exclusions.csv"
MATRIX = ROOT / "docs" / "conformance.md"

#: the pytest marker that names requirement references (registered in pyproject.toml)
MARKER = "requirement"
REF = re.compile(r"cds-hooks_2\.0@(\d+)")
#: levels whose rows must each be tested or excluded with a reason; a gap fails the check
MUST_TRACE = ("SHALL", "SHALL NOT", "SHOULD", "SHOULD NOT")
LEVELS = ("SHALL", "SHALL NOT", "SHOULD", "SHOULD NOT", "MAY", "DEPRECATED")
TESTED = "tested"
NOT_APPLICABLE = "not applicable"
NOT_MET = "not met"
#: a MAY row the service does not use and nobody listed: allowed, shown as such
NOT_CLAIMED = "not claimed"
UNTRACED = "UNTRACED"
EXCLUSION_STATUSES = (NOT_APPLICABLE, NOT_MET)
#: requirement text is cut to this many characters in the matrix (the CSV holds it in full)
TEXT_WIDTH = 220


@dataclass(frozen=True)
class Requirement:
    """One row of the requirements CSV."""

    ref: str
    level: str
    actors: str
    url: str
    text: str

    @property
    def number(self) -> int:
        return int(self.ref.rsplit("@", 1)[1])


@dataclass(frozen=True)
class Exclusion:
    """Why a row is not verified by a test: ``status`` is ``not applicable`` or ``not met``."""

    ref: str
    status: str
    reason: str


@dataclass(frozen=True)
class Row:
    """A requirement with its verdict, as the matrix shows it."""

    requirement: Requirement
    status: str
    tests: tuple[str, ...] = ()
    reason: str = ""


def load_requirements(path: Path = REQUIREMENTS_CSV) -> list[Requirement]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [Requirement(r["ref"].strip(), r["conformance"].strip(), r["actors"].strip(), r["spec_url"].strip(),
                            r["requirement"].strip()) for r in csv.DictReader(handle)]
    return sorted(rows, key=lambda r: r.number)


def load_exclusions(path: Path = EXCLUSIONS_CSV) -> dict[str, Exclusion]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [Exclusion(r["ref"].strip(), r["status"].strip(), r["reason"].strip()) for r in csv.DictReader(handle)]
    out: dict[str, Exclusion] = {}
    for row in rows:
        if row.ref in out:
            raise ValueError(f"{path.name}: {row.ref} is listed twice")
        out[row.ref] = row
    return out


# ------------------------------------------------------------------------------------------ collection


def display_name(nodeid: str) -> str:
    """``tests/test_x.py::test_y[param]`` -> ``tests/test_x.py::test_y``: one name per test function."""
    return nodeid.split("[", 1)[0]


class TraceCollector:
    """A pytest plugin that records, at the end of collection, which test names which requirement."""

    def __init__(self) -> None:
        self.traces: dict[str, set[str]] = {}
        self.errors: list[str] = []

    def pytest_collection_finish(self, session) -> None:
        for item in session.items:
            for mark in item.iter_markers(MARKER):
                if not mark.args or mark.kwargs:
                    self.errors.append(f"{display_name(item.nodeid)}: @pytest.mark.{MARKER} takes references only")
                for ref in mark.args:
                    if not isinstance(ref, str) or not REF.fullmatch(ref):
                        self.errors.append(f"{display_name(item.nodeid)}: {ref!r} is not a cds-hooks_2.0@N reference")
                        continue
                    self.traces.setdefault(ref, set()).add(display_name(item.nodeid))


def collect_traces(paths: Sequence[str] = ("tests",)) -> dict[str, tuple[str, ...]]:
    """Run pytest's collection (nothing is executed) and return ref -> sorted test names.

    :raises RuntimeError: collection failed, or a marker names something that is not a reference.
    """
    import os

    import pytest

    collector = TraceCollector()
    output = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)  # node ids are relative to the rootdir whatever directory this was started from
    try:
        with redirect_stdout(output), redirect_stderr(output):
            code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *paths], plugins=[collector])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise RuntimeError(f"pytest collection failed (exit {int(code)}):\n{output.getvalue()[-4000:]}")
    if collector.errors:
        raise RuntimeError("\n".join(sorted(set(collector.errors))))
    return {ref: tuple(sorted(names)) for ref, names in collector.traces.items()}


# --------------------------------------------------------------------------------------------- verdict


def build_rows(requirements: Iterable[Requirement], traces: Mapping[str, Sequence[str]],
               exclusions: Mapping[str, Exclusion]) -> list[Row]:
    rows = []
    for requirement in sorted(requirements, key=lambda r: r.number):
        tests = tuple(sorted(traces.get(requirement.ref, ())))
        exclusion = exclusions.get(requirement.ref)
        if tests:
            rows.append(Row(requirement, TESTED, tests))
        elif exclusion is not None:
            rows.append(Row(requirement, exclusion.status, reason=exclusion.reason))
        elif requirement.level in MUST_TRACE:
            rows.append(Row(requirement, UNTRACED))
        else:
            rows.append(Row(requirement, NOT_CLAIMED))
    return rows


def problems(requirements: Sequence[Requirement], traces: Mapping[str, Sequence[str]],
             exclusions: Mapping[str, Exclusion]) -> list[str]:
    """Everything that makes the traceability incomplete or inconsistent; empty when it is sound."""
    found: list[str] = []
    known = {r.ref for r in requirements}
    if len(known) != len(requirements):
        found.append("the requirements CSV lists a reference twice")
    for requirement in requirements:
        if requirement.level not in LEVELS:
            found.append(f"{requirement.ref}: unknown level {requirement.level!r}")
    for ref in sorted(set(traces) - known, key=_number):
        found.append(f"{ref} is named by {', '.join(traces[ref])} but is not in the requirements CSV")
    for ref, exclusion in sorted(exclusions.items(), key=lambda item: _number(item[0])):
        if ref not in known:
            found.append(f"{ref} is listed in the exclusions but is not in the requirements CSV")
        if exclusion.status not in EXCLUSION_STATUSES:
            found.append(f"{ref}: exclusion status must be one of {EXCLUSION_STATUSES}, not {exclusion.status!r}")
        if not exclusion.reason or "\n" in exclusion.reason:
            found.append(f"{ref}: an exclusion needs a one-line reason")
        if traces.get(ref):
            found.append(f"{ref} is both tested ({', '.join(traces[ref])}) and excluded: drop the exclusion")
    for row in build_rows(requirements, traces, exclusions):
        if row.status == UNTRACED:
            found.append(f"{row.requirement.ref} ({row.requirement.level}) has neither a test "
                         f"(@pytest.mark.{MARKER}) nor a reason in {EXCLUSIONS_CSV.name}")
    return found


def _number(ref: str) -> int:
    match = REF.fullmatch(ref)
    return int(match.group(1)) if match else sys.maxsize


# ---------------------------------------------------------------------------------------------- matrix


def _cell(text: str) -> str:
    """One Markdown table cell: a single line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 1].rstrip() + "…"


def render(rows: Sequence[Row]) -> str:
    """The coverage matrix as Markdown; the same rows always give the same bytes."""
    statuses = (TESTED, NOT_APPLICABLE, NOT_MET, NOT_CLAIMED, UNTRACED)
    counts = {level: dict.fromkeys(statuses, 0) for level in LEVELS}
    for row in rows:
        counts[row.requirement.level][row.status] += 1
    lines = [
        "# CDS Hooks 2.0 conformance matrix",
        "",
        "<!-- Generated by `python -m tests.conformance`; do not edit by hand. -->",
        "",
        "Every requirement of CDS Hooks 2.0 that binds a CDS Service (the rows of",
        "[`cds-hooks_2.0_service-requirements.csv`](cds-hooks_2.0_service-requirements.csv), provenance in",
        "[`README.md`](README.md)), with the tests that verify it or the reason it does not apply.",
        "",
        "A test names the requirements it verifies with `@pytest.mark.requirement(\"cds-hooks_2.0@N\", ...)`;",
        "reasons are in [`conformance-exclusions.csv`](conformance-exclusions.csv). This file is generated from",
        "both by `python -m tests.conformance`. `tests/test_conformance.py` fails when it is stale or when a",
        "SHALL, SHALL NOT, SHOULD or SHOULD NOT row has neither a test nor a reason.",
        "Run a row's tests with `pytest -m requirement -k <test name>`, or all of them with `pytest -m requirement`.",
        "",
        "Status: **tested**: at least one test verifies it; **not applicable**: it does not bind this service",
        "(reason given); **not met**: the service does not meet it yet (reason given); **not claimed**: an",
        "optional (MAY) feature the service does not use.",
        "",
        "## Summary",
        "",
        "| level | rows | tested | not applicable | not met | not claimed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = dict.fromkeys(statuses, 0)
    for level in LEVELS:
        level_counts = counts[level]
        rows_at_level = sum(level_counts.values())
        if not rows_at_level:
            continue
        for status in statuses:
            total[status] += level_counts[status]
        lines.append(f"| {level} | {rows_at_level} | {level_counts[TESTED]} | {level_counts[NOT_APPLICABLE]} | "
                     f"{level_counts[NOT_MET]} | {level_counts[NOT_CLAIMED]} |")
    lines.append(f"| **all** | **{len(rows)}** | **{total[TESTED]}** | **{total[NOT_APPLICABLE]}** | "
                 f"**{total[NOT_MET]}** | **{total[NOT_CLAIMED]}** |")
    if total[UNTRACED]:
        lines.extend(["", f"**{total[UNTRACED]} row(s) are UNTRACED: the check fails.**"])
    lines.extend(["", "## Requirements", "",
                  "| ref | level | requirement | status | verified by / reason |",
                  "|---|---|---|---|---|"])
    for row in rows:
        req = row.requirement
        evidence = "<br>".join(f"`{name}`" for name in row.tests) if row.tests else _cell(row.reason)
        lines.append(f"| [{req.ref}]({req.url}) | {req.level} | {_cell(_short(req.text))} | {row.status} | "
                     f"{evidence} |")
    return "\n".join(lines) + "\n"


def generate(traces: Mapping[str, Sequence[str]] | None = None) -> tuple[str, list[str]]:
    """The matrix text and the list of problems (collecting the tests when ``traces`` is not given)."""
    requirements = load_requirements()
    exclusions = load_exclusions()
    traces = collect_traces() if traces is None else traces
    return render(build_rows(requirements, traces, exclusions)), problems(requirements, traces, exclusions)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help=f"do not write; exit 1 if {MATRIX.relative_to(ROOT)} is stale or a row is untraced")
    args = parser.parse_args(argv)
    text, found = generate()
    current = MATRIX.read_text(encoding="utf-8") if MATRIX.exists() else ""
    for problem in found:
        print(f"conformance: {problem}", file=sys.stderr)
    if args.check:
        if current != text:
            print(f"conformance: {MATRIX.relative_to(ROOT)} is stale: run `python -m tests.conformance`",
                  file=sys.stderr)
            return 1
        return 1 if found else 0
    if current != text:
        MATRIX.write_text(text, encoding="utf-8")
        print(f"wrote {MATRIX.relative_to(ROOT)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
