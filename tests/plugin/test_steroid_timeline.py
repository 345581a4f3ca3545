"""The corticosteroid timeline (CLINICAL-CONTENT.md 10.1, "one current dose per ingredient") and the steroid
card wording of 10.5 ("the steroid summary names the drug"): each reviewed defect as a scenario (request in,
cards out), then the calendar arithmetic of plugin/timeline.py and robustness against malformed dosage.

Baseline unless stated: adult female, active confirmed SLE (M32.9), fasciculation R25.3 recorded 3 days
ago, no labs, patient-view; ``NOW`` is 2025-03-15T12:00Z.
"""

from __future__ import annotations

from datetime import timedelta

import builders as b
import pytest
from builders import NOW, baseline, card, run, topics

from plugin import timeline
from plugin.facts import MedicationFact

STEROID = "steroid-review"
PREDNISONE = ("8640", "prednisone")
PREDNISONE_20_TAB = ("312615", "predniSONE 20 MG Oral Tablet")
METHYLPREDNISOLONE = ("6902", "methylprednisolone")
METHYLPRED_1G = ("1743726", "methylprednisolone 1000 MG Injection")
DEXAMETHASONE = ("3264", "dexamethasone")
ORAL, IV = "26643006", "47625008"


def med(drug, *dosages, **kw):
    return b.medication_request(drug[0], drug[1], dosages=dosages, **kw)


def daily(mg, **kw):
    return b.dosage(mg, "mg", route=ORAL, **kw)


def step(mg, sequence, days=7, **kw):
    """A taper step: ``mg`` once daily for ``days`` days (boundsDuration), ``sequence`` in the taper."""
    return b.dosage(mg, "mg", route=ORAL, bounds_duration_days=days, sequence=sequence, **kw)


def day(days_ago: float) -> str:
    return b.ago(days_ago)[:10]


def steroid_card(cards):
    return card(cards, STEROID)


# ================================================================= the reviewed defects (10.1, 10.5)


def test_10_1_taper_steps_with_bounds_duration_give_todays_step_30_mg_on_day_10():
    """A 40/30/20/10 mg taper in steps of 7 days (boundsDuration) was read as 100 mg/day: on day 10 it is
    30 mg/day (step 2)."""
    taper = med(PREDNISONE, step(40, 1), step(30, 2), step(20, 3), step(10, 4), authored_days_ago=9)
    steroid = steroid_card(run(baseline(taper)))
    assert steroid["indicator"] == "info"
    assert steroid["summary"].startswith("Prednisone 30 mg/day is above the SLE maintenance target")
    assert "100" not in steroid["summary"]
    assert f"taper step 2 of 4 ({day(2)} to {day(-4)})" in steroid["detail"]


@pytest.mark.parametrize("days_into_taper, mg", [(0, 40), (6, 40), (7, 30), (13, 30), (14, 20), (27, 10)])
def test_10_1_each_taper_step_applies_for_its_seven_days(days_into_taper, mg):
    taper = med(PREDNISONE, step(40, 1), step(30, 2), step(20, 3), step(10, 4), authored_days_ago=days_into_taper)
    assert f"Prednisone {mg} mg/day" in steroid_card(run(baseline(taper)))["summary"]


def test_10_1_taper_steps_with_date_only_bounds_hand_over_on_their_changeover_day():
    """Steps written as boundsPeriod dates that touch (step 1 ends the day step 2 starts) are not added up on
    that day: the new step applies (30 mg/day, not 40 + 30 = 70). Two lines over the same days still add up."""
    changeover = NOW.date().isoformat()
    first = daily(40)
    first["timing"]["repeat"]["boundsPeriod"] = {"start": day(7), "end": changeover}
    second = daily(30)
    second["timing"]["repeat"]["boundsPeriod"] = {"start": changeover, "end": day(-7)}
    summary = steroid_card(run(baseline(med(PREDNISONE, first, second, authored_days_ago=7))))["summary"]
    assert summary.startswith("Prednisone 30 mg/day") and "70" not in summary
    morning, evening = daily(20, bounds_days=(7, -7)), daily(20, bounds_days=(7, -7))
    split = steroid_card(run(baseline(med(PREDNISONE, morning, evening, authored_days_ago=7))))["summary"]
    assert split.startswith("Prednisone 40 mg/day")


def test_10_1_a_taper_whose_last_step_has_passed_has_ended():
    taper = med(PREDNISONE, step(40, 1), step(30, 2), step(20, 3), step(10, 4), authored_days_ago=28)
    assert STEROID not in topics(run(baseline(taper)))


def test_10_1_request_and_statement_of_the_same_prednisone_are_20_mg_not_40():
    request = med(PREDNISONE_20_TAB, b.dosage(1, None, route=ORAL))
    statement = b.medication_statement(*PREDNISONE, dosages=[daily(20)])
    steroid = steroid_card(run(baseline(request, statement)))
    assert steroid["indicator"] == "info" and steroid["summary"].startswith("Prednisone 20 mg/day ")
    assert "40" not in steroid["summary"]
    assert "not added (one therapy, one dose): prednisone (MedicationStatement active" in steroid["detail"]
    assert statement["id"] in steroid["detail"] and request["id"] in steroid["detail"]


def test_10_1_without_a_current_request_the_most_recent_statement_counts():
    older = b.medication_statement(*PREDNISONE, start_days_ago=200, dosages=[daily(40)], dateAsserted=b.ago(150))
    newer = b.medication_statement(*PREDNISONE, start_days_ago=20, dosages=[daily(10)], dateAsserted=b.ago(5))
    stopped = med(PREDNISONE, daily(60), status="stopped")
    steroid = steroid_card(run(baseline(older, newer, stopped)))
    assert steroid["summary"].startswith("Prednisone 10 mg/day ")


def test_10_1_order_sign_taper_draft_is_current_40_proposed_10_judged_on_10():
    """At order-sign a taper from 40 mg to a new 10 mg draft was read as '50 mg/day (high dose)'."""
    current = med(PREDNISONE, daily(40))
    draft = b.draft_bundle(med(PREDNISONE, daily(10), status="draft", authored_days_ago=0))
    steroid = steroid_card(run(baseline(current), hook="order-sign", draft_orders=draft))
    assert steroid["indicator"] == "info"  # a taper down is not a high dose
    assert "Prednisone current 40 mg/day -> proposed 10 mg/day" in steroid["summary"]
    assert "Continue the taper" in steroid["summary"] and "high" not in steroid["summary"]
    assert "50" not in steroid["summary"]
    assert "judged on the proposed dose" in steroid["detail"]


def test_10_1_a_draft_raising_the_dose_is_judged_on_the_raised_dose():
    current = med(PREDNISONE, daily(10))
    draft = b.draft_bundle(med(PREDNISONE, daily(60), status="draft", authored_days_ago=0))
    steroid = steroid_card(run(baseline(current), hook="order-select", draft_orders=draft))
    assert steroid["indicator"] == "warning"
    assert "Prednisone current 10 mg/day -> proposed 60 mg/day (high dose)" in steroid["summary"]


def test_10_1_a_changed_order_sent_back_with_its_own_id_is_a_proposed_change():
    current = med(PREDNISONE, daily(40))
    changed = {**current, "status": "draft", "dosageInstruction": [daily(20)]}
    steroid = steroid_card(run(baseline(current), hook="order-sign", draft_orders=b.draft_bundle(changed)))
    assert "current 40 mg/day -> proposed 20 mg/day" in steroid["summary"]


def test_10_1_pulse_that_ended_46_days_ago_with_its_order_left_active_is_not_current():
    """Read as '1,250 mg/day' before: the course's every bound has passed, and it ended more than 30
    days ago, so it is neither a current dose nor a recent pulse."""
    pulse = med(METHYLPRED_1G, b.dosage(1, "g", route=IV, bounds_days=(48, 46)), authored_days_ago=48)
    assert pulse["status"] == "active"
    assert STEROID not in topics(run(baseline(pulse)))
    prednisone = med(PREDNISONE, daily(20))
    steroid = steroid_card(run(baseline(pulse, prednisone)))
    assert steroid["summary"].startswith("Prednisone 20 mg/day ") and "pulse" not in steroid["summary"]
    assert "pulse" not in steroid["detail"].lower().replace("pulse >=", "")
    assert f"Ended {day(46)} (every dosage bound has passed, although its status is active)" in steroid["detail"]


def test_10_1_pulse_recorded_only_as_administrations_gives_a_pulse_card_with_its_dates():
    given = [b.medication_administration(*METHYLPRED_1G, days_ago=d, dose=1, unit="g", route=IV)
             for d in (12, 11, 10)]
    steroid = steroid_card(run(baseline(*given)))
    assert steroid["indicator"] == "warning"
    assert steroid["summary"] == (
        f"Methylprednisolone 1,000 mg/day pulse (prednisone-eq 1,250 mg/day), {day(12)} to {day(10)}: monitor "
        "weakness, K+, glucose")
    assert "3 MedicationAdministrations" in steroid["detail"]


def test_10_1_a_days_administrations_are_added_up():
    """Two 100 mg doses on one day are 200 mg methylprednisolone = 250 mg prednisone: a pulse, although
    neither dose is one alone."""
    given = [b.medication_administration(*METHYLPREDNISOLONE, days_ago=4, hours=h, dose=100) for h in (0, 6)]
    steroid = steroid_card(run(baseline(*given)))
    assert "200 mg/day pulse (prednisone-eq 250 mg/day), on " in steroid["summary"]
    one = b.medication_administration(*METHYLPREDNISOLONE, days_ago=4, dose=100)
    assert STEROID not in topics(run(baseline(one)))


def test_10_1_todays_administrations_are_the_current_dose():
    given = [b.medication_administration(*PREDNISONE_20_TAB, days_ago=0.2, dose=2, unit="{tbl}")]
    steroid = steroid_card(run(baseline(*given)))
    assert steroid["indicator"] == "warning" and steroid["summary"].startswith("Prednisone 40 mg/day (high dose)")
    old = [b.medication_administration(*PREDNISONE_20_TAB, days_ago=3, dose=2, unit="{tbl}")]
    assert STEROID not in topics(run(baseline(*old)))


@pytest.mark.parametrize("status", ["not-done", "entered-in-error", "stopped", "on-hold", "unknown"])
def test_10_1_administrations_not_given_are_not_read(status):
    given = [b.medication_administration(*METHYLPRED_1G, days_ago=d, dose=1, unit="g", status=status)
             for d in (3, 2)]
    assert STEROID not in topics(run(baseline(*given)))


def test_10_1_an_order_and_its_administrations_are_one_pulse():
    order = med(METHYLPRED_1G, b.dosage(1, "g", route=IV, bounds_days=(8, 6)), status="completed",
                authored_days_ago=8)
    given = [b.medication_administration(*METHYLPRED_1G, days_ago=d, dose=1, unit="g") for d in (8, 7, 6)]
    steroid = steroid_card(run(baseline(order, *given)))
    assert f"{day(8)} to {day(6)}" in steroid["summary"]
    assert steroid["detail"].count("Recent pulse:") == 1


def test_10_1_sandbox_pill_count_without_unit_is_strength_times_count():
    """The public CDS Hooks Sandbox sends doseQuantity {"value": 3, "code": "{pill}"} (no unit): it gave
    'dose not computable'; it is 3 x 20 mg = 60 mg/day."""
    draft = {
        "resourceType": "MedicationRequest", "id": "request-123", "status": "draft", "intent": "order",
        "subject": b.subject(), "authoredOn": NOW.date().isoformat(),
        "medicationCodeableConcept": {"text": PREDNISONE_20_TAB[1], "coding": [
            {"display": PREDNISONE_20_TAB[1], "system": b.RXNORM, "code": PREDNISONE_20_TAB[0]}]},
        "dosageInstruction": [{
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 3, "system": b.UCUM, "code": "{pill}"}}]}],
    }
    steroid = steroid_card(run(baseline(), hook="order-select", draft_orders=b.draft_bundle(draft)))
    assert steroid["indicator"] == "warning"
    assert steroid["summary"].startswith("Proposed prednisone 60 mg/day (high dose)")
    assert "3 tablets × 20 mg = 60 mg" in steroid["detail"]


@pytest.mark.parametrize("unit", ["{pill}", "{tbl}", "{tablet}", "{tab}", "{capsule}", "{cap}", "1", "tablet(s)",
                                  "tab", "capsule(s)", "TAB"])
@pytest.mark.parametrize("where", ["code", "unit"])
def test_10_1_dose_form_units_mean_one_unit_of_the_product(unit, where):
    line = b.dosage(2, None, route=ORAL)
    line["doseAndRate"][0]["doseQuantity"][where] = unit
    steroid = steroid_card(run(baseline(med(PREDNISONE_20_TAB, line))))
    assert steroid["summary"].startswith("Prednisone 40 mg/day (high dose)")


def test_10_1_count_bounds_a_course_1_g_x_3_doses_ends_after_the_third():
    course = b.dosage(1, "g", route=IV)
    course["timing"]["repeat"]["count"] = 3
    ended = med(METHYLPRED_1G, course, authored_days_ago=5)  # doses on days -5, -4, -3
    steroid = steroid_card(run(baseline(ended)))
    assert steroid["indicator"] == "warning"
    assert f"pulse (prednisone-eq 1,250 mg/day), {day(5)} to {day(3)}:" in steroid["summary"]
    assert "Recent pulse:" in steroid["detail"]
    ongoing = med(METHYLPRED_1G, course, authored_days_ago=1)  # second dose today
    steroid = steroid_card(run(baseline(ongoing)))
    assert f"{day(1)} to {day(-1)}:" in steroid["summary"] and "Pulse: methylprednisolone" in steroid["detail"]


@pytest.mark.parametrize("status", ["active", "on-hold"])
def test_10_1_a_course_whose_every_bound_has_passed_has_ended_whatever_its_status(status):
    request = med(PREDNISONE, daily(40, bounds_days=(60, 20)), status=status)
    statement = b.medication_statement(*PREDNISONE, start_days_ago=40, dosages=[daily(40, bounds_duration_days=14)])
    assert STEROID not in topics(run(baseline(request)))
    assert STEROID not in topics(run(baseline(statement)))


def test_10_1_a_line_with_bounds_period_counts_only_inside_it():
    later = med(PREDNISONE, daily(40, bounds_days=(-3, -10)))  # starts in three days
    assert STEROID not in topics(run(baseline(later)))


def test_10_1_recent_pulse_is_named_with_its_dates():
    pulse = med(METHYLPRED_1G, b.dosage(1, "g", route=IV, bounds_days=(13, 10)), status="completed",
                authored_days_ago=13)
    steroid = steroid_card(run(baseline(pulse)))
    assert steroid["summary"].startswith(f"Methylprednisolone 1,000 mg/day pulse (prednisone-eq 1,250 mg/day), "
                                         f"{day(13)} to {day(10)}:")


def test_10_1_different_ingredients_are_still_summed_as_prednisone_equivalents():
    cards = run(baseline(med(PREDNISONE, daily(20)), med(DEXAMETHASONE, daily(3))))
    steroid = steroid_card(cards)
    assert steroid["indicator"] == "warning"
    assert steroid["summary"].startswith(
        "Prednisone 20 mg/day + dexamethasone 3 mg/day = prednisone 40 mg/day (high dose)")
    assert "Total: 40 mg prednisone-equivalent/day" in steroid["detail"]


def test_10_5_steroid_summary_names_the_drug_and_its_prednisone_equivalent():
    steroid = steroid_card(run(baseline(med(DEXAMETHASONE, daily(12)))))
    assert steroid["summary"].startswith("Dexamethasone 12 mg/day = prednisone 80 mg/day (high dose)")


def test_10_1_data_total_is_the_judged_prednisone_equivalent():
    """data["total"] (read for mg/kg/day in children) is the dose the bands are judged on."""
    from plugin.facts import build_facts
    from plugin.rules import steroid_rule
    from plugin.settings import Settings

    draft = b.draft_bundle(med(DEXAMETHASONE, daily(1.5), status="draft", authored_days_ago=0))
    request = b.hook_request(baseline(med(DEXAMETHASONE, daily(6)), med(PREDNISONE, daily(5))), hook="order-sign",
                             draft_orders=draft)
    finding = steroid_rule(build_facts(request), Settings.from_config({}))
    assert finding.data["total"] == pytest.approx(15)  # 1.5 mg dexamethasone = 10 mg, + 5 mg prednisone
    assert finding.variant == "medium"


# ============================================================================ prefetch and fetch path


def test_10_1_administrations_are_prefetched_newest_first_without_relative_dates():
    from plugin.hooks import prefetch_templates

    template = prefetch_templates()["medicationAdministrations"]
    assert template.startswith("MedicationAdministration?patient={{context.patientId}}&")
    assert "status=completed,in-progress" in template and "_sort=-effective-time" in template
    assert "_count=" in template and "date=" not in template


def test_the_fixture_search_evaluator_sorts_administrations_by_effective_time():
    from plugin import fixtures

    given = [{"resourceType": "MedicationAdministration", "id": f"a{i}", "status": "completed",
              "subject": {"reference": "Patient/p"}, "effectiveDateTime": when}
             for i, when in enumerate(["2026-01-02T08:00:00Z", "2026-03-01T08:00:00Z", "2026-02-01T08:00:00Z"])]
    found = fixtures.search(given, "MedicationAdministration?patient=p&status=completed&_sort=-effective-time"
                                   "&_count=2")
    assert [e["resource"]["id"] for e in found["entry"]] == ["a1", "a2"] and found["total"] == 3


def test_administrations_are_validated_only_when_a_rule_reads_their_class(monkeypatch):
    """The hot path stays cheap: with CK normal no rule reads myotoxic medicines, so a statin given on the
    ward is never validated; the steroid given is."""
    from plugin import facts

    validated, real = [], facts.validate

    def spy(model, raw, *args):
        validated.append(raw.get("id"))
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    statin = b.medication_administration("617312", "atorvastatin 10 MG Oral Tablet", days_ago=0.5, dose=1,
                                         unit="{tbl}")
    steroid = b.medication_administration(*METHYLPRED_1G, days_ago=3, dose=1, unit="g")
    assert STEROID in topics(run(baseline(b.ck(100), statin, steroid)))
    assert steroid["id"] in validated and statin["id"] not in validated


# ================================================================================= the calendar itself


def fact(resource_type="MedicationRequest", dosages=(), **kw) -> MedicationFact:
    fields = {"info": None, "classes": frozenset(), "resource_type": resource_type, "resource_id": "x",
              "status": "active", "current": True, "from_draft_orders": False, "started": None,
              "course_end": None, "dosages": tuple(dosages)}
    fields.update(kw)
    return MedicationFact(**fields)


def test_steps_sharing_a_sequence_number_run_together_and_an_open_line_follows_the_steps():
    lines = [step(40, 1), step(5, 1, days=3), step(20, 2), daily(10, sequence=3)]
    record = timeline.schedule(fact(dosages=lines, authored_on=NOW - timedelta(days=1)), NOW)
    first, shared, second, open_line = record.lines
    assert first.start == shared.start == NOW - timedelta(days=1)
    assert second.start == first.end + timedelta(microseconds=1) and second.step == 2 and second.steps == 2
    assert open_line.start == second.end + timedelta(microseconds=1) and open_line.end is None
    assert [line.index for line in record.lines_at(NOW)] == [1, 2]


def test_lines_without_bounds_apply_together_from_the_start():
    record = timeline.schedule(fact(dosages=[daily(20, sequence=1), daily(10, sequence=2)]), NOW)
    assert [line.start for line in record.lines] == [None, None] and len(record.lines_at(NOW)) == 2


def test_steps_without_a_start_date_start_today_with_a_note():
    record = timeline.schedule(fact(dosages=[step(40, 1), step(20, 2)]), NOW)
    assert record.lines[0].start == NOW and "without a start date" in record.notes[0]


@pytest.mark.parametrize(
    "repeat, problem",
    [
        ({"boundsDuration": {"value": 3_000_000, "unit": "d"}}, "out of range"),
        ({"boundsDuration": {"value": "x", "unit": "d"}}, "no usable value"),
        ({"boundsDuration": {"value": 3, "unit": "fortnight"}}, "no usable value"),
        ({"boundsDuration": [3]}, "not a Duration"),
        ({"count": "abc"}, "whole number"),
        ({"count": 1e308}, "out of range"),
        ({"count": 2.5}, "whole number"),
        ({"boundsPeriod": {"start": "yesterday"}}, "cannot be read"),
        ({"boundsPeriod": {"start": "2025-03-10", "end": "2025-03-01"}}, "ends before it starts"),
        ({"boundsPeriod": {"start": "9999-12-31T23:59:59Z"}, "boundsDuration": {"value": 5, "unit": "d"}},
         "out of range"),
    ],
)
def test_malformed_bounds_skip_the_line_with_a_note_and_never_raise(repeat, problem):
    line = daily(20)
    line["timing"]["repeat"].update(repeat)
    record = timeline.schedule(fact(dosages=[line], authored_on=NOW - timedelta(days=2)), NOW)
    assert record.lines == () and problem in record.notes[0] and "dosage line 1 skipped" in record.notes[0]


@pytest.mark.parametrize(
    "change",
    [
        {"timing": {"repeat": {"boundsDuration": {"value": 3_000_000, "unit": "d"}, "frequency": 1, "period": 1,
                               "periodUnit": "d"}}},
        {"timing": {"repeat": {"boundsPeriod": {"start": "9999-12-31"}, "frequency": 1, "period": 1,
                               "periodUnit": "d"}}},
        {"timing": {"repeat": {"count": "3", "frequency": 1, "period": 1, "periodUnit": "d"}}},
        {"timing": {"repeat": {"count": [3], "frequency": 1e308, "period": 1e-308, "periodUnit": ["d"]}}},
        {"doseAndRate": [{"doseQuantity": {"value": 1e308, "unit": "mg"}}]},
        {"doseAndRate": [{"doseQuantity": {"value": "NaN", "code": "{pill}"}}]},
        {"doseAndRate": [{"doseQuantity": {"value": 10**400, "code": "mg"}}]},
        {"sequence": {"value": 1}},
    ],
)
def test_malformed_dosage_never_raises_and_never_invents_a_dose(change):
    line = {**daily(40), **change}
    for resource in (med(PREDNISONE_20_TAB, line), b.medication_statement(*PREDNISONE_20_TAB, dosages=[line])):
        cards = run(baseline(resource))
        for c in cards:
            assert "1e+308" not in c["summary"] and "inf" not in c["summary"]


def test_a_string_count_is_read():
    course = b.dosage(1, "g", route=IV)
    course["timing"]["repeat"]["count"] = "3"
    steroid = steroid_card(run(baseline(med(METHYLPRED_1G, course, authored_days_ago=5))))
    assert f"{day(5)} to {day(3)}" in steroid["summary"]


def test_a_huge_bound_is_named_in_the_card_detail():
    line = daily(40)
    line["timing"]["repeat"]["boundsDuration"] = {"value": 3_000_000, "unit": "d"}
    steroid = steroid_card(run(baseline(med(PREDNISONE, line))))
    assert "dose not computable" in steroid["summary"]
    assert "Dosage not read: MedicationRequest/" in steroid["detail"] and "out of range" in steroid["detail"]


@pytest.mark.parametrize(
    "change",
    [
        {"effectiveDateTime": "9999-12-31T23:59:59Z"},
        {"effectiveDateTime": "0001-01-01T00:00:00+14:00"},
        {"effectiveDateTime": None, "effectivePeriod": {"start": "0001-01-01", "end": "9999-12-31"}},
        {"dosage": {"dose": {"value": 1e308, "unit": "g"}}},
        {"dosage": {"rateQuantity": {"value": 1e308, "unit": "mg/h"}}},
        {"dosage": [{"dose": {"value": 1, "unit": "g"}}]},
        {"dosage": "1 g"},
    ],
)
def test_malformed_administrations_never_raise(change):
    given = b.medication_administration(*METHYLPRED_1G, days_ago=1, dose=1, unit="g")
    given.update(change)
    given = {k: v for k, v in given.items() if v is not None}
    for c in run(baseline(given)):
        assert "inf" not in c["summary"]



@pytest.mark.parametrize("status", [["active"], {"code": "active"}, 1])
def test_a_status_of_the_wrong_type_never_raises(status):
    for resource in (med(PREDNISONE, daily(40)), b.medication_administration(*METHYLPRED_1G, days_ago=1, dose=1,
                                                                               unit="g")):
        resource["status"] = status
        assert STEROID not in topics(run(baseline(resource)))


def test_a_dispense_request_of_the_wrong_type_never_raises():
    resource = med(PREDNISONE, daily(40))
    resource["dispenseRequest"] = [{"validityPeriod": {"end": "2020-01-01"}}]
    assert STEROID not in topics(run(baseline(resource)))  # invalid FHIR: skipped with a note


# ====================================================================== the fixture patients (goldens)


@pytest.mark.parametrize(
    "name, hook, start",
    [
        ("sle-prednisone-taper-steps", "patient-view", "Prednisone 30 mg/day is above the SLE maintenance target"),
        ("sle-prednisone-order-and-list", "patient-view", "Prednisone 20 mg/day is above the SLE maintenance target"),
        ("sle-prednisone-taper-order-sign", "order-sign", "Prednisone current 40 mg/day -> proposed 10 mg/day is "),
        ("sle-prednisone-taper-order-sign", "patient-view", "Prednisone 40 mg/day (high dose)"),
        ("sle-pulse-administrations-only", "patient-view",
         "Methylprednisolone 1,000 mg/day pulse (prednisone-eq 1,250 mg/day), 2026-11-13 to 2026-11-15:"),
        ("sle-sandbox-pill-dose", "order-select", "Proposed prednisone 60 mg/day (high dose)"),
        ("sle-dexamethasone-statement", "patient-view", "Dexamethasone 6 mg/day = prednisone 40 mg/day (high dose)"),
    ],
)
def test_10_1_fixture_patients_give_the_corrected_steroid_card(name, hook, start):
    from plugin import fixtures

    summaries = [c["summary"] for c in fixtures.load_expected(name, hook) if c["topic"] == STEROID]
    assert len(summaries) == 1 and summaries[0].startswith(start), summaries


def test_10_1_the_old_pulse_fixture_patient_has_no_card():
    from plugin import fixtures

    assert all(fixtures.load_expected("sle-old-pulse-order-left-active", hook) == [] for hook in fixtures.HOOKS)
    statuses = {r["resourceType"]: r["status"] for r in fixtures.bundle_resources(
        fixtures.load_bundle("sle-old-pulse-order-left-active")) if r["resourceType"] == "MedicationRequest"
        and "methylPREDNISolone" in r["medicationCodeableConcept"]["text"]}
    assert statuses == {"MedicationRequest": "active"}
