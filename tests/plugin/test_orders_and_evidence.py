"""Section 10.5 of the clinical review: what the NCS/EMG suggestion orders, steroid myopathy as context
(not "known myositis"), the evidence each card and the rule book cite, and children (age from
Patient.birthDate, dose per kg of body weight).

Each test names the public source of the number or code it pins.
"""

from __future__ import annotations

import json
import re

import builders as b
import pytest
from builders import CPT, ICD10, SNOMED, baseline, card, run, topics

from plugin import terminology
from plugin.cards import ORDERABLES

CK_TESTING, CK_ELEVATED, STEROID, NCS = "ck-testing", "ck-elevated", "steroid-review", "ncs-emg"


def paresthesia():
    return b.condition("R20.2", days_ago=5, category="encounter-diagnosis")


# ================================================================== 10.5 NCS/EMG: what is ordered


def test_10_5_ncs_emg_order_is_nerve_conduction_with_needle_emg_not_a_one_limb_emg():
    """10.5: CPT 95860 is a needle EMG of one limb only. The draft is CPT 95886, the complete needle EMG of
    a limb done with nerve conduction studies (CodingAhead, AMA descriptor: an add-on reported only with a
    primary NCS code 95907-95913), and its note leaves the number of studies to the electrodiagnostic
    physician (AANEM Model Policy for Nerve Conduction Studies and Needle Electromyography)."""
    ncs = card(run(baseline(paresthesia())), NCS)
    [suggestion] = ncs["suggestions"]
    [action] = suggestion["actions"]
    resource = action["resource"]
    assert resource["code"]["coding"] == [
        {
            "system": CPT,
            "code": "95886",
            "display": "Needle EMG, each extremity, with related paraspinal areas, done with NCS; complete",
        }
    ]
    assert "nerve conduction" in suggestion["label"].lower() and "emg" in suggestion["label"].lower()
    assert "95907-95913" in resource["note"][0]["text"] and "95907-95913" in action["description"]
    assert resource["category"][0]["coding"][0]["code"] == "386053000"  # a procedure, not a lab test
    assert "95860" not in json.dumps(ncs)


def test_10_5_every_draft_order_is_coded_with_a_display():
    for key, orderable in ORDERABLES.items():
        assert orderable.code and orderable.system and orderable.display, key


def test_10_5_ncs_emg_order_code_is_a_verified_member_of_the_ncs_emg_value_set_with_its_sources():
    """The order code is recorded in plugin/valuesets/ncs-emg-codes.json with the CodingAhead (AMA
    descriptor) page and the AAN coding note; the value set's purpose cites the AANEM model policy."""
    order = ORDERABLES["ncs-emg"]
    document = terminology.valueset("ncs-emg-codes")
    [concept] = [c for i in document["compose"]["include"] if i["system"] == CPT for c in i["concept"]
                 if c["code"] == order.code]
    assert concept["display"] == order.display
    extensions = {e["url"].rsplit("/", 1)[1]: e for e in concept["extension"]}
    assert extensions["code-verification"]["valueCode"] == "V"
    source = extensions["code-source"]["valueString"]
    assert "codingahead.com/cpt/codes/95886" in source and "95907-95913" in source
    assert "aanem.org" in document["purpose"]


def test_10_5_the_suggested_ncs_emg_order_once_drafted_suppresses_the_card():
    """Round trip: the clinician accepts the suggestion; at order-sign its draft counts as ordered."""
    ncs = card(run(baseline(paresthesia())), NCS)
    draft = dict(ncs["suggestions"][0]["actions"][0]["resource"], id="accepted-ncs")
    cards = run(baseline(paresthesia()), hook="order-sign", draft_orders=b.draft_bundle(draft))
    assert NCS not in topics(cards)


# ============================================================ 10.5 steroid myopathy is not myositis


def steroid_myopathy_g72_with_t38_on_one_condition():
    condition = b.condition("G72.0", days_ago=200)
    condition["code"]["coding"].append({"system": ICD10, "code": "T38.0X5A"})
    return [condition]


STEROID_MYOPATHY_RECORDS = {
    "snomed-26715006": lambda: [b.condition("26715006", SNOMED, days_ago=200)],
    "g72.0-with-t38.0x5a": steroid_myopathy_g72_with_t38_on_one_condition,
    "g72.0-and-a-t38.0x5d-condition": lambda: [b.condition("G72.0", days_ago=200),
                                              b.condition("T38.0X5D", days_ago=200)],
}


@pytest.mark.parametrize("record", list(STEROID_MYOPATHY_RECORDS))
def test_10_5_known_steroid_myopathy_is_not_known_myositis(record):
    """10.5: steroid myopathy (G72.0 with T38.0X5-, SNOMED 26715006) is not 'known myositis': CK is usually
    normal in it (Medscape emedicine 313842). The CK card screens, it does not 'monitor myositis', and
    names the steroid myopathy as context."""
    ck = card(run(baseline(*STEROID_MYOPATHY_RECORDS[record]())), CK_TESTING)
    assert ck["summary"].startswith("Lupus + muscle twitching: no CK in 30 days")
    assert "myositis with" not in ck["summary"].lower() and "monitor" not in ck["summary"]
    assert "Known steroid myopathy" in ck["detail"] and "CK is usually normal" in ck["detail"]
    assert "Known myositis" not in ck["detail"]


def test_10_5_known_myositis_still_gives_the_monitor_wording():
    ck = card(run(baseline(b.condition("M33.22", days_ago=200))), CK_TESTING)
    assert ck["summary"].startswith("Known myositis with muscle twitching")
    assert "Known steroid myopathy" not in ck["detail"]


def test_10_5_drug_induced_myopathy_without_a_glucocorticoid_code_is_named_as_such():
    ck = card(run(baseline(b.condition("G72.0", days_ago=200))), CK_TESTING)
    assert "Known drug-induced myopathy (drug not coded)" in ck["detail"]
    assert ck["summary"].startswith("Lupus + muscle twitching: no CK")


def test_10_5_steroid_card_names_a_known_steroid_myopathy():
    prednisone = b.medication_request("8640", "prednisone", dosages=[b.dosage(40, route="26643006")])
    cards = run(baseline(prednisone, b.condition("26715006", SNOMED, days_ago=200)))
    assert "Known steroid myopathy" in card(cards, STEROID)["detail"]


def test_10_5_steroid_myopathy_codes_left_the_myositis_value_set():
    for system, code in ((SNOMED, "26715006"), (ICD10, "G72.0")):
        assert not terminology.in_valueset("myositis", system, code)
        assert terminology.in_valueset("steroid-myopathy", system, code)
    assert terminology.in_valueset("glucocorticoid-adverse-effect", ICD10, "T38.0X5S")
    assert not terminology.in_valueset("glucocorticoid-adverse-effect", ICD10, "T38.0X6A")  # underdosing


# ==================================================================== 10.5 what each card cites

#: citations only the project team could follow: the clinical-content document, its sections, the
#: team's unpublished source article
INTERNAL_CITATION = re.compile(r"CLINICAL-CONTENT|TESTBED|§|\bsections? \d|\bpitfalls? \d|source article", re.I)


def test_10_5_the_rule_book_cites_public_references_or_repository_files_only():
    """`lupus-cds rules` output: no CLINICAL-CONTENT section numbers, every rule with evidence."""
    from plugin.rulebook import RULEBOOK, format_rulebook

    text = format_rulebook()
    assert INTERNAL_CITATION.findall(text) == []
    assert "section 5." not in text and "CLINICAL-CONTENT" not in text
    for rule in RULEBOOK:
        assert rule.evidence, rule.id
        for line in rule.evidence:
            assert not INTERNAL_CITATION.search(line), (rule.id, line)


def test_10_5_no_fixture_card_cites_an_internal_document():
    """Every card every fixture request gives (full cards: summary, detail, source, links, suggestions)."""
    from plugin import fixtures
    from plugin.demo import make_app

    client = make_app().test_client()
    seen = 0
    for name in fixtures.patient_names():
        for hook in fixtures.HOOKS:
            body = fixtures.request_path(name, hook).read_bytes()
            response = client.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", data=body,
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 200, (name, hook)
            for produced in response.get_json()["cards"]:
                seen += 1
                assert INTERNAL_CITATION.findall(json.dumps(produced)) == [], (name, hook, produced["summary"])
    assert seen > 20


def test_10_5_no_card_text_or_link_cites_an_internal_document():
    from plugin import cards as wording

    texts = [*(link.label + link.url for link in wording.LINKS.values()),
             *(label + url for label, url, _ in wording.SOURCES.values()),
             *(full + short for _, full, short in wording.all_summary_templates()),
             *wording.WHY.values(), *(c for caveats in wording.CAVEATS.values() for c in caveats)]
    for text in texts:
        assert not INTERNAL_CITATION.search(text), text
    for link in wording.LINKS.values():
        assert link.url.startswith("https://"), link


def test_10_5_eular_2023_sle_management_is_not_cited_for_red_flags_ncs_or_neuro_active_drugs():
    """EULAR 2023 SLE management covers glucocorticoid dosing, not these: they cite the EULAR 2010
    neuropsychiatric SLE recommendations (Bertsias, doi 10.1136/ard.2010.130476), the ACR 1999
    neuropsychiatric lupus case definitions (doi 10.1002/1529-0131(199904)42:4<599::AID-ANR2>3.0.CO;2-F)
    and, for anticonvulsants, Saenz-Farret 2022 (doi 10.1007/s40263-022-00937-x) and Berghuis 2017
    (doi 10.1111/epi.13777)."""
    from plugin import cards as wording

    eular_2023 = wording.LINKS["eular-sle-2023"].url
    for topic in ("red-flag-urgent", "ncs-emg", "neuroactive-medication-review"):
        label, url, links = wording.SOURCES[topic]
        assert url != eular_2023 and "eular-sle-2023" not in links and "EULAR 2023" not in label, topic
    for topic in ("red-flag-urgent", "ncs-emg"):
        assert {"eular-npsle-2010", "acr-npsle-1999"} <= set(wording.SOURCES[topic][2]), topic
    assert wording.LINKS["eular-npsle-2010"].url == "https://doi.org/10.1136/ard.2010.130476"
    assert wording.LINKS["acr-npsle-1999"].url == (
        "https://doi.org/10.1002/1529-0131(199904)42:4%3C599::AID-ANR2%3E3.0.CO;2-F")
    assert wording.SOURCES["neuroactive-medication-review"][2] == ("saenz-farret-2022", "berghuis-2017")


def test_10_5_neuropathy_prevalence_comes_from_peer_reviewed_cohorts():
    """Not 'up to 27%' from a patient leaflet: peripheral neuropathy in 5.9% of 2,097 SLE patients
    (Oomatia et al., Arthritis Rheumatol 2014;66:1000, doi 10.1002/art.38302) and peripheral nervous
    system involvement in 17.7% of 524 (Toledano et al., Autoimmun Rev 2017;16:750,
    doi 10.1016/j.autrev.2017.05.011)."""
    from plugin import cards as wording

    ncs = card(run(baseline(paresthesia())), NCS)
    assert "27%" not in ncs["detail"]
    assert "6-18%" in ncs["detail"] and "5.9% of 2,097" in ncs["detail"] and "17.7% of 524" in ncs["detail"]
    urls = {link["url"] for link in ncs["links"]}
    assert {"https://doi.org/10.1002/art.38302", "https://doi.org/10.1016/j.autrev.2017.05.011"} <= urls
    assert wording.LINKS["aanem-ncs-emg"].url in urls


# ======================================================================== 10.5 children (< 18 years)

PREDNISONE = ("8640", "prednisone")


def child(birth_date="2009-09-01", *extra):
    """SLE with twitching, born ``birth_date`` (15 on NOW = 2025-03-15 by default)."""
    patient = b.patient()
    patient["birthDate"] = birth_date
    return [patient, b.sle(), b.fasciculation(), *extra]


def prednisone(mg: float = 40):
    return b.medication_request(*PREDNISONE, dosages=[b.dosage(mg, route="26643006")])


def weight(kg: float, days_ago: float = 10, code: str = "29463-7", unit: str | None = "kg"):
    return b.observation(code, value=kg, unit=unit, days_ago=days_ago)


def test_10_5_child_steroid_card_gives_the_dose_per_kg_and_says_adult_bands_do_not_apply():
    steroid = card(run(child("2009-09-01", prednisone(40), weight(52))), STEROID)
    assert "**Child (age 15, born 2009-09-01):**" in steroid["detail"]
    assert "adult glucocorticoid dose bands (Buttgereit 2002) and the adult SLE maintenance target do not apply" \
        in steroid["detail"]
    assert "40 mg/day / 52 kg = 0.77 mg/kg/day prednisone-equivalent" in steroid["detail"]


def test_10_5_child_steroid_summary_states_the_dose_per_kg_instead_of_adult_bands():
    """An adult on 60 mg/day gets 'high dose' (warning); a child on the same dose gets the dose per kg for
    review (info), and never the adult maintenance target."""
    adult = card(run(baseline(prednisone(60), weight(70))), STEROID)
    assert adult["indicator"] == "warning" and "(high dose)" in adult["summary"]
    steroid = card(run(child("2009-09-01", prednisone(60), weight(52))), STEROID)
    assert steroid["indicator"] == "info"
    assert steroid["summary"].startswith("Prednisone 60 mg/day (1.15 mg/kg/day) in a child: adult dose bands do not")
    assert "high dose" not in steroid["summary"] and "target" not in steroid["summary"]
    no_weight = card(run(child("2009-09-01", prednisone(60))), STEROID)
    assert no_weight["summary"].startswith("Prednisone 60 mg/day in a child")
    assert STEROID not in topics(run(child("2009-09-01", prednisone(5))))  # an adult gets no card either


def test_10_5_child_ck_card_says_adult_ck_ranges_do_not_apply():
    ck_order = card(run(child()), CK_TESTING)
    assert "adult CK reference ranges do not apply" in ck_order["detail"]
    elevated = card(run(child("2009-09-01", b.ck(450))), CK_ELEVATED)
    assert "adult CK reference ranges do not apply" in elevated["detail"]
    assert "The upper limit used here, 192 U/L, is an adult default" in elevated["detail"]
    with_range = card(run(child("2009-09-01", b.ck(450, ref_high=230))), CK_ELEVATED)
    assert "adult default" not in with_range["detail"]  # the lab's own range was used


def test_10_5_adults_get_no_child_paragraph():
    cards = run(baseline(prednisone(40), weight(70), b.ck(450)))
    assert STEROID in topics(cards) and CK_ELEVATED in topics(cards)
    assert not any("Child" in c["detail"] or "mg/kg/day" in c["detail"] for c in cards)


@pytest.mark.parametrize("birth_date, is_child", [("2007-03-15", False), ("2007-03-16", True)])
def test_10_5_under_18_years_at_the_hooks_now_is_a_child(birth_date, is_child):
    """18th birthday on NOW (2025-03-15): an adult; one day later: still 17."""
    detail = card(run(child(birth_date)), CK_TESTING)["detail"]
    assert ("**Child (age 17" in detail) is is_child


def test_10_5_partial_birth_date_gives_an_age_range():
    detail = card(run(child("2007")), CK_TESTING)["detail"]
    assert "**Child (age 17-18, born 2007):**" in detail


def test_10_5_child_age_is_a_setting():
    detail = card(run(child("2009-09-01"), config={"LUPUS_CDS_CHILD_AGE_YEARS": "14"}), CK_TESTING)["detail"]
    assert "Child" not in detail


@pytest.mark.parametrize("days_ago, per_kg", [(60, True), (61, False)])
def test_10_5_body_weight_counts_for_60_days(days_ago, per_kg):
    detail = card(run(child("2009-09-01", prednisone(40), weight(52, days_ago=days_ago))), STEROID)["detail"]
    assert ("0.77 mg/kg/day" in detail) is per_kg
    assert ("No usable body weight in the last 60 days" in detail) is not per_kg


def test_10_5_weight_in_pounds_and_the_measured_weight_code_count():
    """LOINC 3141-9 'Body weight Measured' is in the FHIR vital-signs body weight value set
    (observation-vitalsign-bodyweight); 114.64 [lb_av] = 52.0 kg."""
    detail = card(run(child("2009-09-01", prednisone(40), weight(114.64, code="3141-9", unit="[lb_av]"))),
                  STEROID)["detail"]
    assert "= 0.77 mg/kg/day" in detail and "Observation/" in detail


@pytest.mark.parametrize("bad", [5200, 0.0, None])
def test_10_5_implausible_or_unitless_weight_is_not_divided_by(bad):
    record = weight(bad if bad is not None else 52, unit=None if bad is None else "kg")
    detail = card(run(child("2009-09-01", prednisone(40), record)), STEROID)["detail"]
    assert "mg/kg/day" not in detail and "No usable body weight" in detail


@pytest.mark.parametrize("bad", ["15/03/2010", 2010, ["2010-01-01"], {"value": "2010"}, "9999-01-01",
                                 "2010-02-30", "2010-05-14T10:00:00Z", 1e308])
def test_10_5_a_malformed_birth_date_is_noted_never_raised(bad):
    cards = run(child(bad))
    detail = card(cards, CK_TESTING)["detail"]
    assert "Child" not in detail
    assert "birthDate" in detail and "not a usable date: age unknown" in detail


def test_10_5_body_weight_codes_are_pinned_with_their_source():
    """HL7 FHIR ValueSet observation-vitalsign-bodyweight: 29463-7 Body weight, 3141-9 Body weight Measured."""
    from builders import LOINC

    assert terminology.in_valueset("body-weight", LOINC, "29463-7")
    assert terminology.in_valueset("body-weight", LOINC, "3141-9")
    assert not terminology.in_valueset("body-weight", LOINC, "3142-7")  # stated, not measured
    from plugin.hooks import prefetch_templates

    assert "http://loinc.org|29463-7" in prefetch_templates()["bodyWeight"]


def test_10_5_the_child_fixture_patient_shows_the_dose_per_kg_and_the_ck_caveat():
    """fixtures/ patient sle-child-15-on-prednisone: 15 years old, prednisone 30 mg/day, 52.4 kg."""
    from plugin import fixtures
    from plugin.demo import make_app

    body = fixtures.request_path("sle-child-15-on-prednisone", "patient-view").read_bytes()
    response = make_app().test_client().post("/cds-services/lupus-fasciculation-patient-view", data=body,
                                              headers={"Content-Type": "application/json"})
    cards = response.get_json()["cards"]
    assert "30 mg/day / 52.4 kg = 0.57 mg/kg/day" in card(cards, STEROID)["detail"]
    assert "adult CK reference ranges do not apply" in card(cards, CK_TESTING)["detail"]
    assert all("**Child (age 15, born 2011-06-14):**" in c["detail"] for c in cards
               if c["source"]["topic"]["code"] in (STEROID, CK_TESTING))


def test_10_5_repository_files_the_rule_book_cites_exist_and_every_link_is_public():
    from pathlib import Path

    from plugin.cards import LINKS
    from plugin.rulebook import RULEBOOK, format_rulebook

    root = Path(__file__).resolve().parents[2]
    cited = set(re.findall(r"\b((?:plugin|fixtures|tests)/[\w./-]+\.(?:json|py|md))", format_rulebook()))
    assert cited, "the rule book names the value-set files it rests on"
    for path in cited:
        assert (root / path).is_file(), path
    for rule in RULEBOOK:
        for name in rule.links:
            assert LINKS[name].url.startswith("https://"), (rule.id, name)
