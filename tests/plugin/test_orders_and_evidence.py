"""Section 10.5 of the clinical review: what the NCS/EMG suggestion orders, steroid myopathy as context
(not "known myositis"), the evidence each card and the rule book cite, and children (age from
Patient.birthDate, dose per kg of body weight).

Each test names the public source of the number or code it pins.
"""

from __future__ import annotations

import json

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
