"""CLINICAL-CONTENT 10.3, who has SLE and when a symptom counts: the SLE value sets built from the published
GM-SDE SLE codelist (every code classified, with its source and reason), the SLE-in-remission code, and
undated active symptom Conditions; each defect as a scenario (a request in, the cards out).

Baseline unless stated (builders.baseline): adult female, active confirmed SLE (M32.9), fasciculation R25.3
recorded 3 days ago, no labs, no medicines, patient-view.
"""

from __future__ import annotations

from pathlib import Path

import builders as b
import pytest
from builders import ICD10, SNOMED, baseline, card, run, topics

from plugin import terminology as t

CK_TESTING, E_TESTING, RED_FLAG = "ck-testing", "electrolyte-testing", "red-flag-urgent"
BASELINE_TOPICS = {CK_TESTING: "info", E_TESTING: "info"}
SOURCE = "https://lupus-cds.example.org/fhir/StructureDefinition/code-source"
VERIFICATION = "https://lupus-cds.example.org/fhir/StructureDefinition/code-verification"
NOTE = "https://lupus-cds.example.org/fhir/StructureDefinition/code-note"

# ================================================================ 10.3 the SLE codelist, curated code by code

#: tests/plugin/data/sle-codelist-gm-sde.snomed.tsv is a byte copy of the GM-SDE SLE codelist
#: (UoM-Data-Science-Platforms/gm-sde, shared/clinical-code-sets/conditions/sle/1/sle.snomed.txt, commit
#: 8c749a46; derived from the OpenSAFELY SLE codelist). Every one of its 91 codes is classified here, with why.
GM_SDE_TSV = Path(__file__).resolve().parent / "data" / "sle-codelist-gm-sde.snomed.tsv"
CURATION = {
    "55464009": ("sle", "SLE, root of the SLE subtree"),
    "201435004": ("sle", "SLE (Read-derived duplicate of 55464009)"),
    "156450004": ("sle", "SLE (Read-derived duplicate of 55464009)"),
    "593481000000109": ("sle", "SLE NOS (UK extension)"),
    "201439005": ("sle", "SLE NOS (Read-derived)"),
    "203784000": ("sle", "other forms of SLE (ICD-10 M32.8 equivalent, Read-derived)"),
    "409421000000100": ("sle", "other forms of SLE (ICD-10 M32.8 equivalent, UK extension)"),
    "698694005": ("sle", "SLE in remission: follows the SLE-in-remission setting"),
    "403488004": ("sle", "SLE of childhood"),
    "403486000": ("sle", "acute SLE"),
    "403487009": ("sle", "fulminating SLE"),
    "239889005": ("sle", "bullous SLE (a systemic form)"),
    "773333003": ("sle", "autosomal (monogenic) SLE"),
    "239887007": ("sle", "SLE with organ/system involvement"),
    "201437007": ("sle", "SLE with organ/system involvement (Read-derived duplicate)"),
    "239890001": ("sle", "SLE with multisystem involvement"),
    "905381000000108": ("sle", "SLE/Sjogren's overlap (UK extension): SLE is named"),
    "196138005": ("sle", "lung disease with SLE"),
    "77753005": ("sle", "lupus disease of the lung (SLE lung involvement)"),
    "233730002": ("sle", "lupus pneumonia (acute lupus pneumonitis)"),
    "309762007": ("sle", "SLE with pericarditis"),
    "201438002": ("sle", "SLE with pericarditis (Read-derived duplicate)"),
    "25380002": ("sle", "pericarditis due to SLE"),
    "72181000119109": ("sle", "endocarditis due to SLE (US extension)"),
    "1144921004": ("sle", "disorder of heart due to SLE"),
    "36471000": ("sle", "dilated cardiomyopathy due to SLE"),
    "95644001": ("sle", "SLE encephalitis"),
    "758321000000100": ("sle", "cerebral lupus (UK extension): neuropsychiatric SLE"),
    "1144942002": ("sle", "neuropsychiatric disorder due to SLE"),
    "1263518006": ("sle", "meningitis due to SLE"),
    "1263491001": ("sle", "myelitis due to SLE"),
    "724781003": ("sle", "CNS demyelination due to SLE"),
    "1259517005": ("sle", "dementia due to SLE"),
    "724767000": ("sle", "chorea due to SLE"),
    "230307005": ("sle", "chorea due to SLE"),
    "193178008": ("sle", "polyneuropathy in SLE (also in peripheral-neuropathy)"),
    "193248005": ("sle", "myopathy in SLE (also in myositis)"),
    "417303004": ("sle", "retinal vasculitis due to SLE"),
    "239944008": ("sle", "lupus vasculitis: a systemic (organ) vasculitis of SLE"),
    "19682006": ("sle", "lupus hepatitis (also in VSAC Lupus)"),
    "1144927000": ("sle", "disorder of gastrointestinal tract due to SLE"),
    "1144970000": ("sle", "disorder of joint due to SLE"),
    "95408003": ("sle", "SLE arthritis"),
    "95332009": ("sle", "rash of SLE (the rash of the systemic disease)"),
    "1144923001": ("sle", "disorder of immune function due to SLE"),
    "69746005": ("sle", "haemolytic anaemia with SLE"),
    "732960002": ("sle", "secondary autoimmune haemolytic anaemia due to SLE"),
    "402865003": ("sle", "SLE-associated antiphospholipid syndrome (also in cardiopulmonary-causes)"),
    "68815009": ("renal", "SLE glomerulonephritis (lupus nephritis)"),
    "73286009": ("renal", "lupus nephritis, WHO class I"),
    "4676006": ("renal", "lupus nephritis, WHO class II"),
    "76521009": ("renal", "lupus nephritis, WHO class III"),
    "36402006": ("renal", "lupus nephritis, WHO class IV"),
    "52042003": ("renal", "lupus nephritis, WHO class V"),
    "11013005": ("renal", "lupus nephritis, WHO class VI"),
    "307755009": ("renal", "renal tubulo-interstitial disorder in SLE"),
    "197746009": ("renal", "renal tubulo-interstitial disorder in SLE (Read-derived duplicate)"),
    "197608009": ("renal", "nephrotic syndrome in SLE or lupus nephritis"),
    "308751000119106": ("renal", "glomerular disease due to SLE (US extension)"),
    "295101000119105": ("renal", "nephropathy due to SLE (US extension)"),
    "295111000119108": ("renal", "nephrotic syndrome due to SLE (US extension)"),
    "295121000119101": ("renal", "nephrosis due to SLE (US extension)"),
    "1144973003": ("renal", "disorder of kidney due to SLE"),
    "274553000": ("renal", "lupus with renal failure (EDTA registry code): kidney failure from lupus is systemic "
                           "disease"),
    "417161000000107": ("renal", "lupus with renal failure (EDTA registry code, UK extension)"),
    "200936003": ("unspecified", "'lupus erythematosus': parent of SLE and cutaneous LE, Synthea's code"),
    "200944003": ("unspecified", "lupus erythematosus NOS (Read-derived): same meaning as 200936003"),
    "590791000000108": ("unspecified", "lupus erythematosus NOS (UK extension): same meaning as 200936003"),
    "402711009": ("unspecified", "lupus erythematosus overlap syndrome: the type of lupus is not stated"),
    "397856003": ("unspecified", "SLE-related syndrome: a grouper that also covers drug-induced and other lupus-like "
                                 "syndromes"),
    "201436003": ("drug-induced", "drug-induced SLE (counted only with the drug-induced setting)"),
    "80258006": ("drug-induced", "drug-induced lupus erythematosus (counted only with the drug-induced setting)"),
    "95609003": ("excluded", "neonatal lupus: maternal antibodies in an infant, not SLE"),
    "239886003": ("excluded", "limited lupus erythematosus: cutaneous only"),
    "239888002": ("excluded", "lupus panniculitis: cutaneous only"),
    "200937007": ("excluded", "lupus erythematosus chronicus: chronic cutaneous (discoid) lupus"),
    "200939005": ("excluded", "lupus erythematosus migrans: cutaneous only"),
    "200940007": ("excluded", "lupus erythematosus nodularis: cutaneous only"),
    "707301001": ("excluded", "lupus erythematosus of oral mucous membrane: mucosal only"),
    "238926009": ("excluded", "Rowell syndrome (lupus with erythema multiforme-like lesions): a skin presentation"),
    "430961000124105": ("excluded", "cheilitis due to lupus erythematosus (US extension): mucosal only"),
    "713225000": ("excluded", "gingival disease due to lupus erythematosus: mucosal only"),
    "403503008": ("excluded", "anetoderma in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403505001": ("excluded", "calcinosis in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403506000": ("excluded", "papulonodular mucinosis in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403507009": ("excluded", "hypermelanosis in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403508004": ("excluded", "nailfold telangiectasia in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403512005": ("excluded", "poikiloderma in lupus erythematosus: skin sign, also in cutaneous lupus"),
    "403509007": ("excluded", "vasculitis in lupus erythematosus (dermatology concept): cutaneous vasculitis, type "
                              "of lupus not stated"),
    "403510002": ("excluded", "urticarial vasculitis in lupus erythematosus: cutaneous vasculitis, type of lupus not "
                              "stated"),
    "403511003": ("excluded", "necrotizing vasculitis in lupus erythematosus (dermatology concept): cutaneous, type "
                              "of lupus not stated"),
}
#: class -> the value sets a code of that class is in (and must be the only lupus value sets it is in)
CLASS_VALUESETS = {
    "sle": {"sle"},
    "renal": {"sle", "sle-renal"},
    "unspecified": {"sle-unspecified-lupus"},
    "drug-induced": {"sle-drug-induced"},
    "excluded": {"lupus-exclusions"},
}
LUPUS_VALUESETS = ("sle", "sle-renal", "sle-unspecified-lupus", "sle-drug-induced", "lupus-exclusions")


def gm_sde_codes() -> dict[str, str]:
    rows = [line.split("\t") for line in GM_SDE_TSV.read_text().splitlines()]
    return {code: display for code, display in rows}


def snomed_concepts(name: str) -> dict[str, dict]:
    return {
        concept["code"]: concept
        for include in t.valueset(name)["compose"]["include"]
        if include["system"] == SNOMED
        for concept in include["concept"]
    }


def test_10_3_every_gm_sde_code_is_classified_once_with_a_reason():
    codes = gm_sde_codes()
    assert len(codes) == 91
    assert set(CURATION) == set(codes)
    assert all(reason for _, reason in CURATION.values())


@pytest.mark.parametrize("code", sorted(CURATION))
def test_10_3_gm_sde_code_is_in_the_value_sets_of_its_class_and_records_source_and_reason(code):
    cls, reason = CURATION[code]
    member_of = {name for name in LUPUS_VALUESETS if t.in_valueset(name, SNOMED, code)}
    assert member_of == CLASS_VALUESETS[cls]
    for name in member_of:
        extensions = {e["url"]: e for e in snomed_concepts(name)[code]["extension"]}
        assert "gm-sde" in extensions[SOURCE]["valueString"] and "8c749a46" in extensions[SOURCE]["valueString"]
        assert extensions[VERIFICATION]["valueCode"] == "V"
        assert reason in extensions[NOTE]["valueString"]


def test_10_3_exclusions_kept_cutaneous_lupus_anticoagulant_lupus_vulgaris():
    for system, code in [(SNOMED, "200938002"), (ICD10, "L93.0"), (ICD10, "D68.62"), (SNOMED, "19267009"),
                         (SNOMED, "10528009"), (SNOMED, "200937007"), (SNOMED, "707301001")]:
        assert t.in_valueset("lupus-exclusions", system, code) and not t.in_valueset("sle", system, code)


def test_10_3_sle_in_remission_is_a_subset_of_sle():
    assert t.codes("sle-in-remission") == {(SNOMED, "698694005")} and t.codes("sle-in-remission") <= t.codes("sle")


@pytest.mark.parametrize(
    "code, renal",
    [("698694005", False), ("403488004", False), ("308751000119106", True), ("1144942002", False)],
)
def test_10_3_sle_coded_as_a_snomed_descendant_opens_the_gate(code, renal):
    """The defect: SLE in remission, childhood SLE and glomerular disease due to SLE (US extension) gave no
    cards."""
    cards = run(baseline(sle_condition=b.sle(code, SNOMED)))
    assert topics(cards) == {CK_TESTING: "info", E_TESTING: "warning" if renal else "info"}


def test_10_3_sle_in_remission_code_follows_the_remission_setting():
    in_remission = b.sle("698694005", SNOMED)  # clinicalStatus active, but the code says remission
    cards = run(baseline(sle_condition=in_remission))
    assert "coded as in remission" in card(cards, CK_TESTING)["detail"]
    assert run(baseline(sle_condition=in_remission), config={"LUPUS_CDS_COUNT_SLE_IN_REMISSION": "false"}) == []
    relapse = b.sle("698694005", SNOMED, clinical="relapse")  # a relapse is not a remission, whatever the code
    assert run(baseline(sle_condition=relapse), config={"LUPUS_CDS_COUNT_SLE_IN_REMISSION": "false"})


@pytest.mark.parametrize("code", ["200937007", "707301001", "403508004", "95609003", "238926009"])
def test_10_3_cutaneous_mucosal_or_neonatal_lupus_from_the_codelist_gives_no_cards(code):
    assert run(baseline(sle_condition=b.sle(code, SNOMED))) == []


# ============================================================== 10.3 undated active symptom Conditions


def test_10_3_undated_active_fasciculation_condition_counts_and_says_date_unknown():
    undated = b.fasciculation(days_ago=None)
    assert "recordedDate" not in undated and "onsetDateTime" not in undated
    cards = run(baseline(fasc=undated))
    assert topics(cards) == BASELINE_TOPICS
    assert "date unknown" in card(cards, CK_TESTING)["detail"]


def test_10_3_undated_fasciculation_still_needs_an_active_status():
    assert run(baseline(fasc=b.fasciculation(days_ago=None, clinical="resolved"))) == []
    assert run(baseline(fasc=b.fasciculation(days_ago=None, verification="refuted"))) == []


def test_10_3_undated_weakness_condition_supports_the_ck_card_and_is_a_red_flag_with_date_unknown():
    """Decision: an undated active red-flag Condition counts (its clinicalStatus says it is current) and is
    stated with its date unknown; it is never called new."""
    cards = run(baseline(b.condition("M62.81", days_ago=None)))
    assert topics(cards)[CK_TESTING] == "warning"
    red = card(cards, RED_FLAG)
    assert red["indicator"] == "critical" and "new weakness" not in red["summary"]
    assert "date unknown" in red["detail"]


def test_10_3_meta_last_updated_is_not_a_symptom_date():
    undated = b.fasciculation(days_ago=None, meta={"lastUpdated": "2019-01-01T00:00:00Z"})
    assert topics(run(baseline(fasc=undated))) == BASELINE_TOPICS
