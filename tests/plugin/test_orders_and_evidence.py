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
