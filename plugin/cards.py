"""Every word a clinician sees on a card, in one place to review: summaries, detail text, override
reasons, links, sources, and the draft orders offered as suggestions. Also the card assembly itself
(uuid, sorting, one card per topic).

Summaries are templates filled from a rule's :class:`~plugin.rules.Finding`; each variant has a short
fallback used when the filled summary would reach 140 characters (CDS Hooks: fewer than 140). Details
are GitHub-flavoured Markdown: why the card fired, the data used (values, units, dates, codes,
arithmetic), caveats, and any gaps in the data the service received.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import medications
from .facts import VS, Coded, ConditionFact, LabResult, MedicationFact, OrderFact, PatientFacts, SymptomFact
from .rules import (
    CK_ELEVATED,
    CK_TESTING,
    ELECTROLYTE_ABNORMAL,
    ELECTROLYTE_TESTING,
    NCS_EMG,
    NEUROACTIVE_REVIEW,
    RED_FLAG_URGENT,
    STEROID_REVIEW,
    Finding,
    Gate,
    ck_uln,
    is_child,
    known_drug_myopathy,
    latest_final,
    patient_age,
    recent_weight,
)
from .settings import Settings

#: card uuids are uuid5 over this namespace, so one patient's card for one rule is the same all day
#: (the feedback endpoint can then de-duplicate)
CARD_NAMESPACE = uuid.UUID("7d4f5d8e-2f64-4c1e-9a43-5b0c8f1e6a21")
TOPIC_SYSTEM = "https://lupus-cds.example.org/fhir/CodeSystem/card-topic"
OVERRIDE_SYSTEM = "https://lupus-cds.example.org/fhir/CodeSystem/override-reason"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
MAX_SUMMARY = 139
INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}

# ------------------------------------------------------------------------------------ topics/sources

TOPICS: dict[str, str] = {
    CK_TESTING: "Creatine kinase testing",
    CK_ELEVATED: "Elevated creatine kinase",
    ELECTROLYTE_TESTING: "Electrolyte testing",
    ELECTROLYTE_ABNORMAL: "Abnormal electrolytes",
    STEROID_REVIEW: "Corticosteroid review",
    NEUROACTIVE_REVIEW: "Neuro-active medication review",
    RED_FLAG_URGENT: "Red flag: urgent evaluation",
    NCS_EMG: "Nerve conduction study / EMG",
}
#: display order among cards of the same indicator
TOPIC_ORDER = (
    RED_FLAG_URGENT,
    CK_ELEVATED,
    ELECTROLYTE_ABNORMAL,
    STEROID_REVIEW,
    CK_TESTING,
    ELECTROLYTE_TESTING,
    NEUROACTIVE_REVIEW,
    NCS_EMG,
)


@dataclass(frozen=True)
class Link:
    label: str
    url: str

    def as_json(self) -> dict[str, str]:
        return {"label": self.label, "url": self.url, "type": "absolute"}


LINKS: dict[str, Link] = {
    "mayo-ck": Link(
        "Mayo Clinic Laboratories: creatine kinase, reference ranges and caveats",
        "https://www.mayocliniclabs.com/test-catalog/overview/8336",
    ),
    "eular-acr-2017": Link(
        "EULAR/ACR 2017 classification criteria for idiopathic inflammatory myopathies",
        "https://doi.org/10.1136/annrheumdis-2017-211468",
    ),
    "statpearls-rhabdo": Link("StatPearls: Rhabdomyolysis", "https://www.ncbi.nlm.nih.gov/books/NBK448168/"),
    "statpearls-hypokalemia": Link(
        "StatPearls: Hypokalemia", "https://www.ncbi.nlm.nih.gov/books/NBK482465/"
    ),
    "statpearls-hypomagnesemia": Link(
        "StatPearls: Hypomagnesemia", "https://www.ncbi.nlm.nih.gov/books/NBK500003/"
    ),
    "fda-ppi-2011": Link(
        "FDA Drug Safety Communication (2011): low magnesium with long-term PPI use",
        "https://www.fda.gov/drugs/drug-safety-and-availability/fda-drug-safety-communication-low-magnesium-"
        "levels-can-be-associated-long-term-use-proton-pump-inhibitor-drugs-ppis",
    ),
    "buttgereit-2002": Link(
        "Buttgereit et al. 2002: standardised glucocorticoid dose nomenclature (EULAR)",
        "https://ard.bmj.com/content/61/8/718",
    ),
    "eular-sle-2023": Link(
        "EULAR 2023 recommendations for the management of SLE", "https://ard.bmj.com/content/83/1/15"
    ),
    # neuropsychiatric SLE: red flags and the neuropathy work-up (EULAR 2023 SLE does not cover them)
    "eular-npsle-2010": Link(
        "Bertsias et al. 2010: EULAR recommendations for SLE with neuropsychiatric manifestations (Ann Rheum "
        "Dis 69:2074)",
        "https://doi.org/10.1136/ard.2010.130476",
    ),
    "acr-npsle-1999": Link(
        "ACR 1999 nomenclature and case definitions for neuropsychiatric lupus syndromes (Arthritis Rheum "
        "42:599)",
        "https://doi.org/10.1002/1529-0131(199904)42:4%3C599::AID-ANR2%3E3.0.CO;2-F",
    ),
    "oomatia-2014": Link(
        "Oomatia et al. 2014: peripheral neuropathies in 5.9% of 2,097 SLE patients (Arthritis Rheumatol "
        "66:1000)",
        "https://doi.org/10.1002/art.38302",
    ),
    "toledano-2017": Link(
        "Toledano et al. 2017: peripheral nervous system involvement in 17.7% of 524 SLE patients (Autoimmun "
        "Rev 16:750)",
        "https://doi.org/10.1016/j.autrev.2017.05.011",
    ),
    "aanem-ncs-emg": Link(
        "AANEM model policy: nerve conduction studies and needle EMG are performed together",
        "https://www.aanem.org/clinical-practice-resources/position-statements/position-statement/"
        "model-policy-for-nerve-conduction-studies-and-needle-electromyography",
    ),
    "saenz-farret-2022": Link(
        "Saenz-Farret et al. 2022: antiseizure drugs and movement disorders (CNS Drugs 36:859)",
        "https://doi.org/10.1007/s40263-022-00937-x",
    ),
    "berghuis-2017": Link(
        "Berghuis et al. 2017: carbamazepine- and oxcarbazepine-induced hyponatremia (Epilepsia 58:1227)",
        "https://doi.org/10.1111/epi.13777",
    ),
    "medscape-steroid-myopathy": Link(
        "Medscape: corticosteroid-induced myopathy", "https://emedicine.medscape.com/article/313842-overview"
    ),
}

#: topic -> (source label, source url, link names)
SOURCES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    CK_TESTING: (
        "SLE neuromuscular guidance: CK screening for lupus myositis (EULAR/ACR 2017)",
        LINKS["eular-acr-2017"].url,
        ("mayo-ck", "eular-acr-2017"),
    ),
    CK_ELEVATED: (
        "SLE neuromuscular guidance: elevated CK (EULAR/ACR 2017; rhabdomyolysis > 5x ULN)",
        LINKS["eular-acr-2017"].url,
        ("mayo-ck", "eular-acr-2017", "statpearls-rhabdo"),
    ),
    ELECTROLYTE_TESTING: (
        "SLE neuromuscular guidance: electrolytes in muscle twitching (StatPearls)",
        LINKS["statpearls-hypokalemia"].url,
        ("statpearls-hypokalemia", "statpearls-hypomagnesemia", "fda-ppi-2011"),
    ),
    ELECTROLYTE_ABNORMAL: (
        "SLE neuromuscular guidance: low potassium / magnesium (StatPearls)",
        LINKS["statpearls-hypokalemia"].url,
        ("statpearls-hypokalemia", "statpearls-hypomagnesemia", "fda-ppi-2011"),
    ),
    STEROID_REVIEW: (
        "SLE neuromuscular guidance: glucocorticoid dose (EULAR 2023 SLE; Buttgereit 2002)",
        LINKS["eular-sle-2023"].url,
        ("eular-sle-2023", "buttgereit-2002", "medscape-steroid-myopathy"),
    ),
    NEUROACTIVE_REVIEW: (
        "SLE neuromuscular guidance: neuro-active medication review (antiseizure drugs and movement disorders)",
        LINKS["saenz-farret-2022"].url,
        ("saenz-farret-2022", "berghuis-2017"),
    ),
    RED_FLAG_URGENT: (
        "SLE neuromuscular guidance: red flags needing urgent evaluation (EULAR neuropsychiatric SLE 2010)",
        LINKS["eular-npsle-2010"].url,
        ("eular-npsle-2010", "acr-npsle-1999"),
    ),
    NCS_EMG: (
        "SLE neuromuscular guidance: neuropathy work-up (EULAR neuropsychiatric SLE 2010; ACR 1999)",
        LINKS["eular-npsle-2010"].url,
        ("eular-npsle-2010", "acr-npsle-1999", "aanem-ncs-emg", "oomatia-2014", "toledano-2017"),
    ),
}

OVERRIDE_REASONS: dict[str, tuple[tuple[str, str], ...]] = {
    "order": (
        ("already-ordered", "Already ordered elsewhere"),
        ("checked-outside", "Recently checked at outside lab"),
        ("not-relevant", "Not clinically relevant"),
    ),
    "result": (
        ("already-managed", "Already being managed"),
        ("expected", "Expected or explained finding"),
        ("not-relevant", "Not clinically relevant"),
    ),
    "medication": (
        ("dose-intended", "Dose is intended and reviewed"),
        ("already-tapering", "Taper already planned"),
        ("not-relevant", "Not clinically relevant"),
    ),
    "urgent": (
        ("already-evaluated", "Already evaluated or escalated"),
        ("not-new", "Symptom is not new"),
        ("not-relevant", "Not clinically relevant"),
    ),
}
TOPIC_OVERRIDES = {
    CK_TESTING: "order",
    ELECTROLYTE_TESTING: "order",
    NCS_EMG: "order",
    CK_ELEVATED: "result",
    ELECTROLYTE_ABNORMAL: "result",
    STEROID_REVIEW: "medication",
    NEUROACTIVE_REVIEW: "medication",
    RED_FLAG_URGENT: "urgent",
}

# --------------------------------------------------------------------------------- orderable tests


@dataclass(frozen=True)
class Orderable:
    label: str
    description: str
    code: str
    display: str
    system: str = LOINC
    category: str = "laboratory"
    #: ServiceRequest.note: what the code alone does not say
    note: str | None = None


#: one draft ServiceRequest per test, always coded with a display: LOINC for laboratory tests; the
#: electrodiagnostic study is CPT 95886 (plugin/valuesets/ncs-emg-codes.json records its sources)
ORDERABLES: dict[str, Orderable] = {
    "ck": Orderable(
        "Order creatine kinase (CK)",
        "Draft order: creatine kinase, serum/plasma (LOINC 2157-6)",
        "2157-6",
        "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    "potassium": Orderable(
        "Order potassium",
        "Draft order: potassium, serum/plasma (LOINC 2823-3)",
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
    ),
    "magnesium": Orderable(
        "Order magnesium (not in BMP/CMP)",
        "Draft order: magnesium, serum/plasma (LOINC 19123-9)",
        "19123-9",
        "Magnesium [Mass/volume] in Serum or Plasma",
    ),
    "creatinine": Orderable(
        "Order creatinine",
        "Draft order: creatinine, serum/plasma (LOINC 2160-0)",
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
    ),
    "urinalysis": Orderable(
        "Order urinalysis (dipstick: blood/myoglobin)",
        "Draft order: urinalysis dipstick panel (LOINC 24357-6)",
        "24357-6",
        "Urinalysis macro (dipstick) panel - Urine",
    ),
    # Nerve conduction studies and needle EMG are done together in one session (AANEM model policy). CPT
    # 95860 is a needle EMG of one limb only; 95886 is the complete needle EMG of a limb done with nerve
    # conduction studies, an add-on reported with one of 95907-95913, chosen after the study by the
    # number of nerves tested, so no NCS count can be ordered in advance: the note says so.
    "ncs-emg": Orderable(
        "Order nerve conduction studies with needle EMG",
        "Draft order: nerve conduction studies with needle EMG (CPT 95886 with 95907-95913)",
        "95886",
        "Needle EMG, each extremity, with related paraspinal areas, done with NCS; complete",
        system=CPT,
        category="procedure",
        note=(
            "Nerve conduction studies with needle EMG: the electrodiagnostic physician chooses the nerves and "
            "limbs; nerve conduction studies are reported as CPT 95907-95913 by the number of studies."
        ),
    ),
}
_CATEGORY = {
    "laboratory": {"system": SNOMED, "code": "108252007", "display": "Laboratory procedure"},
    "procedure": {"system": SNOMED, "code": "386053000", "display": "Evaluation procedure"},
}

# ---------------------------------------------------------------------------------------- formatting


def num(value: float | None, digits: int = 1) -> str:
    """1540 -> '1,540'; 3.1 -> '3.1'; 0.5346 -> '0.53' (two significant places under 1)."""
    if value is None:
        return "?"
    if abs(value) < 1 and value != 0:
        text = f"{value:.2f}"
    elif abs(value - round(value)) < 1e-9 or abs(value) >= 100:
        text = f"{round(value):,}"
    else:
        text = f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    return text


def day(instant: datetime | None) -> str:
    return instant.date().isoformat() if instant else "date unknown"


def ratio_text(ratio: float) -> str:
    return f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.1f}"


def mg_dl_to_mmol(value: float | None) -> float | None:
    return None if value is None else value * 0.4114


def drug_name(med: MedicationFact) -> str:
    """The ingredient name (short, for summaries), else the product display."""
    ingredients = getattr(med.info, "ingredients", None) or ()
    names = [getattr(i, "name", None) for i in ingredients]
    names = [n for n in names if n]
    if names:
        return " / ".join(dict.fromkeys(n.lower() for n in names))
    return med.name


def coded_text(coded: Coded) -> str:
    return coded.label()


def lab_line(result: LabResult, label: str) -> str:
    reported = f"{num(result.value, 2)} {result.unit or '(no unit)'}"
    converted = ""
    if result.canonical is not None and result.canonical_unit and result.unit != result.canonical_unit:
        converted = f" = {num(result.canonical, 2)} {result.canonical_unit}"
    flag = f", flagged {result.interpretation}" if result.interpretation else ""
    ref = ""
    if result.ref_low is not None or result.ref_high is not None:
        ref = (
            f", lab range {num(result.ref_low, 2) if result.ref_low is not None else ''}-"
            f"{num(result.ref_high, 2) if result.ref_high is not None else ''}"
        )
    return (
        f"{label} {reported}{converted} on {day(result.when)} ({coded_text(result.coded)}, "
        f"{result.status}{flag}{ref}; Observation/{result.resource_id})"
    )


def symptom_line(symptom: SymptomFact) -> str:
    where = f"{symptom.resource_type}/{symptom.resource_id}"
    if symptom.resource_type != "Condition":
        return f"{coded_text(symptom.coded)}, observed {day(symptom.when)} ({where})"
    if symptom.when is None:
        return f"{coded_text(symptom.coded)}, active, date unknown (no onset or recorded date; {where})"
    if symptom.onset is None:
        dates = f"recorded {day(symptom.when)}"
    elif symptom.when > symptom.onset:  # when is the later of onset and recordedDate
        dates = f"onset {day(symptom.onset)}, recorded {day(symptom.when)}"
    else:
        dates = f"onset {day(symptom.onset)}"
    return f"{coded_text(symptom.coded)}, {dates} ({where})"


def condition_line(condition: ConditionFact) -> str:
    status = condition.clinical_status or "no clinical status"
    verification = f", {condition.verification_status}" if condition.verification_status else ""
    return f"{coded_text(condition.coded)} ({status}{verification}; Condition/{condition.resource_id})"


def med_line(med: MedicationFact) -> str:
    since = f", since {day(med.started)}" if med.started else ""
    origin = (
        "draft order in this ordering session"
        if med.from_draft_orders
        else f"{med.resource_type} {med.status or ''}".strip()
    )
    return f"{med.name} ({origin}{since}; {med.resource_type}/{med.resource_id})"


def order_line(order: OrderFact) -> str:
    where = "in this ordering session" if order.from_draft_orders else f"{order.status or 'unknown status'}"
    return (
        f"{coded_text(order.coded)}, {where}, {day(order.when)} ({order.resource_type}/{order.resource_id})"
    )


def ck_context(ck: LabResult | None, facts: PatientFacts, settings: Settings) -> str | None:
    """The CK line other cards show (a normal CK matters: steroid myopathy usually has a normal CK)."""
    if ck is None:
        return None
    uln, _ = ck_uln(ck, facts, settings)
    state = "not graded" if ck.canonical is None else ("normal" if ck.canonical <= uln else "above ULN")
    return lab_line(ck, "CK") + f": {state} (ULN {num(uln)} U/L)"


# ------------------------------------------------------------------------------------------ summaries

#: variant -> (summary template, shorter fallback). Placeholders are filled by :func:`summary_values`.
TEMPLATES: dict[str, tuple[str, str]] = {
    "ck-order": (
        "Lupus + muscle twitching: no CK in {days} days. Order creatine kinase to screen for lupus myositis",
        "SLE with twitching: no CK in {days} days. Order creatine kinase",
    ),
    "ck-repeat": (
        (
            "Lupus + muscle twitching: last CK {ck_value} U/L on {ck_date}, over {days} days ago. Repeat "
            "creatine kinase"
        ),
        "SLE with twitching: last CK over {days} days ago. Repeat CK",
    ),
    "ck-monitor": (
        (
            "Known myositis with muscle twitching: no CK in {days} days. Order creatine kinase to monitor "
            "activity"
        ),
        "Myositis with twitching: no CK in {days} days. Order CK",
    ),
    "ck-elevated": (
        (
            "CK {ck_value} U/L ({ratio}x ULN) on {ck_date} with fasciculations in SLE: evaluate for lupus "
            "myositis"
        ),
        "CK {ck_value} U/L ({ratio}x ULN): evaluate for lupus myositis",
    ),
    "ck-marked": (
        (
            "CK {ck_value} U/L ({ratio}x ULN) on {ck_date} with fasciculations in SLE: evaluate for "
            "myositis, check kidneys"
        ),
        "CK {ck_value} U/L ({ratio}x ULN): evaluate for myositis",
    ),
    "ck-rhabdo": (
        "CK {ck_value} U/L ({ratio}x ULN): possible rhabdomyolysis. Check creatinine, K+ and urine today",
        "CK {ratio}x ULN: possible rhabdomyolysis. Check creatinine, K+ and urine today",
    ),
    "order-k-mg": (
        "Fasciculations in SLE{on_drug}: no K+ or Mg in {days} days. Order potassium and magnesium",
        "Fasciculations in SLE: no K+ or Mg in {days} days. Order potassium and magnesium",
    ),
    "order-k": (
        "Fasciculations in SLE{on_drug}: no potassium in {days} days. Order serum potassium",
        "Fasciculations in SLE: no potassium in {days} days. Order serum potassium",
    ),
    "order-mg": (
        "Fasciculations in SLE{on_drug}: no magnesium in {days} days (not in BMP/CMP). Order magnesium",
        "Fasciculations in SLE: no magnesium in {days} days. Order magnesium",
    ),
    "k-low": (
        (
            "Low potassium {k_value} mmol/L ({k_date}) may explain muscle twitching. Replete and recheck K+ "
            "and Mg"
        ),
        "Low potassium {k_value} mmol/L may explain twitching. Replete and recheck",
    ),
    "k-critical": (
        "Potassium {k_value} mmol/L (critical) with muscle twitching: urgent replacement and ECG advised",
        "Potassium {k_value} mmol/L (critical): urgent replacement and ECG advised",
    ),
    "mg-low": (
        "Low magnesium {mg_value} mg/dL ({mg_mmol} mmol/L){on_ppi}: may cause twitching. Replete{review_ppi}",
        "Low magnesium {mg_value} mg/dL ({mg_mmol} mmol/L): may cause twitching. Replete",
    ),
    "mg-critical": (
        (
            "Magnesium {mg_value} mg/dL ({mg_mmol} mmol/L, critical) with muscle twitching: urgent "
            "replacement advised"
        ),
        "Magnesium {mg_value} mg/dL (critical): urgent replacement advised",
    ),
    "k-mg-low": (
        (
            "Low potassium {k_value} mmol/L and magnesium {mg_value} mg/dL with twitching: replete both, "
            "magnesium first"
        ),
        "Low potassium and magnesium with twitching: replete both",
    ),
    "other-low": (
        "Lab-flagged low {others} with muscle twitching in SLE: review and replace as needed",
        "Lab-flagged low electrolytes with muscle twitching: review and replace",
    ),
    "pulse": (
        (
            "{drug} {pulse_mg} mg/day pulse (prednisone-eq {pulse_pred} mg/day), {pulse_dates}: monitor weakness, "
            "K+, glucose"
        ),
        "{drug} pulse (prednisone-eq {pulse_pred} mg/day), {pulse_dates}: monitor weakness, K+ and glucose",
    ),
    "very-high": (
        "{dose_text} (very high dose): can cause tremor and myopathy. Review steroid dose",
        "{dose_short} (very high dose): can cause tremor and myopathy. Review dose",
    ),
    "high": (
        "{dose_text} (high dose): can cause tremor and myopathy. Review steroid dose",
        "{dose_short} (high dose): can cause tremor and myopathy. Review dose",
    ),
    "medium": (
        "{dose_text} is above the SLE maintenance target of {target} mg/day. {taper_advice}",
        "{dose_short} is above the SLE target of {target} mg/day. {taper_advice}",
    ),
    "above-target": (
        "{dose_text} is above the SLE maintenance target of {target} mg/day. {taper_advice}",
        "{dose_short} is above the SLE target of {target} mg/day. {taper_advice}",
    ),
    "not-computable": (
        "On systemic corticosteroid ({drugs}), dose not computable: review dose as possible cause",
        "On systemic corticosteroid, dose not computable: review dose as possible cause",
    ),
    "neuroactive": (
        "On {drugs}: can cause tremor or myoclonus that looks like twitching. Review dose and timing",
        "Neuro-active medicine can cause tremor or myoclonus. Review dose and timing",
    ),
    "bulbar": (
        "Muscle twitching with {flag_words} in SLE: urgent neurologic evaluation today",
        "Muscle twitching with trouble swallowing or speaking: urgent neurologic evaluation today",
    ),
    "respiratory": (
        "Twitching with {flag_words} in SLE: assess respiratory muscle strength urgently (FVC/NIF)",
        "Twitching with breathing difficulty: assess respiratory muscle strength urgently",
    ),
    "respiratory-explained": (
        "Twitching and breathlessness in SLE: respiratory muscle weakness (check FVC/NIF) or known {cause_words}",
        "Twitching and breathlessness: respiratory muscle weakness (check FVC/NIF) or the known heart/lung cause",
    ),
    "weakness-sensory": (
        "Muscle twitching with {flag_words} in SLE: urgent neurologic evaluation advised",
        "Muscle twitching with a red-flag symptom: urgent neurologic evaluation",
    ),
    "ncs-sensory": (
        "{sensory_words} with fasciculations in SLE: consider nerve conduction study and EMG for neuropathy",
        "Neuropathic symptoms with fasciculations: consider NCS and EMG",
    ),
    "emg-weakness": (
        "Twitching with weakness and a normal CK in SLE: consider EMG to separate nerve from muscle causes",
        "Twitching with weakness, normal CK: consider EMG",
    ),
}

FLAG_WORDS = {
    VS.MUSCLE_WEAKNESS: "weakness",
    VS.LOSS_OF_SENSATION: "loss of sensation",
    VS.DYSPHAGIA: "trouble swallowing",
    VS.DYSARTHRIA: "slurred speech",
    VS.DYSPNEA: "shortness of breath",
}


def weakness_words(data: Mapping[str, Any]) -> str:
    """'new weakness' only when its onset lies in the red-flag window; an old onset is named by its year."""
    if data.get("weakness_new"):
        return "new weakness"
    onset = data.get("weakness_onset")
    return f"weakness (onset {onset.year})" if isinstance(onset, datetime) else "weakness"


def flag_words(kind: str, data: Mapping[str, Any]) -> str:
    return weakness_words(data) if kind == VS.MUSCLE_WEAKNESS else FLAG_WORDS.get(kind, kind)


def and_join(words: Sequence[str]) -> str:
    return " and ".join(words) if len(words) <= 2 else ", ".join(words[:-1]) + " and " + words[-1]


def cause_groups(data: Mapping[str, Any]) -> list[str]:
    """The groups of the known cardiopulmonary causes, in value-set order, once each."""
    return list(dict.fromkeys(group for group, _ in data.get("causes", ())))


ANALYTE_WORDS = {
    "calcium": "calcium",
    "phosphate": "phosphate",
    "sodium": "sodium",
    "potassium": "potassium",
    "magnesium": "magnesium",
}


def summary_values(finding: Finding, settings: Settings) -> dict[str, Any]:
    """The placeholders of every summary template, from the finding's data."""
    data = finding.data
    values: dict[str, Any] = {
        "days": settings.lab_window_days,
        "pulse_days": settings.pulse_lookback_days,
        "target": num(settings.steroid_target_mg),
        "marked": num(settings.ck_marked_multiple),
        "critical": num(settings.ck_critical_multiple),
        "k_critical": num(settings.hypokalemia_critical_mmol_l),
        "ncs_days": settings.ncs_lookback_days,
    }
    ck = data.get("ck") or data.get("previous")
    if isinstance(ck, LabResult):
        values.update(
            ck_value=num(ck.canonical if ck.canonical is not None else ck.value), ck_date=day(ck.when)
        )
    if "ratio" in data:
        values["ratio"] = ratio_text(data["ratio"])
    k, mg = data.get("potassium"), data.get("magnesium")
    if isinstance(k, LabResult):
        values.update(k_value=num(k.canonical, 2), k_date=day(k.when))
    if isinstance(mg, LabResult):
        values.update(mg_value=num(mg.canonical, 2), mg_mmol=num(mg_dl_to_mmol(mg.canonical), 2))
    drugs = data.get("drugs") or ()
    values["on_drug"] = f" on {drug_name(drugs[0])}" if drugs and finding.topic == ELECTROLYTE_TESTING else ""
    ppis = data.get("ppis") or ()
    values["on_ppi"] = (
        f" on {drug_name(ppis[0])}" if ppis else f" on {day(mg.when)}" if isinstance(mg, LabResult) else ""
    )
    values["review_ppi"] = ", review PPI" if ppis else " and recheck"
    values["others"] = ", ".join(ANALYTE_WORDS.get(r.analyte, r.analyte) for r in data.get("other_low", ()))
    if finding.topic == STEROID_REVIEW:
        values.update(steroid_values(finding))
    if finding.topic == NEUROACTIVE_REVIEW:
        values["drugs"] = ", ".join(dict.fromkeys(drug_name(d) for d in drugs))
    flags = data.get("flags")
    if flags:
        values["flag_words"] = and_join([flag_words(k, data) for k in FLAG_WORDS if k in flags])
    if data.get("causes"):
        values["cause_words"] = " or ".join(cause_groups(data))
    if finding.topic == NCS_EMG:
        values["sensory_words"] = "Numbness/tingling" if data.get("sensory") else "Known neuropathy"
    return values


def render_summary(finding: Finding, settings: Settings) -> str:
    full, short = TEMPLATES[finding.variant]
    values = summary_values(finding, settings)
    for template in (full, short):
        try:
            text = template.format(**values)
        except (KeyError, IndexError, ValueError):
            continue
        if len(text) <= MAX_SUMMARY:
            return text
    return short.format_map(_Blank(values))[:MAX_SUMMARY]


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


# -------------------------------------------------------------------------------------------- details

WHY: dict[str, str] = {
    "ck-order": (
        "Muscle twitching in SLE can be an early sign of lupus myositis, and an elevated CK strongly "
        "suggests it. No total CK result is on record in the last {days} days and none is pending."
    ),
    "ck-repeat": (
        "Muscle twitching in SLE can be an early sign of lupus myositis. The last total CK is older than "
        "{days} days, so it does not reflect the current symptom."
    ),
    "ck-monitor": (
        "Myositis is already known; new twitching may mean a flare. No total CK result is on record in the "
        "last {days} days and none is pending."
    ),
    "ck-elevated": (
        "CK above the upper limit of normal in a patient with SLE and muscle symptoms supports myositis (an "
        "elevated CK is a criterion item of the EULAR/ACR 2017 myositis criteria). There is no validated "
        "multiple of ULN for lupus myositis; the multiple grades urgency."
    ),
    "ck-marked": (
        "CK at or above {marked}x ULN indicates significant muscle injury (the usual rhabdomyolysis "
        "threshold). Evaluate for lupus myositis and check kidney function and urine."
    ),
    "ck-rhabdo": (
        "CK at or above {critical}x ULN: possible rhabdomyolysis, with a risk of acute kidney injury and "
        "hyperkalaemia. Check creatinine, potassium and urine today."
    ),
    "order-k-mg": (
        "Low potassium or magnesium causes cramps and fasciculations. Neither result is on record in the "
        "last {days} days."
    ),
    "order-k": (
        "Low potassium causes cramps, weakness and fasciculations. No potassium result is on record in the "
        "last {days} days."
    ),
    "order-mg": (
        "Low magnesium causes twitching and tetany. No magnesium result is on record in the last {days} "
        "days; magnesium is not part of a basic or comprehensive metabolic panel, so order it separately."
    ),
    "k-low": (
        "Low potassium causes cramps, weakness and fasciculations, and low magnesium makes it hard to "
        "correct. Recheck potassium and magnesium after replacement."
    ),
    "k-critical": (
        "Potassium below {k_critical} mmol/L risks arrhythmia and paralysis: urgent replacement, an ECG and "
        "cardiac monitoring are advised."
    ),
    "mg-low": "Low magnesium causes twitching, tremor and tetany, and keeps potassium low.",
    "mg-critical": (
        "Severe hypomagnesaemia can cause tetany, seizures and arrhythmia: urgent replacement is advised."
    ),
    "k-mg-low": (
        "Both potassium and magnesium are low; potassium is hard to correct until magnesium is replaced."
    ),
    "other-low": (
        "The lab flagged these results low; low calcium, phosphate or sodium can cause twitching and tetany."
    ),
    "pulse": "High-dose glucocorticoid pulses can cause acute myopathy, hypokalaemia and hyperglycaemia.",
    "very-high": (
        "Glucocorticoid myopathy is typical at prednisone 40-60 mg/day or more, especially with fluorinated "
        "steroids; high doses also cause tremor."
    ),
    "high": (
        "Glucocorticoid myopathy is typical at prednisone 40-60 mg/day or more, especially with fluorinated "
        "steroids (dexamethasone, betamethasone, triamcinolone); high doses also cause tremor."
    ),
    "medium": (
        "EULAR 2023 recommends tapering maintenance glucocorticoids in SLE to 5 mg/day prednisone-equivalent "
        "or less, and withdrawing them when possible."
    ),
    "above-target": (
        "EULAR 2023 recommends tapering maintenance glucocorticoids in SLE to 5 mg/day prednisone-equivalent "
        "or less, and withdrawing them when possible."
    ),
    "not-computable": (
        "A systemic corticosteroid is current, but its daily dose cannot be computed from the order (no "
        "structured dose, frequency or strength). Steroid myopathy and tremor depend on the dose: review it."
    ),
    "neuroactive": (
        "Anticonvulsants and gabapentinoids can cause tremor or myoclonus that may be reported as twitching; "
        "carbamazepine and oxcarbazepine also cause hyponatraemia."
    ),
    "bulbar": (
        "Fasciculations with trouble swallowing or slurred speech (dysarthria) can mean bulbar weakness "
        "(myositis, neuropathy, motor neuron disease, myasthenia) and aspiration risk: evaluate today."
    ),
    "respiratory": (
        "Fasciculations with breathing difficulty can mean respiratory muscle weakness: measure forced vital "
        "capacity (FVC) and negative inspiratory force (NIF) and evaluate urgently."
    ),
    "respiratory-explained": (
        "Shortness of breath here has two possible causes: respiratory muscle weakness, which fasciculations make "
        "possible (measure forced vital capacity (FVC) and negative inspiratory force (NIF)), and the known "
        "{cause_words}. No weakness, bulbar sign or loss of sensation is recorded, so this is a warning: escalate "
        "if FVC or NIF is low or breathing worsens."
    ),
    "weakness-sensory": (
        "Fasciculations with weakness or loss of sensation need urgent neurologic evaluation."
    ),
    "ncs-sensory": (
        "Peripheral nervous system disease affects about 6-18% of people with SLE in large cohorts (5.9% of "
        "2,097, Oomatia 2014; 17.7% of 524, Toledano 2017). Nerve conduction studies with needle EMG "
        "distinguish neuropathy, myopathy and benign fasciculation. None is on record in the last {ncs_days} "
        "days."
    ),
    "emg-weakness": (
        "Twitching with weakness and a normal CK: EMG separates neuropathic from myopathic causes. None is "
        "on record in the last {ncs_days} days."
    ),
}

CAVEATS: dict[str, tuple[str, ...]] = {
    CK_TESTING: (
        "Strenuous exercise and intramuscular injections raise CK for a few days.",
        "CK-MB is not total CK and does not count as a CK result.",
    ),
    CK_ELEVATED: (
        "Strenuous exercise, intramuscular injections, hypokalaemia and hypothyroidism also raise CK.",
        "Steroid myopathy usually has a normal CK.",
    ),
    STEROID_REVIEW: (
        "Steroid myopathy usually has a normal CK, so a normal CK does not rule it out.",
        "Do not stop long-term glucocorticoids abruptly (adrenal insufficiency).",
    ),
}

DIFFERENTIALS = (
    "lupus myositis",
    "lupus neuropathy (including Guillain-Barre-like acute neuropathy)",
    "severe hypokalaemia or hypomagnesaemia",
    "motor neuron disease",
    "myasthenia gravis",
)


def gate_lines(gate: Gate) -> list[str]:
    lines = [f"SLE: {condition_line(c)}" for c in gate.sle[:2]]
    if gate.unspecified_lupus:
        coded = gate.sle[0].coded_for(VS.SLE_UNSPECIFIED)
        lines.append(
            f"Lupus type unspecified: coded as {coded_text(coded)}, a code that also covers cutaneous lupus; "
            "confirm SLE."
        )
    if any(VS.SLE_IN_REMISSION in c.kinds for c in gate.sle[:2]):
        lines.append(
            "SLE is coded as in remission: counted, because remission does not remove the risk of myositis or "
            "neuropathy."
        )
    if gate.drug_induced_lupus:
        lines.append(
            "Drug-induced lupus is coded: it usually remits when the drug stops; myositis and "
            "neuropathy "
            "are less typical."
        )
    lines.extend(f"Fasciculation: {symptom_line(s)}" for s in gate.fasciculation[:2])
    return lines


def finding_lines(finding: Finding, facts: PatientFacts, settings: Settings) -> list[str]:
    """The data-used lines specific to one finding (values, units, dates, codes, arithmetic)."""
    data, lines = finding.data, []
    topic = finding.topic
    if topic in (CK_TESTING, CK_ELEVATED):
        ck = data.get("ck")
        if isinstance(ck, LabResult):
            source = {
                "lab": "the lab's reference range",
                "default-male": "default for males, Mayo",
                "default-female": "default for females, Mayo",
                "default-unknown": "default, sex unknown (lower limit, for sensitivity)",
            }[data["uln_source"]]
            lines.append(lab_line(ck, "CK"))
            lines.append(
                f"ULN {num(data['uln'])} U/L ({source}); {num(ck.canonical)} / {num(data['uln'])} = "
                f"{data['ratio']:.1f}x ULN"
            )
            if "creatinine" in data:
                creat = data["creatinine"]
                lines.append(
                    lab_line(creat, "Creatinine")
                    if creat
                    else f"No creatinine in the last {settings.rhabdo_creatinine_days} days."
                )
        previous = data.get("previous")
        if isinstance(previous, LabResult):
            lines.append(lab_line(previous, "Last CK") + " (older than the look-back)")
        if data.get("preliminary"):
            lines.append(lab_line(data["preliminary"], "Preliminary CK") + " (not final: not counted)")
        if data.get("ck_mb"):
            lines.append(lab_line(data["ck_mb"], "CK-MB") + " (not total CK: not counted)")
        lines.extend(f"Can cause a toxic myopathy and raise CK: {med_line(m)}" for m in data.get("myotoxic", ()))
        lines.extend(f"Known myositis/myopathy: {condition_line(c)}" for c in data.get("myositis", ()))
        lines.extend(f"Supporting symptom: {symptom_line(s)}" for s in data.get("supporting", ()))
    elif topic in (ELECTROLYTE_TESTING, ELECTROLYTE_ABNORMAL):
        for analyte, label in (("potassium", "Potassium"), ("magnesium", "Magnesium")):
            result = data.get(analyte)
            if isinstance(result, LabResult):
                line = lab_line(result, label)
                if analyte == "magnesium" and result.canonical is not None:
                    line += f" = {num(mg_dl_to_mmol(result.canonical), 2)} mmol/L"
                lines.append(line)
            else:
                lines.append(f"{label}: no final result in the last {settings.lab_window_days} days.")
        if data.get("k_low") or data.get("mg_low"):
            lines.append(
                "Cut-offs when the lab gives no range: potassium < "
                f"{num(settings.hypokalemia_mmol_l, 2)} "
                f"mmol/L (critical < {num(settings.hypokalemia_critical_mmol_l, 2)}); magnesium < "
                f"{num(settings.hypomagnesemia_mg_dl, 2)} mg/dL = "
                f"{num(mg_dl_to_mmol(settings.hypomagnesemia_mg_dl), 2)} mmol/L (critical < "
                f"{num(settings.hypomagnesemia_critical_mg_dl, 2)} mg/dL); the lab's own flag is "
                "used first."
            )
        for result in data.get("other_low", ()):
            lines.append(lab_line(result, ANALYTE_WORDS.get(result.analyte, result.analyte).capitalize()))
        for med in data.get("drugs", ()):
            lines.append(f"Lowers potassium/magnesium: {med_line(med)}")
        for med in data.get("ppis", ()):
            if med.started and (facts.now - med.started).days >= settings.ppi_long_term_days:
                lines.append(
                    f"Long-term PPI use ({(facts.now - med.started).days // 365}+ years): the FDA "
                    "advises "
                    "checking magnesium periodically, especially with diuretics."
                )
        if data.get("other_low") and data.get("hyponatremia_drugs"):
            lines.extend(f"Can lower sodium: {med_line(m)}" for m in data["hyponatremia_drugs"])
        renal = data.get("renal") or {}
        lines.extend(f"Kidney involvement: {condition_line(c)}" for c in renal.get("conditions", ()))
        if renal.get("egfr"):
            lines.append(lab_line(renal["egfr"], "eGFR") + f" (< {num(settings.egfr_renal_threshold)})")
    elif topic == STEROID_REVIEW:
        lines.extend(steroid_lines(finding, settings))
    elif topic == NEUROACTIVE_REVIEW:
        lines.extend(f"Current: {med_line(m)}" for m in data.get("drugs", ()))
    elif topic == RED_FLAG_URGENT:
        flags = data.get("flags", {})
        for kind, symptoms in flags.items():
            lines.extend(f"Red flag ({FLAG_WORDS.get(kind, kind)}): {symptom_line(s)}" for s in symptoms[:2])
        undated = any(s.when is None for symptoms in flags.values() for s in symptoms)
        lines.append(
            f"Red flags count when recorded in the last {settings.red_flag_days} days"
            + ("; an active symptom Condition with no date counts too, its date unknown." if undated else ".")
        )
        if VS.MUSCLE_WEAKNESS in flags and not data.get("weakness_new"):
            lines.append(
                f"The weakness is not called new: no onset date in the last {settings.red_flag_days} days "
                "(a recent recorded date alone does not make it new)."
            )
        for group, condition in data.get("causes", ()):
            lines.append(f"Known cardiopulmonary cause ({group}): {condition_line(condition)}")
        if data.get("causes"):
            lines.append(
                "Two differentials for the shortness of breath: respiratory muscle weakness (FVC, NIF) and "
                + and_join(cause_groups(data))
                + "."
            )
        lines.append("Consider: " + "; ".join(DIFFERENTIALS) + ".")
        if isinstance(data.get("potassium"), LabResult):
            lines.append(lab_line(data["potassium"], "Potassium"))
    elif topic == NCS_EMG:
        lines.extend(f"Sensory symptom: {symptom_line(s)}" for s in data.get("sensory", ()))
        lines.extend(f"Neuropathy diagnosis: {condition_line(c)}" for c in data.get("neuropathy", ()))
        lines.extend(f"Weakness: {symptom_line(s)}" for s in data.get("weakness", ()))
        lines.append(
            f"No nerve conduction study or EMG on record in the last {settings.ncs_lookback_days} days."
        )
    return lines


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _mg_day(dose: Any) -> str:
    return f"{num(dose.mg_per_day)} mg/day" if dose is not None and dose.computable else "dose unknown"


def course_dose_text(course: Any) -> str:
    """One ingredient's dose as a summary names it: "dexamethasone 12 mg/day", "prednisone current 40
    mg/day -> proposed 10 mg/day", "proposed prednisone 60 mg/day"."""
    if course.is_change:
        return f"{course.name} current {_mg_day(course.current)} -> proposed {_mg_day(course.proposed)}"
    if course.draft is not None:
        return f"proposed {course.name} {_mg_day(course.dose)}"
    return f"{course.name} {_mg_day(course.dose)}"


def steroid_values(finding: Finding) -> dict[str, str]:
    """The steroid summary's placeholders: the drug and its dose, then the prednisone equivalent
    ("Dexamethasone 12 mg/day = prednisone 80 mg/day"), a proposed change, a pulse with its dates."""
    data = finding.data
    values: dict[str, str] = {"total": num(data.get("total"))}
    names = [drug_name(d.medication) for d in data.get("not_computable", ())]
    values["drugs"] = ", ".join(dict.fromkeys(names)) or "unknown"
    counted = tuple(data.get("counted", ()))
    total = num(data.get("total"))
    if len(counted) == 1:
        course = counted[0]
        text = course_dose_text(course)
        factor = medications.prednisone_factor(course.medication.info) if course.medication else None
        if factor != 1.0:
            text += f" = prednisone {total} mg/day"
        values["dose_text"] = _capitalized(text)
    elif counted:
        parts = " + ".join(f"{c.name} {_mg_day(c.dose)}" + (" proposed" if c.draft is not None else "")
                           for c in counted)
        values["dose_text"] = _capitalized(f"{parts} = prednisone {total} mg/day")
    else:
        values["dose_text"] = f"Prednisone-equivalent {total} mg/day"
    values["dose_short"] = f"Prednisone-equivalent {total} mg/day"
    tapering = any(
        c.is_change and c.current.computable and c.proposed.computable
        and c.proposed.mg_per_day < c.current.mg_per_day
        for c in counted
    )
    values["taper_advice"] = "Continue the taper if feasible" if tapering else "Consider taper if feasible"
    pulse = data.get("pulse")
    if pulse is not None:
        values.update(
            drug=_capitalized(pulse.name),
            pulse_mg=num(pulse.mg_per_day),
            pulse_pred=num(pulse.pred_eq_per_day),
            pulse_dates=pulse_dates(pulse),
        )
    return values


def pulse_dates(pulse: Any) -> str:
    """When a pulse was given: "2026-11-12 to 2026-11-14", "on 2026-11-12", "since 2026-11-24",
    "being ordered"."""
    if pulse.proposed:
        return "being ordered"
    first, last = pulse.first, pulse.last
    if first is not None and last is not None:
        return f"on {day(first)}" if day(first) == day(last) else f"{day(first)} to {day(last)}"
    if first is not None:
        return f"since {day(first)}"
    return f"until {day(last)}" if last is not None else "dates unknown"


def dose_arithmetic(dose: Any) -> str:
    if dose is None:
        return "no dose"
    if dose.computable and dose.arithmetic:
        return dose.arithmetic
    if dose.computable:
        return f"{num(dose.pred_eq_per_day)} mg prednisone-equivalent/day"
    return f"dose not computable ({dose.reason or 'no structured dose'})"


def course_lines(course: Any) -> list[str]:
    """Where one ingredient's dose comes from: the one record read, a taper step, a proposed change, the
    records of the same therapy that were not added, and courses that ended despite their status."""
    lines = []
    if course.current is not None:
        if course.chosen is not None:
            source = med_line(course.chosen.medication)
        else:
            given = course.administrations
            source = (f"{len(given)} MedicationAdministration{'s' if len(given) != 1 else ''} on "
                      f"{day(given[-1].effective_end or given[-1].effective_start)} ("
                      + ", ".join(f"{g.resource_type}/{g.resource_id}" for g in given) + ")")
        step = next((f", {step_words(line)}" for line in course.lines if line.end is not None), "")
        lines.append(f"Current: {source}{step}: {dose_arithmetic(course.current)}")
    if course.draft is not None:
        judged = "; the dose bands are judged on the proposed dose" if course.is_change else ""
        lines.append(f"Proposed: {med_line(course.draft)}: {dose_arithmetic(course.proposed)}{judged}")
    lines.extend(f"Also recorded for {course.name}, not added (one therapy, one dose): "
                 f"{med_line(record.medication)}" for record in course.also)
    return lines


def step_words(line: Any) -> str:
    """A bounded dosage line in force: "taper step 2 of 4 (2026-11-18 to 2026-11-24)", "course ..."."""
    dates = f"({day(line.start)} to {day(line.last_dose or line.end)})"
    if line.step is not None and line.steps > 1:
        return f"taper step {line.step} of {line.steps} {dates}"
    return f"course {dates}"


def pulse_line(pulse: Any, settings: Settings) -> str:
    state = "Proposed pulse" if pulse.proposed else "Pulse" if pulse.ongoing else "Recent pulse"
    source = med_line(pulse.medication) if pulse.medication is not None else "record unknown"
    if pulse.administrations:
        source = f"{pulse.administrations} MedicationAdministration{'s' if pulse.administrations != 1 else ''}"
    return (
        f"{state}: {pulse.name} {num(pulse.mg_per_day)} mg/day = prednisone {num(pulse.pred_eq_per_day)} mg/day, "
        f"{pulse_dates(pulse)} ({source}); a day with >= {num(settings.steroid_pulse_mg)} mg "
        f"prednisone-equivalent is a pulse, reported for {settings.pulse_lookback_days} days after the last dose"
    )


def steroid_lines(finding: Finding, settings: Settings) -> list[str]:
    data, lines = finding.data, []
    line = data.get("timeline")
    for course in data.get("current", ()):
        lines.extend(course_lines(course))
    pulses = line.pulses if line is not None else ((data["pulse"],) if data.get("pulse") else ())
    lines.extend(pulse_line(pulse, settings) for pulse in pulses)
    if len(data.get("counted", ())) > 1:
        lines.append(
            f"Total: {num(data['total'])} mg prednisone-equivalent/day (one dose per ingredient, added up)"
        )
    if line is not None:
        for course in line.courses:
            if course.dose is None:
                lines.extend(f"Also recorded for {course.name}, not current: {med_line(record.medication)}"
                             for record in course.also)
            lines.extend(
                f"Ended {day(end)} (every dosage bound has passed, although its status is "
                f"{record.medication.status}): {med_line(record.medication)}"
                for record, end in course.ended
            )
        lines.extend(f"Dosage not read: {note}" for note in line.notes)
    lines.append(
        f"Bands (Buttgereit 2002): low <= {num(settings.steroid_low_max_mg)}, medium <= "
        f"{num(settings.steroid_high_above_mg)}, high <= "
        f"{num(settings.steroid_very_high_above_mg)}, very "
        f"high above; pulse >= {num(settings.steroid_pulse_mg)} mg in a day. SLE target "
        "(EULAR 2023) "
        f"<= {num(settings.steroid_target_mg)} mg/day."
    )
    lines.append(f"Equivalence: {medications.EQUIVALENCE_SOURCE}")
    for med in data.get("neuroactive", ()):
        lines.append(
            f"Also on {med_line(med)}: can cause tremor or myoclonus; carbamazepine/oxcarbazepine "
            "cause hyponatraemia."
        )
    return lines


def render_detail(finding: Finding, gate: Gate, facts: PatientFacts, settings: Settings) -> str:
    values = summary_values(finding, settings)
    why = WHY[finding.variant].format_map(_Blank(values))
    parts = [f"**Why:** {why}", "", *child_paragraph(finding, facts, settings), "**Data used**", ""]
    parts.extend(f"- {line}" for line in gate_lines(gate) + finding_lines(finding, facts, settings))
    parts.extend(f"- {line}" for line in context_lines(finding, facts, settings))
    if finding.topic not in (CK_TESTING, CK_ELEVATED):
        ck_line = ck_context(finding.data.get("ck") or _recent_ck(facts, settings), facts, settings)
        if ck_line:
            parts.append(f"- {ck_line}")
    caveats = CAVEATS.get(finding.topic, ())
    if caveats:
        parts.extend(["", "**Caveats:** " + " ".join(caveats)])
    if finding.orders:
        parts.extend(["", "Suggested orders are drafts: nothing is ordered until you accept and sign them."])
    gaps = list(facts.gaps) + list(facts.notes)
    if gaps:
        parts.extend(["", "**Data gaps:** this advice may be incomplete because:", ""])
        parts.extend(f"- {gap}" for gap in gaps)
    return "\n".join(parts)


def context_lines(finding: Finding, facts: PatientFacts, settings: Settings) -> list[str]:
    """Facts about the patient that change how the CK and steroid cards read: a known steroid myopathy
    (not myositis: its CK is usually normal)."""
    if finding.topic not in (CK_TESTING, CK_ELEVATED, STEROID_REVIEW):
        return []
    lines = []
    for condition, steroid in known_drug_myopathy(facts):
        what = "steroid myopathy" if steroid else "drug-induced myopathy (drug not coded)"
        lines.append(
            f"Known {what}: {condition_line(condition)}. Steroid myopathy is not myositis: its CK is usually "
            "normal, so a normal CK does not rule it out."
        )
    return lines


def child_paragraph(finding: Finding, facts: PatientFacts, settings: Settings) -> list[str]:
    """For a child (under the child age), on the CK and steroid cards: adult CK ranges and adult steroid
    bands do not apply, and the steroid dose per kg of a recent body weight. Reads only ``data["total"]``
    of the steroid finding (prednisone-equivalent mg/day)."""
    if finding.topic not in (CK_TESTING, CK_ELEVATED, STEROID_REVIEW) or not is_child(facts, settings):
        return []
    youngest, oldest = patient_age(facts) or (0, 0)
    age = str(youngest) if youngest == oldest else f"{youngest}-{oldest}"
    born = facts.birth_date.text if facts.birth_date else "date unknown"
    text = f"**Child (age {age}, born {born}):** "
    if finding.topic == STEROID_REVIEW:
        text += (
            "the adult glucocorticoid dose bands (Buttgereit 2002) and the adult SLE maintenance target do not "
            "apply; judge the dose per kg of body weight."
        )
        total = finding.data.get("total")
        weight = recent_weight(facts, settings)
        if not total:
            text += " No current daily dose could be computed, so no dose per kg."
        elif weight is None:
            days = settings.weight_lookback_days
            text += f" No usable body weight in the last {days} days: dose per kg not computed."
        else:
            per_kg = float(total) / weight.canonical
            text += (
                f" Dose per kg: {num(total)} mg/day / {num(weight.canonical, 2)} kg = {num(per_kg, 2)} "
                f"mg/kg/day prednisone-equivalent. {lab_line(weight, 'Body weight')}."
            )
    else:
        text += (
            "adult CK reference ranges do not apply; judge CK against the laboratory's range for the child's "
            "age."
        )
        if str(finding.data.get("uln_source", "")).startswith("default"):
            text += f" The upper limit used here, {num(finding.data.get('uln'))} U/L, is an adult default."
    return [text, ""]


def _recent_ck(facts: PatientFacts, settings: Settings) -> LabResult | None:
    return latest_final(facts, "ck", settings.lab_window_days)


# ---------------------------------------------------------------------------------------- suggestions


def stable_uuid(*parts: Any) -> str:
    return str(uuid.uuid5(CARD_NAMESPACE, "|".join(str(p) for p in parts)))


def order_resource(key: str, facts: PatientFacts, gate: Gate) -> dict[str, Any]:
    """A draft R4 ServiceRequest for one test."""
    orderable = ORDERABLES[key]
    code: dict[str, Any] = {
        "coding": [{"system": orderable.system, "code": orderable.code, "display": orderable.display}],
        "text": orderable.display,
    }
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [_CATEGORY[orderable.category]]}],
        "code": code,
    }
    if facts.patient_id:
        resource["subject"] = {"reference": f"Patient/{facts.patient_id}"}
    if gate.fasciculation:
        coded = gate.fasciculation[0].coded
        reason = {"system": coded.system, "code": coded.code}
        if coded.display:
            reason["display"] = coded.display
        resource["reasonCode"] = [{"coding": [reason], "text": "Muscle fasciculation in SLE"}]
    if orderable.note:
        resource["note"] = [{"text": orderable.note}]
    return resource


def suggestions(finding: Finding, facts: PatientFacts, gate: Gate, day_key: str) -> list[dict[str, Any]]:
    out = []
    for key in finding.orders:
        orderable = ORDERABLES[key]
        out.append(
            {
                "label": orderable.label,
                "uuid": stable_uuid(facts.patient_id, finding.rule_id, day_key, key),
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": orderable.description,
                        "resource": order_resource(key, facts, gate),
                    }
                ],
            }
        )
    return out


# ------------------------------------------------------------------------------------------- assembly


def build_card(
    finding: Finding,
    gate: Gate,
    facts: PatientFacts,
    settings: Settings,
) -> dict[str, Any]:
    label, url, link_names = SOURCES[finding.topic]
    day_key = facts.now.date().isoformat()
    card: dict[str, Any] = {
        "uuid": stable_uuid(facts.patient_id, finding.rule_id, day_key),
        "summary": render_summary(finding, settings),
        "indicator": finding.indicator,
        "detail": render_detail(finding, gate, facts, settings),
        "source": {
            "label": label,
            "url": url,
            "topic": {"system": TOPIC_SYSTEM, "code": finding.topic, "display": TOPICS[finding.topic]},
        },
        "overrideReasons": [
            {"system": OVERRIDE_SYSTEM, "code": code, "display": display}
            for code, display in OVERRIDE_REASONS[TOPIC_OVERRIDES[finding.topic]]
        ],
    }
    links = [LINKS[name].as_json() for name in link_names]
    if finding.topic == RED_FLAG_URGENT and settings.escalation_url:
        links.insert(0, Link("Local urgent neurology escalation pathway", settings.escalation_url).as_json())
    card["links"] = links
    offered = suggestions(finding, facts, gate, day_key)
    if offered:
        card["suggestions"] = offered
        card["selectionBehavior"] = "any"
    return card


def sort_key(finding: Finding) -> tuple[int, int]:
    return INDICATOR_RANK[finding.indicator], TOPIC_ORDER.index(finding.topic)


def build_cards(
    findings: Iterable[Finding],
    gate: Gate,
    facts: PatientFacts,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Cards for the findings: at most one per topic (the most urgent), critical > warning > info."""
    best: dict[str, Finding] = {}
    for finding in sorted(findings, key=sort_key):
        best.setdefault(finding.topic, finding)
    return [build_card(f, gate, facts, settings) for f in sorted(best.values(), key=sort_key)]


def all_summary_templates() -> Sequence[tuple[str, str, str]]:
    """(variant, full, short) for review and tests."""
    return [(variant, full, short) for variant, (full, short) in TEMPLATES.items()]
