"""One immutable snapshot of the patient facts the rules read, built from a :class:`HookRequest`.

Building it follows the performance rule of the project: look at the raw JSON first (code, status,
date), keep only the resources a rule reads, and only then validate those few with ``fhir.resources``
(R4B models, which accept R4 data). Lab results are validated later still, one at a time, when a rule
reads one (:class:`LabResults`): of a series of hundreds, usually one or none is. A resource
that fails validation is skipped with a note in :attr:`PatientFacts.notes`; nothing here raises for bad
data.

Sources read: every prefetch key (whatever its name: resources are dispatched by ``resourceType`` and
de-duplicated), and ``context.draftOrders`` (R4 MedicationRequest and ServiceRequest; STU3
ProcedureRequest is read as a ServiceRequest and DSTU2 MedicationOrder as a MedicationRequest;
NutritionOrder, DeviceRequest, VisionPrescription and unknown types are ignored).

The snapshot holds facts *without* the rules' look-back windows applied (except the raw pre-selection
of lab series), so that the rules, which own the windows, stay pure functions of facts and settings.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_hooks.models import HookRequest

from . import medications, terminology
from .fhirdata import (
    JSON,
    as_list,
    codings,
    id_of,
    latest,
    number_of,
    parse_datetime,
    period_end,
    period_start,
    reference_of,
    resources_in_bundle,
    status_code,
    status_of,
    text_of,
    validate,
)


class VS:
    """ValueSet ids (``plugin/valuesets/<id>.json``) the rules read, named once."""

    SLE = "sle"
    SLE_RENAL = "sle-renal"
    SLE_DRUG_INDUCED = "sle-drug-induced"
    SLE_UNSPECIFIED = "sle-unspecified-lupus"
    SLE_IN_REMISSION = "sle-in-remission"
    LUPUS_EXCLUSIONS = "lupus-exclusions"
    FASCICULATION = "fasciculation"
    SYMPTOM_OBSERVATION_CODE = "symptom-observation-code"
    MUSCLE_WEAKNESS = "muscle-weakness"
    DYSPHAGIA = "dysphagia"
    DYSARTHRIA = "dysarthria"
    DYSPNEA = "dyspnea"
    CARDIOPULMONARY = "cardiopulmonary-causes"
    LOSS_OF_SENSATION = "loss-of-sensation"
    SENSORY_SYMPTOMS = "sensory-symptoms"
    PERIPHERAL_NEUROPATHY = "peripheral-neuropathy"
    MYOSITIS = "myositis"
    MYALGIA = "myalgia"
    CKD = "ckd"
    CK_TOTAL = "ck-total"
    CK_MB = "ck-mb"
    CK_ORDER = "ck-order-codes"
    POTASSIUM = "potassium"
    POTASSIUM_EXCLUDE = "potassium-exclude"
    MAGNESIUM = "magnesium"
    MAGNESIUM_EXCLUDE = "magnesium-exclude"
    POTASSIUM_ORDER = "potassium-order-codes"
    MAGNESIUM_ORDER = "magnesium-order-codes"
    CALCIUM = "calcium"
    CALCIUM_IONIZED = "calcium-ionized"
    ALBUMIN = "albumin"
    PHOSPHATE = "phosphate"
    SODIUM = "sodium"
    CREATININE = "creatinine"
    EGFR = "egfr"
    NCS_EMG = "ncs-emg-codes"
    SYSTEMIC_CORTICOSTEROIDS = "systemic-corticosteroids"
    ANTICONVULSANTS = "anticonvulsants-neuropathic"
    LOOP_DIURETICS = "loop-diuretics"
    THIAZIDES = "thiazides"
    PPIS = "ppis"
    CALCINEURIN_INHIBITORS = "calcineurin-inhibitors"
    POTASSIUM_RAISING = "potassium-raising-drugs"
    TSH_ORDER = "tsh-order-codes"
    PTH_ORDER = "pth-order-codes"
    VITAMIN_D_ORDER = "vitamin-d-order-codes"
    MYOTOXIC = "myotoxic-drugs"
    STEROID_MYOPATHY = "steroid-myopathy"
    BODY_WEIGHT = "body-weight"
    GLUCOCORTICOID_ADVERSE_EFFECT = "glucocorticoid-adverse-effect"


#: Condition value sets, in the order a Condition is classified (a Condition may belong to several).
CONDITION_VALUESETS = (
    VS.SLE,
    VS.SLE_RENAL,
    VS.SLE_DRUG_INDUCED,
    VS.SLE_UNSPECIFIED,
    VS.SLE_IN_REMISSION,
    VS.LUPUS_EXCLUSIONS,
    VS.FASCICULATION,
    VS.MUSCLE_WEAKNESS,
    VS.DYSPHAGIA,
    VS.DYSARTHRIA,
    VS.DYSPNEA,
    VS.LOSS_OF_SENSATION,
    VS.SENSORY_SYMPTOMS,
    VS.PERIPHERAL_NEUROPATHY,
    VS.MYOSITIS,
    VS.MYALGIA,
    VS.CKD,
    VS.STEROID_MYOPATHY,
    VS.GLUCOCORTICOID_ADVERSE_EFFECT,
    VS.CARDIOPULMONARY,
)
#: symptom value sets read from Conditions and Observations (the three patterns of section 1.2)
SYMPTOM_VALUESETS = (
    VS.FASCICULATION,
    VS.MUSCLE_WEAKNESS,
    VS.DYSPHAGIA,
    VS.DYSARTHRIA,
    VS.DYSPNEA,
    VS.LOSS_OF_SENSATION,
    VS.SENSORY_SYMPTOMS,
    VS.MYALGIA,
)
#: analyte -> (value set, exclusion value set or None)
LAB_ANALYTES: dict[str, tuple[str, str | None]] = {
    "ck": (VS.CK_TOTAL, None),
    "ck-mb": (VS.CK_MB, None),
    "potassium": (VS.POTASSIUM, VS.POTASSIUM_EXCLUDE),
    "magnesium": (VS.MAGNESIUM, VS.MAGNESIUM_EXCLUDE),
    "calcium": (VS.CALCIUM, None),
    "ionized-calcium": (VS.CALCIUM_IONIZED, None),
    "albumin": (VS.ALBUMIN, None),
    "phosphate": (VS.PHOSPHATE, None),
    "sodium": (VS.SODIUM, None),
    "creatinine": (VS.CREATININE, None),
    "egfr": (VS.EGFR, None),
    "weight": (VS.BODY_WEIGHT, None),
}
#: order kind -> value set of order codes (ServiceRequest.code, Procedure.code)
ORDER_KINDS: dict[str, str] = {
    "ck": VS.CK_ORDER,
    "potassium": VS.POTASSIUM_ORDER,
    "magnesium": VS.MAGNESIUM_ORDER,
    "creatinine": VS.CREATININE,
    "ncs-emg": VS.NCS_EMG,
    "albumin": VS.ALBUMIN,
    "tsh": VS.TSH_ORDER,
    "pth": VS.PTH_ORDER,
    "vitamin-d": VS.VITAMIN_D_ORDER,
}
#: medication classes the rules read
MEDICATION_CLASSES = (
    VS.SYSTEMIC_CORTICOSTEROIDS,
    VS.ANTICONVULSANTS,
    VS.LOOP_DIURETICS,
    VS.THIAZIDES,
    VS.PPIS,
    VS.CALCINEURIN_INHIBITORS,
    VS.MYOTOXIC,
    VS.POTASSIUM_RAISING,
)

#: the elements each resource type is validated with: those the rules read (validating the rest costs
#: time and would reject a resource over an element nobody uses)
OBSERVATION_ELEMENTS = (
    "resourceType",
    "id",
    "status",
    "code",
    "effectiveDateTime",
    "effectivePeriod",
    "effectiveInstant",
    "issued",
    "valueQuantity",
    "valueCodeableConcept",
    "valueBoolean",
    "valueString",
    "interpretation",
    "referenceRange",
)
CONDITION_ELEMENTS = (
    "resourceType",
    "id",
    "code",
    "subject",
    "clinicalStatus",
    "verificationStatus",
    "category",
    "onsetDateTime",
    "onsetPeriod",
    "recordedDate",
)
ORDER_ELEMENTS = (
    "resourceType",
    "id",
    "status",
    "intent",
    "code",
    "subject",
    "authoredOn",
    "occurrenceDateTime",
    "performedDateTime",
    "performedPeriod",
)
MEDICATION_ELEMENTS = (
    "resourceType",
    "id",
    "status",
    "intent",
    "subject",
    "medicationCodeableConcept",
    "medicationReference",
    "authoredOn",
    "dosageInstruction",
    "dosage",
    "effectiveDateTime",
    "effectivePeriod",
    "dispenseRequest",
    "dateAsserted",
)
PATIENT_ELEMENTS = ("resourceType", "id", "gender")

FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
SYMPTOM_OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
LAB_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
SYMPTOM_OBSERVATIONS_KEPT = 3

#: SNOMED / HL7 codes meaning "absent" in an Observation value (negation of a finding)
ABSENT_VALUES = frozenset(
    {
        ("http://snomed.info/sct", "2667000"),  # Absent
        ("http://snomed.info/sct", "272519000"),  # Absence findings
        ("http://snomed.info/sct", "260385009"),  # Negative
        ("http://snomed.info/sct", "373067005"),  # No
        ("http://terminology.hl7.org/CodeSystem/v2-0136", "N"),
        ("http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "NEG"),
    }
)
_ABSENT_WORDS = frozenset({"absent", "no", "negative", "false", "not present", "denies"})

SNOMED = "http://snomed.info/sct"


# --------------------------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class Coded:
    """The coding that made a resource match (``display`` as the source sent it, possibly absent)."""

    system: str
    code: str
    display: str | None = None

    def label(self) -> str:
        short = {
            "http://snomed.info/sct": "SNOMED",
            "http://loinc.org": "LOINC",
            "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
            "http://www.ama-assn.org/go/cpt": "CPT",
            "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
        }.get(self.system, self.system)
        return f"{short} {self.code}" + (f" {self.display}" if self.display else "")


@dataclass(frozen=True)
class ConditionFact:
    """A Condition in at least one of :data:`CONDITION_VALUESETS`.

    :ivar when: the most recent of onset and recordedDate (``None``: the Condition has neither); the windows
        use it, because a newly recorded old symptom is still news.
    :ivar onset: onsetDateTime or onsetPeriod.start alone, for what only the onset can say ('new weakness').
    :ivar matches: value set -> the coding that matched it, for every value set the Condition is in.
    """

    resource_id: str
    kinds: frozenset[str]
    coded: Coded
    clinical_status: str | None
    verification_status: str | None
    abated: bool
    when: datetime | None
    category: tuple[str, ...] = ()
    onset: datetime | None = None
    matches: tuple[tuple[str, Coded], ...] = ()

    def coded_for(self, kind: str) -> Coded:
        """The coding that put this Condition in value set ``kind`` (the first coding if none did)."""
        return next((coded for name, coded in self.matches if name == kind), self.coded)

    @property
    def is_current(self) -> bool:
        """Active and not refuted / entered in error: a diagnosis a rule may rely on."""
        return self.is_active and self.verification_status not in {"refuted", "entered-in-error"}

    @property
    def is_active(self) -> bool:
        """Active, recurrence or relapse; a missing clinicalStatus counts as active unless abated
        (invalid R4, invariant con-3, but seen in real data)."""
        if self.clinical_status is None:
            return not self.abated
        return self.clinical_status in {"active", "recurrence", "relapse"}


@dataclass(frozen=True)
class SymptomFact:
    """One finding (fasciculation, weakness, ...) from a Condition or an Observation, not negated.

    :ivar when: the Observation's effective date, or the Condition's latest of onset and recordedDate;
        ``None`` for an active Condition with no date at all (its clinicalStatus says it is current).
    :ivar onset: the Condition's onset alone (``None`` for Observations and Conditions without one).
    """

    kind: str
    coded: Coded
    when: datetime | None
    resource_type: str
    resource_id: str
    onset: datetime | None = None


@dataclass(frozen=True)
class LabResult:
    analyte: str
    coded: Coded
    when: datetime
    status: str
    value: float | None
    unit: str | None
    #: value in the unit the rules use (:data:`CANONICAL_UNITS`); None if the unit cannot be read
    canonical: float | None
    canonical_unit: str | None
    #: the first interpretation code (shown on cards); ``flags`` holds every recognised
    #: ObservationInterpretation flag (H, HH, HU, L, LL, LU, A, AA, N, <, >)
    interpretation: str | None
    ref_low: float | None
    ref_high: float | None
    resource_id: str
    flags: tuple[str, ...] = ()
    #: where the record says the specimen is haemolysed (Specimen.condition, interpretation, note); None if not
    haemolysed: str | None = None
    #: False when the value has no unit (or an unknown one) that can be read unambiguously
    unit_interpretable: bool = True
    #: how a missing unit was read, or why it could not be ("no unit: read as mg/dL, ...")
    unit_note: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class OrderFact:
    """A lab or NCS/EMG order (ServiceRequest) or a performed NCS/EMG (Procedure)."""

    kind: str
    coded: Coded
    resource_type: str
    resource_id: str
    status: str | None
    when: datetime | None
    from_draft_orders: bool


@dataclass(frozen=True, eq=False)  # identity equality: holds raw dosage dicts, which do not hash
class MedicationFact:
    """One MedicationRequest, MedicationStatement, MedicationAdministration or draft order, as the rules
    read it. The steroid timeline (:mod:`plugin.timeline`) places its dosage lines on the calendar from
    the dates kept here."""

    info: Any  # plugin.medications.MedicationInfo
    classes: frozenset[str]
    resource_type: str
    resource_id: str
    status: str | None
    current: bool
    from_draft_orders: bool
    started: datetime | None
    course_end: datetime | None
    #: dosageInstruction (request), dosage (statement), or the one dosage of an administration
    dosages: tuple[JSON, ...]
    intent: str | None = None
    #: MedicationRequest.authoredOn: where consecutive dosage steps (boundsDuration, count) start
    authored_on: datetime | None = None
    #: effectivePeriod start/end or effectiveDateTime (statements, administrations); the end read as the
    #: end of its day when only a date is given
    effective_start: datetime | None = None
    effective_end: datetime | None = None
    #: MedicationStatement.dateAsserted: which statement is the most recent
    asserted: datetime | None = None
    #: MedicationRequest.dispenseRequest.validityPeriod.end
    validity_end: datetime | None = None

    @property
    def name(self) -> str:
        return getattr(self.info, "display", None) or "medication"


@dataclass(frozen=True)
class BirthDate:
    """Patient.birthDate as written (a FHIR date: YYYY, YYYY-MM or YYYY-MM-DD) and the first and last day
    it can mean (a partial date leaves the age uncertain by up to a year)."""

    text: str
    earliest: date
    latest: date


@dataclass(frozen=True)
class PatientFacts:
    patient_id: str | None
    hook: str
    now: datetime
    #: the patient's administrative sex, read (and the Patient validated) only if a rule asks: the CK
    #: rule needs it only for a result without its own reference range
    sex_of: Callable[[], str | None]
    conditions: tuple[ConditionFact, ...]
    symptoms: tuple[SymptomFact, ...]
    labs: LabResults
    orders: tuple[OrderFact, ...]
    medications: Medications
    gaps: tuple[str, ...] = ()
    #: resources skipped as invalid; a list because lab results are validated when first read
    skipped: list[str] = field(default_factory=list)
    missing_keys: frozenset[str] = field(default_factory=frozenset)
    #: Patient.birthDate, read only if a card asks (the age decides whether adult ranges apply)
    birth_date_of: Callable[[], BirthDate | None] = lambda: None

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self.skipped)

    @property
    def sex(self) -> str | None:
        return self.sex_of()

    @property
    def birth_date(self) -> BirthDate | None:
        return self.birth_date_of()

    def conditions_in(self, kind: str) -> tuple[ConditionFact, ...]:
        return tuple(c for c in self.conditions if kind in c.kinds)

    def symptoms_of(self, kind: str) -> tuple[SymptomFact, ...]:
        return tuple(s for s in self.symptoms if s.kind == kind)

    def latest_lab(self, analyte: str, *, final: bool, days: float | None = None) -> LabResult | None:
        """The newest final (or preliminary) result of ``analyte``; ``None`` if older than ``days``."""
        since = None if days is None else self.now - timedelta(days=days)
        return self.labs.latest(analyte, final=final, since=since)

    def lab_on_day(self, analyte: str, when: datetime) -> LabResult | None:
        """The newest final result of ``analyte`` taken on the calendar day of ``when`` (a same-day albumin)."""
        return self.labs.on_day(analyte, when)

    def orders_of(self, kind: str) -> tuple[OrderFact, ...]:
        return tuple(o for o in self.orders if o.kind == kind)

    def medications_in(self, cls: str) -> tuple[MedicationFact, ...]:
        return self.medications.in_class(cls)


# ------------------------------------------------------------------------------------ code matching


@functools.lru_cache(maxsize=8192)
def _valuesets_of(system: str, code: str, names: tuple[str, ...]) -> frozenset[str]:
    """The value sets among ``names`` holding ``system|code``. Cached: a big record repeats few codes."""
    return frozenset(n for n in names if terminology.in_valueset(n, system, code))


def match_concept(concept: Any, names: tuple[str, ...]) -> dict[str, Coded]:
    """value set -> first matching coding of a raw CodeableConcept, for each of ``names`` it belongs to."""
    found: dict[str, Coded] = {}
    for coding in codings(concept):
        system, code = text_of(coding.get("system")), text_of(coding.get("code"))
        if system is None or code is None:
            continue
        for name in _valuesets_of(system, code, names):
            found.setdefault(name, Coded(system, code, text_of(coding.get("display"))))
    return found


# ------------------------------------------------------------------------------------------ sources


@dataclass
class _Sources:
    """Raw resources by type, de-duplicated by ``type/id``, with where they came from."""

    by_type: dict[str, list[tuple[JSON, bool]]] = field(default_factory=dict)
    medications_by_ref: dict[str, JSON] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, resource: Mapping[str, Any], from_draft_orders: bool, full_url: str | None = None) -> None:
        # Called for every resource of the request: kept to plain dict and set operations.
        rtype = resource.get("resourceType")
        if type(rtype) is not str:
            return
        rid = resource.get("id")
        if type(rid) is str and rid:
            key = (rtype, rid)
            if key in self.seen:
                if from_draft_orders and rtype == "MedicationRequest" and ("draft", rid) not in self.seen:
                    # an order being changed comes back in draftOrders with the stored order's id: both are
                    # kept, the stored one as what is current and the draft as the proposed change
                    self.seen.add(("draft", rid))
                    self.by_type.setdefault(rtype, []).append((resource, True))  # type: ignore[arg-type]
                return
            self.seen.add(key)
            if from_draft_orders:
                self.seen.add(("draft", rid))
        if rtype == "Medication":
            if isinstance(rid, str):
                self.medications_by_ref[f"Medication/{rid}"] = resource  # type: ignore[assignment]
            if full_url:
                self.medications_by_ref[full_url] = resource  # type: ignore[assignment]
            return
        self.by_type.setdefault(rtype, []).append((resource, from_draft_orders))  # type: ignore[arg-type]

    def of(self, rtype: str) -> list[tuple[JSON, bool]]:
        return self.by_type.get(rtype, [])


def _map_legacy_order(resource: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Read older FHIR versions' order types as their R4 counterparts (draftOrders only)."""
    rtype = resource.get("resourceType")
    if rtype in ("MedicationRequest", "ServiceRequest"):
        return resource
    if rtype == "ProcedureRequest":  # STU3/DSTU2: same code/status/subject shape for what we read
        mapped = {k: v for k, v in resource.items() if k in ("id", "code", "status", "authoredOn", "subject")}
        mapped["resourceType"] = "ServiceRequest"
        mapped["intent"] = "order"
        if "subject" not in mapped and isinstance(resource.get("patient"), Mapping):
            mapped["subject"] = resource["patient"]
        return mapped
    if rtype == "MedicationOrder":  # DSTU2: dosage lives directly on dosageInstruction
        mapped = {
            k: v
            for k, v in resource.items()
            if k in ("id", "medicationCodeableConcept", "medicationReference", "contained")
        }
        mapped.update(resourceType="MedicationRequest", status="draft", intent="order")
        if isinstance(resource.get("patient"), Mapping):
            mapped["subject"] = resource["patient"]
        if resource.get("dateWritten"):
            mapped["authoredOn"] = resource["dateWritten"]
        dosages = []
        for old in as_list(resource.get("dosageInstruction")):
            if not isinstance(old, Mapping):
                continue
            new = {k: old[k] for k in ("text", "timing", "route", "asNeededBoolean") if k in old}
            if isinstance(old.get("doseQuantity"), Mapping):
                new["doseAndRate"] = [{"doseQuantity": old["doseQuantity"]}]
            dosages.append(new)
        if dosages:
            mapped["dosageInstruction"] = dosages
        return mapped
    return None  # NutritionOrder, DeviceRequest, VisionPrescription, anything unknown


def collect_sources(request: HookRequest) -> _Sources:
    sources = _Sources()
    add = sources.add
    for key in request.prefetch:
        for resource in request.prefetch.resources(key):
            add(resource, False)
    draft = request.context.get("draftOrders")
    for resource in resources_in_bundle(draft):
        if resource.get("resourceType") == "Medication":
            sources.add(resource, from_draft_orders=True)
            continue
        mapped = _map_legacy_order(resource)
        if mapped is not None:
            sources.add(mapped, from_draft_orders=True)
    if isinstance(draft, Mapping):
        for entry in as_list(draft.get("entry")):
            if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
                res = entry["resource"]
                if res.get("resourceType") == "Medication" and isinstance(entry.get("fullUrl"), str):
                    sources.medications_by_ref[entry["fullUrl"]] = res
    return sources


# --------------------------------------------------------------------------------------- conditions


def condition_onset(raw: Mapping[str, Any]) -> datetime | None:
    """onsetDateTime, else the start of onsetPeriod (onsetAge / onsetString give no date)."""
    return parse_datetime(raw.get("onsetDateTime")) or period_start(raw.get("onsetPeriod"))


def condition_date(raw: Mapping[str, Any]) -> datetime | None:
    """The most recent of onset and recordedDate: a newly recorded old symptom is still news. ``None`` when
    the Condition has neither (meta.lastUpdated says when the record was edited, not when the symptom was)."""
    return latest(condition_onset(raw), parse_datetime(raw.get("recordedDate")))


def build_conditions(sources: _Sources, notes: list[str]) -> list[ConditionFact]:
    facts = []
    for raw, _ in sources.of("Condition"):
        matched = match_concept(raw.get("code"), CONDITION_VALUESETS)
        if not matched or matched.keys() == {VS.LUPUS_EXCLUSIONS}:
            continue  # a cutaneous / non-SLE lupus code alone is read by no rule
        verification = status_code(raw.get("verificationStatus"))
        if verification == "entered-in-error":
            continue
        model, problem = validate(Condition, raw, CONDITION_ELEMENTS)
        if model is None:
            notes.append(f"Condition/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
            continue
        first = next(iter(matched.values()))
        categories = tuple(
            code
            for cat in as_list(raw.get("category"))
            for c in codings(cat)
            if (code := text_of(c.get("code"))) is not None
        )
        facts.append(
            ConditionFact(
                resource_id=(id_of(raw) or ""),
                kinds=frozenset(matched),
                coded=first,
                clinical_status=status_code(raw.get("clinicalStatus")),
                verification_status=verification,
                abated=any(k.startswith("abatement") for k in raw),
                when=condition_date(raw),
                category=categories,
                onset=condition_onset(raw),
                matches=tuple(matched.items()),
            )
        )
    return facts


def symptoms_from_conditions(conditions: Iterable[ConditionFact]) -> list[SymptomFact]:
    """Active, not refuted symptom Conditions as symptom facts (pattern 1 of section 1.2), dated or not."""
    out = []
    for condition in conditions:
        if not condition.is_current:
            continue
        for kind in SYMPTOM_VALUESETS:
            if kind in condition.kinds:
                out.append(
                    SymptomFact(
                        kind,
                        condition.coded_for(kind),
                        condition.when,
                        "Condition",
                        condition.resource_id,
                        onset=condition.onset,
                    )
                )
    return out


# ------------------------------------------------------------------------------------- observations


def observation_date(raw: Mapping[str, Any]) -> datetime | None:
    return (
        parse_datetime(raw.get("effectiveDateTime"))
        or parse_datetime(raw.get("effectiveInstant"))
        or period_end(raw.get("effectivePeriod"))
        or period_start(raw.get("effectivePeriod"))
        or parse_datetime(raw.get("issued"))
    )


def is_negated(raw: Mapping[str, Any]) -> bool:
    """The Observation says the finding is absent (valueBoolean false, an 'absent' code or word)."""
    if raw.get("valueBoolean") is False:
        return True
    value_cc = raw.get("valueCodeableConcept")
    for coding in codings(value_cc):
        if (text_of(coding.get("system")), text_of(coding.get("code"))) in ABSENT_VALUES:
            return True
    if isinstance(value_cc, Mapping) and not codings(value_cc):
        text = text_of(value_cc.get("text"))
        if text and text.lower() in _ABSENT_WORDS:
            return True
    text = text_of(raw.get("valueString"))
    return bool(text and text.lower() in _ABSENT_WORDS)


def _symptom_match(raw: Mapping[str, Any]) -> dict[str, Coded]:
    """Symptom value sets an Observation reports: the code itself is the finding (pattern 2), or code
    is LOINC 75325-1 'Symptom' with the finding in valueCodeableConcept (pattern 3)."""
    direct = match_concept(raw.get("code"), SYMPTOM_VALUESETS)
    if direct:
        return direct
    if match_concept(raw.get("code"), (VS.SYMPTOM_OBSERVATION_CODE,)):
        return match_concept(raw.get("valueCodeableConcept"), SYMPTOM_VALUESETS)
    return {}


@dataclass(frozen=True)
class LabUnit:
    """One unit an analyte is reported in: its factor to the analyte's canonical unit, the LOINC property it
    belongs to, and the magnitudes a result *without* a unit plausibly has in it (see :func:`read_unitless`)."""

    factor: float
    prop: str  # "mass", "substance" or "catalytic" (LOINC property MCnc / SCnc / CCnc)
    usual: tuple[float, float]


MG_PER_MMOL_MG = 1 / 0.4114  # magnesium: mg/dL x 0.4114 = mmol/L (24.305 g/mol)
MG_PER_MMOL_CA = 1 / 0.2495  # calcium: mg/dL x 0.2495 = mmol/L (40.08 g/mol)
MG_PER_MMOL_P = 1 / 0.3229  # phosphate as P: mg/dL x 0.3229 = mmol/L (30.97 g/mol)

_CK_UL = LabUnit(1.0, "catalytic", (1.0, 500_000.0))
_CK_UKAT = LabUnit(60.0, "catalytic", (0.05, 10.0))
#: analyte -> (canonical unit, normalised unit -> LabUnit). Usual magnitudes are chosen so that a number typical
#: of one unit does not also pass as another: a magnesium of 0.62 is a mmol/L number, so it is not a plausible
#: mg/dL value (CLINICAL-CONTENT 10.2), and a phosphate of 1.1 may be mmol/L or a very low mg/dL.
ANALYTE_UNITS: dict[str, tuple[str, dict[str, LabUnit]]] = {
    "ck": ("U/L", {"u/l": _CK_UL, "iu/l": _CK_UL, "[iu]/l": _CK_UL,
                   "ukat/l": _CK_UKAT, "µkat/l": _CK_UKAT, "μkat/l": _CK_UKAT}),
    "potassium": ("mmol/L", {"mmol/l": LabUnit(1.0, "substance", (1.5, 9.0)),
                             "meq/l": LabUnit(1.0, "substance", (1.5, 9.0))}),
    "sodium": ("mmol/L", {"mmol/l": LabUnit(1.0, "substance", (100.0, 180.0)),
                          "meq/l": LabUnit(1.0, "substance", (100.0, 180.0))}),
    "magnesium": ("mg/dL", {"mg/dl": LabUnit(1.0, "mass", (1.0, 6.0)),
                            "mg/l": LabUnit(0.1, "mass", (10.0, 60.0)),
                            "mmol/l": LabUnit(MG_PER_MMOL_MG, "substance", (0.2, 2.5)),
                            "meq/l": LabUnit(MG_PER_MMOL_MG / 2, "substance", (2.6, 5.0))}),
    "calcium": ("mg/dL", {"mg/dl": LabUnit(1.0, "mass", (4.0, 20.0)),
                          "mmol/l": LabUnit(MG_PER_MMOL_CA, "substance", (0.75, 4.0)),
                          "meq/l": LabUnit(MG_PER_MMOL_CA / 2, "substance", (4.1, 8.0))}),
    "ionized-calcium": ("mmol/L", {"mmol/l": LabUnit(1.0, "substance", (0.3, 2.5)),
                                   "meq/l": LabUnit(0.5, "substance", (2.6, 5.0)),
                                   "mg/dl": LabUnit(0.2495, "mass", (2.6, 8.0))}),
    "phosphate": ("mg/dL", {"mg/dl": LabUnit(1.0, "mass", (1.6, 15.0)),
                            "mmol/l": LabUnit(MG_PER_MMOL_P, "substance", (0.1, 1.5))}),
    "albumin": ("g/dL", {"g/dl": LabUnit(1.0, "mass", (1.0, 6.5)),
                         "g/l": LabUnit(0.1, "mass", (10.0, 65.0))}),
    "creatinine": ("mg/dL", {"mg/dl": LabUnit(1.0, "mass", (0.1, 25.0)),
                             "umol/l": LabUnit(1 / 88.4, "substance", (26.0, 2500.0)),
                             "µmol/l": LabUnit(1 / 88.4, "substance", (26.0, 2500.0)),
                             "μmol/l": LabUnit(1 / 88.4, "substance", (26.0, 2500.0))}),
    # body weight: kg and lb overlap in magnitude, so a weight without a unit is never read (no default unit)
    "weight": ("kg", {"kg": LabUnit(1.0, "mass", (0.3, 350.0)),
                      "g": LabUnit(0.001, "mass", (300.0, 350_000.0)),
                      "[lb_av]": LabUnit(0.45359237, "mass", (0.7, 770.0)),
                      "lb": LabUnit(0.45359237, "mass", (0.7, 770.0)),
                      "lbs": LabUnit(0.45359237, "mass", (0.7, 770.0))}),
}
CANONICAL_UNITS = {analyte: unit for analyte, (unit, _) in ANALYTE_UNITS.items()}
_PROPERTY_WORDS = (("[mass/volume]", "mass"), ("[moles/volume]", "substance"),
                   ("[enzymatic activity/volume]", "catalytic"))


def _unit_of(quantity: Mapping[str, Any]) -> str | None:
    return text_of(quantity.get("code")) or text_of(quantity.get("unit"))


def _unit_key(unit: str | None) -> str:
    return (unit or "").replace(" ", "").lower()


def loinc_property(analyte: str, coded: Coded) -> str | None:
    """The LOINC property of the result's code (mass, substance or catalytic concentration), read from the
    display the analyte's value set records for it (the record's own display is not trusted)."""
    valueset = LAB_ANALYTES.get(analyte, (None, None))[0]
    display = terminology.concept_display(valueset, coded.system, coded.code) if valueset else None
    lowered = (display or "").lower()
    return next((prop for word, prop in _PROPERTY_WORDS if word in lowered), None)


def read_unitless(analyte: str, value: float, coded: Coded) -> tuple[str | None, str]:
    """The unit a result sent without one is in, and why; ``None`` when it cannot be told (10.2).

    It is read only when the code's LOINC property and the value's magnitude fit exactly one unit (units
    differing only in name, such as mmol/L and mEq/L for potassium, count as one).
    """
    table = ANALYTE_UNITS.get(analyte)
    if table is None:
        return None, "no unit"
    prop = loinc_property(analyte, coded)
    props = {u.prop for u in table[1].values()}
    if prop is None and len(props) == 1:
        prop = next(iter(props))
    if prop is None:
        return None, "no unit, and the code does not say whether it is a mass or substance concentration"
    fits = {name: u for name, u in table[1].items() if u.prop == prop and u.usual[0] <= value <= u.usual[1]}
    factors = {round(u.factor, 9) for u in fits.values()}
    if len(factors) == 1:
        name = next(iter(fits))
        return name, f"no unit: read as {_DISPLAY_UNITS.get(name, name)} ({prop} concentration code, magnitude)"
    if not fits:
        return None, f"no unit, and {num_text(value)} is not a plausible value for a {prop} concentration code"
    return None, f"no unit, and {num_text(value)} fits more than one unit"


_DISPLAY_UNITS = {"mg/dl": "mg/dL", "mmol/l": "mmol/L", "meq/l": "mEq/L", "g/dl": "g/dL", "g/l": "g/L",
                  "u/l": "U/L", "ukat/l": "ukat/L", "mg/l": "mg/L", "umol/l": "umol/L"}


def num_text(value: float) -> str:
    return f"{value:g}"


def to_canonical(
    analyte: str, value: float | None, unit: str | None, coded: Coded
) -> tuple[float | None, str | None]:
    """``value`` in the analyte's canonical unit, and that unit; ``(None, None)`` when the unit is unknown.
    Analytes without a unit table (eGFR, CK-MB) are passed through unconverted."""
    if value is None:
        return None, None
    table = ANALYTE_UNITS.get(analyte)
    if table is None:
        return value, unit
    canonical_unit, units = table
    found = units.get(_unit_key(unit)) if unit else None
    if found is None:
        return None, None
    return value * found.factor, canonical_unit


# --- haemolysis --------------------------------------------------------------------------------------

V2_SPECIMEN_CONDITION = "http://terminology.hl7.org/CodeSystem/v2-0493"
_HAEMOLYSIS = re.compile(r"ha?emoly[sz]", re.IGNORECASE)
_NOT_HAEMOLYSED = re.compile(
    r"\b(no|not|non|without)[\s-]*(visible\s+|significant\s+)?ha?emoly[sz]"
    r"|ha?emoly[sz]\w*(\s+index)?\s*[:=]?\s*(none|absent|negative|not\s+(detected|seen|present))",
    re.IGNORECASE,
)


def _says_haemolysed(text: Any) -> bool:
    return isinstance(text, str) and bool(_HAEMOLYSIS.search(text)) and not _NOT_HAEMOLYSED.search(text)


def _concept_haemolysed(concept: Any) -> bool:
    for coding in codings(concept):
        code = (text_of(coding.get("code")) or "").upper()
        if (text_of(coding.get("system")), code) == (V2_SPECIMEN_CONDITION, "HEM"):
            return True
        if _says_haemolysed(coding.get("display")) or _says_haemolysed(coding.get("code")):
            return True
    return isinstance(concept, Mapping) and _says_haemolysed(concept.get("text"))


def haemolysis(raw: Mapping[str, Any], specimens: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Where the record says the specimen of this result is haemolysed (a haemolysed specimen is not a
    valid potassium); ``None`` when nothing does. Reads the Specimen (contained, or sent in prefetch) its
    ``condition``, the result's interpretation and its notes."""
    reference = reference_of(raw.get("specimen")) if isinstance(raw.get("specimen"), Mapping) else None
    specimen: Any = None
    if isinstance(reference, str) and reference.startswith("#"):
        specimen = next((c for c in as_list(raw.get("contained")) if isinstance(c, Mapping)
                         and c.get("resourceType") == "Specimen" and c.get("id") == reference[1:]), None)
    elif isinstance(reference, str):
        specimen = specimens.get("/".join(reference.rstrip("/").split("/")[-2:]))
    if isinstance(specimen, Mapping):
        if any(_concept_haemolysed(c) for c in as_list(specimen.get("condition"))):
            return f"Specimen {reference} condition: haemolysed"
        if any(isinstance(n, Mapping) and _says_haemolysed(n.get("text")) for n in as_list(specimen.get("note"))):
            return f"Specimen {reference} note: haemolysed"
    if any(_concept_haemolysed(c) for c in as_list(raw.get("interpretation"))):
        return "interpretation: haemolysed"
    for note in as_list(raw.get("note")):
        if isinstance(note, Mapping) and _says_haemolysed(note.get("text")):
            return f"note: \u201c{str(note['text']).strip()[:80]}\u201d"
    return None


#: ObservationInterpretation (v3) / HL7 v2 table 0078 abnormal flags the rules read
KNOWN_FLAGS = frozenset({"H", "HH", "HU", "L", "LL", "LU", "A", "AA", "N", "<", ">"})


def _flags(raw: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """(every recognised abnormal flag, the first interpretation code of any kind)."""
    flags: list[str] = []
    first = None
    for concept in as_list(raw.get("interpretation")):
        for coding in codings(concept):
            code = text_of(coding.get("code"))
            if not code:
                continue
            code = code.upper()
            first = first or code
            if code in KNOWN_FLAGS and code not in flags:
                flags.append(code)
    return tuple(flags), (flags[0] if flags else first)


def _reference_limits(
    analyte: str, raw: Mapping[str, Any], value_unit: str | None, coded: Coded
) -> tuple[float | None, float | None]:
    """The lab's own low/high limits, converted to the canonical unit like the value."""
    for rng in as_list(raw.get("referenceRange")):
        if not isinstance(rng, Mapping):
            continue
        limits = []
        for bound in ("low", "high"):
            q = rng.get(bound)
            value = number_of(q.get("value")) if isinstance(q, Mapping) and not isinstance(q.get("value"), str) \
                else None  # a range limit is a JSON number (a validated valueQuantity never is text either)
            if value is not None:
                limits.append(to_canonical(analyte, value, _unit_of(q) or value_unit, coded)[0])
            else:
                limits.append(None)
        if limits[0] is not None or limits[1] is not None:
            return limits[0], limits[1]
    return None, None


def _lab_from_model(
    analyte: str, raw: Mapping[str, Any], model: Any, coded: Coded,
    specimens: Mapping[str, Mapping[str, Any]] | None = None,
) -> LabResult:
    quantity = model.valueQuantity
    value = float(quantity.value) if quantity is not None and quantity.value is not None else None
    unit = (quantity.code or quantity.unit) if quantity is not None else None
    unit_note = None
    read_unit = unit
    if value is not None and not unit and analyte in ANALYTE_UNITS:
        read_unit, unit_note = read_unitless(analyte, value, coded)
    elif value is not None and unit and analyte in ANALYTE_UNITS and _unit_key(unit) not in ANALYTE_UNITS[analyte][1]:
        unit_note = f"unit {unit!r} is not one this service reads for {analyte}"
    if analyte in ANALYTE_UNITS and not read_unit:
        canonical, canonical_unit = None, None
    else:
        canonical, canonical_unit = to_canonical(analyte, value, read_unit, coded)
    low, high = _reference_limits(analyte, raw, read_unit, coded)
    flags, first = _flags(raw)
    return LabResult(
        analyte=analyte,
        coded=coded,
        when=observation_date(raw),
        status=str(model.status),
        value=value,
        unit=unit,
        canonical=canonical,
        canonical_unit=canonical_unit,
        interpretation=first,
        ref_low=low,
        ref_high=high,
        resource_id=(id_of(raw) or ""),
        flags=flags,
        haemolysed=haemolysis(raw, specimens or {}),
        unit_interpretable=value is None or canonical is not None,
        unit_note=unit_note,
    )


Candidates = dict[str, list[tuple[datetime, Mapping[str, Any], Coded]]]
LAB_VALUESETS = tuple(dict.fromkeys(vs for pair in LAB_ANALYTES.values() for vs in pair if vs))


def _lab_analyte(raw: Mapping[str, Any]) -> tuple[str, Coded] | None:
    matched = match_concept(raw.get("code"), LAB_VALUESETS)
    if not matched:
        return None
    for analyte, (include, exclude) in LAB_ANALYTES.items():
        if include in matched and not (exclude and exclude in matched):
            return analyte, matched[include]
    return None


#: raw (system, code) pairs of an Observation.code -> (lab analyte and coding, or None; symptom code?).
#: A big record repeats a few codes thousands of times, so the value-set lookups run once per code
#: combination. (The display kept is the first one seen; displays are shown, never matched.)
_OBSERVATION_CODE_CACHE: dict[tuple[Any, ...], tuple[tuple[str, Coded] | None, bool]] = {}
_SYMPTOM_CODE_VALUESETS = (*SYMPTOM_VALUESETS, VS.SYMPTOM_OBSERVATION_CODE)


def classify_observation_code(concept: Any) -> tuple[tuple[str, Coded] | None, bool]:
    # Called for every Observation of a record: exact type checks first (an ABC isinstance is slower),
    # and the usual shape, one coding, keyed without building a tuple of tuples.
    if type(concept) is not dict and not isinstance(concept, Mapping):
        return None, False
    coding = concept.get("coding")
    # The key holds text only: a code that is a list or an object (not hashable) reads as no code, as it
    # does in match_concept.
    if type(coding) is list and len(coding) == 1 and type(coding[0]) is dict:
        key: tuple[Any, ...] = (coding[0].get("system"), coding[0].get("code"))
        if type(key[0]) is not str or type(key[1]) is not str:
            key = (text_of(key[0]), text_of(key[1]))
    else:
        items = coding if isinstance(coding, list) else [coding]
        key = tuple((text_of(c.get("system")), text_of(c.get("code"))) for c in items if isinstance(c, Mapping))
    hit = _OBSERVATION_CODE_CACHE.get(key)
    if hit is None:
        hit = (_lab_analyte({"code": concept}), bool(match_concept(concept, _SYMPTOM_CODE_VALUESETS)))
        if len(_OBSERVATION_CODE_CACHE) > 4096:
            _OBSERVATION_CODE_CACHE.clear()
        _OBSERVATION_CODE_CACHE[key] = hit
    return hit


def select_observations(sources: _Sources, notes: list[str] | None = None) -> tuple[Candidates, Candidates]:
    """Raw pass over every Observation: (lab candidates by analyte, symptom candidates by kind), each
    with its date; nothing validated yet. This loop sees every Observation of a big record: keep it lean.
    An Observation the rules would read whose status is not a code is skipped with a note."""
    lab_candidates: Candidates = {}
    symptom_candidates: Candidates = {}
    for raw, _ in sources.of("Observation"):
        status = raw.get("status")
        if type(status) is not str or status not in LAB_STATUSES:
            if notes is not None and status is not None and type(status) is not str:
                _note_unread_status("Observation", raw, classify_observation_code(raw.get("code")) != (None, False),
                                    notes)
            continue  # registered, cancelled, entered-in-error, unknown: never used
        lab, maybe_symptom = classify_observation_code(raw.get("code"))
        if lab is None and not maybe_symptom:
            continue
        when = observation_date(raw)
        if when is None:
            continue
        if lab is not None:
            found = lab_candidates.get(lab[0])
            if found is None:
                found = lab_candidates[lab[0]] = []
            found.append((when, raw, lab[1]))
            continue
        if status in SYMPTOM_OBSERVATION_STATUSES and not is_negated(raw):
            for kind, coded in _symptom_match(raw).items():
                symptom_candidates.setdefault(kind, []).append((when, raw, coded))
    return lab_candidates, symptom_candidates


def _note_unread_status(rtype: str, raw: Mapping[str, Any], relevant: bool, notes: list[str]) -> None:
    """Say that a resource a rule would have read was skipped because its status is not a code."""
    if relevant:
        notes.append(f"{rtype}/{id_of(raw) or '?'} skipped: its status is not a code "
                     f"({type(raw.get('status')).__name__})")


def build_symptom_observations(candidates: Candidates, notes: list[str]) -> list[SymptomFact]:
    """The newest few symptom Observations of each kind, validated."""
    symptoms: list[SymptomFact] = []
    for kind, found in candidates.items():
        found.sort(key=lambda c: c[0], reverse=True)
        for when, raw, coded in found[:SYMPTOM_OBSERVATIONS_KEPT]:
            model, problem = validate(Observation, raw, OBSERVATION_ELEMENTS)
            if model is None:
                notes.append(f"Observation/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
                continue
            symptoms.append(SymptomFact(kind, coded, when, "Observation", (id_of(raw) or "")))
    return symptoms


class LabResults:
    """Lab result candidates by analyte, validated one at a time when a rule asks for them.

    The rules read the newest final result of an analyte (often only if it falls inside a window) and the
    newest preliminary one. The dates and statuses come from the raw pass, so a result outside the window
    a rule asks about is never validated, and neither is any older result. A result that fails validation
    is skipped with a note, and the next newest stands in for it, as if the invalid one had not been sent.
    Answers are memoised, so the snapshot still never changes.
    """

    def __init__(self, candidates: Candidates, notes: list[str],
                 specimens: Mapping[str, Mapping[str, Any]] | None = None):
        self._candidates = candidates
        self._notes = notes
        self._specimens = specimens or {}  # "Specimen/id" -> raw Specimen sent in prefetch
        self._sorted: dict[str, list[tuple[datetime, Mapping[str, Any], Coded]]] = {}
        self._validated: dict[int, LabResult | None] = {}  # id(raw) -> result, or None if invalid

    def analytes(self) -> tuple[str, ...]:
        return tuple(self._candidates)

    def _newest_first(self, analyte: str) -> list[tuple[datetime, Mapping[str, Any], Coded]]:
        found = self._sorted.get(analyte)
        if found is None:
            found = self._sorted[analyte] = sorted(
                self._candidates.get(analyte, ()), key=lambda c: c[0], reverse=True)
        return found

    def on_day(self, analyte: str, when: datetime) -> LabResult | None:
        """The newest valid final result of ``analyte`` taken on the calendar day of ``when``."""
        for taken, raw, coded in self._newest_first(analyte):
            if status_of(raw) not in FINAL_STATUSES or taken.date() > when.date():
                continue
            if taken.date() < when.date():
                return None  # the rest are older still
            result = self._result(analyte, raw, coded)
            if result is not None:
                return result
        return None

    def latest(self, analyte: str, *, final: bool, since: datetime | None = None) -> LabResult | None:
        """The newest valid final (``final=True``) or preliminary result of ``analyte``; ``None`` if
        there is none, or if the newest is older than ``since``."""
        for when, raw, coded in self._newest_first(analyte):
            if (status_of(raw) in FINAL_STATUSES) is not final:
                continue
            if since is not None and when < since:
                return None  # the rest are older still
            result = self._result(analyte, raw, coded)
            if result is not None:
                return result
        return None

    def _result(self, analyte: str, raw: Mapping[str, Any], coded: Coded) -> LabResult | None:
        key = id(raw)  # the raw dicts live as long as the request, and so does this snapshot
        if key not in self._validated:
            model, problem = validate(Observation, raw, OBSERVATION_ELEMENTS)
            if model is None:
                self._notes.append(f"Observation/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
                self._validated[key] = None
            else:
                self._validated[key] = _lab_from_model(analyte, raw, model, coded, self._specimens)
        return self._validated[key]


# ------------------------------------------------------------------------------------------- orders

#: ServiceRequest statuses that mean "ordered, result may be pending or done"
ORDER_STATUSES = frozenset({"draft", "active", "on-hold", "completed"})
PROCEDURE_STATUSES = frozenset({"completed", "in-progress", "preparation"})


def build_orders(sources: _Sources, notes: list[str]) -> list[OrderFact]:
    facts = []
    names = tuple(ORDER_KINDS.values())
    for raw, from_draft in sources.of("ServiceRequest"):
        status = status_of(raw)
        if status is None and raw.get("status") is not None:
            _note_unread_status("ServiceRequest", raw, bool(match_concept(raw.get("code"), names)), notes)
            continue
        # draftOrders may hold re-signed, non-draft orders (order-sign): accept any live status there
        if from_draft and status in {"revoked", "entered-in-error"}:
            continue
        if not from_draft and status not in ORDER_STATUSES:
            continue
        matched = match_concept(raw.get("code"), names)
        if not matched:
            continue
        model, problem = validate(ServiceRequest, raw, ORDER_ELEMENTS)
        if model is None:
            notes.append(f"ServiceRequest/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
            continue
        when = parse_datetime(raw.get("authoredOn")) or parse_datetime(raw.get("occurrenceDateTime"))
        for kind, vs in ORDER_KINDS.items():
            if vs in matched:
                facts.append(
                    OrderFact(
                        kind, matched[vs], "ServiceRequest", (id_of(raw) or ""), status, when, from_draft
                    )
                )
    for raw, _ in sources.of("Procedure"):
        status = status_of(raw)
        if status not in PROCEDURE_STATUSES:
            if status is None and raw.get("status") is not None:
                _note_unread_status("Procedure", raw, bool(match_concept(raw.get("code"), (VS.NCS_EMG,))), notes)
            continue
        matched = match_concept(raw.get("code"), (VS.NCS_EMG,))
        if not matched:
            continue
        model, problem = validate(Procedure, raw, ORDER_ELEMENTS)
        if model is None:
            notes.append(f"Procedure/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
            continue
        when = (
            parse_datetime(raw.get("performedDateTime"))
            or period_end(raw.get("performedPeriod"))
            or period_start(raw.get("performedPeriod"))
        )
        facts.append(
            OrderFact(
                "ncs-emg",
                matched[VS.NCS_EMG],
                "Procedure",
                (id_of(raw) or ""),
                status,
                when,
                False,
            )
        )
    return facts


# -------------------------------------------------------------------------------------- medications

_MED_MODELS = {
    "MedicationRequest": MedicationRequest,
    "MedicationStatement": MedicationStatement,
    "MedicationAdministration": MedicationAdministration,
}
#: statuses after which a record says nothing about what the patient takes or took
_UNREAD_MED_STATUSES = frozenset({"entered-in-error", "cancelled", "not-taken"})


def _resolver(sources: _Sources, container: Mapping[str, Any]) -> Callable[[str], JSON | None]:
    """Resolve a medicationReference: contained first, then prefetch and draftOrders Medications."""

    def resolve(reference: Any) -> JSON | None:
        ref = reference_of(reference) if isinstance(reference, Mapping) else reference
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            for contained in as_list(container.get("contained")):
                if isinstance(contained, Mapping) and contained.get("id") == ref[1:]:
                    return contained  # type: ignore[return-value]
            return None
        if ref in sources.medications_by_ref:
            return sources.medications_by_ref[ref]
        tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL -> Medication/id
        return sources.medications_by_ref.get(tail)

    return resolve


def medication_dates(raw: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """When the medication started and when its course ended (or will end), from the resource and
    its dosage timing bounds; ``None`` where unknown."""
    starts = [
        parse_datetime(raw.get("authoredOn")),
        parse_datetime(raw.get("effectiveDateTime")),
        period_start(raw.get("effectivePeriod")),
    ]
    ends = [period_end(raw.get("effectivePeriod"))]
    dispense = raw.get("dispenseRequest")
    if isinstance(dispense, Mapping):
        ends.append(period_end(dispense.get("validityPeriod")))
    for dosage in as_list(raw.get("dosageInstruction")) + as_list(raw.get("dosage")):
        timing = dosage.get("timing") if isinstance(dosage, Mapping) else None
        repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
        if not isinstance(repeat, Mapping):
            continue
        bounds = repeat.get("boundsPeriod")
        starts.append(period_start(bounds))
        ends.append(period_end(bounds))
        duration = repeat.get("boundsDuration")
        start = (
            period_start(bounds)
            or parse_datetime(raw.get("authoredOn"))
            or period_start(raw.get("effectivePeriod"))
            or parse_datetime(raw.get("effectiveDateTime"))
        )
        if isinstance(duration, Mapping) and start is not None:
            days = _duration_days(duration)
            if days is not None:
                try:
                    ends.append(start + timedelta(days=days))
                except OverflowError:  # a bound past year 9999 is no end date (the timeline notes it)
                    pass
    known_starts = [s for s in starts if s is not None]
    known_ends = [e for e in ends if e is not None]
    return (min(known_starts) if known_starts else None), (max(known_ends) if known_ends else None)


def _duration_days(duration: Mapping[str, Any]) -> float | None:
    value = number_of(duration.get("value"))
    if value is None or not 0 < value < 1e9:
        return None
    unit = (text_of(duration.get("code")) or text_of(duration.get("unit")) or "d").lower()
    per_day = {
        "d": 1,
        "day": 1,
        "days": 1,
        "wk": 7,
        "week": 7,
        "weeks": 7,
        "h": 1 / 24,
        "hour": 1 / 24,
        "mo": 30,
        "month": 30,
        "months": 30,
        "min": 1 / 1440,
        "a": 365,
    }.get(unit)
    return None if per_day is None else float(value) * per_day


class Medications:
    """The medicines in the classes the rules read, validated a class at a time when a rule first asks
    for that class: a patient's statin is never validated unless a rule looks at myotoxic medicines.
    An invalid one is skipped with a note. Answers are memoised, so the snapshot never changes."""

    def __init__(self, candidates: list[tuple[MedicationFact, Mapping[str, Any], Any]], notes: list[str]):
        self._candidates = candidates  # (fact, raw resource, model class)
        self._notes = notes
        self._by_class: dict[str, tuple[MedicationFact, ...]] = {}
        self._valid: dict[int, bool] = {}  # id(raw) -> passed validation

    def in_class(self, cls: str) -> tuple[MedicationFact, ...]:
        found = self._by_class.get(cls)
        if found is None:
            found = self._by_class[cls] = tuple(
                fact for fact, raw, model in self._candidates if cls in fact.classes and self._check(fact, raw, model))
        return found

    def _check(self, fact: MedicationFact, raw: Mapping[str, Any], model_cls: Any) -> bool:
        key = id(raw)  # the raw dicts live as long as the request, and so does this snapshot
        if key not in self._valid:
            model, problem = validate(model_cls, raw, MEDICATION_ELEMENTS)
            if model is None:
                self._notes.append(f"{fact.resource_type}/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
            self._valid[key] = model is not None
        return self._valid[key]


def build_medications(sources: _Sources, now: datetime, notes: list[str]) -> Medications:
    candidates = []
    for rtype, model_cls in _MED_MODELS.items():
        for raw, from_draft in sources.of(rtype):
            status = status_of(raw)
            if status in _UNREAD_MED_STATUSES:
                continue
            if rtype == "MedicationAdministration" and status not in medications.ADMINISTERED_STATUSES:
                continue  # not-done, on-hold, stopped before it was given, unknown: no dose to read
            info = medications.identify_medication(raw, _resolver(sources, raw))
            if info is None:
                continue
            classes = frozenset(c for c in MEDICATION_CLASSES if medications.has_ingredient_in(info, c))
            if not classes:
                continue
            if status is None and raw.get("status") is not None:
                _note_unread_status(rtype, raw, True, notes)
                continue
            candidates.append((medication_fact(raw, rtype, info, classes, from_draft, now), raw, model_cls))
    return Medications(candidates, notes)


def medication_fact(
    raw: Mapping[str, Any], rtype: str, info: Any, classes: frozenset[str], from_draft: bool, now: datetime
) -> MedicationFact:
    """The fact of one medication record (raw JSON, not yet validated)."""
    started, course_end = medication_dates(raw)
    dosages = tuple(
        d
        for d in as_list(raw.get("dosageInstruction") if rtype == "MedicationRequest" else raw.get("dosage"))
        if isinstance(d, Mapping)
    )
    period = raw.get("effectivePeriod") if isinstance(raw.get("effectivePeriod"), Mapping) else {}
    effective = parse_datetime(raw.get("effectiveDateTime"))
    dispense = raw.get("dispenseRequest") if isinstance(raw.get("dispenseRequest"), Mapping) else {}
    validity = dispense.get("validityPeriod") if isinstance(dispense.get("validityPeriod"), Mapping) else {}
    intent = text_of(raw.get("intent"))
    return MedicationFact(
        info=info,
        classes=classes,
        resource_type=rtype,
        resource_id=(id_of(raw) or ""),
        status=status_of(raw),
        current=medications.is_current(raw, now, include_draft=from_draft),
        from_draft_orders=from_draft,
        started=started,
        course_end=course_end,
        dosages=dosages,
        intent=intent,
        authored_on=parse_datetime(raw.get("authoredOn")),
        effective_start=period_start(period) or effective,
        effective_end=medications.end_instant(period.get("end"))
        or (medications.administration_time(raw) if rtype == "MedicationAdministration" else None),
        asserted=parse_datetime(raw.get("dateAsserted")),
        validity_end=medications.end_instant(validity.get("end")),
    )


# ------------------------------------------------------------------------------------------ patient


def patient_sex(sources: _Sources, notes: list[str]) -> str | None:
    for raw, _ in sources.of("Patient"):
        model, problem = validate(Patient, raw, PATIENT_ELEMENTS)
        if model is None:
            notes.append(f"Patient/{id_of(raw) or '?'} skipped: not valid FHIR R4 ({problem})")
            continue
        if model.gender in ("male", "female"):
            return model.gender
        return None
    return None


_FHIR_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def patient_birth_date(sources: _Sources, notes: list[str], now: datetime) -> BirthDate | None:
    """The first Patient's birthDate, read from the raw resource (the only element read, checked here as
    a FHIR date; validating the whole Patient is left to the rules that need its sex). A value that is no
    FHIR date, or lies in the future, is noted and gives ``None``."""
    for raw, _ in sources.of("Patient"):
        value = raw.get("birthDate")
        if value is None:
            return None
        match = _FHIR_DATE.match(value) if isinstance(value, str) else None
        try:
            if match is None:
                raise ValueError
            year, month, day = int(match[1]), match[2], match[3]
            if day:
                earliest = latest = date(year, int(month), int(day))
            elif month:
                earliest = date(year, int(month), 1)
                latest = earliest.replace(day=calendar.monthrange(year, int(month))[1])  # no overflow in 9999-12
            else:
                earliest, latest = date(year, 1, 1), date(year, 12, 31)
            if earliest > now.date() or year < 1850:
                raise ValueError
        except ValueError:
            shown = value if isinstance(value, str) and len(value) <= 40 else type(value).__name__
            notes.append(f"Patient/{id_of(raw) or '?'} birthDate {shown!r} is not a usable date: age unknown")
            return None
        return BirthDate(value, earliest, min(latest, now.date()))
    return None


def build_facts(request: HookRequest, gate: Callable[[PatientFacts], bool] | None = None) -> PatientFacts:
    """The snapshot of everything the rules read for this request.

    :param gate: called with the facts known after Conditions and symptom Observations; when it returns
        ``False`` the rest (labs, orders, medicines) is neither selected nor validated, because no rule
        will read it.
    """
    notes: list[str] = []
    sources = collect_sources(request)
    conditions = build_conditions(sources, notes)
    lab_candidates, symptom_candidates = select_observations(sources, notes)
    symptoms = tuple(
        symptoms_from_conditions(conditions) + build_symptom_observations(symptom_candidates, notes)
    )
    missing = frozenset(k for k in request.prefetch if request.prefetch.status(k).value == "missing")
    facts = PatientFacts(
        patient_id=request.patient_id,
        hook=request.hook,
        now=request.now,
        sex_of=functools.cache(lambda: patient_sex(sources, notes)),
        birth_date_of=functools.cache(lambda: patient_birth_date(sources, notes, request.now)),
        conditions=tuple(conditions),
        symptoms=symptoms,
        labs=LabResults({}, notes),
        orders=(),
        medications=Medications([], notes),
        gaps=tuple(request.prefetch.gaps()),
        skipped=notes,
        missing_keys=missing,
    )
    if gate is not None and not gate(facts):
        return facts
    orders = tuple(build_orders(sources, notes))
    meds = build_medications(sources, request.now, notes)
    specimens = {f"Specimen/{raw['id']}": raw for raw, _ in sources.of("Specimen") if isinstance(raw.get("id"), str)}
    return replace(facts, labs=LabResults(lab_candidates, notes, specimens), orders=orders, medications=meds)
