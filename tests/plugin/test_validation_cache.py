"""``plugin.fhirdata.validate`` caches: per resource content, and per complex element (a coding, a
reference range, a dosage) so that a patient seen for the first time pays only for what is new. The
cached path must give exactly the model a plain ``model_validate`` gives."""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.servicerequest import ServiceRequest

from plugin import facts, fhirdata
from plugin.fixtures import bundle_resources, load_bundle, patient_names

MODELS = {
    "Condition": (Condition, facts.CONDITION_ELEMENTS),
    "Observation": (Observation, facts.OBSERVATION_ELEMENTS),
    "MedicationRequest": (MedicationRequest, facts.MEDICATION_ELEMENTS),
    "MedicationStatement": (MedicationStatement, facts.MEDICATION_ELEMENTS),
    "ServiceRequest": (ServiceRequest, facts.ORDER_ELEMENTS),
    "Procedure": (Procedure, facts.ORDER_ELEMENTS),
    "Patient": (Patient, facts.PATIENT_ELEMENTS),
}


def fixture_resources():
    for name in patient_names():
        for resource in bundle_resources(load_bundle(name)):
            if resource["resourceType"] in MODELS:
                yield resource


def clear():
    fhirdata._validate_cached.cache_clear()
    fhirdata._validated_element.cache_clear()


def test_cached_models_equal_plain_validation_for_every_fixture_resource():
    clear()
    compared = 0
    for resource in fixture_resources():
        model, elements = MODELS[resource["resourceType"]]
        data = {k: resource[k] for k in elements if k in resource}
        try:
            plain = model.model_validate(copy.deepcopy(data)).model_dump()
        except Exception:  # noqa: BLE001 - resources needing repair are compared below, by hand
            continue
        first, problem = fhirdata.validate(model, resource, elements)
        again, _ = fhirdata.validate(model, resource, elements)
        assert problem is None and first.model_dump() == plain, resource.get("id")
        assert again is first  # the second read is the cache's
        compared += 1
    assert compared > 1500  # the PySynthea patient alone brings thousands
    assert fhirdata._validated_element.cache_info().hits > compared  # codings and ranges repeat


def lab(resource_id: str, value: float) -> dict:
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "effectiveDateTime": "2026-11-20T08:00:00Z",
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"},
            "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L"}}]}


def test_an_element_shared_by_two_resources_is_validated_once_and_shared():
    clear()
    one, _ = fhirdata.validate(Observation, lab("k-1", 4.1), facts.OBSERVATION_ELEMENTS)
    two, _ = fhirdata.validate(Observation, lab("k-2", 3.2), facts.OBSERVATION_ELEMENTS)
    assert one is not two and one.valueQuantity.value != two.valueQuantity.value
    assert one.code is two.code and one.referenceRange[0] is two.referenceRange[0]


@pytest.mark.parametrize("break_it, check", [
    # a timezone-less dateTime inside an element: the element fails alone, the repair path mends it
    (lambda r: r.update(effectivePeriod={"start": "2026-11-20T08:00:00"}) or r.pop("effectiveDateTime"),
     lambda m: m.effectivePeriod.start.tzinfo is not None),
    # a single object where R4 has an array
    (lambda r: r.update(referenceRange=r["referenceRange"][0]), lambda m: len(m.referenceRange) == 1),
])
def test_an_element_that_fails_alone_goes_the_repairing_way(break_it, check):
    clear()
    raw = lab("k-3", 4.0)
    break_it(raw)
    before = copy.deepcopy(raw)
    model, problem = fhirdata.validate(Observation, raw, facts.OBSERVATION_ELEMENTS)
    assert problem is None and check(model)
    assert raw == before  # the request's JSON is never mutated


def test_an_invalid_element_still_makes_the_resource_invalid():
    clear()
    raw = lab("k-4", 4.0)
    raw["valueQuantity"] = {"value": "lots"}
    model, problem = fhirdata.validate(Observation, raw, facts.OBSERVATION_ELEMENTS)
    assert model is None and "valueQuantity" in problem


def test_the_cache_keeps_no_request_json():
    """The key carries the value to the cached function, which takes it: a cached entry holds bytes."""
    raw = lab("k-5", 4.4)
    content = fhirdata._Content({"valueQuantity": raw["valueQuantity"]})
    assert content.take() == {"valueQuantity": raw["valueQuantity"]} and content.value is None
    assert content == fhirdata._Content({"valueQuantity": dict(reversed(list(raw["valueQuantity"].items())))})
