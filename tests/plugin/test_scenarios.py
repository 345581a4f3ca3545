"""The 42 scenarios of CLINICAL-CONTENT.md section 6, each as a test calling the service handler directly,
then the boundary of every window and threshold, robustness of the fact builder, and the service
definitions (prefetch templates, CLI rule book).

Baseline unless stated: adult female, active confirmed SLE (M32.9), fasciculation R25.3 recorded 3 days
ago, no labs, no medicines, patient-view.
"""

from __future__ import annotations

# the clinical suite needs the terminology and medication modules of the plugin (built separately)
import builders as b  # noqa: E402
import pytest
from builders import CPT, ICD10, LOINC, SNOMED, baseline, card, ordered_codes, run, topics

# RxNorm concepts used below (ingredient concepts unless noted; section 3.1 / 3.2)
PREDNISONE_20_TAB = ("312615", "predniSONE 20 MG Oral Tablet")  # SCD, Synthea's lupus module
PREDNISONE = ("8640", "prednisone")
METHYLPREDNISOLONE = ("6902", "methylprednisolone")
DEXAMETHASONE = ("3264", "dexamethasone")
HYDROCORTISONE = ("5492", "hydrocortisone")
GABAPENTIN = ("25480", "gabapentin")
FUROSEMIDE = ("4603", "furosemide")
PANTOPRAZOLE = ("40790", "pantoprazole")
BUDESONIDE = ("19831", "budesonide")
ORAL, IV = "26643006", "47625008"  # SNOMED routes
OPHTHALMIC, TOPICAL, INHALED = "54485002", "6064005", "447694001"

CK_TESTING, CK_ELEVATED = "ck-testing", "ck-elevated"
E_TESTING, E_ABNORMAL = "electrolyte-testing", "electrolyte-abnormal"
STEROID, NEUROACTIVE, RED_FLAG, NCS = (
    "steroid-review",
    "neuroactive-medication-review",
    "red-flag-urgent",
    "ncs-emg",
)
BASELINE_TOPICS = {CK_TESTING: "info", E_TESTING: "info"}


def med(drug: tuple[str, str], *dosages, **kw):
    return b.medication_request(drug[0], drug[1], dosages=dosages, **kw)


def daily(mg: float, route: str = ORAL, **kw):
    return b.dosage(mg, "mg", route=route, **kw)


# ============================================================================ section 6: the scenarios


def test_s01_baseline_ck_and_electrolyte_order_cards():
    cards = run(baseline())
    assert topics(cards) == BASELINE_TOPICS
    assert ordered_codes(card(cards, CK_TESTING)) == ["2157-6"]
    assert ordered_codes(card(cards, E_TESTING)) == ["2823-3", "19123-9"]


@pytest.mark.parametrize("status", ["inactive", "resolved"])
def test_s02_sle_inactive_or_resolved_gives_no_cards(status):
    assert run(baseline(sle_condition=b.sle(clinical=status))) == []


@pytest.mark.parametrize("verification", ["entered-in-error", "refuted"])
def test_s03_sle_entered_in_error_or_refuted_gives_no_cards(verification):
    assert run(baseline(sle_condition=b.sle(verification=verification))) == []


@pytest.mark.parametrize("code, system", [("L93.0", ICD10), ("200938002", SNOMED)])
def test_s04_discoid_lupus_only_gives_no_cards(code, system):
    assert run(baseline(sle_condition=b.sle(code, system))) == []


def test_s05_synthea_lupus_code_counts_by_default_and_not_when_switched_off():
    synthea = b.sle("200936003", SNOMED)
    cards = run(baseline(sle_condition=synthea))
    assert topics(cards) == BASELINE_TOPICS
    assert "Lupus type unspecified" in card(cards, CK_TESTING)["detail"]
    assert run(baseline(sle_condition=synthea), config={"LUPUS_CDS_COUNT_UNSPECIFIED_LUPUS": "false"}) == []


@pytest.mark.parametrize("code, system", [("D68.62", ICD10), ("10528009", SNOMED)])
def test_s06_lupus_anticoagulant_or_lupus_vulgaris_gives_no_cards(code, system):
    assert run(baseline(sle_condition=b.sle(code, system))) == []


@pytest.mark.parametrize(
    "fasc",
    [
        pytest.param(b.fasciculation(verification="entered-in-error"), id="condition-entered-in-error"),
        pytest.param(b.fasciculation(verification="refuted"), id="condition-refuted"),
        pytest.param(
            b.observation("82470000", SNOMED, status="entered-in-error"), id="observation-entered-in-error"
        ),
        pytest.param(b.observation("82470000", SNOMED, value_boolean=False), id="observation-false"),
        pytest.param(
            b.observation("82470000", SNOMED, value_concept=b.concept("2667000", SNOMED, "Absent")),
            id="observation-absent",
        ),
    ],
)
def test_s07_negated_fasciculation_gives_no_cards(fasc):
    assert run([b.patient(), b.sle(), fasc]) == []


def test_s08_fasciculation_six_months_ago_gives_no_cards():
    assert run(baseline(fasc=b.fasciculation(days_ago=182))) == []


def test_s09_fasciculation_as_symptom_observation_75325_1():
    symptom = b.observation(
        "75325-1", LOINC, value_concept=b.concept("82470000", SNOMED, "Muscle fasciculation")
    )
    assert topics(run([b.patient(), b.sle(), symptom])) == BASELINE_TOPICS
    finding = b.observation("82470000", SNOMED, value_boolean=True)
    assert topics(run([b.patient(), b.sle(), finding])) == BASELINE_TOPICS


@pytest.mark.parametrize(
    "code, system", [("M3214", ICD10), ("M32.14", "urn:oid:2.16.840.1.113883.6.90"), (" m32.14 ", ICD10)]
)
def test_s10_icd_code_variants_recognised_as_sle_with_renal_flag(code, system):
    cards = run(baseline(sle_condition=b.sle(code, system)))
    assert topics(cards) == {CK_TESTING: "info", E_TESTING: "warning"}  # renal flag raises electrolytes
    assert "Kidney involvement" in card(cards, E_TESTING)["detail"]


def test_s11_recent_normal_ck_suppresses_ck_card_and_shows_in_other_cards():
    cards = run(baseline(b.ck(118, days_ago=10)))
    assert topics(cards) == {E_TESTING: "info"}
    assert "CK 118 U/L" in card(cards, E_TESTING)["detail"]
    assert "normal" in card(cards, E_TESTING)["detail"]


def test_s12_old_normal_ck_gives_repeat_order_with_old_value():
    cards = run(baseline(b.ck(100, days_ago=35)))
    ck_card = card(cards, CK_TESTING)
    assert ck_card["indicator"] == "info"
    assert "last CK 100 U/L" in ck_card["summary"]
    assert "Last CK 100 U/L" in ck_card["detail"]


def test_s13_ck_1540_graded_against_default_and_lab_uln():
    default = card(run(baseline(b.ck(1540))), CK_ELEVATED)
    assert default["indicator"] == "warning"
    assert "(8.0x ULN)" in default["summary"] and "CK 1,540 U/L" in default["summary"]
    assert "ULN 192 U/L (default for females" in default["detail"]
    lab = card(run(baseline(b.ck(1540, ref_low=39, ref_high=308))), CK_ELEVATED)
    assert lab["indicator"] == "warning" and "(5.0x ULN)" in lab["summary"]
    assert "lab's reference range" in lab["detail"]


def test_s14_ck_12400_critical_rhabdomyolysis_with_creatinine_and_urinalysis():
    cards = run(baseline(b.ck(12400)))
    ck_card = card(cards, CK_ELEVATED)
    assert ck_card["indicator"] == "critical" and "rhabdomyolysis" in ck_card["summary"]
    assert ordered_codes(ck_card) == ["2160-0", "24357-6"]
    assert cards[0] is not None and cards[0]["indicator"] == "critical"
    recent_creatinine = b.observation("2160-0", value=0.9, unit="mg/dL", days_ago=3)
    assert ordered_codes(card(run(baseline(b.ck(12400), recent_creatinine)), CK_ELEVATED)) == ["24357-6"]


def test_s15_ck_mb_does_not_count_as_ck():
    cards = run(baseline(b.observation("13969-1", value=3.0, unit="ng/mL", days_ago=5)))
    assert topics(cards) == BASELINE_TOPICS
    assert "CK-MB" in card(cards, CK_TESTING)["detail"]


def test_s16_ck_in_si_units_converted_and_graded():
    ck_card = card(run(baseline(b.ck(25.7, unit="ukat/L"))), CK_ELEVATED)
    assert "CK 1,542 U/L" in ck_card["summary"] and "(8.0x ULN)" in ck_card["summary"]
    assert "25.7 ukat/L = 1,542 U/L" in ck_card["detail"]


@pytest.mark.parametrize("code, system", [("2157-6", LOINC), ("82550", CPT)])
def test_s17_ck_in_draft_orders_suppresses_ck_card(code, system):
    draft = b.draft_bundle(b.service_request(code, system, status="draft"))
    cards = run(baseline(), hook="order-select", draft_orders=draft)
    assert topics(cards) == {E_TESTING: "info"}


def test_s18_pending_ck_order_suppresses_ck_card():
    cards = run(baseline(b.service_request("2157-6", status="active", authored_days_ago=1)))
    assert topics(cards) == {E_TESTING: "info"}


@pytest.mark.parametrize("value, indicator", [(3.1, "warning"), (2.3, "critical")])
def test_s19_low_potassium(value, indicator):
    cards = run(baseline(b.potassium(value, days_ago=5), b.magnesium(2.0)))
    assert topics(cards)[E_ABNORMAL] == indicator
    assert f"{value} mmol/L" in card(cards, E_ABNORMAL)["summary"]
    assert E_TESTING not in topics(cards)


def test_s20_potassium_whole_blood_code_counts():
    cards = run(baseline(b.potassium(3.1, days_ago=5, code="6298-4"), b.magnesium(2.0)))
    assert topics(cards)[E_ABNORMAL] == "warning"


def test_s21_rbc_potassium_ignored():
    cards = run(baseline(b.potassium(100, code="2824-1"), b.magnesium(2.0)))
    assert E_ABNORMAL not in topics(cards)
    assert ordered_codes(card(cards, E_TESTING)) == ["2823-3"]


@pytest.mark.parametrize(
    "value, unit, code", [(1.3, "mg/dL", "19123-9"), (0.53, "mmol/L", "2601-3"), (1.06, "meq/L", "19123-9")]
)
def test_s22_low_magnesium_in_any_unit(value, unit, code):
    cards = run(baseline(b.potassium(4.0), b.magnesium(value, unit, code=code)))
    mg_card = card(cards, E_ABNORMAL)
    assert mg_card["indicator"] == "warning"
    assert "(0.53 mmol/L)" in mg_card["summary"]


def test_s23_normal_potassium_no_magnesium_orders_magnesium_only():
    cards = run(baseline(b.potassium(4.1, days_ago=3)))
    assert topics(cards) == BASELINE_TOPICS
    assert ordered_codes(card(cards, E_TESTING)) == ["19123-9"]


def test_s24_long_term_ppi_with_low_magnesium_names_the_ppi():
    ppi = b.medication_statement(*PANTOPRAZOLE, start_days_ago=730, dosages=[daily(40)])
    cards = run(baseline(ppi, b.potassium(4.0), b.magnesium(1.5)))
    mg_card = card(cards, E_ABNORMAL)
    assert mg_card["indicator"] == "warning"
    assert "pantoprazole" in mg_card["summary"].lower()
    assert "Long-term PPI use" in mg_card["detail"]


def test_s25_furosemide_without_labs_raises_order_card_to_warning():
    cards = run(baseline(med(FUROSEMIDE, daily(40))))
    e_card = card(cards, E_TESTING)
    assert e_card["indicator"] == "warning"
    assert "furosemide" in e_card["detail"].lower() and "furosemide" in e_card["summary"].lower()


def test_s26_synthea_tablet_count_dose_80_mg_is_high():
    prednisone = med(PREDNISONE_20_TAB, b.dosage(2, None, frequency=2))
    steroid = card(run(baseline(prednisone)), STEROID)
    assert steroid["indicator"] == "warning"
    assert "80 mg/day" in steroid["summary"]


def test_s27_prednisone_40_mg_daily_is_high():
    steroid = card(run(baseline(med(PREDNISONE, daily(40)))), STEROID)
    assert steroid["indicator"] == "warning" and "40 mg/day (high dose)" in steroid["summary"]


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(med(PREDNISONE, daily(40), status="stopped"), id="stopped"),
        pytest.param(med(PREDNISONE, daily(40), status="completed"), id="completed"),
        pytest.param(
            b.medication_statement(
                *PREDNISONE, status="completed", start_days_ago=500, end_days_ago=400, dosages=[daily(40)]
            ),
            id="statement-ended-last-year",
        ),
    ],
)
def test_s28_stopped_steroid_gives_no_steroid_card(resource):
    assert STEROID not in topics(run(baseline(resource)))


def _pulse(last_dose_days_ago: float, mg: float = 1, unit: str = "g"):
    start = last_dose_days_ago + 2
    return med(
        METHYLPREDNISOLONE,
        b.dosage(mg, unit, route=IV, bounds_days=(start, last_dose_days_ago)),
        status="completed",
        authored_days_ago=start,
    )


def test_s29_methylprednisolone_pulse_10_days_ago_warns_45_days_ago_does_not():
    steroid = card(run(baseline(_pulse(10))), STEROID)
    assert steroid["indicator"] == "warning" and "pulse" in steroid["summary"]
    assert "1,250" in steroid["summary"]
    assert STEROID not in topics(run(baseline(_pulse(45))))


def test_s30_dexamethasone_6_mg_is_40_mg_prednisone_equivalent_with_arithmetic():
    steroid = card(run(baseline(med(DEXAMETHASONE, daily(6)))), STEROID)
    assert steroid["indicator"] == "warning" and "40 mg/day" in steroid["summary"]
    assert "dexamethasone" in steroid["detail"].lower() and "6" in steroid["detail"]


def test_s31_hydrocortisone_20_plus_10_is_low_dose():
    hydrocortisone = med(
        HYDROCORTISONE,
        b.dosage(20, "mg", frequency=None, route=ORAL, sequence=1),
        b.dosage(10, "mg", frequency=None, route=ORAL, sequence=2),
    )
    hydrocortisone["dosageInstruction"][0]["timing"] = {"repeat": {"timeOfDay": ["08:00:00"]}}
    hydrocortisone["dosageInstruction"][1]["timing"] = {"repeat": {"timeOfDay": ["18:00:00"]}}
    assert STEROID not in topics(run(baseline(hydrocortisone)))


def test_s32_prednisone_10_mg_every_other_day_is_no_card_and_no_pulse():
    assert STEROID not in topics(run(baseline(med(PREDNISONE, daily(10, period=2)))))


def test_s33_taper_uses_the_current_step():
    taper = med(
        PREDNISONE,
        daily(60, bounds_days=(30, 20), sequence=1),
        daily(40, bounds_days=(20, 5), sequence=2),
        daily(20, bounds_days=(5, -10), sequence=3),
    )
    steroid = card(run(baseline(taper)), STEROID)
    assert steroid["indicator"] == "info" and "20 mg/day" in steroid["summary"]


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(med(DEXAMETHASONE, daily(0.1, route=OPHTHALMIC)), id="dexamethasone-ophthalmic"),
        pytest.param(med(HYDROCORTISONE, b.dosage(1, None, route=TOPICAL)), id="hydrocortisone-topical"),
        pytest.param(med(BUDESONIDE, daily(0.5, route=INHALED)), id="budesonide-inhaled"),
    ],
)
def test_s34_topical_ophthalmic_or_inhaled_steroid_gives_no_steroid_card(resource):
    assert STEROID not in topics(run(baseline(resource)))


def test_s35_prednisone_without_dosage_is_dose_not_computable():
    steroid = card(run(baseline(med(PREDNISONE_20_TAB))), STEROID)
    assert steroid["indicator"] == "info" and "dose not computable" in steroid["summary"]


def test_s36_order_sign_draft_prednisone_60_mg():
    draft = b.draft_bundle(med(PREDNISONE, daily(60), status="draft"))
    cards = run(baseline(), hook="order-sign", draft_orders=draft)
    assert topics(cards)[STEROID] == "warning"
    assert "60 mg/day" in card(cards, STEROID)["summary"]


def test_s37_gabapentin_alone_gives_neuroactive_card():
    cards = run(baseline(med(GABAPENTIN, b.dosage(600, "mg", frequency=3))))
    assert topics(cards)[NEUROACTIVE] == "info"
    assert "gabapentin" in card(cards, NEUROACTIVE)["summary"]


def test_s37b_gabapentin_with_steroid_card_is_folded_into_it():
    cards = run(baseline(med(GABAPENTIN, b.dosage(600, "mg", frequency=3)), med(PREDNISONE, daily(40))))
    assert NEUROACTIVE not in topics(cards)
    assert "gabapentin" in card(cards, STEROID)["detail"].lower()


def test_s38_dysphagia_today_is_critical():
    cards = run(baseline(b.condition("R13.12", days_ago=0)))
    assert topics(cards)[RED_FLAG] == "critical"
    assert cards[0]["source"]["topic"]["code"] == RED_FLAG
    assert "trouble swallowing" in cards[0]["summary"]


@pytest.mark.parametrize(
    "flag",
    [
        pytest.param(b.condition("R06.02", days_ago=1), id="R06.02"),
        pytest.param(b.condition("267036007", SNOMED, days_ago=1), id="267036007"),
        pytest.param(b.condition("M62.81", days_ago=3), id="weakness-3-days"),
    ],
)
def test_s39_dyspnea_or_recent_weakness_is_critical(flag):
    assert topics(run(baseline(flag)))[RED_FLAG] == "critical"


def test_s39_weakness_40_days_ago_is_no_red_flag_but_raises_ck_card():
    cards = run(baseline(b.condition("M62.81", days_ago=40)))
    assert RED_FLAG not in topics(cards)
    assert topics(cards)[CK_TESTING] == "warning"


def test_s40_paresthesia_suggests_ncs_emg_unless_done_or_ordered():
    paresthesia = b.condition("R20.2", days_ago=5)
    cards = run(baseline(paresthesia))
    assert topics(cards)[NCS] == "info"
    assert NCS not in topics(run(baseline(paresthesia, b.procedure(performed_days_ago=90))))
    draft = b.draft_bundle(b.service_request("95910", CPT, status="draft"))
    assert NCS not in topics(run(baseline(paresthesia), hook="order-select", draft_orders=draft))


def test_s41_drug_induced_lupus_only_counts_with_the_switch():
    drug_induced = b.sle("M32.0")
    assert run(baseline(sle_condition=drug_induced)) == []
    cards = run(baseline(sle_condition=drug_induced), config={"LUPUS_CDS_COUNT_DRUG_INDUCED_LUPUS": "1"})
    assert topics(cards) == BASELINE_TOPICS
    assert "Drug-induced lupus" in card(cards, CK_TESTING)["detail"]


def test_s42_everything_at_once():
    cards = run(
        baseline(
            b.ck(1540),
            b.potassium(3.1),
            b.magnesium(2.0),
            med(PREDNISONE, daily(40)),
            b.condition("R13.12", days_ago=0),
        )
    )
    assert [c["source"]["topic"]["code"] for c in cards] == [RED_FLAG, CK_ELEVATED, E_ABNORMAL, STEROID]
    assert [c["indicator"] for c in cards] == ["critical", "warning", "warning", "warning"]
    assert len(cards) <= 5 and all(len(c["summary"]) < 140 for c in cards)


def test_s42_everything_without_magnesium_still_one_electrolyte_card():
    cards = run(
        baseline(b.ck(1540), b.potassium(3.1), med(PREDNISONE, daily(40)), b.condition("R13.12", days_ago=0))
    )
    assert len(cards) == 4
    assert "19123-9" in ordered_codes(card(cards, E_ABNORMAL))


# ========================================================================== windows and thresholds


@pytest.mark.parametrize("days, fires", [(90, True), (91, False)])
def test_fasciculation_condition_window(days, fires):
    assert bool(run(baseline(fasc=b.fasciculation(days_ago=days)))) is fires


@pytest.mark.parametrize("days, fires", [(30, True), (31, False)])
def test_fasciculation_observation_window(days, fires):
    finding = b.observation("82470000", SNOMED, days_ago=days)
    assert bool(run([b.patient(), b.sle(), finding])) is fires


def test_fasciculation_window_from_string_setting():
    config = {"LUPUS_CDS_FASCICULATION_CONDITION_DAYS": "120"}
    assert run(baseline(fasc=b.fasciculation(days_ago=100)), config=config)


def test_newly_recorded_old_onset_counts():
    fasc = b.fasciculation(days_ago=2, onset_days_ago=400)
    assert run(baseline(fasc=fasc))


@pytest.mark.parametrize(
    "value, topic, indicator",
    [
        (192, None, None),
        (193, CK_ELEVATED, "warning"),
        (959, CK_ELEVATED, "warning"),
        (960, CK_ELEVATED, "warning"),
        (1919, CK_ELEVATED, "warning"),
        (1920, CK_ELEVATED, "critical"),
    ],
)
def test_ck_thresholds_female_default_uln(value, topic, indicator):
    cards = run(baseline(b.ck(value)))
    ck_topics = {t: i for t, i in topics(cards).items() if t.startswith("ck")}
    assert ck_topics == ({} if topic is None else {topic: indicator})


def test_ck_5x_uln_adds_creatinine_and_urinalysis_below_it_repeat_ck_and_tsh():
    """Below 5x ULN the next steps are a repeat CK and a TSH (10.5), not the kidney checks of >= 5x ULN."""
    assert ordered_codes(card(run(baseline(b.ck(960))), CK_ELEVATED)) == ["2160-0", "24357-6"]
    assert ordered_codes(card(run(baseline(b.ck(959))), CK_ELEVATED)) == ["2157-6", "3016-3"]


@pytest.mark.parametrize(
    "gender, value, elevated", [("male", 308, False), ("male", 309, True), (None, 193, True)]
)
def test_ck_uln_by_sex(gender, value, elevated):
    cards = run(baseline(b.ck(value), gender=gender))
    assert (CK_ELEVATED in topics(cards)) is elevated


@pytest.mark.parametrize("days, ck_card", [(30, False), (31, True)])
def test_lab_window_for_ck(days, ck_card):
    assert (CK_TESTING in topics(run(baseline(b.ck(100, days_ago=days))))) is ck_card


@pytest.mark.parametrize(
    "value, indicator", [(3.5, None), (3.49, "warning"), (2.5, "warning"), (2.49, "critical")]
)
def test_potassium_thresholds(value, indicator):
    cards = run(baseline(b.potassium(value), b.magnesium(2.0)))
    assert topics(cards).get(E_ABNORMAL) == indicator


def test_potassium_lab_range_and_flag_win_over_default():
    assert E_ABNORMAL not in topics(
        run(baseline(b.potassium(3.4, ref_low=3.3, ref_high=5.0), b.magnesium(2.0)))
    )
    flagged = run(baseline(b.potassium(3.6, interpretation="L"), b.magnesium(2.0)))
    assert topics(flagged)[E_ABNORMAL] == "warning"
    critical = run(baseline(b.potassium(2.9, interpretation="LL"), b.magnesium(2.0)))
    assert topics(critical)[E_ABNORMAL] == "critical"


@pytest.mark.parametrize(
    "value, unit, code, low",
    [
        (1.7, "mg/dL", "19123-9", False),
        (1.69, "mg/dL", "19123-9", True),
        (0.70, "mmol/L", "2601-3", False),
        (0.69, "mmol/L", "2601-3", True),
        (1.4, "meq/L", "19123-9", False),
        (1.38, "meq/L", "19123-9", True),
    ],
)
def test_magnesium_threshold_in_each_unit(value, unit, code, low):
    cards = run(baseline(b.potassium(4.0), b.magnesium(value, unit, code=code)))
    assert (E_ABNORMAL in topics(cards)) is low


@pytest.mark.parametrize("value, indicator", [(1.2, "warning"), (1.19, "critical")])
def test_magnesium_critical_threshold(value, indicator):
    assert topics(run(baseline(b.potassium(4.0), b.magnesium(value))))[E_ABNORMAL] == indicator


def test_magnesium_cutoff_configurable():
    config = {"LUPUS_CDS_HYPOMAGNESEMIA_MG_DL": "1.46"}
    assert E_ABNORMAL not in topics(run(baseline(b.potassium(4.0), b.magnesium(1.5)), config=config))


@pytest.mark.parametrize("days, ordered", [(30, False), (31, True)])
def test_lab_window_for_potassium(days, ordered):
    cards = run(baseline(b.potassium(4.0, days_ago=days), b.magnesium(2.0)))
    assert (E_TESTING in topics(cards)) is ordered


def test_pending_potassium_order_suppresses_potassium_suggestion():
    cards = run(baseline(b.service_request("84132", CPT, status="active"), b.magnesium(2.0)))
    assert E_TESTING not in topics(cards)


@pytest.mark.parametrize("days, fires", [(14, True), (15, False)])
def test_red_flag_window(days, fires):
    assert (RED_FLAG in topics(run(baseline(b.condition("R13.12", days_ago=days))))) is fires


@pytest.mark.parametrize("days, suggested", [(365, False), (366, True)])
def test_ncs_lookback(days, suggested):
    cards = run(baseline(b.condition("R20.2", days_ago=5), b.procedure(performed_days_ago=days)))
    assert (NCS in topics(cards)) is suggested


def test_neuropathy_diagnosis_counts_whatever_its_age():
    assert NCS in topics(run(baseline(b.condition("G62.9", days_ago=1000))))


def test_weakness_with_normal_ck_suggests_emg():
    cards = run(baseline(b.condition("M62.81", days_ago=40), b.ck(100)))
    assert topics(cards)[NCS] == "info"
    assert "EMG" in card(cards, NCS)["summary"]


@pytest.mark.parametrize("mg, indicator", [(30, "info"), (30.1, "warning")])
def test_steroid_high_dose_boundary(mg, indicator):
    assert topics(run(baseline(med(PREDNISONE, daily(mg)))))[STEROID] == indicator


@pytest.mark.parametrize("mg, band", [(7.5, None), (7.6, "info")])
def test_steroid_medium_band_boundary(mg, band):
    assert topics(run(baseline(med(PREDNISONE, daily(mg))))).get(STEROID) == band


def test_steroid_above_target_card_is_a_switch():
    config = {"LUPUS_CDS_STEROID_CARD_ABOVE_TARGET": "true"}
    assert topics(run(baseline(med(PREDNISONE, daily(6))), config=config))[STEROID] == "info"
    assert STEROID not in topics(run(baseline(med(PREDNISONE, daily(5))), config=config))


@pytest.mark.parametrize("mg, pulse", [(200, True), (199, False)])
def test_pulse_threshold_250_mg_prednisone_equivalent(mg, pulse):
    """Methylprednisolone 200 mg = 250 mg prednisone-equivalent; a finished course matters only as a pulse."""
    assert (STEROID in topics(run(baseline(_pulse(5, mg=mg, unit="mg"))))) is pulse


@pytest.mark.parametrize("days, fires", [(30, True), (31, False)])
def test_pulse_lookback(days, fires):
    assert (STEROID in topics(run(baseline(_pulse(days))))) is fires


def test_bad_setting_value_is_rejected():
    with pytest.raises(ValueError, match="LUPUS_CDS_LAB_WINDOW_DAYS"):
        run(baseline(), config={"LUPUS_CDS_LAB_WINDOW_DAYS": "a month"})


# ======================================================================== robustness of the facts


def test_labs_no_rule_reads_are_not_validated(monkeypatch):
    from plugin import facts

    validated = []
    real = facts.validate

    def spy(model, raw, *args):
        validated.append(raw.get("id"))
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    old_ck = b.ck(100, days_ago=200)
    creatinine = b.observation("2160-0", value=0.9, unit="mg/dL")
    run(baseline(b.ck(100, days_ago=2), old_ck, creatinine))
    assert old_ck["id"] not in validated  # only the newest final CK is read
    assert creatinine["id"] not in validated  # creatinine is read only when CK is >= 5x ULN


def test_invalid_resource_is_skipped_with_a_note():
    broken = b.ck(5000)
    broken["valueQuantity"] = {"value": "lots"}
    cards = run(baseline(broken))
    assert CK_ELEVATED not in topics(cards)
    assert "skipped: not valid FHIR R4" in card(cards, CK_TESTING)["detail"]


def test_invalid_newest_result_gives_way_to_the_next_valid_one():
    """Skipped as if it had not been sent: the CK before it is the newest result, and is read."""
    broken = b.ck(5000, days_ago=1)
    broken["valueQuantity"] = {"value": "lots"}
    cards = run(baseline(broken, b.ck(1540, days_ago=5)))
    assert topics(cards)[CK_ELEVATED] == "warning"
    detail = card(cards, CK_ELEVATED)["detail"]
    assert "1,540" in detail and "skipped: not valid FHIR R4" in detail


def test_results_outside_the_window_are_never_validated(monkeypatch):
    """A rule asking for a result within its window reads the dates from the raw pass: an older result is
    dismissed without being validated."""
    from plugin import facts

    validated, real = [], facts.validate

    def spy(model, raw, *args):
        validated.append(raw.get("id"))
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    old_k, old_mg = b.potassium(4.1, days_ago=200), b.magnesium(2.0, days_ago=200)
    cards = run(baseline(b.ck(100, days_ago=2), old_k, old_mg))
    assert topics(cards)["electrolyte-testing"]  # K and Mg are missing from the window
    assert old_k["id"] not in validated and old_mg["id"] not in validated


def test_ck_elevated_names_current_myotoxic_medicines():
    """Statins and hydroxychloroquine cause a toxic myopathy (CLINICAL-CONTENT 3.1): a cause to weigh."""
    statin = b.medication_request("617312", "atorvastatin 10 MG Oral Tablet")
    hcq = b.medication_request("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet")
    detail = card(run(baseline(b.ck(1540), statin, hcq)), CK_ELEVATED)["detail"]
    assert detail.count("Can cause a toxic myopathy and raise CK") == 2
    assert statin["id"] in detail and hcq["id"] in detail


def test_medicines_no_rule_reads_are_not_validated(monkeypatch):
    """With CK not elevated, no rule looks at myotoxic medicines: the statin is never validated."""
    from plugin import facts

    validated, real = [], facts.validate

    def spy(model, raw, *args):
        validated.append(raw.get("id"))
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    statin = b.medication_request("617312", "atorvastatin 10 MG Oral Tablet")
    prednisone = b.medication_request("312615", "predniSONE 20 MG Oral Tablet")
    run(baseline(b.ck(100), statin, prednisone))
    assert prednisone["id"] in validated and statin["id"] not in validated


@pytest.mark.parametrize("ref_high, patient_read", [(200, False), (None, True)])
def test_patient_is_validated_only_when_its_sex_is_needed(monkeypatch, ref_high, patient_read):
    """The CK rule needs the patient's sex only for a result without its own reference range."""
    from plugin import facts

    validated, real = [], facts.validate

    def spy(model, raw, *args):
        validated.append(raw.get("resourceType"))
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    cards = run(baseline(b.ck(1540, ref_high=ref_high)))
    assert CK_ELEVATED in topics(cards)
    assert ("Patient" in validated) is patient_read


def test_invalid_medicine_is_skipped_with_a_note_when_read():
    broken = b.medication_request("312615", "predniSONE 60 MG Oral Tablet")
    broken["authoredOn"] = "last tuesday"
    cards = run(baseline(broken))
    assert "steroid-review" not in topics(cards)
    assert any(f"MedicationRequest/{broken['id']} skipped: not valid FHIR R4" in c["detail"] for c in cards)


def test_timezone_less_datetime_and_single_object_arrays_are_tolerated():
    ck = b.ck(1540)
    ck["effectiveDateTime"] = ck["effectiveDateTime"].rstrip("Z")
    ck["code"]["coding"] = ck["code"]["coding"][0]
    assert topics(run(baseline(ck)))[CK_ELEVATED] == "warning"


def test_partial_dates_are_read():
    fasc = b.fasciculation()
    fasc["recordedDate"] = b.NOW.strftime("%Y-%m")
    assert run(baseline(fasc=fasc))


def test_request_json_is_not_mutated():
    import copy

    resources = baseline(b.ck(1540))
    resources[-1]["effectiveDateTime"] = resources[-1]["effectiveDateTime"].rstrip("Z")
    before = copy.deepcopy(resources)
    run(resources)
    assert resources == before


def test_draft_orders_tolerate_other_types_and_missing_bundle_type():
    draft = b.draft_bundle(
        {
            "resourceType": "NutritionOrder",
            "id": "n1",
            "status": "draft",
            "intent": "order",
            "patient": b.subject(),
            "dateTime": b.ago(0),
        },
        {"resourceType": "DeviceRequest", "id": "d1"},
        {"resourceType": "Unknown"},
        b.service_request("2157-6", status="active"),
        bundle_type=None,
    )
    assert topics(run(baseline(), hook="order-sign", draft_orders=draft)) == {E_TESTING: "info"}


def test_stu3_procedure_request_in_draft_orders_suppresses_ck():
    draft = b.draft_bundle(
        {
            "resourceType": "ProcedureRequest",
            "id": "pr1",
            "status": "draft",
            "intent": "order",
            "code": b.concept("2157-6", LOINC),
            "subject": b.subject(),
        }
    )
    assert CK_TESTING not in topics(run(baseline(), hook="order-select", draft_orders=draft))


def test_dstu2_medication_order_in_draft_orders_is_reviewed():
    draft = b.draft_bundle(
        {
            "resourceType": "MedicationOrder",
            "id": "mo1",
            "status": "draft",
            "patient": b.subject(),
            "medicationCodeableConcept": b.concept(PREDNISONE[0], b.RXNORM),
            "dosageInstruction": [
                {
                    "doseQuantity": {"value": 60, "unit": "mg", "system": b.UCUM, "code": "mg"},
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                }
            ],
        }
    )
    assert topics(run(baseline(), hook="order-sign", draft_orders=draft))[STEROID] == "warning"


def test_contained_medication_reference_is_resolved():
    prednisone = med(PREDNISONE, daily(40))
    prednisone.pop("medicationCodeableConcept")
    prednisone["contained"] = [
        {"resourceType": "Medication", "id": "m1", "code": b.concept(PREDNISONE[0], b.RXNORM)}
    ]
    prednisone["medicationReference"] = {"reference": "#m1"}
    assert topics(run(baseline(prednisone)))[STEROID] == "warning"


def test_prefetched_medication_reference_is_resolved():
    medication = {"resourceType": "Medication", "id": "m9", "code": b.concept(PREDNISONE[0], b.RXNORM)}
    prednisone = med(PREDNISONE, daily(40))
    prednisone.pop("medicationCodeableConcept")
    prednisone["medicationReference"] = {"reference": "Medication/m9"}
    assert topics(run(baseline(medication, prednisone)))[STEROID] == "warning"


def test_missing_optional_prefetch_is_named_in_the_detail():
    cards = run(baseline(), missing=["ck", "potassium"])
    assert "potassium: not prefetched" in card(cards, E_TESTING)["detail"]


def test_no_sle_no_cards_and_no_validation_of_labs(monkeypatch):
    """Performance rule: resources no rule reads are never validated."""
    from plugin import facts

    calls, real = [], facts.validate

    def spy(model, raw, *args):
        calls.append(model.__name__)
        return real(model, raw, *args)

    monkeypatch.setattr(facts, "validate", spy)
    assert run([b.patient(), b.fasciculation(), b.ck(100), b.potassium(4.0)]) == []
    assert calls and "Observation" not in calls


# ============================================================================ service definitions


def test_three_services_with_prefetch_templates_that_follow_the_spec():
    from cds_hooks.prefetch import check_template
    from plugin.hooks import cds_services

    services = cds_services(config={})
    assert [s.hook for s in services] == ["patient-view", "order-select", "order-sign"]
    assert len({s.id for s in services}) == 3
    for service in services:
        assert service.title and service.description
        assert {"patient", "conditions"} <= service.required_prefetch <= set(service.prefetch)
        for key, template in service.prefetch.items():
            check_template(service.hook, key, template)
            assert len(template) < 2000
            assert "date=" not in template.replace("_sort=-date", "")  # no relative dates
            assert template.count("{{") == 1 and "{{context.patientId}}" in template


def test_observation_templates_name_the_codes_the_rules_read():
    from plugin.hooks import prefetch_templates

    templates = prefetch_templates()
    assert "http://loinc.org|2157-6" in templates["ck"]
    assert "http://loinc.org|2823-3" in templates["potassium"] and "2824-1" not in templates["potassium"]
    assert "http://loinc.org|19123-9" in templates["magnesium"]
    assert "http://loinc.org|75325-1" in templates["symptomObservations"]
    assert "http://snomed.info/sct|82470000" in templates["symptomObservations"]


def test_services_load_through_the_app_and_answer_over_http():
    import json

    from cds_hooks import create_app
    from plugin import hooks

    app = create_app(
        {"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://"},
        plugins=[hooks],
        clock=lambda: b.NOW,
        authenticator=object(),
    )
    request = b.hook_request(baseline())
    body = {
        "hook": "patient-view",
        "hookInstance": request.hook_instance,
        "context": dict(request.context),
        "prefetch": {
            key: {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in request.prefetch.resources(key)],
            }
            for key in request.prefetch
            if key != "patient"
        },
    }
    body["prefetch"]["patient"] = b.patient()
    response = app.test_client().post(
        "/cds-services/lupus-fasciculation-patient-view",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert topics(response.get_json()["cards"]) == BASELINE_TOPICS


def test_rules_command_prints_the_rule_book():
    import click
    from click.testing import CliRunner

    from plugin.hooks import cds_cli_commands

    group = click.Group("lupus-cds")
    cds_cli_commands(cli=group)
    result = CliRunner().invoke(group, ["rules"])
    assert result.exit_code == 0, result.output
    for rule_id in ("gate", "red-flag", "ck", "electrolytes", "steroid", "neuroactive", "ncs-emg"):
        assert f"== {rule_id}:" in result.output
    assert "LUPUS_CDS_LAB_WINDOW_DAYS = 30" in result.output
    assert "LUPUS_CDS_HYPOMAGNESEMIA_MG_DL = 1.7" in result.output
    assert "codes)" in result.output and "NOT AVAILABLE" not in result.output


def test_every_rule_in_the_rule_book_has_a_function():
    from plugin.rulebook import RULEBOOK
    from plugin.rules import RULES

    assert {r.id for r in RULEBOOK} - {"gate"} == set(RULES)


def test_sample_request_dirs_are_absolute_existing_folders():
    from pathlib import Path

    from plugin.hooks import cds_sample_request_dirs

    for folder in cds_sample_request_dirs():
        assert Path(folder).is_absolute() and Path(folder).is_dir()
