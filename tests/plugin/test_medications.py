"""Medication identification and corticosteroid dose arithmetic (CLINICAL-CONTENT 3.2-4.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plugin import medications as m

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def med(code=None, display=None, *, dosages=(), kind="MedicationRequest", **extra):
    coding = {"system": RX}
    if code:
        coding["code"] = code
    if display:
        coding["display"] = display
    resource = {"resourceType": kind, "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [coding]}, "dosageInstruction": list(dosages)}
    resource.update(extra)
    return resource


def dose(value, unit="mg", frequency=1, period=1, period_unit="d", **timing):
    quantity = {"value": value}
    if unit:
        quantity.update(unit=unit, code=unit, system="http://unitsofmeasure.org")
    repeat = {"frequency": frequency, "period": period, "periodUnit": period_unit} if frequency else {}
    repeat.update(timing)
    return {"doseAndRate": [{"doseQuantity": quantity}], "timing": {"repeat": repeat}}


def daily(resource):
    info = m.identify_medication(resource)
    return m.steroid_daily_dose(resource.get("dosageInstruction"), info, NOW)


def test_table_product_scd_312615():
    info = m.identify_medication(med("312615", "predniSONE 20 MG Oral Tablet"))
    assert info.source == "table" and info.ingredients[0].strength_mg == 20 and info.route_group == "systemic-oral"


def test_name_grammar_fallback_with_tall_man_and_brand():
    info = m.identify_medication(med("999999", "methylPREDNISolone 4 MG Oral Tablet [Medrol]"))
    assert info.source == "name-grammar" and info.ingredients[0].rxcui == "6902"
    assert info.ingredients[0].strength_mg == 4
    assert m.identify_medication({"medicationCodeableConcept": {"text": "prednisone 10 MG Oral Tablet"}}
                                 ).ingredients[0].strength_mg == 10


def test_pack_and_solution_grammar():
    info = m.identify_medication(med(None, "{21 (predniSONE 5 MG Oral Tablet) } Pack"))
    assert info.ingredients[0].strength_mg == 5
    solution = m.identify_medication(med(None, "dexamethasone 1 MG/ML Ophthalmic Suspension"))
    assert solution.route_group == "ophthalmic" and not m.is_systemic(solution)


def test_medication_reference_contained_and_resolved():
    contained = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                 "medicationReference": {"reference": "#m1"},
                 "contained": [{"resourceType": "Medication", "id": "m1",
                                "code": {"coding": [{"system": RX, "code": "312615"}]}}]}
    assert m.identify_medication(contained).ingredients[0].rxcui == "8640"
    other = {"resourceType": "MedicationStatement", "medicationReference": {"reference": "Medication/x"}}
    found = m.identify_medication(other, lambda ref: {"resourceType": "Medication", "code": {"text":
                                                      "dexamethasone 6 MG Oral Tablet"}})
    assert found.ingredients[0].name == "dexamethasone"


def test_route_from_dosage_for_ingredient_codes():
    inhaled = med("19831", "budesonide", dosages=[{"route": {"coding": [{"code": "447694001"}]}}])
    assert m.identify_medication(inhaled).route_group == "inhaled"
    assert not m.is_systemic(m.identify_medication(inhaled))


def test_has_ingredient_in_class():
    info = m.identify_medication(med(None, "gabapentin 600 MG Oral Tablet"))
    assert m.has_ingredient_in(info, "anticonvulsants-neuropathic")
    assert not m.has_ingredient_in(info, "systemic-corticosteroids")


def test_s26_tablet_count_times_strength_bid_is_80():
    result = daily(med("312615", "predniSONE 20 MG Oral Tablet", dosages=[dose(2, None, frequency=2)]))
    assert result.mg_per_day == 80 and result.pred_eq_per_day == 80
    assert "2 tablets × 20 mg = 40 mg × 2/day" in result.arithmetic


def test_s29_methylprednisolone_1_g_is_1250_pred_eq_pulse():
    resource = med(None, "methylprednisolone sodium succinate 1000 MG Injection",
                   dosages=[{"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "g"}}],
                             "timing": {"repeat": {"boundsDuration": {"value": 3, "unit": "d"}}}}])
    result = daily(resource)
    assert result.pred_eq_per_day == 1250 and result.pred_eq_per_administration == 1250


def test_s30_dexamethasone_6_mg_is_40():
    result = daily(med(None, "dexamethasone 6 MG Oral Tablet", dosages=[dose(6)]))
    assert result.pred_eq_per_day == 40
    assert "× 6.67 = 40 mg prednisone-equivalent/day" in result.arithmetic


def test_s31_hydrocortisone_two_lines_is_7_5():
    result = daily(med(None, "hydrocortisone 10 MG Oral Tablet", dosages=[dose(20), dose(10)]))
    assert result.mg_per_day == 30 and result.pred_eq_per_day == 7.5


def test_s32_alternate_day_averages_and_keeps_per_dose():
    result = daily(med(None, "prednisone 10 MG Oral Tablet", dosages=[dose(10, period=2)]))
    assert result.pred_eq_per_day == 5 and result.pred_eq_per_administration == 10


def test_s33_taper_uses_current_step():
    def step(mg, start, end, sequence):
        line = dose(mg)
        line["sequence"] = sequence
        line["timing"]["repeat"]["boundsPeriod"] = {"start": (NOW - timedelta(days=start)).isoformat(),
                                                    "end": (NOW - timedelta(days=end)).isoformat()}
        return line
    resource = med(None, "prednisone 20 MG Oral Tablet",
                   dosages=[step(60, 30, 20, 1), step(40, 20, 5, 2), step(20, 5, -10, 3)])
    assert daily(resource).pred_eq_per_day == 20


@pytest.mark.parametrize("timing, per_day", [({"code": {"coding": [{"code": "TID"}]}}, 3),
                                             ({"code": {"text": "QOD"}}, 0.5),
                                             ({"repeat": {"timeOfDay": ["08:00:00", "20:00:00"]}}, 2),
                                             ({"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}, 3),
                                             ({"repeat": {"frequency": 1, "frequencyMax": 2, "period": 1,
                                                          "periodUnit": "d"}}, 2)])
def test_timing_encodings(timing, per_day):
    resource = med(None, "prednisone 10 MG Oral Tablet",
                   dosages=[{"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}], "timing": timing}])
    assert daily(resource).mg_per_day == pytest.approx(10 * per_day)


def test_dose_range_uses_high_and_ml_uses_concentration():
    ranged = med(None, "prednisone 5 MG Oral Tablet", dosages=[{"doseAndRate": [{"doseRange": {
        "low": {"value": 10, "unit": "mg"}, "high": {"value": 20, "unit": "mg"}}}], "timing": {"repeat": {
            "frequency": 1, "period": 1, "periodUnit": "d"}}}])
    assert daily(ranged).mg_per_day == 20
    liquid = med(None, "prednisolone 3 MG/ML Oral Solution", dosages=[dose(5, "mL")])
    assert daily(liquid).mg_per_day == 15


@pytest.mark.parametrize("dosages, reason", [([], "no dosage"), ([{"text": "prednisone 40 mg daily"}], "dose"),
                                             ([{"asNeededBoolean": True, **dose(10)}], "as-needed"),
                                             ([dose(10, frequency=None)], "frequency")])
def test_s35_not_computable(dosages, reason):
    result = daily(med("312615", "predniSONE 20 MG Oral Tablet", dosages=dosages))
    assert not result.computable and reason in result.reason


def test_depot_injection_has_no_daily_dose():
    info = m.identify_medication(med(None, "triamcinolone acetonide 40 MG/ML Injectable Suspension"))
    assert info.route_group == "depot"
    assert not m.steroid_daily_dose([dose(1, "mL")], info, NOW).computable


def test_odd_shapes_single_dosage_object_and_string_numbers():
    info = m.identify_medication(med(None, "prednisone 10 MG Oral Tablet"))
    single = {"doseAndRate": {"doseQuantity": {"value": "40", "unit": "mg"}},
              "timing": {"repeat": {"frequency": "1", "period": "1", "periodUnit": "d"}}}
    assert m.steroid_daily_dose(single, info, NOW).mg_per_day == 40


@pytest.mark.parametrize("resource, current", [
    ({"resourceType": "MedicationRequest", "status": "active", "intent": "order"}, True),
    ({"resourceType": "MedicationRequest", "status": "stopped", "intent": "order"}, False),
    ({"resourceType": "MedicationRequest", "status": "completed", "intent": "order"}, False),
    ({"resourceType": "MedicationRequest", "status": "active", "intent": "proposal"}, False),
    ({"resourceType": "MedicationStatement", "status": "active", "effectivePeriod": {"end": "2024-01-01"}}, False),
    ({"resourceType": "MedicationStatement", "status": "intended"}, True),
    ({"resourceType": "MedicationStatement", "status": "entered-in-error"}, False),
])
def test_current_medications(resource, current):
    assert m.is_current(resource, NOW) is current


def test_draft_orders_count_only_when_asked():
    draft = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order"}
    assert not m.is_current(draft, NOW) and m.is_current(draft, NOW, include_draft=True)


def test_equivalence_table_is_the_pinned_one():
    assert m.PREDNISONE_EQUIVALENCE["dexamethasone"] == pytest.approx(6.667, abs=0.001)
    assert m.PREDNISONE_EQUIVALENCE["fludrocortisone"] == 0 and m.PREDNISONE_EQUIVALENCE["budesonide"] == 0
    assert "BNF" in m.EQUIVALENCE_SOURCE


# --- the product table -------------------------------------------------------------------------------

TABLE = {code: entry for code, entry in m._products().items()}
# Numbers from recall (verified=false in the table): pinned so any change is deliberate.
UNVERIFIED_PRODUCTS = {"197782", "197783", "197787", "106258", "312614", "349332", "351109", "1085728",
                       "310431", "310433", "483440", "197917"}
# Checked in HL7/PDDI-CDS value set expansions (or CLINICAL-CONTENT 3.2) with these names.
VERIFIED_PRODUCTS = {"198144": "prednisone 1 MG", "198146": "prednisone 2.5 MG", "312617": "prednisone 5 MG",
                     "198145": "prednisone 10 MG", "312615": "prednisone 20 MG", "198148": "prednisone 50 MG",
                     "259966": "methylprednisolone 4 MG", "197969": "methylprednisolone 2 MG",
                     "1743726": "methylprednisolone 1000 MG", "197582": "dexamethasone 4 MG",
                     "197583": "dexamethasone 6 MG", "314200": "pantoprazole 40 MG", "310429": "furosemide 20 MG",
                     "198051": "omeprazole 20 MG", "241834": "cyclosporine, modified 100 MG"}


def test_unverified_product_numbers_are_pinned_and_marked():
    assert {code for code, entry in TABLE.items() if not entry["verified"]} == UNVERIFIED_PRODUCTS
    for code in UNVERIFIED_PRODUCTS:
        assert "recall" in TABLE[code]["source"]


@pytest.mark.parametrize("code, name", sorted(VERIFIED_PRODUCTS.items()))
def test_verified_products_keep_their_names(code, name):
    assert TABLE[code]["verified"] and TABLE[code]["name"].startswith(name)


def test_table_meta_names_version_date_and_sources():
    meta = m.json.loads(m.PRODUCT_TABLE.read_text())["_meta"]
    assert meta["version"] and meta["date"] and "PDDI" in meta["sources"]


@pytest.mark.parametrize("code", sorted(c for c, e in TABLE.items() if e["ingredients"][0]["strength"]))
def test_every_table_product_is_also_readable_by_the_name_grammar(code):
    """An unverified (or mistyped) number is never the only path: the name alone gives the same facts."""
    entry, table_info = TABLE[code], m.identify_medication(med(code))
    parsed = m.identify_medication(med(None, entry["name"]))
    assert table_info.source == "table" and parsed.source == "name-grammar"
    assert parsed.ingredients[0].rxcui == table_info.ingredients[0].rxcui
    assert parsed.ingredients[0].strength_mg == pytest.approx(table_info.ingredients[0].strength_mg)
    assert parsed.route_group == table_info.route_group


def test_required_codes_from_clinical_content_resolve():
    assert m.identify_medication(med("206954")).ingredients[0].strength_mg == 5  # SBD Deltasone
    assert m.identify_medication(med("763181")).ingredients[0].name == "prednisone"  # GPCK
    assert m.identify_medication(med("370649")).ingredients[0].strength_mg is None  # SCDF, no strength
    assert m.identify_medication(med("227730")).ingredients[0].rxcui == "8640"  # BN Deltasone
    assert m.identify_medication(med("241834")).ingredients[0].rxcui == "3008"  # cyclosporine


def test_a_code_whose_display_names_another_drug_is_read_by_its_words():
    """197582 is dexamethasone 4 mg; if a record's display names another ingredient, the table yields."""
    info = m.identify_medication(med("197582", "hydrocortisone 10 MG Oral Tablet"))
    assert info.source == "name-grammar" and info.ingredients[0].name == "hydrocortisone"
    assert m.identify_medication(med("197582", "Dexamethasone 4 MG Oral Tablet")).source == "table"


# --- route: topical, ophthalmic, inhaled are not systemic (scenario 34) ---------------------------------

@pytest.mark.parametrize("code, route", [("309692", "ophthalmic"), ("106258", "topical"), ("351109", "inhaled"),
                                         ("1085728", "depot"), ("1358610", "depot"),
                                         ("1743726", "systemic-parenteral"), ("349332", "systemic-oral")])
def test_route_groups_of_products(code, route):
    assert m.identify_medication(med(code)).route_group == route


@pytest.mark.parametrize("display", ["dexamethasone 1 MG/ML Ophthalmic Suspension",
                                     "hydrocortisone 10 MG/ML Topical Cream",
                                     "budesonide 0.09 MG/ACTUAT Dry Powder Inhaler"])
def test_s34_local_steroids_are_not_systemic(display):
    assert not m.is_systemic(m.identify_medication(med(None, display)))


def test_oral_budesonide_is_reported_but_never_adds_prednisone_equivalents():
    info = m.identify_medication(med("349332"))
    result = m.steroid_daily_dose([dose(9)], info, NOW)
    assert m.is_systemic(info) and result.mg_per_day == 9 and not result.pred_eq_per_day


# --- more dose encodings ---------------------------------------------------------------------------------

def test_as_needed_uses_max_dose_per_period_else_not_computable():
    info = m.identify_medication(med("312615"))
    prn = {"asNeededBoolean": True, "doseAndRate": [{"doseQuantity": {"value": 1}}],
           "maxDosePerPeriod": {"numerator": {"value": 40, "unit": "mg"}, "denominator": {"value": 1, "unit": "d"}}}
    assert m.steroid_daily_dose([prn], info, NOW).pred_eq_per_day == 40
    bare = {k: v for k, v in prn.items() if k != "maxDosePerPeriod"}
    assert not m.steroid_daily_dose([bare], info, NOW).computable


def test_period_range_takes_the_worst_case():
    """'every 4-6 hours' (period 4, periodMax 6): the most doses a day, like OMTK."""
    info = m.identify_medication(med(None, "prednisone 5 MG Oral Tablet"))
    result = m.steroid_daily_dose([dose(5, frequency=1, period=4, period_unit="h", periodMax=6)], info, NOW)
    assert result.mg_per_day == 30


def test_count_dose_without_product_strength_is_not_computable():
    info = m.identify_medication(med("8640", "prednisone"))
    result = m.steroid_daily_dose([dose(2, unit=None)], info, NOW)
    assert not result.computable and "strength" in result.reason


def test_medication_ingredient_strength_ratio_is_used():
    medication = {"resourceType": "Medication", "id": "m1",
                  "code": {"coding": [{"system": RX, "code": "8640", "display": "prednisone"}]},
                  "form": {"text": "Oral Tablet"},
                  "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RX, "code": "8640"}]},
                                  "strength": {"numerator": {"value": 20, "unit": "mg"},
                                               "denominator": {"value": 1, "unit": "TAB"}}}]}
    resource = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationReference": {"reference": "Medication/m1"}, "dosageInstruction": [dose(2, unit=None)]}
    info = m.identify_medication(resource, {"Medication/m1": medication}.get)
    assert info.ingredients[0].strength_mg == 20 and info.route_group == "systemic-oral"
    assert m.steroid_daily_dose(resource["dosageInstruction"], info, NOW).pred_eq_per_day == 40


def test_ndc_only_without_words_is_not_identified():
    resource = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/sid/ndc",
                                                          "code": "0054-4741-25"}]}}
    assert m.identify_medication(resource) is None


@pytest.mark.parametrize("resource", [
    {"resourceType": "MedicationStatement", "status": "on-hold"},
    {"resourceType": "MedicationRequest", "status": "active", "intent": "filler-order"},
    {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
     "dispenseRequest": {"validityPeriod": {"end": "2025-03-01"}}},
])
def test_not_current_per_clinical_content_4_3(resource):
    assert not m.is_current(resource, NOW)
