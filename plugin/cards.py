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

from . import labs, medications
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
    "statpearls-hypocalcemia": Link(
        "StatPearls: Hypocalcemia (albumin correction, causes, tetany)", "https://www.ncbi.nlm.nih.gov/books/NBK430912/"
    ),
    "ukka-hyperkalaemia": Link(
        "UK Kidney Association (2023): treatment of acute hyperkalaemia in adults",
        "https://ukkidney.org/health-professionals/guidelines/treatment-acute-hyperkalaemia-adults",
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
        (
            "statpearls-hypokalemia",
            "statpearls-hypomagnesemia",
            "statpearls-hypocalcemia",
            "ukka-hyperkalaemia",
            "fda-ppi-2011",
        ),
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

#: links shown only when the finding is about them (10.5: the FDA PPI notice only when a PPI is current)
LINK_WHEN: dict[str, Any] = {
    "fda-ppi-2011": lambda finding: bool(finding.data.get("ppis")),
    "statpearls-hypocalcemia": lambda finding: bool(finding.data.get("calcium_low")),
    "ukka-hyperkalaemia": lambda finding: bool(finding.data.get("k_high")),
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


#: one draft ServiceRequest per test, always coded with a display: LOINC for laboratory tests (the codes and
#: displays are those of the value sets the service reads, where each carries its source); the electrodiagnostic
#: study is CPT 95886 (plugin/valuesets/ncs-emg-codes.json records its sources)
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
    "ck-repeat": Orderable(
        "Repeat creatine kinase in 48-72 h (no strenuous exercise or IM injections before)",
        "Draft order: creatine kinase, serum/plasma (LOINC 2157-6), to be drawn 48-72 hours after the last, "
        "without strenuous exercise or intramuscular injections in between",
        "2157-6",
        "Creatine kinase [Enzymatic activity/volume] in Serum or Plasma",
    ),
    "potassium-redraw": Orderable(
        "Redraw potassium (last specimen haemolysed)",
        "Draft order: potassium, serum/plasma (LOINC 2823-3), new specimen; avoid a tight tourniquet, fist "
        "clenching and small needles",
        "2823-3",
        "Potassium [Moles/volume] in Serum or Plasma",
    ),
    "albumin": Orderable(
        "Order albumin (to correct calcium)",
        "Draft order: albumin, serum/plasma (LOINC 1751-7)",
        "1751-7",
        "Albumin [Mass/volume] in Serum or Plasma",
    ),
    "pth": Orderable(
        "Order parathyroid hormone (PTH)",
        "Draft order: parathyroid hormone, intact, serum/plasma (LOINC 2731-8)",
        "2731-8",
        "Parathyrin.intact [Mass/volume] in Serum or Plasma",
    ),
    "vitamin-d": Orderable(
        "Order 25-hydroxyvitamin D",
        "Draft order: 25-hydroxyvitamin D2+D3, serum/plasma (LOINC 62292-8)",
        "62292-8",
        "25-Hydroxyvitamin D2+25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma",
    ),
    "tsh": Orderable(
        "Order TSH (hypothyroidism raises CK)",
        "Draft order: thyrotropin (TSH), serum/plasma (LOINC 3016-3)",
        "3016-3",
        "Thyrotropin [Units/volume] in Serum or Plasma",
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


def num(value: float | None, digits: int = 1, keep: int = 0) -> str:
    """1540 -> '1,540'; 3.1 -> '3.1'; 0.5346 -> '0.53' (two significant places under 1).

    :param keep: decimals always shown, for clinical precision: ``num(3.0, 2, keep=1)`` is '3.0', not '3'.
    """
    if value is None:
        return "?"
    if abs(value) < 1 and value != 0:
        return f"{value:.2f}"
    if abs(value) >= 100 or (keep == 0 and abs(value - round(value)) < 1e-9):
        return f"{round(value):,}"
    whole, _, fraction = f"{value:,.{max(digits, keep)}f}".partition(".")
    fraction = fraction.rstrip("0").ljust(keep, "0")
    return f"{whole}.{fraction}" if fraction else whole


#: decimals a lab value always keeps ("K 3.0 mmol/L", "Na 135 mmol/L")
LAB_DECIMALS = {"potassium": 1, "magnesium": 1, "calcium": 1, "ionized-calcium": 2, "phosphate": 1,
                "albumin": 1, "creatinine": 1}


def lab_num(value: float | None, analyte: str, rounded: bool = False) -> str:
    """A lab value with the precision clinicians write it in; ``rounded`` for a value the service computed
    (a unit conversion, a corrected calcium), which has no more precision than the analyte's usual one."""
    keep = LAB_DECIMALS.get(analyte, 0)
    return num(value, keep if rounded else 2, keep=keep)


def canonical_text(result: LabResult, value: float | None = None) -> str:
    """``value`` (default: the result's canonical value) as shown in a summary: as reported when the lab
    reported it in the canonical unit, else rounded to the analyte's precision."""
    shown = result.canonical if value is None else value
    if shown is None:
        return lab_num(result.value, result.analyte)
    as_reported = value is None and (result.unit or "").lower() == (result.canonical_unit or "").lower()
    return lab_num(shown, result.analyte, rounded=not as_reported)


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
    analyte = result.analyte
    reported = f"{lab_num(result.value, analyte)} {result.unit or '(no unit)'}"
    converted = ""
    if result.canonical is not None and result.canonical_unit and result.unit != result.canonical_unit:
        converted = f" = {lab_num(result.canonical, analyte, rounded=True)} {result.canonical_unit}"
    flags = ", ".join(result.flags) or result.interpretation
    flag = f", flagged {flags}" if flags else ""
    ref = ""
    if result.ref_low is not None or result.ref_high is not None:
        ref = (
            f", lab range {lab_num(result.ref_low, analyte) if result.ref_low is not None else ''}-"
            f"{lab_num(result.ref_high, analyte) if result.ref_high is not None else ''}"
        )
    unit_note = f"; {result.unit_note}" if result.unit_note else ""
    return (
        f"{label} {reported}{converted} on {day(result.when)} ({coded_text(result.coded)}, "
        f"{result.status}{flag}{ref}{unit_note}; Observation/{result.resource_id})"
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
    elevated = labs.ck_elevated(ck, uln)
    state = "not interpretable" if elevated is None else ("above the limit" if elevated else "normal")
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
    "ck-not-interpretable": (
        "CK {ck_reported} on {ck_date} has no readable unit, so it is not interpretable. Check the lab report",
        "CK result without a readable unit: not interpretable. Check the lab report",
    ),
    "ck-elevated": (
        (
            "CK {ck_value} U/L ({ck_grade}) on {ck_date} with fasciculations in SLE: possible lupus myositis. "
            "Repeat CK in 48-72 h, check TSH"
        ),
        "CK {ck_value} U/L ({ck_grade}): possible lupus myositis. Repeat CK in 48-72 h, check TSH",
    ),
    "ck-elevated-drug": (
        (
            "CK {ck_value} U/L ({ck_grade}) on {myotoxic}: drug myopathy or lupus myositis? Repeat CK in 48-72 h, "
            "check TSH"
        ),
        "CK {ck_value} U/L ({ck_grade}) on {myotoxic}: drug myopathy or lupus myositis? Repeat CK",
    ),
    "ck-marked": (
        (
            "CK {ck_value} U/L ({ck_grade}) on {ck_date} with fasciculations in SLE: evaluate for "
            "myositis, check kidneys"
        ),
        "CK {ck_value} U/L ({ck_grade}): evaluate for myositis",
    ),
    "ck-marked-drug": (
        "CK {ck_value} U/L ({ck_grade}) on {myotoxic}: drug myopathy or myositis? Evaluate, check kidneys",
        "CK {ck_value} U/L ({ck_grade}) on {myotoxic}: evaluate for myopathy",
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
    "k-haemolysed": (
        "Potassium {k_value} mmol/L on {k_date} is from a haemolysed specimen: not a valid result. Redraw{and_mg}",
        "Potassium from a haemolysed specimen is not a valid result. Redraw potassium",
    ),
    "not-interpretable": (
        "{unreadable} on {unreadable_date} has no readable unit, so it is not interpretable. Check the report or "
        "repeat",
        "Electrolyte result without a readable unit: not interpretable. Check the report or repeat",
    ),
    "k-low": (
        (
            "Low potassium {k_value} mmol/L ({k_date}): replete and recheck. Causes weakness, cramps; twitching "
            "points more to low Mg or Ca"
        ),
        "Low potassium {k_value} mmol/L: replete and recheck K+ and Mg",
    ),
    "k-critical": (
        "Potassium {k_value} mmol/L (critical) with muscle twitching: urgent replacement and ECG advised",
        "Potassium {k_value} mmol/L (critical): urgent replacement and ECG advised",
    ),
    "k-high": (
        "High potassium {k_value} mmol/L ({k_date}){on_k_drug}: recheck, review kidney function and medicines",
        "High potassium {k_value} mmol/L: recheck, review kidney function and medicines",
    ),
    "k-high-critical": (
        "Potassium {k_value} mmol/L (critical high){on_k_drug}: ECG now and urgent treatment advised",
        "Potassium {k_value} mmol/L (critical high): ECG now and urgent treatment advised",
    ),
    "ca-low": (
        (
            "Low calcium {ca_value} {ca_unit}{ca_corrected} with muscle twitching: possible tetany. Check Mg, PTH, "
            "vitamin D"
        ),
        "Low calcium {ca_value} {ca_unit} with twitching: possible tetany. Check Mg, PTH, vitamin D",
    ),
    "ca-critical": (
        "Calcium {ca_value} {ca_unit}{ca_corrected} (critical) with twitching: possible tetany. Urgent assessment, ECG",
        "Calcium {ca_value} {ca_unit} (critical): possible tetany. Urgent assessment and ECG",
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
        "Low {others} with muscle twitching in SLE: review and replace as needed",
        "Low electrolytes with muscle twitching: review and replace",
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
    "child": (
        "{dose_text}{per_kg} in a child: adult dose bands do not apply. Review dose as a cause of twitching",
        "{dose_short}{per_kg} in a child: adult dose bands do not apply. Review dose",
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
    "ionized-calcium": "ionized calcium",
    "albumin": "albumin",
    "ck": "CK",
    "phosphate": "phosphate",
    "sodium": "sodium",
    "potassium": "potassium",
    "magnesium": "magnesium",
}


def lab_summary_values(finding: Finding) -> dict[str, Any]:
    """The placeholders of the CK and electrolyte summaries (lab values keep their clinical precision)."""
    data, values = finding.data, {}
    ck = data.get("ck") or data.get("previous")
    if isinstance(ck, LabResult):
        values.update(
            ck_value=num(ck.canonical if ck.canonical is not None else ck.value),
            ck_date=day(ck.when),
            ck_reported=f"{lab_num(ck.value, 'ck')} {ck.unit or '(no unit)'}",
        )
    if "ratio" in data:
        values["ratio"] = ratio_text(data["ratio"])
        # a CK the lab flags high below the default limit is "flagged high", not "0.9x ULN"
        values["ck_grade"] = f"{ratio_text(data['ratio'])}x ULN" if data["ratio"] > 1 else "flagged high by the lab"
    myotoxic = data.get("myotoxic") or ()
    values["myotoxic"] = " and ".join(dict.fromkeys(drug_name(m) for m in myotoxic[:2]))
    k, mg = data.get("potassium"), data.get("magnesium")
    if isinstance(k, LabResult):
        values.update(k_value=canonical_text(k), k_date=day(k.when))
    if isinstance(mg, LabResult):
        values.update(mg_value=canonical_text(mg), mg_mmol=num(mg_dl_to_mmol(mg.canonical), 2))
    drugs = data.get("drugs") or ()
    values["on_drug"] = f" on {drug_name(drugs[0])}" if drugs and finding.topic == ELECTROLYTE_TESTING else ""
    ppis = data.get("ppis") or ()
    values["on_ppi"] = (
        f" on {drug_name(ppis[0])}" if ppis else f" on {day(mg.when)}" if isinstance(mg, LabResult) else ""
    )
    values["review_ppi"] = ", review PPI" if ppis else " and recheck"
    values["others"] = " and ".join(ANALYTE_WORDS.get(r.analyte, r.analyte) for r in data.get("other_low", ()))
    k_raising = data.get("k_raising") or ()
    values["on_k_drug"] = f" on {drug_name(k_raising[0])}" if k_raising else ""
    values["and_mg"] = " K+ and order Mg" if "magnesium" in (data.get("missing") or ()) else " potassium"
    unreadable = data.get("unreadable") or ()
    if unreadable:
        first = unreadable[0].result
        values["unreadable"] = (f"{ANALYTE_WORDS.get(first.analyte, first.analyte).capitalize()} "
                                f"{lab_num(first.value, first.analyte)}")
        values["unreadable_date"] = day(first.when)
    calcium_low = data.get("calcium_low") or ()
    if calcium_low:
        reading = calcium_low[0]
        values.update(ca_value=canonical_text(reading.result, reading.value if reading.correction else None),
                      ca_unit=reading.result.canonical_unit or "",
                      ca_corrected=(" (corrected)" if reading.correction else
                                    " (ionized)" if reading.result.analyte == "ionized-calcium" else ""))
    return values


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
        "k_high_critical": num(settings.hyperkalemia_critical_mmol_l, keep=1),
        "ncs_days": settings.ncs_lookback_days,
    }
    values.update(lab_summary_values(finding))
    drugs = data.get("drugs") or ()
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
    "ck-not-interpretable": (
        "The latest CK has no unit that can be read: a result without a unit is read only when its code and "
        "its magnitude fit one unit, and this one does not. It is not graded and never raises an alert; check the "
        "unit on the laboratory report."
    ),
    "ck-elevated": (
        "CK above the upper limit of normal in a patient with SLE and muscle symptoms supports myositis (an "
        "elevated CK is a criterion item of the EULAR/ACR 2017 myositis criteria); the lab's own flag is read "
        "first. Below {marked}x ULN, confirm it before a work-up: repeat CK after 48-72 h without strenuous "
        "exercise or intramuscular injections, and check TSH (hypothyroidism raises CK). If it stays high, a "
        "myositis work-up by rheumatology follows."
    ),
    "ck-elevated-drug": (
        "CK above the upper limit of normal supports myositis in SLE, but {myotoxic} can itself cause a toxic "
        "myopathy that raises CK: weigh it first. Below {marked}x ULN, repeat CK after 48-72 h without strenuous "
        "exercise or intramuscular injections and check TSH (hypothyroidism raises CK); if it stays high, a "
        "myositis work-up by rheumatology follows."
    ),
    "ck-marked": (
        "CK at or above {marked}x ULN indicates significant muscle injury (the usual rhabdomyolysis "
        "threshold). Evaluate for lupus myositis and check kidney function and urine."
    ),
    "ck-marked-drug": (
        "CK at or above {marked}x ULN indicates significant muscle injury (the usual rhabdomyolysis "
        "threshold); {myotoxic} can cause a toxic myopathy. Evaluate for myositis and drug myopathy, and check "
        "kidney function and urine."
    ),
    "ck-rhabdo": (
        "CK at or above {critical}x ULN: possible rhabdomyolysis, with a risk of acute kidney injury and "
        "hyperkalaemia. Check creatinine, potassium and urine today."
    ),
    "order-k-mg": (
        "Low magnesium and low calcium cause twitching and tetany; low potassium mainly causes weakness and "
        "cramps. Neither a potassium nor a magnesium result is on record in the last {days} days."
    ),
    "order-k": (
        "Low potassium mainly causes weakness and cramps (twitching and tetany point more to low magnesium or "
        "calcium). No potassium result is on record in the last {days} days."
    ),
    "order-mg": (
        "Low magnesium causes twitching and tetany. No magnesium result is on record in the last {days} "
        "days; magnesium is not part of a basic or comprehensive metabolic panel, so order it separately."
    ),
    "k-haemolysed": (
        "Haemolysis releases potassium from red cells, so a potassium measured on a haemolysed specimen is "
        "falsely high and is not a valid result. Redraw it (avoid a tight tourniquet, fist clenching and small "
        "needles)."
    ),
    "not-interpretable": (
        "A result without a unit is read only when its code (mass or substance concentration) and its magnitude "
        "fit one unit; this one does not, so it is not graded and never raises an alert. Check the unit on the "
        "laboratory report, or repeat the test."
    ),
    "k-low": (
        "Low potassium mainly causes weakness and cramps; twitching and tetany point more to low magnesium or "
        "calcium, so check both. Low magnesium also makes potassium hard to correct: recheck potassium and "
        "magnesium after replacement."
    ),
    "k-critical": (
        "Potassium below {k_critical} mmol/L risks arrhythmia and paralysis: urgent replacement, an ECG and "
        "cardiac monitoring are advised."
    ),
    "k-high": (
        "A high potassium does not explain twitching, but it must not pass as 'potassium checked': it can cause "
        "weakness and arrhythmia. Repeat it to exclude a haemolysed or delayed specimen, and look for the usual "
        "causes in SLE: lupus nephritis or chronic kidney disease, ACE inhibitors or ARBs, calcineurin inhibitors "
        "(tacrolimus, ciclosporin, voclosporin) and trimethoprim."
    ),
    "k-high-critical": (
        "Potassium at or above {k_high_critical} mmol/L risks arrhythmia: take an ECG now and treat urgently "
        "(UK Kidney Association 2023). Usual causes in SLE: lupus nephritis or chronic kidney disease, ACE "
        "inhibitors or ARBs, calcineurin inhibitors (tacrolimus, ciclosporin, voclosporin) and trimethoprim."
    ),
    "ca-low": (
        "Low calcium makes nerves and muscles irritable: twitching, cramps, paraesthesia and tetany (Chvostek and "
        "Trousseau signs). A total calcium is corrected for a same-day albumin before it is judged. Look for the "
        "cause: low magnesium, low parathyroid hormone, vitamin D deficiency (and kidney disease in SLE)."
    ),
    "ca-critical": (
        "Calcium below the critical limit can cause tetany, laryngospasm, seizures and arrhythmia: assess now, "
        "take an ECG and replace calcium (intravenously when symptomatic). Then look for the cause: magnesium, "
        "parathyroid hormone, vitamin D."
    ),
    "mg-low": "Low magnesium causes twitching, tremor and tetany, and keeps potassium and calcium low.",
    "mg-critical": (
        "Severe hypomagnesaemia can cause tetany, seizures and arrhythmia: urgent replacement is advised."
    ),
    "k-mg-low": (
        "Both potassium and magnesium are low; potassium is hard to correct until magnesium is replaced. Low "
        "magnesium explains twitching better than low potassium, which mainly causes weakness and cramps."
    ),
    "other-low": (
        "Low phosphate causes weakness; low sodium causes confusion, cramps and seizures; neither is a typical "
        "cause of twitching, but both need review."
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
    "child": (
        "In children, glucocorticoid doses are judged per kg of body weight; the adult dose bands and the adult "
        "SLE maintenance target do not apply. High doses cause myopathy and tremor at any age."
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
        if isinstance(ck, LabResult) and "uln" not in data:
            lines.append(lab_line(ck, "CK") + ": not interpretable, so not graded")
        elif isinstance(ck, LabResult):
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
            if data.get("flagged_high") and data["ratio"] <= 1:
                lines.append("Flagged high by the lab although below the default ULN: the lab's flag is read first.")
            if finding.variant.startswith("ck-elevated"):
                lines.append(CK_NEXT_STEPS)
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
        lines.extend(electrolyte_lines(finding, facts, settings))
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


CK_NEXT_STEPS = (
    "Next steps below 5x ULN: repeat CK after 48-72 h without strenuous exercise or intramuscular injections; "
    "TSH (hypothyroidism raises CK); if CK stays high, a myositis work-up by rheumatology."
)
ELECTROLYTE_LABELS = (
    ("potassium", "Potassium"),
    ("magnesium", "Magnesium"),
    ("calcium", "Calcium"),
    ("ionized-calcium", "Ionized calcium"),
    ("phosphate", "Phosphate"),
    ("sodium", "Sodium"),
)
BASIS_WORDS = {"flag": "the lab's flag", "lab range": "the lab's range"}
DRUG_EFFECT_WORDS = (
    # (effects, words) most specific first
    (frozenset({"lowers-mg", "raises-k", "tremor"}), "Lowers magnesium, raises potassium and causes tremor"),
    (frozenset({"lowers-k", "lowers-mg"}), "Lowers potassium and magnesium"),
    (frozenset({"lowers-mg"}), "Lowers magnesium"),
    (frozenset({"lowers-k"}), "Lowers potassium"),
    (frozenset({"raises-k"}), "Raises potassium"),
)
HIGH_K_CAUSES = (
    "Usual causes of a high potassium in SLE: lupus nephritis or chronic kidney disease, ACE inhibitors or ARBs, "
    "calcineurin inhibitors (tacrolimus, ciclosporin, voclosporin), trimethoprim; and a haemolysed or delayed "
    "specimen (pseudohyperkalaemia)."
)


def reading_verdict(reading: labs.Reading, settings: Settings) -> str:
    """How a result was read, in words: the state, what decided it, and the cut-off used."""
    result = reading.result
    if reading.state == labs.HAEMOLYSED:
        return f"haemolysed specimen ({result.haemolysed}): not a valid potassium, not graded"
    if reading.state == labs.NOT_INTERPRETABLE:
        return "not interpretable (no unit that can be read): not graded, never critical"
    state = {"low": "low", "high": "high", "normal": "normal", "abnormal": "abnormal"}[reading.state]
    if reading.critical:
        state = f"critical {state}" if reading.state in ("low", "high") else "critical"
    if reading.basis == "corrected":
        limit = (f"below the default {lab_num(reading.cutoff, result.analyte)} {result.canonical_unit}"
                 if reading.cutoff is not None else "judged against the lab's range")
        why = f"after correction for albumin, {limit}"
    elif reading.basis == "default" and reading.cutoff is not None:
        side = "below" if reading.low else "at or above"
        why = (f"{side} the default {lab_num(reading.cutoff, result.analyte)} {result.canonical_unit}, as the lab "
               "gave neither flag nor range")
    elif reading.basis == "default":
        why = "by the default cut-offs, as the lab gave neither flag nor range"
    else:
        why = f"by {BASIS_WORDS.get(reading.basis, reading.basis)}"
    return f"{state} ({why})"


def reading_line(reading: labs.Reading, label: str, settings: Settings) -> str:
    result = reading.result
    line = lab_line(result, label)
    if result.analyte == "magnesium" and result.canonical is not None:
        line += f" = {num(mg_dl_to_mmol(result.canonical), 2)} mmol/L"
    return f"{line}: {reading_verdict(reading, settings)}"


def correction_line(correction: labs.CalciumCorrection) -> str:
    """The albumin correction of a total calcium, with its arithmetic (10.2)."""
    albumin = correction.albumin
    g_dl = lab_num(correction.albumin_g_dl, "albumin", rounded=True)
    return (
        f"Corrected calcium = {lab_num(correction.measured_mg_dl, 'calcium', rounded=True)} + "
        f"{labs.CALCIUM_PER_ALBUMIN:g} x ({num(labs.NORMAL_ALBUMIN_G_DL, keep=1)} - {g_dl}) = "
        f"{lab_num(correction.corrected_mg_dl, 'calcium', rounded=True)} "
        f"mg/dL (albumin {g_dl} g/dL on {day(albumin.when)}, {coded_text(albumin.coded)}; "
        f"Observation/{albumin.resource_id})"
    )


def electrolyte_lines(finding: Finding, facts: PatientFacts, settings: Settings) -> list[str]:
    """The electrolyte cards' data lines: each result and how it was read, the calcium correction, the
    medicines that move potassium or magnesium (with what they do) and kidney involvement."""
    data, lines = finding.data, []
    readings = data.get("readings") or {}
    for analyte, label in ELECTROLYTE_LABELS:
        reading = readings.get(analyte)
        if reading is None:
            if analyte in ("potassium", "magnesium"):
                lines.append(f"{label}: no final result in the last {settings.lab_window_days} days.")
            continue
        if analyte in ("potassium", "magnesium") or reading.state != labs.NORMAL:
            lines.append(reading_line(reading, label, settings))
        if reading.correction is not None:
            lines.append(correction_line(reading.correction))
        elif analyte == "calcium" and reading.low and reading.result.coded.code not in labs.ALREADY_CORRECTED:
            lines.append("No albumin on the same day: this total calcium is not corrected for albumin.")
    k_high = data.get("k_high")
    for med, effects in data.get("drug_effects", ()):
        if effects & {"lowers-k", "lowers-mg"} or (k_high and "raises-k" in effects):
            words = next(w for e, w in DRUG_EFFECT_WORDS if e <= effects)
            lines.append(f"{words}: {med_line(med)}")
    if k_high:
        lines.append(HIGH_K_CAUSES)
    for med in data.get("ppis", ()):
        if med.started and (facts.now - med.started).days >= settings.ppi_long_term_days:
            lines.append(
                f"Long-term PPI use ({(facts.now - med.started).days // 365}+ years): the FDA advises "
                "checking magnesium periodically, especially with diuretics."
            )
    if any(r.analyte == "sodium" for r in data.get("other_low", ())) and data.get("hyponatremia_drugs"):
        lines.extend(f"Can lower sodium: {med_line(m)}" for m in data["hyponatremia_drugs"])
    renal = data.get("renal") or {}
    lines.extend(f"Kidney involvement: {condition_line(c)}" for c in renal.get("conditions", ()))
    if renal.get("egfr"):
        lines.append(lab_line(renal["egfr"], "eGFR") + f" (< {num(settings.egfr_renal_threshold)})")
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
    per_kg = data.get("per_kg")
    values["per_kg"] = f" ({num(per_kg, 2)} mg/kg/day)" if per_kg is not None else ""
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
    links = [LINKS[name].as_json() for name in link_names if LINK_WHEN.get(name, lambda _: True)(finding)]
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
