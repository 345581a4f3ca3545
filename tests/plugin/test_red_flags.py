"""CLINICAL-CONTENT 10.4, red flags: dysphagia only when oropharyngeal or unspecified, dysarthria as a bulbar
sign, dyspnoea graded by what else is known (a warning naming both differentials when a cardiopulmonary cause
is known), and 'new weakness' only by onset; each defect as a scenario (a request in, the cards out).

Baseline unless stated (builders.baseline): adult female, active confirmed SLE (M32.9), fasciculation R25.3
recorded 3 days ago, no labs, no medicines, patient-view.
"""

from __future__ import annotations

import builders as b
import pytest
from builders import ICD10, LOINC, SNOMED, baseline, card, run, topics

from plugin import terminology as t

RED_FLAG = "red-flag-urgent"
SOURCE = "https://lupus-cds.example.org/fhir/StructureDefinition/code-source"
VERIFICATION = "https://lupus-cds.example.org/fhir/StructureDefinition/code-verification"

# ======================================================================= 10.4 dysphagia and dysarthria


@pytest.mark.parametrize(
    "code, system",
    [("40739000", SNOMED), ("71457002", SNOMED), ("399122003", SNOMED), ("R13.0", ICD10), ("R13.1", ICD10),
     ("R13.10", ICD10), ("R13.11", ICD10), ("R13.12", ICD10), ("R13.13", ICD10), ("R13.19", ICD10)],
)
def test_10_4_oropharyngeal_or_unspecified_dysphagia_is_a_critical_red_flag(code, system):
    cards = run(baseline(b.condition(code, system, days_ago=1)))
    assert topics(cards)[RED_FLAG] == "critical" and "trouble swallowing" in card(cards, RED_FLAG)["summary"]


@pytest.mark.parametrize(
    "code, system", [("40890009", SNOMED), ("R13.14", ICD10), ("30233002", SNOMED)], ids=["oesophageal",
                                                                                            "pharyngoesophageal",
                                                                                            "painful-swallowing"]
)
def test_10_4_oesophageal_dysphagia_and_painful_swallowing_are_not_red_flags(code, system):
    assert RED_FLAG not in topics(run(baseline(b.condition(code, system, days_ago=1))))


def test_10_4_dysarthria_codes_pinned_with_their_sources():
    """Verified: SNOMED 8011004 Dysarthria in the SNOMED IPS free set (HL7/fhir-ips) and the MII MedDRA ->
    SNOMED ConceptMap; ICD-10-CM R47.1 Dysarthria and anarthria in the FY2020 code list (medtrack-io/icd_code)
    and icdlist.com."""
    concepts = {
        (include["system"], c["code"]): {e["url"]: e.get("valueString", e.get("valueCode")) for e in c["extension"]}
        for include in t.valueset("dysarthria")["compose"]["include"]
        for c in include["concept"]
    }
    snomed, icd = concepts[(SNOMED, "8011004")], concepts[(ICD10, "R47.1")]
    assert "IPS" in snomed[SOURCE] and snomed[VERIFICATION] == "V"
    assert "icd_code" in icd[SOURCE] and "icdlist.com/icd-10/R47.1" in icd[SOURCE] and icd[VERIFICATION] == "V"
    assert not t.in_valueset("dysarthria", ICD10, "R47.01")  # aphasia is language, not articulation


@pytest.mark.parametrize(
    "finding",
    [
        pytest.param(b.condition("8011004", SNOMED, days_ago=1), id="snomed-condition"),
        pytest.param(b.condition("R47.1", days_ago=2), id="icd-condition"),
        pytest.param(b.observation("75325-1", LOINC, value_concept=b.concept("8011004")), id="symptom-observation"),
    ],
)
def test_10_4_dysarthria_is_a_bulbar_sign_like_dysphagia(finding):
    cards = run(baseline(finding))
    red = card(cards, RED_FLAG)
    assert red["indicator"] == "critical" and "slurred speech" in red["summary"]
    assert "today" in red["summary"]


# ========================================================================== 10.4 dyspnoea and its causes

DYSPNEA_ON_EXERTION = ("60845006", SNOMED)


@pytest.mark.parametrize(
    "cause, system, group",
    [
        ("J84.10", ICD10, "interstitial lung disease"),
        ("233703007", SNOMED, "interstitial lung disease"),
        ("I27.20", ICD10, "pulmonary hypertension"),
        ("R09.1", ICD10, "pleuritis or pericarditis"),
        ("I26.99", ICD10, "pulmonary embolism or antiphospholipid syndrome"),
        ("D68.61", ICD10, "pulmonary embolism or antiphospholipid syndrome"),
        ("I50.9", ICD10, "heart failure"),
        ("84114007", SNOMED, "heart failure"),
    ],
)
def test_10_4_dyspnoea_with_a_known_cardiopulmonary_cause_is_a_warning_naming_both(cause, system, group):
    """The defect: exertional dyspnoea in known lung disease raised a critical red flag."""
    cards = run(baseline(b.condition(*DYSPNEA_ON_EXERTION, days_ago=2), b.condition(cause, system, days_ago=900)))
    red = card(cards, RED_FLAG)
    assert red["indicator"] == "warning"
    assert "FVC/NIF" in red["summary"] and "respiratory muscle weakness" in red["summary"]
    assert group in red["summary"] or "heart/lung" in red["summary"]
    assert group in red["detail"] and "respiratory muscle weakness (FVC, NIF)" in red["detail"]


def test_10_4_sle_pericarditis_itself_explains_dyspnoea():
    cards = run(baseline(b.condition(*DYSPNEA_ON_EXERTION, days_ago=2), sle_condition=b.sle("M32.12")))
    assert topics(cards)[RED_FLAG] == "warning"
    assert "pleuritis or pericarditis" in card(cards, RED_FLAG)["summary"]


@pytest.mark.parametrize(
    "also",
    [
        pytest.param(b.condition("M62.81", days_ago=2), id="weakness"),
        pytest.param(b.condition("8011004", SNOMED, days_ago=2), id="dysarthria"),
        pytest.param(b.condition("R13.12", days_ago=2), id="dysphagia"),
        pytest.param(b.condition("R20.0", days_ago=2), id="loss-of-sensation"),
    ],
)
def test_10_4_dyspnoea_with_weakness_or_bulbar_sign_stays_critical_despite_a_known_cause(also):
    cards = run(baseline(b.condition(*DYSPNEA_ON_EXERTION, days_ago=2), b.condition("J84.10", days_ago=900), also))
    assert topics(cards)[RED_FLAG] == "critical"
    assert "interstitial lung disease" in card(cards, RED_FLAG)["detail"]


@pytest.mark.parametrize(
    "cause",
    [
        pytest.param(None, id="nothing-known"),
        pytest.param(b.condition("J84.10", days_ago=900, clinical="resolved"), id="resolved-cause"),
        pytest.param(b.condition("J84.10", days_ago=900, verification="refuted"), id="refuted-cause"),
    ],
)
def test_10_4_dyspnoea_nothing_else_explains_is_critical(cause):
    extra = [cause] if cause else []
    cards = run(baseline(b.condition(*DYSPNEA_ON_EXERTION, days_ago=2), *extra))
    assert topics(cards)[RED_FLAG] == "critical"
    assert "respiratory muscle strength" in card(cards, RED_FLAG)["summary"]


# ============================================================================ 10.4 'new' only by onset


def test_10_4_re_recorded_old_weakness_is_not_new():
    """The defect: a weakness from 2023 was called new because it was recorded again this week."""
    old = b.condition("M62.81", days_ago=3, onsetDateTime="2023-05-10T00:00:00Z")
    red = card(run(baseline(old)), RED_FLAG)
    assert "weakness (onset 2023)" in red["summary"] and "new weakness" not in red["summary"]
    assert "onset 2023-05-10" in red["detail"]


def test_10_4_weakness_with_onset_in_the_window_is_new():
    recent = b.condition("M62.81", days_ago=1, onset_days_ago=5)
    assert "new weakness" in card(run(baseline(recent)), RED_FLAG)["summary"]


def test_10_4_weakness_without_onset_is_just_weakness():
    red = card(run(baseline(b.condition("M62.81", days_ago=3))), RED_FLAG)
    assert "weakness" in red["summary"] and "new weakness" not in red["summary"]
    assert "(onset" not in red["summary"]
