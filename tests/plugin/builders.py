"""Builders for the clinical scenario tests: small FHIR R4 resources as JSON, and a :class:`HookRequest`
with a pinned clock, handed straight to the plugin's handler (no HTTP).

Dates are given as "days ago" relative to :data:`NOW`, so every window boundary reads as a number.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from cds_hooks.models import HookRequest, PrefetchEntry, PrefetchStatus, PrefetchView
from plugin.hooks import advise, prefetch_templates

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
PATIENT_ID = "pat-1"

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

_ids = itertools.count(1)

#: every card any scenario produced, checked again by test_cards.py
PRODUCED: list[dict[str, Any]] = []


def next_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def ago(days: float = 0, hours: float = 0) -> str:
    """An ISO dateTime ``days`` before :data:`NOW` (same time of day, so a whole number of days is exact)."""
    return (NOW - timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")


def concept(code: str, system: str = SNOMED, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def subject() -> dict[str, str]:
    return {"reference": f"Patient/{PATIENT_ID}"}


# ----------------------------------------------------------------------------------------- resources


def patient(gender: str | None = "female") -> dict[str, Any]:
    resource = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1985-06-01"}
    if gender:
        resource["gender"] = gender
    return resource


def condition(
    code: str,
    system: str = ICD10,
    *,
    days_ago: float | None = 400,
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    onset_days_ago: float | None = None,
    category: str = "problem-list-item",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": next_id("cond"),
        "subject": subject(),
        "code": concept(code, system),
        "category": [concept(category, "http://terminology.hl7.org/CodeSystem/condition-category")],
    }
    if clinical:
        resource["clinicalStatus"] = concept(clinical, CLINICAL)
    if verification:
        resource["verificationStatus"] = concept(verification, VERIFICATION)
    if days_ago is not None:
        resource["recordedDate"] = ago(days_ago)
    if onset_days_ago is not None:
        resource["onsetDateTime"] = ago(onset_days_ago)
    resource.update(extra)
    return resource


def sle(code: str = "M32.9", system: str = ICD10, **kw: Any) -> dict[str, Any]:
    return condition(code, system, **kw)


def fasciculation(days_ago: float = 3, code: str = "R25.3", system: str = ICD10, **kw: Any) -> dict[str, Any]:
    return condition(code, system, days_ago=days_ago, category="encounter-diagnosis", **kw)


def observation(
    code: str,
    system: str = LOINC,
    *,
    value: float | None = None,
    unit: str | None = None,
    days_ago: float = 1,
    status: str = "final",
    ref_low: float | None = None,
    ref_high: float | None = None,
    interpretation: str | None = None,
    value_concept: dict[str, Any] | None = None,
    value_boolean: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": next_id("obs"),
        "status": status,
        "code": concept(code, system),
        "subject": subject(),
        "effectiveDateTime": ago(days_ago),
    }
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit:
            quantity.update(unit=unit, system=UCUM, code=unit)
        resource["valueQuantity"] = quantity
    if value_concept is not None:
        resource["valueCodeableConcept"] = value_concept
    if value_boolean is not None:
        resource["valueBoolean"] = value_boolean
    if ref_low is not None or ref_high is not None:
        rng: dict[str, Any] = {}
        if ref_low is not None:
            rng["low"] = {"value": ref_low, "unit": unit or ""} if unit else {"value": ref_low}
        if ref_high is not None:
            rng["high"] = {"value": ref_high, "unit": unit} if unit else {"value": ref_high}
        resource["referenceRange"] = [rng]
    if interpretation:
        resource["interpretation"] = [concept(interpretation, INTERPRETATION)]
    resource.update(extra)
    return resource


def ck(value: float, days_ago: float = 2, unit: str = "U/L", **kw: Any) -> dict[str, Any]:
    return observation("2157-6", value=value, unit=unit, days_ago=days_ago, **kw)


def potassium(value: float, days_ago: float = 2, code: str = "2823-3", **kw: Any) -> dict[str, Any]:
    return observation(code, value=value, unit="mmol/L", days_ago=days_ago, **kw)


def magnesium(
    value: float, unit: str = "mg/dL", days_ago: float = 2, code: str = "19123-9", **kw: Any
) -> dict[str, Any]:
    return observation(code, value=value, unit=unit, days_ago=days_ago, **kw)


def normal_electrolytes(days_ago: float = 2) -> list[dict[str, Any]]:
    """K and Mg both normal and recent: silences the electrolyte rule."""
    return [potassium(4.2, days_ago), magnesium(2.0, days_ago=days_ago)]


def dosage(
    value: float | None = None,
    unit: str | None = "mg",
    *,
    frequency: float | None = 1,
    period: float = 1,
    period_unit: str = "d",
    bounds_days: tuple[float, float] | None = None,
    bounds_duration_days: float | None = None,
    route: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One R4 Dosage. ``bounds_days`` = (start days ago, end days ago)."""
    repeat: dict[str, Any] = {}
    if frequency is not None:
        repeat.update(frequency=frequency, period=period, periodUnit=period_unit)
    if bounds_days is not None:
        repeat["boundsPeriod"] = {"start": ago(bounds_days[0]), "end": ago(bounds_days[1])}
    if bounds_duration_days is not None:
        repeat["boundsDuration"] = {"value": bounds_duration_days, "unit": "d", "system": UCUM, "code": "d"}
    result: dict[str, Any] = {}
    if repeat:
        result["timing"] = {"repeat": repeat}
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit:
            quantity.update(unit=unit, system=UCUM, code=unit)
        result["doseAndRate"] = [{"doseQuantity": quantity}]
    if route:
        result["route"] = concept(route)
    result.update(extra)
    return result


def medication_request(
    rxcui: str,
    display: str,
    *,
    status: str = "active",
    intent: str = "order",
    dosages: Iterable[dict[str, Any]] | None = None,
    authored_days_ago: float = 30,
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": next_id("medrx"),
        "status": status,
        "intent": intent,
        "medicationCodeableConcept": concept(rxcui, RXNORM, display),
        "subject": subject(),
        "authoredOn": ago(authored_days_ago),
    }
    dosages = list(dosages or [])
    if dosages:
        resource["dosageInstruction"] = dosages
    resource.update(extra)
    return resource


def medication_statement(
    rxcui: str,
    display: str,
    *,
    status: str = "active",
    start_days_ago: float = 30,
    end_days_ago: float | None = None,
    dosages: Iterable[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    period = {"start": ago(start_days_ago)}
    if end_days_ago is not None:
        period["end"] = ago(end_days_ago)
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": next_id("medst"),
        "status": status,
        "medicationCodeableConcept": concept(rxcui, RXNORM, display),
        "subject": subject(),
        "effectivePeriod": period,
    }
    dosages = list(dosages or [])
    if dosages:
        resource["dosage"] = dosages
    resource.update(extra)
    return resource


def medication_administration(
    rxcui: str,
    display: str,
    *,
    days_ago: float,
    dose: float,
    unit: str = "mg",
    status: str = "completed",
    route: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One administration (R4: ``dosage`` is a single object with ``dose``), given ``days_ago``."""
    dosage: dict[str, Any] = {"dose": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}
    if route:
        dosage["route"] = concept(route)
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": next_id("medadmin"),
        "status": status,
        "medicationCodeableConcept": concept(rxcui, RXNORM, display),
        "subject": subject(),
        "effectiveDateTime": ago(days_ago),
        "dosage": dosage,
    }
    resource.update(extra)
    return resource


def service_request(
    code: str, system: str = LOINC, *, status: str = "active", authored_days_ago: float = 1, **extra: Any
) -> dict[str, Any]:
    resource = {
        "resourceType": "ServiceRequest",
        "id": next_id("sr"),
        "status": status,
        "intent": "order",
        "code": concept(code, system),
        "subject": subject(),
        "authoredOn": ago(authored_days_ago),
    }
    resource.update(extra)
    return resource


def procedure(
    code: str = "95910", system: str = CPT, *, performed_days_ago: float = 90, status: str = "completed"
) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": next_id("proc"),
        "status": status,
        "code": concept(code, system),
        "subject": subject(),
        "performedDateTime": ago(performed_days_ago),
    }


# --------------------------------------------------------------------------------------------- request

#: which prefetch key a resource type (and, for Observations, a LOINC code) arrives under
_OBSERVATION_KEYS = {
    "2157-6": "ck",
    "13969-1": "ck",
    "2823-3": "potassium",
    "6298-4": "potassium",
    "2824-1": "potassium",
    "19123-9": "magnesium",
    "2601-3": "magnesium",
    "2160-0": "renal",
    "98979-8": "renal",
    "17861-6": "otherElectrolytes",
    "2000-8": "otherElectrolytes",
    "29265-6": "otherElectrolytes",
    "1994-3": "otherElectrolytes",
    "1995-0": "otherElectrolytes",
    "17864-0": "otherElectrolytes",
    "2777-1": "otherElectrolytes",
    "1751-7": "albumin",
    "61151-7": "albumin",
    "2951-2": "otherElectrolytes",
    "29463-7": "bodyWeight",
    "3141-9": "bodyWeight",
}
_TYPE_KEYS = {
    "Patient": "patient",
    "Condition": "conditions",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "MedicationAdministration": "medicationAdministrations",
    "ServiceRequest": "serviceRequests",
    "Procedure": "procedures",
    "Medication": "medicationRequests",
    "Specimen": "potassium",  # as an EHR would send it with the potassium it belongs to (_include)
}


def key_for(resource: Mapping[str, Any]) -> str:
    rtype = resource["resourceType"]
    if rtype == "Observation":
        codings = resource.get("code", {}).get("coding") or [{}]
        first = codings[0] if isinstance(codings, list) else codings
        return _OBSERVATION_KEYS.get(first.get("code"), "symptomObservations")
    return _TYPE_KEYS[rtype]


def prefetch_view(
    resources: Iterable[Mapping[str, Any]], missing: Iterable[str] = (), no_data: Iterable[str] = ()
) -> PrefetchView:
    grouped: dict[str, list[Mapping[str, Any]]] = {key: [] for key in prefetch_templates()}
    for resource in resources:
        grouped[key_for(resource)].append(resource)
    entries = {}
    missing, no_data = set(missing), set(no_data)
    for key, items in grouped.items():
        if key in missing:
            entries[key] = PrefetchEntry(key, PrefetchStatus.MISSING, note=f"{key}: not prefetched")
        elif key in no_data:
            entries[key] = PrefetchEntry(key, PrefetchStatus.NO_DATA)
        else:
            entries[key] = PrefetchEntry(key, PrefetchStatus.SATISFIED, tuple(items))
    return PrefetchView(entries)


def draft_bundle(*resources: Mapping[str, Any], bundle_type: str | None = "collection") -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}
    if bundle_type:
        bundle["type"] = bundle_type
    return bundle


def hook_request(
    resources: Iterable[Mapping[str, Any]],
    *,
    hook: str = "patient-view",
    draft_orders: Any = None,
    config: Mapping[str, Any] | None = None,
    now: datetime = NOW,
    missing: Iterable[str] = (),
    no_data: Iterable[str] = (),
) -> HookRequest:
    context: dict[str, Any] = {"userId": "Practitioner/doc-1", "patientId": PATIENT_ID}
    if hook != "patient-view":
        context["draftOrders"] = draft_orders if draft_orders is not None else draft_bundle()
        if hook == "order-select":
            context["selections"] = [
                f"{r['resourceType']}/{r.get('id')}"
                for r in (
                    context["draftOrders"].get("entry", [])
                    if isinstance(context["draftOrders"], dict)
                    else []
                )
                for r in [r.get("resource", {})]
            ] or ["ServiceRequest/none"]
    return HookRequest(
        service_id=f"lupus-fasciculation-{hook}",
        hook=hook,
        hook_instance=str(uuid.uuid4()),
        context=MappingProxyType(context),
        prefetch=prefetch_view(resources, missing, no_data),
        now=now,
        config=MappingProxyType(dict(config or {})),
    )


def baseline(
    *extra: Mapping[str, Any],
    sle_condition: Mapping[str, Any] | None = None,
    fasc: Mapping[str, Any] | None = None,
    gender: str | None = "female",
) -> list[Mapping[str, Any]]:
    """Section 6 baseline: adult female, active confirmed SLE (M32.9), fasciculation R25.3 recorded 3 days
    ago, no labs, no medicines; plus ``extra``."""
    return [patient(gender), sle_condition or sle(), fasc or fasciculation(), *extra]


def run(resources: Iterable[Mapping[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    """Call the handler and check every card against the card rules (see test_cards.py)."""
    from test_cards import card_problems  # the validator lives with its own tests

    cards = advise(hook_request(resources, **kw))
    for card in cards:
        problems = card_problems(card)
        assert not problems, problems
    PRODUCED.extend(cards)
    return cards


def topics(cards: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """topic code -> indicator."""
    return {card["source"]["topic"]["code"]: card["indicator"] for card in cards}


def card(cards: Iterable[Mapping[str, Any]], topic: str) -> dict[str, Any]:
    for c in cards:
        if c["source"]["topic"]["code"] == topic:
            return dict(c)
    raise AssertionError(f"no {topic} card in {[c['source']['topic']['code'] for c in cards]}")


def ordered_codes(c: Mapping[str, Any]) -> list[str]:
    """LOINC/other codes of the draft orders a card suggests."""
    out = []
    for suggestion in c.get("suggestions", []):
        for action in suggestion["actions"]:
            for coding in action["resource"]["code"].get("coding", []):
                out.append(coding["code"])
    return out
