"""Laboratory interpretation (CLINICAL-CONTENT 10.2 and the lab items of 10.5), as scenarios: a request in,
the cards out (topic, indicator, key words of the summary and detail, draft orders).

Baseline unless stated: adult female, active confirmed SLE (M32.9), fasciculation R25.3 recorded 3 days
ago, patient-view.
"""

from __future__ import annotations

import builders as b
import pytest
from builders import baseline, card, ordered_codes, run, topics

CK_TESTING, CK_ELEVATED = "ck-testing", "ck-elevated"
E_TESTING, E_ABNORMAL = "electrolyte-testing", "electrolyte-abnormal"
V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
TACROLIMUS = ("42316", "tacrolimus")
LISINOPRIL = ("29046", "lisinopril")
ATORVASTATIN_10 = ("617312", "atorvastatin 10 MG Oral Tablet")
PANTOPRAZOLE = ("40790", "pantoprazole")
ALBUMIN, PTH, VITAMIN_D, TSH, CK, POTASSIUM, MAGNESIUM = (
    "1751-7", "2731-8", "62292-8", "3016-3", "2157-6", "2823-3", "19123-9")


def calcium(value: float, unit: str = "mg/dL", code: str = "17861-6", days_ago: float = 2, **kw):
    return b.observation(code, value=value, unit=unit, days_ago=days_ago, **kw)


def albumin(value: float, unit: str = "g/dL", days_ago: float = 2, **kw):
    return b.observation(ALBUMIN, value=value, unit=unit, days_ago=days_ago, **kw)


def unitless(code: str, value: float, days_ago: float = 2, **kw):
    return b.observation(code, value=value, unit=None, days_ago=days_ago, **kw)


def normal_k_mg():
    """K and Mg normal and recent (and a normal CK, so only the card under test remains)."""
    return [b.potassium(4.2), b.magnesium(2.0), b.ck(100)]


def link_urls(c) -> list[str]:
    return [link["url"] for link in c.get("links", [])]


# ======================================================================== 10.2: the lab's flag first


def test_10_2_male_ck_280_flagged_high_without_range_is_elevated():
    """10.2: a male CK of 280 U/L (below the default ULN of 308) flagged H with no range is elevated."""
    cards = run(baseline(b.ck(280, interpretation="H"), *normal_k_mg(), gender="male"))
    ck_card = card(cards, CK_ELEVATED)
    assert ck_card["indicator"] == "warning"
    assert "CK 280 U/L (flagged high by the lab)" in ck_card["summary"]
    assert "the lab's flag is read first" in ck_card["detail"]
    assert CK_ELEVATED not in topics(run(baseline(b.ck(280), *normal_k_mg(), gender="male")))


def test_10_2_ck_flagged_normal_above_the_default_uln_is_not_elevated():
    cards = run(baseline(b.ck(250, interpretation="N"), *normal_k_mg()))
    assert CK_ELEVATED not in topics(cards) and CK_TESTING not in topics(cards)


@pytest.mark.parametrize(
    "resource, indicator, words",
    [
        pytest.param(b.potassium(3.6, interpretation="L"), "warning", "Low potassium 3.6", id="K-L"),
        pytest.param(b.potassium(3.6, interpretation="LU"), "warning", "Low potassium 3.6", id="K-LU"),
        pytest.param(b.potassium(5.2, interpretation="H"), "warning", "High potassium 5.2", id="K-H"),
        pytest.param(b.potassium(5.2, interpretation="HU"), "warning", "High potassium 5.2", id="K-HU"),
        pytest.param(b.potassium(5.6, interpretation="HH"), "critical", "5.6 mmol/L (critical high)", id="K-HH"),
        pytest.param(b.potassium(3.0, interpretation="LL"), "critical", "3.0 mmol/L (critical)", id="K-LL"),
        pytest.param(b.potassium(5.8, interpretation="A"), "warning", "High potassium 5.8", id="K-A-high"),
        pytest.param(b.potassium(5.8, interpretation="AA"), "critical", "(critical high)", id="K-AA-high"),
    ],
)
def test_10_2_potassium_flags_come_first(resource, indicator, words):
    cards = run(baseline(resource, b.magnesium(2.0)))
    assert topics(cards)[E_ABNORMAL] == indicator
    assert words in card(cards, E_ABNORMAL)["summary"]


@pytest.mark.parametrize(
    "resource, indicator",
    [
        pytest.param(b.magnesium(1.9, interpretation="L"), "warning", id="Mg-L-above-default"),
        pytest.param(calcium(8.7, interpretation="L"), "warning", id="Ca-L-above-default"),
        pytest.param(calcium(7.5, interpretation="LL"), "critical", id="Ca-LL"),
        pytest.param(b.observation("2777-1", value=2.7, unit="mg/dL", interpretation="L"), "info", id="P-L"),
        pytest.param(b.observation("2951-2", value=136, unit="mmol/L", interpretation="LU"), "info", id="Na-LU"),
        pytest.param(b.observation("2951-2", value=128, unit="mmol/L", interpretation="LL"), "warning", id="Na-LL"),
    ],
)
def test_10_2_flags_come_first_for_every_analyte(resource, indicator):
    extra = [b.potassium(4.2)] if resource["code"]["coding"][0]["code"] == MAGNESIUM else normal_k_mg()
    assert topics(run(baseline(resource, *extra)))[E_ABNORMAL] == indicator


def test_10_2_a_normal_flag_is_the_lab_saying_normal():
    cards = run(baseline(b.potassium(3.4, interpretation="N"), b.magnesium(2.0)))
    assert E_ABNORMAL not in topics(cards)


# ========================================================================== 10.2: calcium and tetany


def test_10_2_unflagged_calcium_6_9_is_low_with_tetany_work_up():
    """10.2: an unflagged total calcium of 6.9 mg/dL (no range) is low: warning, possible tetany, with albumin,
    PTH and 25-OH vitamin D suggested (magnesium too when none is on record)."""
    cards = run(baseline(calcium(6.9), b.potassium(4.2)))
    ca_card = card(cards, E_ABNORMAL)
    assert ca_card["indicator"] == "warning"
    assert "Low calcium 6.9 mg/dL" in ca_card["summary"] and "tetany" in ca_card["summary"]
    assert "below the default 8.5 mg/dL" in ca_card["detail"]
    assert "No albumin on the same day" in ca_card["detail"]
    assert ordered_codes(ca_card) == [MAGNESIUM, ALBUMIN, PTH, VITAMIN_D]
    assert "https://www.ncbi.nlm.nih.gov/books/NBK430912/" in link_urls(ca_card)


@pytest.mark.parametrize("value, indicator", [(6.0, "warning"), (5.9, "critical")])
def test_10_2_total_calcium_critical_cut_off_6_0_mg_dl(value, indicator):
    """ARUP Critical Values List: calcium total < 6.0 mg/dL is critical."""
    cards = run(baseline(calcium(value), *normal_k_mg()))
    assert topics(cards)[E_ABNORMAL] == indicator


@pytest.mark.parametrize("value, low", [(8.5, False), (8.49, True)])
def test_10_2_total_calcium_default_8_5_mg_dl(value, low):
    """StatPearls Hypocalcemia: total calcium 8.5-10.5 mg/dL."""
    assert (E_ABNORMAL in topics(run(baseline(calcium(value), *normal_k_mg())))) is low


def test_10_2_calcium_in_mmol_per_litre_is_converted():
    ca_card = card(run(baseline(calcium(1.70, unit="mmol/L", code="2000-8"), *normal_k_mg())), E_ABNORMAL)
    assert "Low calcium 6.8 mg/dL" in ca_card["summary"]


def test_10_2_calcium_corrected_for_a_same_day_albumin_with_the_arithmetic():
    cards = run(baseline(calcium(7.0), albumin(3.0), *normal_k_mg()))
    ca_card = card(cards, E_ABNORMAL)
    assert "Corrected calcium = 7.0 + 0.8 x (4.0 - 3.0) = 7.8 mg/dL" in ca_card["detail"]
    assert "Low calcium 7.8 mg/dL (corrected)" in ca_card["summary"]
    assert ALBUMIN not in ordered_codes(ca_card)  # there is one


def test_10_2_low_total_calcium_explained_by_low_albumin_gives_no_card():
    """7.9 + 0.8 x (4.0 - 2.5) = 9.1 mg/dL: the lab's plain L flag on the measured value gives way."""
    assert E_ABNORMAL not in topics(run(baseline(calcium(7.9, interpretation="L"), albumin(2.5), *normal_k_mg())))


def test_10_2_albumin_in_grams_per_litre_and_a_critical_flag_that_stays():
    cards = run(baseline(calcium(6.0, interpretation="LL"), albumin(25, unit="g/L"), *normal_k_mg()))
    ca_card = card(cards, E_ABNORMAL)
    assert ca_card["indicator"] == "critical"
    assert "(4.0 - 2.5) = 7.2 mg/dL" in ca_card["detail"]


def test_10_2_albumin_of_another_day_does_not_correct():
    cards = run(baseline(calcium(7.9), albumin(2.5, days_ago=5), *normal_k_mg()))
    ca_card = card(cards, E_ABNORMAL)
    assert "Corrected calcium" not in ca_card["detail"] and ALBUMIN in ordered_codes(ca_card)


def test_10_2_already_corrected_calcium_is_not_corrected_again():
    cards = run(baseline(calcium(1.9, unit="mmol/L", code="29265-6"), albumin(2.0), *normal_k_mg()))
    ca_card = card(cards, E_ABNORMAL)
    assert "Corrected calcium =" not in ca_card["detail"] and "Low calcium 7.6 mg/dL" in ca_card["summary"]


@pytest.mark.parametrize("value, indicator", [(1.12, None), (1.11, "warning"), (0.78, "warning"), (0.77, "critical")])
def test_10_2_ionized_calcium_defaults(value, indicator):
    """OhioHealth LAB54 (4.5-5.3 mg/dL = 1.12-1.32 mmol/L); ARUP critical < 0.78 mmol/L."""
    ionized = b.observation("1994-3", value=value, unit="mmol/L")
    assert topics(run(baseline(ionized, *normal_k_mg()))).get(E_ABNORMAL) == indicator


def test_10_2_already_ordered_pth_and_vitamin_d_are_not_suggested_again():
    pending = [b.service_request(PTH, status="active"), b.service_request(VITAMIN_D, status="active")]
    ca_card = card(run(baseline(calcium(6.9), *normal_k_mg(), *pending)), E_ABNORMAL)
    assert ordered_codes(ca_card) == [ALBUMIN]


# ===================================================================== 10.2: phosphate and sodium


@pytest.mark.parametrize(
    "code, value, unit, indicator",
    [
        ("2777-1", 2.5, "mg/dL", None),
        ("2777-1", 2.4, "mg/dL", "info"),  # StatPearls / Merck: < 2.5 mg/dL
        ("2777-1", 0.99, "mg/dL", "warning"),  # ARUP critical < 1.0 mg/dL
        ("2777-1", 0.7, "mmol/L", "info"),  # 2.17 mg/dL
        ("2951-2", 135, "mmol/L", None),
        ("2951-2", 134, "mmol/L", "info"),  # StatPearls hyponatremia < 135
        ("2951-2", 119, "mmol/L", "warning"),  # ARUP critical < 120
    ],
)
def test_10_2_phosphate_and_sodium_defaults(code, value, unit, indicator):
    result = b.observation(code, value=value, unit=unit)
    assert topics(run(baseline(result, *normal_k_mg()))).get(E_ABNORMAL) == indicator


# =========================================================================== 10.2: high potassium


@pytest.mark.parametrize(
    "value, indicator", [(5.4, None), (5.5, "warning"), (5.99, "warning"), (6.0, "critical")]
)
def test_10_2_high_potassium_defaults_5_5_and_critical_6_0(value, indicator):
    """UK Kidney Association 2023: hyperkalaemia >= 5.5 mmol/L; moderate from 6.0 (ECG)."""
    assert topics(run(baseline(b.potassium(value), b.magnesium(2.0)))).get(E_ABNORMAL) == indicator


def test_10_2_potassium_6_4_flagged_hh_is_stated_not_counted_as_checked():
    tacrolimus = b.medication_request(*TACROLIMUS)
    lisinopril = b.medication_request(*LISINOPRIL)
    nephritis = b.condition("M32.14")
    cards = run(baseline(b.potassium(6.4, interpretation="HH"), b.magnesium(2.0), tacrolimus, lisinopril, nephritis))
    k_card = card(cards, E_ABNORMAL)
    assert k_card["indicator"] == "critical"
    assert "Potassium 6.4 mmol/L (critical high) on tacrolimus" in k_card["summary"]
    assert "ECG" in k_card["summary"]
    detail = k_card["detail"]
    assert "Lowers magnesium, raises potassium and causes tremor: tacrolimus" in detail
    assert "Raises potassium: lisinopril" in detail
    assert "Kidney involvement" in detail
    assert "ACE inhibitors or ARBs, calcineurin inhibitors" in detail and "trimethoprim" in detail
    assert ordered_codes(k_card) == [POTASSIUM]  # recheck
    assert "https://ukkidney.org/health-professionals/guidelines/treatment-acute-hyperkalaemia-adults" in link_urls(
        k_card)


def test_10_5_tacrolimus_is_no_longer_said_to_lower_potassium():
    cards = run(baseline(b.potassium(4.0), b.medication_request(*TACROLIMUS)))
    detail = card(cards, E_TESTING)["detail"]  # magnesium is missing
    assert "Lowers magnesium, raises potassium and causes tremor: tacrolimus" in detail
    assert "Lowers potassium" not in detail and "Lowers potassium/magnesium" not in detail


def test_10_5_ace_inhibitor_is_named_only_with_a_high_potassium():
    cards = run(baseline(b.medication_request(*LISINOPRIL)))
    assert "lisinopril" not in card(cards, E_TESTING)["detail"]


# ============================================================================ 10.2: haemolysis


def haemolysed_by_contained_specimen(value: float):
    k = b.potassium(value)
    k["contained"] = [{"resourceType": "Specimen", "id": "s1",
                       "condition": [b.concept("HEM", V2_0493, "Hemolyzed")]}]
    k["specimen"] = {"reference": "#s1"}
    return [k]


def haemolysed_by_prefetched_specimen(value: float):
    specimen = {"resourceType": "Specimen", "id": "spec-9", "condition": [{"text": "Haemolysed"}]}
    k = b.potassium(value)
    k["specimen"] = {"reference": "Specimen/spec-9"}
    return [specimen, k]


def haemolysed_by_interpretation(value: float):
    k = b.potassium(value)
    k["interpretation"] = [{"text": "Specimen hemolyzed"}]
    return [k]


def haemolysed_by_note(value: float):
    return [b.potassium(value, note=[{"text": "Moderately haemolysed sample; interpret with caution"}])]


@pytest.mark.parametrize(
    "make", [haemolysed_by_contained_specimen, haemolysed_by_prefetched_specimen, haemolysed_by_interpretation,
             haemolysed_by_note],
)
def test_10_2_haemolysed_potassium_is_not_valid_and_is_redrawn(make):
    cards = run(baseline(*make(6.4), b.magnesium(2.0), b.ck(100)))
    assert topics(cards) == {E_TESTING: "info"}  # never critical: not a valid potassium
    e_card = card(cards, E_TESTING)
    assert "haemolysed specimen" in e_card["summary"] and "Redraw" in e_card["summary"]
    assert "not a valid potassium" in e_card["detail"]
    assert ordered_codes(e_card) == [POTASSIUM]
    assert e_card["suggestions"][0]["label"].startswith("Redraw potassium")


@pytest.mark.parametrize("text", ["No hemolysis", "Haemolysis index: none", "non-haemolysed sample"])
def test_10_2_a_note_saying_not_haemolysed_keeps_the_potassium_valid(text):
    cards = run(baseline(b.potassium(3.1, note=[{"text": text}]), b.magnesium(2.0)))
    assert topics(cards)[E_ABNORMAL] == "warning"


def test_10_2_haemolysed_potassium_with_missing_magnesium_orders_both():
    e_card = card(run(baseline(*haemolysed_by_contained_specimen(5.9))), E_TESTING)
    assert ordered_codes(e_card) == [POTASSIUM, MAGNESIUM]


# ============================================================================ 10.2: results without a unit


def test_10_2_magnesium_0_62_without_unit_on_the_mass_code_is_not_a_critical():
    """10.2: Mg 0.62 on the mass code with no unit must not become '0.62 mg/dL, critical'."""
    cards = run(baseline(b.potassium(4.2), unitless(MAGNESIUM, 0.62)))
    assert "critical" not in {c["indicator"] for c in cards}
    assert E_ABNORMAL not in topics(cards)
    e_card = card(cards, E_TESTING)
    assert "not interpretable" in e_card["summary"] and "Magnesium 0.62" in e_card["summary"]
    assert "not interpretable (no unit that can be read)" in e_card["detail"]
    assert ordered_codes(e_card) == [MAGNESIUM]


def test_10_2_unreadable_result_flagged_ll_is_still_never_critical():
    cards = run(baseline(b.potassium(4.2), unitless(MAGNESIUM, 0.62, interpretation="LL")))
    assert "critical" not in {c["indicator"] for c in cards}


@pytest.mark.parametrize(
    "resource, topic",
    [
        pytest.param(unitless(MAGNESIUM, 2.0), None, id="Mg-2.0-mass-code-read-as-mg/dL"),
        pytest.param(unitless(MAGNESIUM, 1.3), E_ABNORMAL, id="Mg-1.3-mass-code-read-as-mg/dL-low"),
        pytest.param(unitless("2601-3", 0.53), E_ABNORMAL, id="Mg-0.53-substance-code-read-as-mmol/L"),
    ],
)
def test_10_2_unitless_magnesium_read_when_property_and_magnitude_fit_one_unit(resource, topic):
    cards = run(baseline(b.potassium(4.2), resource))
    assert {t for t in topics(cards) if t.startswith("electrolyte")} == ({topic} if topic else set())


def test_10_2_unitless_potassium_read_when_plausible_and_not_otherwise():
    assert topics(run(baseline(unitless(POTASSIUM, 3.1), b.magnesium(2.0))))[E_ABNORMAL] == "warning"
    cards = run(baseline(unitless(POTASSIUM, 41), b.magnesium(2.0), b.ck(100)))
    assert topics(cards) == {E_TESTING: "info"} and "not interpretable" in card(cards, E_TESTING)["summary"]


def test_10_2_unitless_ck_that_fits_two_units_is_not_interpretable():
    cards = run(baseline(unitless(CK, 5), *normal_k_mg()))
    ck_card = card(cards, CK_TESTING)
    assert ck_card["indicator"] == "info" and "not interpretable" in ck_card["summary"]
    assert "CK 5 (no unit)" in ck_card["summary"] and "suggestions" not in ck_card
    assert CK_ELEVATED not in topics(run(baseline(unitless(CK, 150), *normal_k_mg())))  # read as U/L


# ============================================================================== 10.5: CK next steps


def test_10_5_ck_below_5x_uln_suggests_repeat_and_tsh_and_names_the_statin():
    statin = b.medication_request(*ATORVASTATIN_10)
    ck_card = card(run(baseline(b.ck(450), statin, *normal_k_mg())), CK_ELEVATED)
    assert ck_card["indicator"] == "warning"
    assert "on atorvastatin" in ck_card["summary"] and "drug myopathy or lupus myositis" in ck_card["summary"]
    assert ordered_codes(ck_card) == [CK, TSH]
    assert ck_card["suggestions"][0]["label"].startswith("Repeat creatine kinase in 48-72 h")
    detail = ck_card["detail"]
    assert "48-72 h without strenuous exercise or intramuscular injections" in detail
    assert "myositis work-up by rheumatology" in detail


def test_10_5_ck_marked_with_hydroxychloroquine_names_it_in_the_summary():
    hcq = b.medication_request("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet")
    ck_card = card(run(baseline(b.ck(1540), hcq, *normal_k_mg())), CK_ELEVATED)
    assert "on hydroxychloroquine" in ck_card["summary"] and "(8.0x ULN)" in ck_card["summary"]


def test_10_5_pending_tsh_or_ck_is_not_suggested_again():
    pending = [b.service_request(TSH, status="active"), b.service_request(CK, status="active")]
    assert "suggestions" not in card(run(baseline(b.ck(450), *pending, *normal_k_mg())), CK_ELEVATED)


# ========================================================================= 10.5: wording and precision


def test_10_5_low_potassium_wording_points_twitching_to_magnesium_or_calcium():
    k_card = card(run(baseline(b.potassium(3.0), b.magnesium(2.0))), E_ABNORMAL)
    assert "Low potassium 3.0 mmol/L" in k_card["summary"]  # clinical precision: not "3 mmol/L"
    assert "weakness and cramps" in k_card["detail"]
    assert "twitching and tetany point more to low magnesium or calcium" in k_card["detail"]


def test_10_5_fda_ppi_notice_is_linked_only_when_a_ppi_is_current():
    fda = "https://www.fda.gov/drugs/drug-safety-and-availability/"
    without = card(run(baseline(b.potassium(4.0), b.magnesium(1.5))), E_ABNORMAL)
    assert not any(url.startswith(fda) for url in link_urls(without))
    ppi = b.medication_statement(*PANTOPRAZOLE, start_days_ago=730)
    with_ppi = card(run(baseline(ppi, b.potassium(4.0), b.magnesium(1.5))), E_ABNORMAL)
    assert any(url.startswith(fda) for url in link_urls(with_ppi))
    assert not any(url.startswith(fda) for url in link_urls(card(run(baseline()), E_TESTING)))


# ================================================================== 10.2: the sources of the defaults


def test_10_2_default_cut_offs_are_pinned_with_their_sources():
    """Each default is the number its public source states (recorded in plugin/settings.py)."""
    from plugin.settings import SETTINGS, Settings

    settings = Settings.from_config({})
    expected = {
        "hypocalcemia_mg_dl": (8.5, "StatPearls, Hypocalcemia"),
        "hypocalcemia_critical_mg_dl": (6.0, "ARUP Laboratories Critical Values List"),
        "ionized_hypocalcemia_mmol_l": (1.12, "OhioHealth Laboratory Services test LAB54"),
        "ionized_hypocalcemia_critical_mmol_l": (0.78, "ARUP Laboratories Critical Values List"),
        "hypophosphatemia_mg_dl": (2.5, "StatPearls, Hypophosphatemia"),
        "hypophosphatemia_critical_mg_dl": (1.0, "ARUP Laboratories Critical Values List"),
        "hyponatremia_mmol_l": (135.0, "StatPearls, Hyponatremia"),
        "hyponatremia_critical_mmol_l": (120.0, "ARUP Laboratories Critical Values List"),
        "hyperkalemia_mmol_l": (5.5, "UK Kidney Association"),
        "hyperkalemia_critical_mmol_l": (6.0, "UK Kidney Association"),
    }
    for name, (value, source) in expected.items():
        assert getattr(settings, name) == value, name
        assert source in SETTINGS[name].source, name


def test_10_2_the_rule_book_prints_each_default_with_its_source():
    from plugin.rulebook import format_rulebook

    text = format_rulebook({})
    assert "LUPUS_CDS_HYPOCALCEMIA_CRITICAL_MG_DL = 6: " in text and "Source: ARUP Laboratories" in text
    assert "LUPUS_CDS_HYPERKALEMIA_MMOL_L = 5.5" in text


def test_10_5_voclosporin_is_a_calcineurin_inhibitor_recognised_by_name():
    """10.5: voclosporin (Lupkynis, FDA NDA 213716) is added to the calcineurin inhibitors. No public source
    gives its RxNorm ingredient RxCUI, so it is matched by the ingredient name of its product, whatever code
    the EHR sends with it; like tacrolimus it raises potassium and lowers magnesium."""
    from plugin import terminology

    assert terminology.in_valueset("calcineurin-inhibitors", terminology.INGREDIENT_NAME, "voclosporin")
    product = b.medication_request("99999999", "voclosporin 7.9 MG Oral Capsule")  # code unknown to us
    cards = run(baseline(b.potassium(6.4, interpretation="HH"), b.magnesium(2.0), product))
    detail = card(cards, E_ABNORMAL)["detail"]
    assert "Lowers magnesium, raises potassium and causes tremor: voclosporin" in detail
    brand = b.medication_request("99999998", "LUPKYNIS 7.9 MG Oral Capsule")
    detail = card(run(baseline(b.potassium(4.0), brand)), E_TESTING)["detail"]  # magnesium missing
    assert "Lowers magnesium, raises potassium and causes tremor: LUPKYNIS" in detail


def test_10_2_haemolysis_named_in_a_local_interpretation_coding_counts():
    """A local interpretation coding whose display says the specimen is haemolysed is read too."""
    k = b.potassium(6.8)
    k["interpretation"] = [b.concept("HEMO", "urn:oid:1.2.3.4.5", "Haemolysed specimen")]
    assert topics(run(baseline(k, b.magnesium(2.0), b.ck(100)))) == {E_TESTING: "info"}


def test_10_2_unreadable_sodium_is_shown_as_not_interpretable():
    sodium = unitless("2951-2", 13.5)
    cards = run(baseline(sodium, *normal_k_mg()))
    e_card = card(cards, E_TESTING)
    assert e_card["indicator"] == "info" and "Sodium 13.5" in e_card["summary"]
    assert "suggestions" not in e_card
