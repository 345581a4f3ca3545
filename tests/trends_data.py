"""A synthetic patient for the lab and steroid timeline (``plugin/trends.py``), dated relative to ``now``.

``timeline_patient(now)`` is the story a rheumatologist would open the app for: SLE, prednisone raised to
60 mg/day ten months ago after a methylprednisolone pulse, then tapered in steps (10 mg/day now); CK
rising after the dose went up; furosemide started 200 days ago and potassium falling after it; a
fasciculation noted two months ago and trouble swallowing three weeks ago. A few results are there to be
listed but not plotted: one entered in error, one without a unit, one preliminary (plotted hollow), one
with text instead of a number.

``daily_patient(now)`` is two years of daily labs (5,110 Observations) for the benchmark.

Every resource has a fixed id and is PUT, so a test knows each point's ``Observation/<id>``;
:func:`expected_points` gives, per chart, ``{source: value}`` of what the chart must plot.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
PATIENT_ID = "trends-1"

#: analyte -> (LOINC code, display, unit, reference low, high)
LABS = {
    "ck": ("2157-6", "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 26, 192),
    "potassium": ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1),
    "magnesium": ("19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", 1.7, 2.4),
    "calcium": ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.5, 10.2),
}


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def day(when: datetime) -> str:
    return when.date().isoformat()


def observation(rid: str, analyte: str, when: datetime, value: Any, *, status: str = "final",
                unit: str | None = "default", code: str | None = None, ref: bool = True) -> dict[str, Any]:
    loinc, display, default_unit, low, high = LABS[analyte]
    unit = default_unit if unit == "default" else unit
    quantity: dict[str, Any] = {"value": value}
    if unit:
        quantity.update(unit=unit, system=UCUM, code=unit)
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": code or loinc, "display": display}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": iso(when),
        "valueQuantity": quantity,
    }
    if ref and unit:
        resource["referenceRange"] = [{"low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                                       "high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}]
    return resource


def condition(rid: str, code: str, display: str, onset: datetime) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "onsetDateTime": iso(onset), "recordedDate": iso(onset)}


def medication_request(rid: str, rxcui: str, display: str, status: str, authored: datetime,
                       dosages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": display}],
                                          "text": display},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "authoredOn": iso(authored),
            "dosageInstruction": dosages}


def daily(mg: float, start: datetime | None = None, end: datetime | None = None, *, unit: str = "mg",
          sequence: int | None = None) -> dict[str, Any]:
    repeat: dict[str, Any] = {"frequency": 1, "period": 1, "periodUnit": "d"}
    if start or end:
        repeat["boundsPeriod"] = {k: iso(v) for k, v in (("start", start), ("end", end)) if v}
    dosage: dict[str, Any] = {"timing": {"repeat": repeat},
                              "doseAndRate": [{"doseQuantity": {"value": mg, "unit": unit, "system": UCUM,
                                                                "code": unit}}]}
    if sequence is not None:
        dosage["sequence"] = sequence
    return dosage


def steroid_plan(now: datetime) -> dict[str, Any]:
    """Dates of the steroid story, for the resources and the expectations."""
    pulse = now - timedelta(days=320)
    raised = now - timedelta(days=300)
    taper = [raised + timedelta(days=60 * i) for i in range(5)]  # 60, 40, 30, 20, 10 mg: 60 days each
    return {"pulse": pulse, "raised": raised, "taper": taper, "doses": [60, 40, 30, 20, 10],
            "furosemide": now - timedelta(days=200), "fasciculation": now - timedelta(days=60),
            "dysphagia": now - timedelta(days=21)}


def timeline_patient(now: datetime) -> dict[str, Any]:
    """A transaction Bundle (PUT, fixed ids) with the story of the module docstring."""
    now = now.astimezone(UTC)
    plan = steroid_plan(now)
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PATIENT_ID, "gender": "female", "birthDate": "1986-04-12",
         "name": [{"use": "official", "family": "Timeline", "given": ["Tess"]}]},
        condition("trends-sle", "55464009", "Systemic lupus erythematosus", now - timedelta(days=2000)),
        condition("trends-fasc", "82470000", "Muscle fasciculation", plan["fasciculation"]),
        condition("trends-dysphagia", "40739000", "Dysphagia", plan["dysphagia"]),
    ]
    for month in range(24):  # one panel a month, oldest first; the last is 5 days ago
        when = now - timedelta(days=5 + 30 * (23 - month))
        after_raise = when > plan["raised"]
        after_diuretic = when > plan["furosemide"]
        ck = 110 + 3 * month + (int((when - plan["raised"]).days * 2.2) if after_raise else 0)
        potassium = round(4.3 - (0.06 * (when - plan["furosemide"]).days / 10 if after_diuretic else 0), 1)
        resources.append(observation(f"ck-{month}", "ck", when, ck))
        resources.append(observation(f"k-{month}", "potassium", when + timedelta(hours=1), max(potassium, 2.9)))
        resources.append(observation(f"mg-{month}", "magnesium", when + timedelta(hours=1),
                                     round(2.1 - (0.02 * month if after_diuretic else 0), 2)))
        resources.append(observation(f"ca-{month}", "calcium", when + timedelta(hours=1), 9.4))
    # listed, not plotted (or plotted hollow)
    resources += [
        observation("ck-error", "ck", now - timedelta(days=100), 9999, status="entered-in-error"),
        observation("mg-nounit", "magnesium", now - timedelta(days=90), 0.62, unit=None),
        observation("k-prelim", "potassium", now - timedelta(days=2), 3.0, status="preliminary"),
        {**observation("ck-text", "ck", now - timedelta(days=150), 0), "valueQuantity": None,
         "valueString": "haemolysed, not reported"},
        observation("mg-mmol", "magnesium", now - timedelta(days=40), 0.70, unit="mmol/L", code="2601-3"),
    ]
    resources[-2].pop("valueQuantity")
    taper_lines = [daily(mg, start, start + timedelta(days=60), sequence=i + 1)
                   for i, (mg, start) in enumerate(zip(plan["doses"][1:], plan["taper"][1:], strict=True))]
    resources += [
        medication_request("pred-60", "312615", "prednisone 20 MG Oral Tablet", "completed", plan["raised"],
                           [daily(60, plan["raised"], plan["taper"][1])]),
        medication_request("pred-taper", "312615", "prednisone 20 MG Oral Tablet", "active", plan["taper"][1],
                           taper_lines),
        {**medication_request("mp-pulse", "1743726", "methylprednisolone 1000 MG Injection",
                              "completed", plan["pulse"],
                              [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                                      "boundsDuration": {"value": 3, "unit": "d",
                                                                         "system": UCUM, "code": "d"}}},
                                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "g", "system": UCUM,
                                                                  "code": "g"}}]}])},
        medication_request("furosemide", "313988", "furosemide 40 MG Oral Tablet", "active", plan["furosemide"],
                           [daily(40)]),
    ]
    for i in range(3):
        resources.append({
            "resourceType": "MedicationAdministration", "id": f"mp-given-{i}", "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1743726",
                                                      "display": "methylprednisolone 1000 MG "
                                                                 "Injection"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "effectiveDateTime": iso(plan["pulse"] + timedelta(days=i, hours=9)),
            "dosage": {"dose": {"value": 1000, "unit": "mg", "system": UCUM, "code": "mg"}}})
    return bundle(resources)


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in resources]}


def resources_of(bundle_: dict[str, Any], *types: str) -> list[dict[str, Any]]:
    return [copy.deepcopy(e["resource"]) for e in bundle_["entry"] if e["resource"]["resourceType"] in types]


def expected_points(bundle_: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Chart id -> {"Observation/<id>": value in the chart's unit} of every point that must be plotted."""
    charts = {"chart-ck": {}, "chart-potassium": {}, "chart-magnesium": {}, "chart-calcium": {}}
    chart_of = {"2157-6": "chart-ck", "2823-3": "chart-potassium", "19123-9": "chart-magnesium",
                "2601-3": "chart-magnesium", "17861-6": "chart-calcium"}
    for resource in resources_of(bundle_, "Observation"):
        quantity = resource.get("valueQuantity")
        if resource["status"] not in ("final", "preliminary") or not quantity or not quantity.get("unit"):
            continue
        value = quantity["value"]
        if resource["code"]["coding"][0]["code"] == "2601-3":
            value = round(value / 0.4114, 2)  # mmol/L -> mg/dL
        charts[chart_of[resource["code"]["coding"][0]["code"]]][f"Observation/{resource['id']}"] = value
    return charts


def daily_patient(now: datetime) -> dict[str, Any]:
    """Two years of daily labs: potassium twice a day, CK, magnesium (mg/dL and mmol/L), total and ionized
    calcium once a day (5,110 Observations), plus the steroid and symptom resources of the timeline patient."""
    now = now.astimezone(UTC)
    resources = [r for r in (e["resource"] for e in timeline_patient(now)["entry"])
                 if r["resourceType"] != "Observation"]
    for n in range(730):
        when = now - timedelta(days=730 - n, hours=-7)
        resources += [
            observation(f"d-ck-{n}", "ck", when, 100 + n % 170),
            observation(f"d-k-{n}", "potassium", when, round(3.4 + (n % 17) / 10, 1)),
            observation(f"d-k2-{n}", "potassium", when + timedelta(hours=10), round(3.6 + (n % 13) / 10, 1)),
            observation(f"d-mg-{n}", "magnesium", when, round(1.6 + (n % 9) / 10, 2)),
            observation(f"d-mgm-{n}", "magnesium", when + timedelta(hours=2), round(0.66 + (n % 7) / 50, 2),
                        unit="mmol/L", code="2601-3"),
            observation(f"d-ca-{n}", "calcium", when, round(8.4 + (n % 19) / 10, 1)),
            observation(f"d-ica-{n}", "calcium", when + timedelta(hours=1), round(1.1 + (n % 5) / 50, 2),
                        unit="mmol/L", code="1995-0", ref=False),
        ]
    return bundle(resources)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(timeline_patient(datetime.now(UTC)), indent=1)[: int(sys.argv[1]) if len(sys.argv) > 1 else None])
