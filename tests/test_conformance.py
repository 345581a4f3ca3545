"""The conformance matrix (docs/conformance.md) is current, and every CDS Hooks 2.0 requirement that must be
traced is: each SHALL, SHALL NOT, SHOULD and SHOULD NOT row is verified by a test that names it
(``@pytest.mark.requirement``) or has a one-line reason in docs/conformance-exclusions.csv.

The check itself runs ``python -m tests.conformance --check`` (pytest collection in a fresh process, so the
whole test suite is seen whichever tests this run selected); the other tests pin the checker's rules.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import conformance
import pytest
from conformance import (
    NOT_APPLICABLE,
    NOT_CLAIMED,
    NOT_MET,
    TESTED,
    UNTRACED,
    Exclusion,
    Requirement,
    TraceCollector,
    build_rows,
    problems,
    render,
)
from conftest import ROOT


def test_matrix_is_current_and_every_required_row_is_tested_or_has_a_reason():
    result = subprocess.run([sys.executable, "-m", "tests.conformance", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_file_holds_the_120_service_rows():
    requirements = conformance.load_requirements()
    assert len(requirements) == len({r.ref for r in requirements}) == 120
    assert Counter(r.level for r in requirements) == {"SHALL": 69, "SHALL NOT": 4, "SHOULD": 17, "SHOULD NOT": 1,
                                                      "MAY": 28, "DEPRECATED": 1}
    assert all("Service" in r.actors and r.url.startswith("https://cds-hooks.hl7.org/2.0/#") for r in requirements)


def test_matrix_lists_every_row_once():
    text = conformance.MATRIX.read_text(encoding="utf-8")
    listed = [line.split("]", 1)[0].removeprefix("| [") for line in text.splitlines()
              if line.startswith("| [cds-hooks_2.0@")]
    assert sorted(listed, key=lambda ref: int(ref.split("@")[1])) == [r.ref for r in conformance.load_requirements()]
    assert "UNTRACED" not in text


def test_exclusions_are_one_line_reasons_for_known_rows():
    exclusions = conformance.load_exclusions()
    known = {r.ref for r in conformance.load_requirements()}
    assert exclusions and set(exclusions) <= known
    for exclusion in exclusions.values():
        assert exclusion.status in (NOT_APPLICABLE, NOT_MET) and 20 < len(exclusion.reason) < 300


# --- the checker's rules, on made-up data --------------------------------------------------------


def requirement(number: int, level: str) -> Requirement:
    return Requirement(f"cds-hooks_2.0@{number}", level, "Service", "https://cds-hooks.hl7.org/2.0/#x",
                       f"text {number}")


REQUIREMENTS = [requirement(1, "SHALL"), requirement(2, "SHALL NOT"), requirement(3, "SHOULD"),
                requirement(4, "SHOULD NOT"), requirement(5, "MAY"), requirement(6, "DEPRECATED")]


@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_an_untraced_mandatory_or_recommended_row_is_a_problem(number):
    traces = {r.ref: ("tests/test_x.py::test_y",) for r in REQUIREMENTS if r.number != number}
    found = problems(REQUIREMENTS, traces, {})
    assert found == [f"cds-hooks_2.0@{number} ({REQUIREMENTS[number - 1].level}) has neither a test "
                     f"(@pytest.mark.requirement) nor a reason in conformance-exclusions.csv"]
    assert problems(REQUIREMENTS, traces, {f"cds-hooks_2.0@{number}": Exclusion(
        f"cds-hooks_2.0@{number}", NOT_APPLICABLE, "a client obligation, not the service's")}) == []


def test_an_untraced_may_row_is_not_claimed_not_a_problem():
    traces = {r.ref: ("t::a",) for r in REQUIREMENTS if r.number not in (5, 6)}
    assert problems(REQUIREMENTS, traces, {}) == []
    statuses = {row.requirement.number: row.status for row in build_rows(REQUIREMENTS, traces, {})}
    assert statuses == {1: TESTED, 2: TESTED, 3: TESTED, 4: TESTED, 5: NOT_CLAIMED, 6: NOT_CLAIMED}


def test_inconsistent_traces_and_exclusions_are_problems():
    traces = {r.ref: ("t::a",) for r in REQUIREMENTS} | {"cds-hooks_2.0@99": ("t::b",)}
    exclusions = {"cds-hooks_2.0@1": Exclusion("cds-hooks_2.0@1", NOT_APPLICABLE, "also tested"),
                  "cds-hooks_2.0@77": Exclusion("cds-hooks_2.0@77", NOT_APPLICABLE, "unknown row"),
                  "cds-hooks_2.0@5": Exclusion("cds-hooks_2.0@5", "maybe", "bad status")}
    found = "\n".join(problems(REQUIREMENTS, traces, exclusions))
    assert "cds-hooks_2.0@99 is named by t::b but is not in the requirements CSV" in found
    assert "cds-hooks_2.0@77 is listed in the exclusions but is not in the requirements CSV" in found
    assert "cds-hooks_2.0@1 is both tested (t::a) and excluded" in found
    assert "cds-hooks_2.0@5: exclusion status must be one of" in found


def test_render_is_deterministic_and_counts_each_level():
    traces = {"cds-hooks_2.0@1": ("tests/b.py::test_b", "tests/a.py::test_a")}
    exclusions = {"cds-hooks_2.0@3": Exclusion("cds-hooks_2.0@3", NOT_MET, "not yet | soon")}
    rows = build_rows(REQUIREMENTS, traces, exclusions)
    text = render(rows)
    assert text == render(build_rows(list(reversed(REQUIREMENTS)), traces, exclusions))
    assert "| SHALL | 1 | 1 | 0 | 0 | 0 |" in text and "| SHOULD | 1 | 0 | 0 | 1 | 0 |" in text
    assert "`tests/a.py::test_a`<br>`tests/b.py::test_b`" in text
    assert "not yet \\| soon" in text, "a pipe in a reason cannot break the table"
    assert "2 row(s) are UNTRACED" in text and f"| {UNTRACED} |" in text


def item(nodeid: str, *marks) -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, iter_markers=lambda name: [m for m in marks if name == "requirement"])


def test_collector_records_each_test_function_once_and_rejects_malformed_references():
    mark = SimpleNamespace(args=("cds-hooks_2.0@1", "cds-hooks_2.0@2"), kwargs={})
    collector = TraceCollector()
    collector.pytest_collection_finish(SimpleNamespace(items=[
        item("tests/t.py::test_a[one]", mark), item("tests/t.py::test_a[two]", mark),
        item("tests/t.py::test_b", SimpleNamespace(args=("cds-hooks_2.0@1", "SEC-12"), kwargs={})),
        item("tests/t.py::test_c", SimpleNamespace(args=(), kwargs={"ref": "cds-hooks_2.0@1"})),
    ]))
    assert {ref: sorted(names) for ref, names in collector.traces.items()} == {
        "cds-hooks_2.0@1": ["tests/t.py::test_a", "tests/t.py::test_b"], "cds-hooks_2.0@2": ["tests/t.py::test_a"]}
    assert collector.errors == ["tests/t.py::test_b: 'SEC-12' is not a cds-hooks_2.0@N reference",
                                "tests/t.py::test_c: @pytest.mark.requirement takes references only"]
