"""The lab and steroid timeline (``plugin/trends.py``) as pure functions: FHIR resources in, HTML/SVG out;
and the ``smart`` link the CK, electrolyte and steroid cards carry when the app is served."""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import builders as b
import pytest

from cds_hooks.apps import AppPage
from cds_hooks.cards import card_problems
from plugin import rules, trends
from plugin.facts import build_facts
from plugin.hooks import advise
from plugin.settings import settings_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import trends_data as data  # noqa: E402

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=trends.WINDOW_DAYS)
LAUNCH_URL = "https://cds.example.org/smart-apps/trends/launch"


def page_for(bundle, view=None, **config):
    by_key = {"patient": ("Patient",), "labs": ("Observation",), "conditions": ("Condition",),
              "medicationRequests": ("MedicationRequest",), "medicationStatements": ("MedicationStatement",),
              "medicationAdministrations": ("MedicationAdministration",)}
    resources = {key: tuple(data.resources_of(bundle, *types)) for key, types in by_key.items()}
    resources["symptoms"] = ()
    return AppPage("trends-1", resources, NOW, view=view, config=MappingProxyType(config))


def chart_points(html: str, chart_id: str) -> dict[str, float]:
    """``{data-source: data-value}`` of every plotted point of one chart."""
    svg = re.search(rf'<svg[^>]* id="{chart_id}".*?</svg>', html, re.S)
    assert svg, f"no {chart_id}"
    found = re.findall(r'<circle class="dot[^"]*"[^>]*data-source="([^"]+)"[^>]*data-value="([^"]+)"', svg.group(0))
    return {source: float(value) for source, value in found}


@pytest.fixture(scope="module")
def timeline():
    return data.timeline_patient(NOW)


@pytest.fixture(scope="module")
def html(timeline):
    return trends.render(page_for(timeline))


# --------------------------------------------------------------------------------------- the charts


@pytest.mark.parametrize("chart", ["chart-ck", "chart-potassium", "chart-magnesium", "chart-calcium"])
def test_every_plotted_point_is_a_fixture_value_traced_to_its_observation(html, timeline, chart):
    expected = data.expected_points(timeline)[chart]
    plotted = chart_points(html, chart)
    assert set(plotted) == set(expected)
    for source, value in expected.items():
        assert plotted[source] == pytest.approx(value, abs=0.006), source


def test_results_that_are_not_results_are_listed_with_the_reason_and_never_plotted(html):
    rows = {source: row for source, row in re.findall(r'<tr data-source="(Observation/[^"]+)">(.*?)</tr>', html)}
    plotted = {s for chart in ("chart-ck", "chart-magnesium", "chart-potassium") for s in chart_points(html, chart)}
    assert "status entered-in-error" in rows["Observation/ck-error"]
    assert "9999 U/L" in rows["Observation/ck-error"]  # shown as sent
    assert "0.62 (no unit)" in rows["Observation/mg-nounit"] and "no unit" in rows["Observation/mg-nounit"]
    assert "haemolysed" in rows["Observation/ck-text"] and "no numeric value" in rows["Observation/ck-text"]
    assert not plotted & {"Observation/ck-error", "Observation/mg-nounit", "Observation/ck-text"}


def test_a_preliminary_result_is_plotted_hollow_and_the_latest_final_is_the_summary(html):
    assert re.search(r'<circle class="dot preliminary"[^>]*data-source="Observation/k-prelim"', html)
    summary = re.search(r'Potassium: latest ([\d.]+) mmol/L', html)
    assert summary and summary.group(1) == "3.1"  # k-prelim (3.0, preliminary) is newer but not final


def test_magnesium_in_mmol_per_litre_is_charted_in_mg_per_decilitre(html):
    assert chart_points(html, "chart-magnesium")["Observation/mg-mmol"] == pytest.approx(0.70 / 0.4114, abs=0.006)


def electrolytes_page(*observations):
    """The timeline patient with these lab results only."""
    bundle = data.timeline_patient(NOW)
    entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Observation"]
    return trends.render(page_for({"entry": entries + [{"resource": o} for o in observations]}, view="electrolytes"))


def chart_of(html, chart_id):
    svg = re.search(rf'<svg[^>]* id="{chart_id}".*?</svg>', html, re.S)
    assert svg, f"no {chart_id}"
    bands = re.findall(r'<rect class="band ([\w-]+)"[^>]*><title>([^<]*)</title>', svg.group(0))
    rules = [(css, float(v)) for css, v in re.findall(r'<g class="rule ([\w-]+)" data-value="([\d.]+)"', svg.group(0))]
    return svg.group(0), bands, rules


def table_note(html, source):
    row = re.search(rf'<tr data-source="{re.escape(source)}">(.*?)</tr>', html)
    assert row, source
    return re.findall(r"<td>(.*?)</td>", row.group(1))[-2]


def test_without_a_lab_range_the_electrolyte_charts_draw_the_default_cut_offs_and_say_so():
    """10.2: no reference range from the lab: the potassium chart draws the service's default low (3.5) and high
    (5.5) and the critical cut-offs (2.5, 6.0 mmol/L), from plugin/settings.py, and the summary says so."""
    settings = settings_for({})
    assert (settings.hypokalemia_mmol_l, settings.hyperkalemia_mmol_l) == (3.5, 5.5)
    assert (settings.hypokalemia_critical_mmol_l, settings.hyperkalemia_critical_mmol_l) == (2.5, 6.0)
    html = electrolytes_page(
        data.observation("k-low", "potassium", NOW - timedelta(days=9), 3.2, ref=False),
        data.observation("k-crit", "potassium", NOW - timedelta(days=5), 2.4, ref=False),
        data.observation("k-high", "potassium", NOW - timedelta(days=3), 5.7, ref=False))
    _, bands, rules = chart_of(html, "chart-potassium")
    assert ("rule-low", 3.5) in rules and ("rule-limit", 5.5) in rules
    assert ("rule-critical", 2.5) in rules and ("rule-critical", 6.0) in rules
    assert {css for css, _ in bands} == {"band-normal", "band-low", "band-high", "band-critical"}
    assert "the lab's reference range" not in {title for _, title in bands}
    summary = re.search(r'<section[^>]*id="view-electrolytes".*?<p class="summary">(.*?)</p>', html, re.S).group(1)
    assert ("Range drawn: the service&#x27;s default cut-offs, low below 3.5 and high from 5.5 mmol/L (the lab "
            "gave no reference range); critical below 2.5 and from 6 mmol/L") in summary
    # each result is read as the card reads it (plugin/labs.py), on the default cut-offs
    assert table_note(html, "Observation/k-low") == "low (default cut-off)"
    assert table_note(html, "Observation/k-crit") == "critical low (default cut-off)"
    assert table_note(html, "Observation/k-high") == "high (default cut-off)"


def test_with_a_lab_range_the_chart_draws_the_labs_range_and_the_default_critical_cut_offs():
    html = electrolytes_page(data.observation("mg-1", "magnesium", NOW - timedelta(days=3), 1.5),
                             data.observation("mg-2", "magnesium", NOW - timedelta(days=2), 1.1))
    _, bands, rules = chart_of(html, "chart-magnesium")
    assert ("band-normal", "the lab&#x27;s reference range") in bands
    assert "band-low" not in {css for css, _ in bands}  # the lab's range, not the default low, says what is low
    assert ("rule-limit", 1.7) in rules and ("rule-limit", 2.4) in rules and ("rule-critical", 1.2) in rules
    assert "Range drawn: the lab&#x27;s reference range, 1.70–2.40 mg/dL" in html
    assert table_note(html, "Observation/mg-1") == "low"
    assert table_note(html, "Observation/mg-2") == "critical low"


def test_calcium_and_ionized_calcium_charts_use_the_cited_calcium_defaults():
    """10.2: total calcium low below 8.5 and critical below 6.0 mg/dL; ionized calcium low below 1.12 and
    critical below 0.78 mmol/L (settings, StatPearls and the ARUP critical values), when the lab gives no
    range. Ionized calcium has its own value set and chart."""
    settings = settings_for({})
    assert (settings.hypocalcemia_mg_dl, settings.hypocalcemia_critical_mg_dl) == (8.5, 6.0)
    assert (settings.ionized_hypocalcemia_mmol_l, settings.ionized_hypocalcemia_critical_mmol_l) == (1.12, 0.78)
    html = electrolytes_page(
        data.observation("ca-1", "calcium", NOW - timedelta(days=3), 8.1, ref=False),
        data.observation("ca-mmol", "calcium", NOW - timedelta(days=2), 2.0, unit="mmol/L", ref=False),
        data.observation("ica-1", "calcium", NOW - timedelta(days=2), 1.05, unit="mmol/L", code="1995-0", ref=False))
    _, _, rules = chart_of(html, "chart-calcium")
    assert ("rule-low", 8.5) in rules and ("rule-critical", 6.0) in rules
    assert chart_points(html, "chart-calcium") == pytest.approx({"Observation/ca-1": 8.1,
                                                                 "Observation/ca-mmol": 2.0 / 0.2495}, abs=0.05)
    _, _, rules = chart_of(html, "chart-ionized-calcium")
    assert ("rule-low", 1.12) in rules and ("rule-critical", 0.78) in rules
    assert chart_points(html, "chart-ionized-calcium") == {"Observation/ica-1": 1.05}
    assert table_note(html, "Observation/ica-1") == "low (default cut-off)"
    assert "Graded as measured: the card corrects a total calcium for a same-day albumin." in html


def test_the_lab_query_asks_for_ionized_calcium():
    labs_query = trends.queries("p1", NOW)["labs"]
    assert "1995-0" in labs_query and "17861-6" in labs_query


def test_a_value_without_a_unit_is_read_as_the_card_reads_it_or_listed_as_not_interpretable():
    """10.2: a magnesium of 2.0 from a mass-concentration code is a mg/dL value (plotted, and the table says how
    it was read); 0.62 fits no mass unit: not interpretable, listed, never plotted."""
    html = electrolytes_page(data.observation("mg-bare", "magnesium", NOW - timedelta(days=3), 2.0, unit=None),
                             data.observation("mg-odd", "magnesium", NOW - timedelta(days=2), 0.62, unit=None))
    assert chart_points(html, "chart-magnesium") == {"Observation/mg-bare": 2.0}
    assert "no unit: read as mg/dL" in table_note(html, "Observation/mg-bare")
    assert table_note(html, "Observation/mg-odd").startswith("not interpretable: no unit, and 0.62 is not a "
                                                             "plausible value")


def test_a_haemolysed_potassium_is_listed_not_plotted():
    """10.2: a haemolysed specimen is no valid potassium (the card does not read it): listed with the reason."""
    haemolysed = data.observation("k-hem", "potassium", NOW - timedelta(days=2), 5.9)
    haemolysed["note"] = [{"text": "Specimen haemolysed"}]
    html = electrolytes_page(haemolysed, data.observation("k-ok", "potassium", NOW - timedelta(days=1), 4.2))
    assert chart_points(html, "chart-potassium") == {"Observation/k-ok": 4.2}
    assert "haemolysed specimen" in table_note(html, "Observation/k-hem")


def test_ck_is_graded_against_the_labs_own_limit_and_its_multiples(html):
    rules = dict(re.findall(r'<g class="rule ([\w-]+)" data-value="([\d.]+)"', re.search(
        r'<svg[^>]* id="chart-ck".*?</svg>', html, re.S).group(0)))
    assert float(rules["rule-limit"]) == 192  # the lab's referenceRange.high
    assert float(rules["rule-marked"]) == 192 * 5 and float(rules["rule-critical"]) == 192 * 10
    assert "Latest CK 828 U/L" in html and "4.3 × ULN" in html


def test_without_a_lab_range_the_ck_limit_is_the_default_for_the_patients_sex(timeline):
    bundle = {"entry": [e for e in timeline["entry"] if e["resource"]["resourceType"] != "Observation"]
              + [{"resource": {k: v for k, v in data.observation("ck-bare", "ck", NOW - timedelta(days=3), 500).items()
                               if k != "referenceRange"}}]}
    html = trends.render(page_for(bundle))
    assert "upper limit 192 U/L, default for women" in html
    settings = settings_for({})
    assert settings.ck_uln_female == 192


def test_fasciculation_and_red_flag_dates_are_marked_on_every_chart(html):
    for chart in ("chart-ck", "chart-potassium", "chart-steroid"):
        svg = re.search(rf'<svg[^>]* id="{chart}".*?</svg>', html, re.S).group(0)
        assert 'data-source="Condition/trends-fasc"' in svg and 'class="event fasciculation"' in svg
        assert 'data-source="Condition/trends-dysphagia"' in svg and 'class="event red-flag"' in svg


def test_the_diuretic_start_is_marked_on_the_electrolyte_charts(html):
    svg = re.search(r'<svg[^>]* id="chart-potassium".*?</svg>', html, re.S).group(0)
    start = (NOW - timedelta(days=200)).date().isoformat()
    assert re.search(rf'<g class="event medicine" data-source="MedicationRequest/furosemide" data-date="{start}"',
                     svg)


def test_the_chosen_view_comes_first():
    bundle = data.timeline_patient(NOW)
    for view in ("ck", "electrolytes", "steroid"):
        html = trends.render(page_for(bundle, view=view))
        assert re.findall(r'<section class="view" id="view-(\w+)"', html)[0] == view
        assert re.search(rf'<a href="[^"]*"[^>]* aria-current="page">{re.escape(dict(trends.VIEWS)[view])}<', html)


def test_a_patient_without_data_gets_a_readable_page():
    html = trends.render(AppPage("p", {"patient": ({"resourceType": "Patient", "id": "p"},)}, NOW))
    assert "No creatine kinase results in the last two years." in html
    assert "No potassium results in the last two years." in html
    assert "No systemic corticosteroid recorded in the last two years." in html
    assert "<svg" not in html


def test_every_chart_has_the_same_data_in_a_table_for_screen_readers(html):
    for chart, table in (("chart-ck", "table-ck"), ("chart-potassium", "table-potassium"),
                         ("chart-steroid", "table-steroid")):
        assert re.search(rf'<svg[^>]* id="{chart}"[^>]* role="img"[^>]* aria-describedby="{table}"', html)
        assert f'<table class="data" id="{table}"><caption>' in html


def test_malformed_resources_are_skipped_never_an_exception():
    bad = [
        "not a resource", None, ["a", "list"],
        {"resourceType": "Observation", "id": "x1", "status": "final", "code": {"coding": "oops"}},
        {"resourceType": "Observation", "id": "x2", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
         "effectiveDateTime": "9999-99-99", "valueQuantity": {"value": 4}},
        {"resourceType": "Observation", "id": "x3", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
         "effectiveDateTime": (NOW - timedelta(days=3)).isoformat(),
         "valueQuantity": {"value": 1e308, "unit": "mmol/L"}},
        {"resourceType": "Observation", "id": "x4", "status": ["final"],
         "code": {"coding": [{"system": "http://loinc.org", "code": "2157-6"}]},
         "effectiveDateTime": (NOW - timedelta(days=3)).isoformat(), "valueQuantity": {"value": "12", "unit": "U/L"},
         "referenceRange": [{"high": {"value": True}}, "x"]},
        {"resourceType": "Observation", "id": "<script>", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "2157-6", "display": "<b>CK</b>"}]},
         "effectiveDateTime": (NOW - timedelta(days=2)).isoformat(), "valueQuantity": {"value": 90, "unit": "<i>U/L"}},
    ]
    meds = [{"resourceType": "MedicationRequest", "id": "m1", "status": "active", "authoredOn": 12,
             "medicationCodeableConcept": {"text": "prednisone 20 MG Oral Tablet"}, "dosageInstruction": "daily"},
            {"resourceType": "MedicationStatement", "id": "m2", "status": "active",
             "medicationCodeableConcept": {"text": "prednisone 5 MG Oral Tablet"},
             "effectivePeriod": {"start": (NOW - timedelta(days=40)).isoformat()},
             "dosage": [{"doseAndRate": [{"doseQuantity": {"value": "x"}}], "timing": "daily"}]},
            {"resourceType": "MedicationAdministration", "id": "m3", "status": "completed", "dosage": [],
             "medicationCodeableConcept": {"text": "methylprednisolone 1000 MG Injection"},
             "effectiveDateTime": (NOW - timedelta(days=5)).isoformat()}]
    page = AppPage("p", {"patient": ({"gender": ["x"]},), "labs": tuple(bad), "conditions": tuple(bad),
                         "symptoms": tuple(bad), "medicationRequests": tuple(meds[:1] + bad),
                         "medicationStatements": tuple(meds[1:2]), "medicationAdministrations": tuple(meds[2:])}, NOW)
    html = trends.render(page)
    assert "<script>" not in html and "<b>CK</b>" not in html and "<i>U/L" not in html
    assert "Observation/&lt;script&gt;" in html
    rows = dict(re.findall(r'<tr data-source="(Observation/x\d)">(.*?)</tr>', html))
    assert "implausible value" in rows["Observation/x3"]
    assert "status (no status)" in rows["Observation/x4"]  # a list is not a status: listed, not plotted
    assert "Observation/x2" not in rows  # no usable date: counted, not shown
    # invalid medication records are skipped with a note, as the steroid card skips them
    for where in ("MedicationRequest/m1", "MedicationStatement/m2", "MedicationAdministration/m3"):
        assert f"{where} skipped: not valid FHIR R4" in html


# ------------------------------------------------------------------------------------ steroid dose


def test_the_dose_series_follows_the_pulse_and_the_taper(timeline):
    plan = data.steroid_plan(NOW)
    meds = data.resources_of(timeline, "MedicationRequest", "MedicationAdministration")
    series = trends.prednisone_dose_series(meds, SINCE, NOW)
    by_start = {(s.start.date(), s.mg) for s in series.steps}
    assert (plan["pulse"].date(), 1250.0) in by_start  # methylprednisolone 1 g x 1.25
    assert (plan["raised"].date(), 60.0) in by_start
    for start, mg in zip(plan["taper"][1:], plan["doses"][1:], strict=True):
        assert (start.date(), float(mg)) in by_start
    assert series.steps[-1].mg == 10.0 and series.steps[-1].sources == ("MedicationRequest/pred-taper",)
    assert [g.mg for g in series.given] == [1250.0, 1250.0, 1250.0]
    assert [g.day.date() for g in series.given] == [(plan["pulse"] + timedelta(days=i)).date() for i in range(3)]
    assert all(s.mg == 0.0 for s in series.steps if not s.sources)
    # the steps cover the window without gaps or overlaps
    assert series.steps[0].start == SINCE and series.steps[-1].end == NOW
    assert all(a.end == b.start for a, b in zip(series.steps, series.steps[1:], strict=False))


def test_a_taper_in_sequence_and_bounds_duration_steps_is_charted_step_by_step():
    """10.1: dosage lines with sequence and boundsDuration are consecutive steps from authoredOn (a 40/30/20/10
    taper in 7-day steps is 30 mg/day on day 10), not four doses added up."""
    start = NOW - timedelta(days=10)
    lines = []
    for number, mg in enumerate((40, 30, 20, 10), 1):
        line = data.daily(mg, sequence=number)
        line["timing"]["repeat"]["boundsDuration"] = {"value": 7, "unit": "d", "system": data.UCUM, "code": "d"}
        lines.append(line)
    taper = data.medication_request("t", "312615", "prednisone 20 MG Oral Tablet", "active", start, lines)
    steps = trends.prednisone_dose_series([taper], SINCE, NOW).steps
    assert [(s.start.date(), s.mg) for s in steps if s.sources] == [
        (start.date(), 40.0), ((start + timedelta(days=7)).date(), 30.0)]
    assert steps[-1].mg == 30.0


def test_a_request_and_a_statement_for_one_ingredient_are_one_dose_not_two():
    """10.1: a MedicationRequest and a MedicationStatement for prednisone 20 mg daily are 20 mg/day, not 40."""
    start = NOW - timedelta(days=30)
    request = data.medication_request("r", "312615", "prednisone 20 MG Oral Tablet", "active", start, [data.daily(20)])
    statement = {"resourceType": "MedicationStatement", "id": "s", "status": "active",
                 "medicationCodeableConcept": {"text": "prednisone 20 MG Oral Tablet"},
                 "effectivePeriod": {"start": start.isoformat()}, "dosage": [data.daily(20)]}
    series = trends.prednisone_dose_series([request, statement], SINCE, NOW)
    assert series.steps[-1].mg == 20.0
    assert series.steps[-1].sources == ("MedicationRequest/r",)


def test_different_ingredients_add_up_as_prednisone_equivalents():
    start = NOW - timedelta(days=30)
    pred = data.medication_request("p", "312615", "prednisone 20 MG Oral Tablet", "active", start, [data.daily(5)])
    dexa = data.medication_request("d", "3264", "dexamethasone", "active", start, [data.daily(0.75)])
    assert trends.prednisone_dose_series([pred, dexa], SINCE, NOW).steps[-1].mg == pytest.approx(10.0)


PREDNISONE = ("312615", "predniSONE 20 MG Oral Tablet")
METHYLPREDNISOLONE = ("6902", "methylprednisolone")
DEXAMETHASONE = ("3264", "dexamethasone")
HYDROCORTISONE = ("5492", "hydrocortisone")


def card_timeline(resources):
    """The steroid card's own timeline of these resources (rules.steroid_timeline on the hook's facts)."""
    request = b.hook_request(b.baseline(*resources))
    return rules.steroid_timeline(build_facts(request), settings_for({}))


def chart_series(resources):
    return trends.prednisone_dose_series([copy.deepcopy(r) for r in resources], b.NOW - timedelta(days=730), b.NOW)


AGREEMENT_CASES = {
    "request and statement, one ingredient": lambda: [
        b.medication_request(*PREDNISONE, dosages=[b.dosage(20)]),
        b.medication_statement(*PREDNISONE, dosages=[b.dosage(20)])],
    "taper in boundsDuration steps": lambda: [b.medication_request(*PREDNISONE, authored_days_ago=10, dosages=[
        {**b.dosage(mg, bounds_duration_days=7), "sequence": n} for n, mg in enumerate((40, 30, 20, 10), 1)])],
    "pulse given in hospital 10 hours ago, no order": lambda: [
        b.medication_administration(*METHYLPREDNISOLONE, days_ago=10 / 24, dose=1000)],
    "two doses on one day, summed": lambda: [
        b.medication_administration(*HYDROCORTISONE, days_ago=0.5, dose=100),
        b.medication_administration(*HYDROCORTISONE, days_ago=0.2, dose=100)],
    "two ingredients add up": lambda: [
        b.medication_request(*PREDNISONE, dosages=[b.dosage(5)]),
        b.medication_request(*DEXAMETHASONE, dosages=[b.dosage(0.75)])],
    "an active order whose every line has ended": lambda: [
        b.medication_request(*PREDNISONE, authored_days_ago=40, dosages=[b.dosage(20, bounds_days=(40, 10))])],
    "a completed course": lambda: [
        b.medication_request(*PREDNISONE, status="completed", authored_days_ago=60,
                             dosages=[b.dosage(60, bounds_days=(60, 30))])],
    "dose not computable": lambda: [b.medication_statement(*PREDNISONE, dosages=[{"text": "as directed"}])],
}


@pytest.mark.parametrize("case", AGREEMENT_CASES)
def test_the_chart_and_the_card_read_one_dose_from_the_medication_timeline(case):
    """10.1: the chart's dose now is the steroid card's (one timeline, plugin/timeline.py): one record per
    ingredient, steps on the calendar, administrations of the last day, ingredients added up."""
    resources = AGREEMENT_CASES[case]()
    card = card_timeline(resources)
    now = chart_series(resources).steps[-1]
    if any(not c.dose.computable for c in card.in_force):
        assert now.mg is None and "not computable" in now.detail
    else:
        assert now.mg == pytest.approx(card.total)
    chosen = {c.chosen.where for c in card.in_force if c.chosen is not None}
    chosen |= {f"MedicationAdministration/{m.resource_id}" for c in card.in_force for m in c.administrations}
    assert set(now.sources) == chosen


def test_a_course_that_has_ended_is_charted_while_it_ran():
    """The completed 60 mg course (60 to 30 days ago) and an active order whose bounds ended 10 days ago
    are in the chart's past at their dose, and at 0 now, as the card (which counts neither) says."""
    completed = b.medication_request(*PREDNISONE, status="completed", authored_days_ago=60,
                                     dosages=[b.dosage(60, bounds_days=(60, 30))])
    ended = b.medication_request(*DEXAMETHASONE, authored_days_ago=25, dosages=[b.dosage(1.5, bounds_days=(25, 10))])
    steps = chart_series([completed, ended]).steps
    ran = [(s.start.date(), s.end.date(), s.mg) for s in steps if s.sources]
    assert ran == [((b.NOW - timedelta(days=60)).date(), (b.NOW - timedelta(days=30)).date(), 60.0),
                   ((b.NOW - timedelta(days=25)).date(), (b.NOW - timedelta(days=10)).date(), 10.0)]
    assert steps[-1].mg == 0.0 and card_timeline([completed, ended]).total == 0


def test_a_dose_given_day_after_day_is_one_step_and_each_day_is_listed_as_given():
    """A care home's administration record: hydrocortisone 50 mg every morning for 30 days is one step of
    12.5 mg/day prednisone equivalent (the timeline's dose of the last day given), with 30 days given, not 30
    steps; and it is the card's dose now."""
    given = [b.medication_administration(*HYDROCORTISONE, days_ago=day + 0.2, dose=50) for day in range(30)]
    series = chart_series(given)
    dosed = [s for s in series.steps if s.mg]
    assert len(dosed) == 1 and dosed[0].mg == 12.5 and dosed[0].end == b.NOW
    assert dosed[0].start == b.NOW - timedelta(days=29.2)
    assert [g.mg for g in series.given] == [12.5] * 30
    assert card_timeline(given).total == 12.5


def test_records_without_dates_are_charted_as_far_as_they_can_be_and_say_so():
    """An active order without authoredOn or any start is current (the card counts it): charted over the
    window, with a note; a completed one without an end is charted for its first day, with a note."""
    undated = b.medication_request(*PREDNISONE, dosages=[b.dosage(5)])
    del undated["authoredOn"]
    done = b.medication_request(*DEXAMETHASONE, status="completed", authored_days_ago=20, dosages=[b.dosage(1.5)])
    series = chart_series([undated, done])
    assert series.steps[0].mg == 5.0 and series.steps[-1].mg == 5.0
    first_day = next(s for s in series.steps if s.mg == 15.0)
    assert first_day.start.date() == (b.NOW - timedelta(days=20)).date()
    assert first_day.end - first_day.start == timedelta(days=1)
    assert any(f"MedicationRequest/{undated['id']}" in n and "no start date" in n for n in series.notes)
    assert any(f"MedicationRequest/{done['id']}" in n and "first day only" in n for n in series.notes)


def test_the_dose_chart_draws_the_bands_and_puts_pulses_above_the_axis(html):
    svg = re.search(r'<svg[^>]* id="chart-steroid".*?</svg>', html, re.S).group(0)
    assert re.search(r'<g class="step clipped" data-source="MedicationRequest/mp-pulse" data-value="1250"', svg)
    assert re.search(r'<g class="step" data-source="MedicationRequest/pred-taper" data-value="10"', svg)
    assert 'class="band band-normal"' in svg and 'class="band band-critical"' not in svg.split("mg/day")[0]
    assert "Now: 10 mg/day prednisone equivalent (medium)" in html
    # the order's three days, then its last administration's 24 hours: one pulse, labelled once
    assert svg.count("▲") == 1 and "1 pulse (≥ 250 mg/day)" in html


# ------------------------------------------------------------------------------------- card links


def assert_drill_down_link(card, view):
    """The card's context-specific drill-down view is its first link, a SMART launch (type smart) whose
    appContext, a string, names the view; its other links are absolute and carry no appContext; the source
    url stays the static evidence page."""
    link = card["links"][0]
    assert link == {"label": "Open the lab and steroid timeline", "url": LAUNCH_URL, "type": "smart",
                    "appContext": f"view={view}"}
    assert isinstance(link["appContext"], str)
    others = card["links"][1:]
    assert others and all(other["type"] == "absolute" and "appContext" not in other for other in others)
    assert card["source"]["url"] != LAUNCH_URL


SMART_LINK_REQUIREMENTS = ("cds-hooks_2.0@110", "cds-hooks_2.0@142", "cds-hooks_2.0@144", "cds-hooks_2.0@145",
                           "cds-hooks_2.0@146", "cds-hooks_2.0@147")


@pytest.mark.requirement(*SMART_LINK_REQUIREMENTS)
@pytest.mark.parametrize(("resources", "topic", "view"), [
    ([], "ck-testing", "ck"),
    ([b.ck(900)], "ck-elevated", "ck"),
    ([], "electrolyte-testing", "electrolytes"),
    ([b.ck(100), b.potassium(2.9)], "electrolyte-abnormal", "electrolytes"),
])
def test_ck_and_electrolyte_cards_link_to_the_timeline_when_the_app_is_served(resources, topic, view):
    request = replace(b.hook_request(b.baseline(*resources)), smart_apps=MappingProxyType({"trends": LAUNCH_URL}))
    card = b.card(advise(request), topic)
    assert card_problems(card) == []
    assert_drill_down_link(card, view)


@pytest.mark.requirement(*SMART_LINK_REQUIREMENTS)
def test_the_steroid_card_opens_the_steroid_view():
    prednisone = b.medication_request("312615", "prednisone 20 MG Oral Tablet", dosages=[b.dosage(40)])
    request = replace(b.hook_request(b.baseline(prednisone)), smart_apps=MappingProxyType({"trends": LAUNCH_URL}))
    card = b.card(advise(request), "steroid-review")
    assert card_problems(card) == []
    assert_drill_down_link(card, "steroid")


def test_no_smart_link_when_the_app_is_not_served_or_the_card_has_no_view():
    cards = advise(b.hook_request(b.baseline()))
    assert not any(link["type"] == "smart" for c in cards for link in c.get("links", []))
    request = replace(b.hook_request(b.baseline(b.condition("40739000", b.SNOMED, days_ago=1))),
                      smart_apps=MappingProxyType({"trends": LAUNCH_URL}))
    red_flag = b.card(advise(request), "red-flag-urgent")
    assert not any(link["type"] == "smart" for link in red_flag["links"])
