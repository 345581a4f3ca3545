"""The firing rules (CLINICAL-CONTENT.md section 5): small pure functions of the patient facts and the
settings. Each returns a :class:`Finding` (what to advise, how urgent, with the data that justified it)
or ``None``. They never word anything: :mod:`plugin.cards` turns findings into card text, and
:mod:`plugin.rulebook` holds each rule's When/Then, thresholds, value sets and evidence for review.

Gates (5.0): no card at all unless :func:`qualifying_sle` and :func:`recent_fasciculation` both find
something.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from . import labs, medications, terminology, timeline
from .facts import VS, ConditionFact, LabResult, MedicationFact, OrderFact, PatientFacts, SymptomFact
from .fhirdata import within_days
from .settings import Settings

INFO, WARNING, CRITICAL = "info", "warning", "critical"

# Card topics (source.topic codes), one card per topic per call.
CK_TESTING = "ck-testing"
CK_ELEVATED = "ck-elevated"
ELECTROLYTE_TESTING = "electrolyte-testing"
ELECTROLYTE_ABNORMAL = "electrolyte-abnormal"
STEROID_REVIEW = "steroid-review"
NEUROACTIVE_REVIEW = "neuroactive-medication-review"
RED_FLAG_URGENT = "red-flag-urgent"
NCS_EMG = "ncs-emg"

SLE_CLINICAL_STATUSES = frozenset({"active", "recurrence", "relapse"})
NOT_ESTABLISHED = frozenset({"unconfirmed", "provisional", "differential"})
#: lab orders count as pending in these statuses (completed orders should have a result instead)
PENDING_STATUSES = frozenset({"draft", "active", "on-hold"})
#: RxNorm ingredients that lower potassium although not in the diuretic/PPI/CNI classes
K_LOWERING_STEROID_INGREDIENTS = frozenset({"4452", "5492"})  # fludrocortisone, hydrocortisone
#: RxNorm ingredients that cause hyponatremia (oxcarbazepine, carbamazepine)
HYPONATREMIA_INGREDIENTS = frozenset({"32624", "2002"})


@dataclass(frozen=True)
class Finding:
    """What one rule concluded.

    :ivar variant: which card text to use (a key of :data:`plugin.cards.TEMPLATES`).
    :ivar data: the facts that justified it, for the card detail (no wording).
    :ivar orders: orderable tests to suggest (keys of :data:`plugin.cards.ORDERABLES`).
    """

    rule_id: str
    topic: str
    indicator: str
    variant: str
    data: Mapping[str, Any] = field(default_factory=dict)
    orders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gate:
    """The shared gates' evidence, passed to every card (the 'why this patient' lines)."""

    sle: tuple[ConditionFact, ...]
    fasciculation: tuple[SymptomFact, ...]

    @property
    def open(self) -> bool:
        return bool(self.sle) and bool(self.fasciculation)

    @property
    def unspecified_lupus(self) -> bool:
        return all(VS.SLE not in c.kinds and VS.SLE_UNSPECIFIED in c.kinds for c in self.sle)

    @property
    def drug_induced_lupus(self) -> bool:
        return any(VS.SLE_DRUG_INDUCED in c.kinds and VS.SLE not in c.kinds for c in self.sle)


# --------------------------------------------------------------------------------------------- gates


def counts_as_sle(condition: ConditionFact, settings: Settings) -> bool:
    """Gate 1 for one Condition: SLE code (with the two configurable families), established, current."""
    kinds = condition.kinds
    strict = VS.SLE in kinds
    by_flag = (settings.count_unspecified_lupus and VS.SLE_UNSPECIFIED in kinds) or (
        settings.count_drug_induced_lupus and VS.SLE_DRUG_INDUCED in kinds
    )
    # a specific cutaneous / non-SLE code wins over the parent "lupus erythematosus" on the same Condition
    if not strict and VS.LUPUS_EXCLUSIONS in kinds:
        return False
    if not (strict or by_flag):
        return False
    verification = condition.verification_status
    if verification in {"refuted", "entered-in-error"}:
        return False
    if verification in NOT_ESTABLISHED and not settings.count_unconfirmed_sle:
        return False
    status = condition.clinical_status
    if status is None and condition.abated:
        return False
    # 'SLE in remission' (698694005) is more specific than a default 'active' status; relapse/recurrence win
    if status == "remission" or (VS.SLE_IN_REMISSION in kinds and status in (None, "active")):
        return settings.count_sle_in_remission
    return status is None or status in SLE_CLINICAL_STATUSES


def qualifying_sle(facts: PatientFacts, settings: Settings) -> tuple[ConditionFact, ...]:
    return tuple(c for c in facts.conditions if counts_as_sle(c, settings))


def recent_symptoms(
    facts: PatientFacts, kind: str, condition_days: float, observation_days: float
) -> tuple[SymptomFact, ...]:
    """Findings of ``kind`` recent enough: Conditions within ``condition_days``, Observations within
    ``observation_days``; newest first. An active symptom Condition with no date at all counts too (its
    clinicalStatus says it is current), after the dated ones: the cards say its date is unknown."""
    dated, undated = [], []
    for s in facts.symptoms_of(kind):
        if s.when is None:
            if s.resource_type == "Condition":
                undated.append(s)
        elif within_days(s.when, facts.now, condition_days if s.resource_type == "Condition" else observation_days):
            dated.append(s)
    return tuple(sorted(dated, key=lambda s: s.when, reverse=True)) + tuple(undated)


def symptom_window(facts: PatientFacts, settings: Settings, kind: str) -> tuple[SymptomFact, ...]:
    return recent_symptoms(
        facts, kind, settings.fasciculation_condition_days, settings.fasciculation_observation_days
    )


def recent_fasciculation(facts: PatientFacts, settings: Settings) -> tuple[SymptomFact, ...]:
    return symptom_window(facts, settings, VS.FASCICULATION)


def evaluate_gate(facts: PatientFacts, settings: Settings) -> Gate:
    return Gate(sle=qualifying_sle(facts, settings), fasciculation=recent_fasciculation(facts, settings))


# ------------------------------------------------------------------------------------------ helpers


def latest_final(facts: PatientFacts, analyte: str, days: float | None = None) -> LabResult | None:
    """The newest final/amended/corrected result of ``analyte`` (``None`` if it is older than ``days``)."""
    return facts.latest_lab(analyte, final=True, days=days)


def latest_preliminary(facts: PatientFacts, analyte: str, days: float) -> LabResult | None:
    return facts.latest_lab(analyte, final=False, days=days)


def pending_orders(facts: PatientFacts, kind: str, days: float) -> tuple[OrderFact, ...]:
    """Orders of ``kind`` not yet resulted: any in draftOrders; active/draft/on-hold ones in the record
    authored within ``days`` (undated ones count: better one card too few than a duplicate order)."""
    return tuple(
        o
        for o in facts.orders_of(kind)
        if o.resource_type == "ServiceRequest"
        and (
            o.from_draft_orders
            or (o.status in PENDING_STATUSES and (o.when is None or within_days(o.when, facts.now, days)))
        )
    )


def current_medications(facts: PatientFacts, cls: str) -> tuple[MedicationFact, ...]:
    return tuple(m for m in facts.medications_in(cls) if m.current)


def ingredient_ids(med: MedicationFact) -> frozenset[str]:
    return frozenset(str(getattr(i, "rxcui", "")) for i in getattr(med.info, "ingredients", ()) or ())


def ck_uln(result: LabResult | None, facts: PatientFacts, settings: Settings) -> tuple[float, str]:
    """CK upper limit of normal and where it came from: the lab's range, else the default for sex."""
    if result is not None and result.ref_high:
        return result.ref_high, "lab"
    if facts.sex == "male":
        return settings.ck_uln_male, "default-male"
    if facts.sex == "female":
        return settings.ck_uln_female, "default-female"
    return settings.ck_uln_unknown_sex, "default-unknown"


def known_drug_myopathy(facts: PatientFacts) -> tuple[tuple[ConditionFact, bool], ...]:
    """Active steroid / drug-induced myopathy Conditions, each with whether it is coded as steroid
    myopathy: SNOMED 26715006, or ICD-10-CM G72.0 (drug-induced myopathy) with a glucocorticoid
    adverse-effect code T38.0X5- on the same or another active Condition. Context only: CK is usually
    normal in steroid myopathy, so it is not 'known myositis' (value set steroid-myopathy)."""
    def current(condition: ConditionFact) -> bool:
        return condition.is_active and condition.verification_status not in {"refuted", "entered-in-error"}

    glucocorticoid_coded = any(current(c) for c in facts.conditions_in(VS.GLUCOCORTICOID_ADVERSE_EFFECT))
    return tuple(
        (c, c.coded.code != "G72.0" or glucocorticoid_coded)
        for c in facts.conditions_in(VS.STEROID_MYOPATHY)
        if current(c)
    )


def completed_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def patient_age(facts: PatientFacts) -> tuple[int, int] | None:
    """(youngest, oldest) possible age in completed years at the hook's now; the two differ only for a
    partial birthDate (``2010``, ``2010-05``). ``None`` when the birth date is unknown."""
    born = facts.birth_date
    if born is None:
        return None
    today = facts.now.date()
    return completed_years(born.latest, today), completed_years(born.earliest, today)


def is_child(facts: PatientFacts, settings: Settings) -> bool:
    """Possibly younger than the child age: adult CK ranges and steroid bands do not apply."""
    age = patient_age(facts)
    return age is not None and age[0] < settings.child_age_years


#: a body weight outside this range (kg) is an entry error, not a weight to divide a dose by
PLAUSIBLE_WEIGHT_KG = (0.3, 400.0)


def recent_weight(facts: PatientFacts, settings: Settings) -> LabResult | None:
    """The newest final body weight within the weight look-back, if its value is a plausible weight in kg."""
    weight = latest_final(facts, "weight", settings.weight_lookback_days)
    if weight is None or weight.canonical is None:
        return None
    low, high = PLAUSIBLE_WEIGHT_KG
    return weight if low <= weight.canonical <= high else None


def renal_involvement(facts: PatientFacts, settings: Settings) -> dict[str, Any]:
    """Why the kidneys matter here (lupus nephritis / CKD codes, low eGFR); empty if nothing."""
    out: dict[str, Any] = {}
    renal = tuple(c for c in facts.conditions_in(VS.SLE_RENAL) + facts.conditions_in(VS.CKD) if c.is_current)
    if renal:
        out["conditions"] = tuple(dict.fromkeys(renal))
    egfr = latest_final(facts, "egfr", settings.renal_lab_days)
    if egfr is not None and egfr.canonical is not None and egfr.canonical < settings.egfr_renal_threshold:
        out["egfr"] = egfr
    return out


# ---------------------------------------------------------------------------------------------- CK


def ck_rule(facts: PatientFacts, settings: Settings) -> Finding | None:
    """5.1 CK testing / myositis, with the lab's flag first (10.2) and next steps below 5x ULN (10.5)."""
    window = settings.lab_window_days
    recent = latest_final(facts, "ck", window)
    previous = latest_final(facts, "ck")
    myositis = tuple(c for c in facts.conditions_in(VS.MYOSITIS) if c.is_active)
    supporting = symptom_window(facts, settings, VS.MUSCLE_WEAKNESS) + symptom_window(
        facts, settings, VS.MYALGIA
    )
    data: dict[str, Any] = {"myositis": myositis, "supporting": supporting}

    if recent is not None:
        if not recent.unit_interpretable:
            # a number we cannot read is not a CK: say so (never graded, never critical)
            data.update(ck=recent)
            return Finding("ck", CK_TESTING, INFO, "ck-not-interpretable", data)
        uln, uln_source = ck_uln(recent, facts, settings)
        if not labs.ck_elevated(recent, uln):
            return None
        ratio = float(recent.canonical or 0) / uln
        # Statins, hydroxychloroquine and colchicine cause a toxic myopathy (section 3.1): a cause to weigh
        # before lupus myositis, named in the summary (10.5).
        data.update(ck=recent, uln=uln, uln_source=uln_source, ratio=ratio,
                    flagged_high=bool(set(recent.flags) & (labs.HIGH_FLAGS | {"HH"})),
                    myotoxic=current_medications(facts, VS.MYOTOXIC))
        marked = ratio >= settings.ck_marked_multiple or "HH" in recent.flags
        orders: tuple[str, ...] = ()
        if marked:
            creatinine = latest_final(facts, "creatinine", settings.rhabdo_creatinine_days)
            data["creatinine"] = creatinine
            wanted = (
                []
                if creatinine or pending_orders(facts, "creatinine", settings.rhabdo_creatinine_days)
                else ["creatinine"]
            )
            orders = (*wanted, "urinalysis")
        drug = "-drug" if data["myotoxic"] else ""  # the summary names the medicine
        if ratio >= settings.ck_critical_multiple:
            return Finding("ck", CK_ELEVATED, CRITICAL, "ck-rhabdo", data, orders)
        if marked:
            return Finding("ck", CK_ELEVATED, WARNING, f"ck-marked{drug}", data, orders)
        # below 5x ULN: confirm before a work-up (repeat after 48-72 h without exercise or injections; TSH,
        # as hypothyroidism raises CK); the myositis work-up itself belongs to rheumatology (detail)
        orders = tuple(
            key for key, kind in (("ck-repeat", "ck"), ("tsh", "tsh")) if not pending_orders(facts, kind, window)
        )
        return Finding("ck", CK_ELEVATED, WARNING, f"ck-elevated{drug}", data, orders)

    pending = pending_orders(facts, "ck", window)
    if pending:
        return None
    data.update(
        previous=previous,
        ck_mb=latest_final(facts, "ck-mb", window),
        preliminary=latest_preliminary(facts, "ck", window),
    )
    if previous is not None:
        uln, uln_source = ck_uln(previous, facts, settings)
        data.update(uln=uln, uln_source=uln_source)
    variant = "ck-monitor" if myositis else ("ck-repeat" if previous else "ck-order")
    return Finding("ck", CK_TESTING, WARNING if supporting else INFO, variant, data, ("ck",))


# ------------------------------------------------------------------------------------- electrolytes

#: what a medicine class does to the electrolytes, for the card lines (10.5: calcineurin inhibitors lower
#: magnesium and RAISE potassium, and cause tremor; Farouk et al. 2020)
LOWERS_K, LOWERS_MG, RAISES_K, TREMOR = "lowers-k", "lowers-mg", "raises-k", "tremor"
DRUG_EFFECTS: dict[str, frozenset[str]] = {
    VS.LOOP_DIURETICS: frozenset({LOWERS_K, LOWERS_MG}),
    VS.THIAZIDES: frozenset({LOWERS_K, LOWERS_MG}),
    VS.PPIS: frozenset({LOWERS_MG}),
    VS.CALCINEURIN_INHIBITORS: frozenset({LOWERS_MG, RAISES_K, TREMOR}),
    VS.POTASSIUM_RAISING: frozenset({RAISES_K}),
}


def electrolyte_drugs(facts: PatientFacts) -> tuple[tuple[MedicationFact, frozenset[str]], ...]:
    """Current medicines that move potassium or magnesium, each with what it does."""
    effects: dict[MedicationFact, set[str]] = {}
    for cls, does in DRUG_EFFECTS.items():
        for med in current_medications(facts, cls):
            effects.setdefault(med, set()).update(does)
    for med in current_medications(facts, VS.SYSTEMIC_CORTICOSTEROIDS):
        if ingredient_ids(med) & K_LOWERING_STEROID_INGREDIENTS:
            effects.setdefault(med, set()).add(LOWERS_K)
    return tuple((med, frozenset(does)) for med, does in effects.items())


def electrolyte_risks(facts: PatientFacts, settings: Settings) -> dict[str, Any]:
    """K/Mg-lowering medicines and renal involvement (the context that raises the order card to warning), and
    every medicine that moves K or Mg with what it does (potassium raisers are named with a high K)."""
    effects = electrolyte_drugs(facts)
    return {
        "drugs": tuple(med for med, does in effects if does & {LOWERS_K, LOWERS_MG}),
        "drug_effects": effects,
        "renal": renal_involvement(facts, settings),
    }


def _redraw_keys(redraw: tuple[str, ...], haemolysed: bool) -> tuple[str, ...]:
    """The orderables for results that must be taken again (a haemolysed potassium is a redraw)."""
    return tuple("potassium-redraw" if a == "potassium" and haemolysed else a for a in redraw)


def _pending(facts: PatientFacts, kind: str, window: float) -> bool:
    return bool(pending_orders(facts, kind, window))


def electrolyte_rule(facts: PatientFacts, settings: Settings) -> Finding | None:
    """5.2 and 10.2 Electrolytes: low or high K, low Mg, low (corrected) Ca, low phosphate or Na; a haemolysed
    or unreadable K / Mg; or no K / Mg at all."""
    window = settings.lab_window_days
    potassium = latest_final(facts, "potassium", window)
    magnesium = latest_final(facts, "magnesium", window)
    calcium = latest_final(facts, "calcium", window)
    albumin = facts.lab_on_day("albumin", calcium.when) if calcium is not None else None
    readings: dict[str, labs.Reading] = {}
    if potassium is not None:
        readings["potassium"] = labs.potassium_reading(potassium, settings)
    if magnesium is not None:
        readings["magnesium"] = labs.magnesium_reading(magnesium, settings)
    if calcium is not None:
        readings["calcium"] = labs.calcium_reading(calcium, albumin, settings)
    for analyte, read in (("ionized-calcium", labs.ionized_calcium_reading), ("phosphate", labs.phosphate_reading),
                          ("sodium", labs.sodium_reading)):
        result = latest_final(facts, analyte, window)
        if result is not None:
            readings[analyte] = read(result, settings)

    k, mg = readings.get("potassium"), readings.get("magnesium")
    k_low, k_high = bool(k and k.low), bool(k and k.high)
    k_critical = bool(k and k.critical and (k.low or k.high))
    mg_low = bool(mg and mg.low)
    mg_critical = mg_low and bool(mg and mg.critical)
    calcium_low = tuple(readings[a] for a in ("calcium", "ionized-calcium") if a in readings and readings[a].low)
    ca_critical = any(r.critical for r in calcium_low)
    others = tuple(readings[a] for a in ("phosphate", "sodium") if a in readings and readings[a].low)
    haemolysed = bool(k and k.state == labs.HAEMOLYSED)
    unreadable = tuple(r for r in readings.values() if r.state == labs.NOT_INTERPRETABLE)

    data: dict[str, Any] = {
        "potassium": potassium,
        "magnesium": magnesium,
        "readings": readings,
        "k_low": k_low,
        "k_high": k_high,
        "k_critical": k_critical,
        "k_haemolysed": haemolysed,
        "mg_low": mg_low,
        "mg_critical": mg_critical,
        "calcium_low": calcium_low,
        "ca_critical": ca_critical,
        "other_low": tuple(r.result for r in others),
        "other_low_readings": others,
        "unreadable": unreadable,
        "ppis": current_medications(facts, VS.PPIS),
        "hyponatremia_drugs": tuple(
            m
            for m in current_medications(facts, VS.ANTICONVULSANTS) + current_medications(facts, VS.THIAZIDES)
            if ingredient_ids(m) & HYPONATREMIA_INGREDIENTS or VS.THIAZIDES in m.classes
        ),
    }
    # K or Mg with no usable result (none, a haemolysed specimen, a unit that cannot be read) and none ordered
    missing = tuple(
        a for a in ("potassium", "magnesium") if a not in readings and not _pending(facts, a, window)
    )
    redraw = tuple(
        a for a in ("potassium", "magnesium")
        if a in readings and not readings[a].usable and not _pending(facts, a, window)
    )
    data["missing"], data["redraw"] = missing, redraw

    abnormal = k_low or k_high or mg_low or bool(calcium_low) or bool(others)
    if not (abnormal or missing or redraw or unreadable):
        return None
    risks = electrolyte_risks(facts, settings)  # only now: it reads eGFR and the medicine list
    data.update(risks)
    if not abnormal:
        at_risk = bool(risks["drugs"]) or bool(risks["renal"])
        orders = tuple(dict.fromkeys(_redraw_keys(redraw, haemolysed) + missing))
        if haemolysed:
            variant = "k-haemolysed"
        elif redraw or not missing:  # an unreadable K or Mg, or an unreadable calcium, phosphate or sodium
            variant = "not-interpretable"
        else:
            variant = {("potassium", "magnesium"): "order-k-mg", ("potassium",): "order-k",
                       ("magnesium",): "order-mg"}[missing]
        return Finding("electrolytes", ELECTROLYTE_TESTING, WARNING if at_risk else INFO, variant, data, orders)

    # recheck what is abnormal, redraw what is unusable, order what is missing, unless already ordered
    due = (("potassium", k_low or k_high), ("magnesium", mg_low))
    recheck = tuple(a for a, low_or_high in due if low_or_high and not _pending(facts, a, window))
    workup: tuple[str, ...] = ()
    if calcium_low:
        # low calcium with twitching can be tetany: albumin (to correct a total calcium), magnesium (low Mg
        # lowers PTH), PTH and 25-OH vitamin D (StatPearls Hypocalcemia)
        wanted = [] if albumin is not None or "calcium" not in readings else ["albumin"]
        if "magnesium" not in readings:
            wanted.append("magnesium")
        wanted += ["pth", "vitamin-d"]
        workup = tuple(kind for kind in wanted if not _pending(facts, kind, window))
    orders = tuple(dict.fromkeys(recheck + _redraw_keys(redraw, haemolysed) + missing + workup))
    if k_critical or mg_critical or ca_critical:
        indicator = CRITICAL
    elif k_low or k_high or mg_low or calcium_low or any(r.critical for r in others):
        indicator = WARNING
    else:
        indicator = INFO
    if k_high:
        data["k_raising"] = tuple(med for med, does in risks["drug_effects"] if RAISES_K in does)
    if k_high and k_critical:
        variant = "k-high-critical"
    elif k_low and k_critical:
        variant = "k-critical"
    elif ca_critical:
        variant = "ca-critical"
    elif mg_critical:
        variant = "mg-critical"
    elif calcium_low:
        variant = "ca-low"
    elif k_low and mg_low:
        variant = "k-mg-low"
    elif mg_low:
        variant = "mg-low"
    elif k_high:
        variant = "k-high"
    elif k_low:
        variant = "k-low"
    else:
        variant = "other-low"
    return Finding("electrolytes", ELECTROLYTE_ABNORMAL, indicator, variant, data, orders)


# ------------------------------------------------------------------------------------------ steroid


def systemic_steroids(facts: PatientFacts) -> tuple[MedicationFact, ...]:
    return tuple(
        m for m in facts.medications_in(VS.SYSTEMIC_CORTICOSTEROIDS) if medications.is_systemic(m.info)
    )


def has_prednisone_equivalent(med: MedicationFact) -> bool:
    """Fludrocortisone (mineralocorticoid) and budesonide have no prednisone equivalent: their dose is
    never 'not computable' in the sense of this review (they are reported, not added up)."""
    table = medications.PREDNISONE_EQUIVALENCE
    names = {str(getattr(i, "name", "")).lower() for i in getattr(med.info, "ingredients", ()) or ()}
    keys = ingredient_ids(med) | names
    return any(float(table.get(key) or 0) > 0 for key in keys)


def steroid_timeline(facts: PatientFacts, settings: Settings) -> timeline.Timeline:
    """One current (or proposed) dose per ingredient, and the recent pulses (CLINICAL-CONTENT 10.1)."""
    return timeline.build_timeline(
        systemic_steroids(facts),
        facts.now,
        pulse_mg=settings.steroid_pulse_mg,
        pulse_days=settings.pulse_lookback_days,
    )


def steroid_rule(facts: PatientFacts, settings: Settings) -> Finding | None:
    """5.3 Corticosteroid review, on the steroid timeline: pulse, high / very high, medium dose, or dose
    not computable.

    Data: ``timeline``; ``current`` (the ingredients with a current or proposed dose, each a
    :class:`plugin.timeline.Course` with ``.medication`` and ``.dose``); ``counted`` (those with a
    prednisone equivalent); ``not_computable``; ``total`` (prednisone-equivalent mg/day the bands are
    judged on: one dose per ingredient, the proposed one where a draft proposes a change); ``pulse`` (the
    most relevant :class:`plugin.timeline.Pulse`, or None); ``neuroactive``; ``ck``.
    """
    steroids = systemic_steroids(facts)
    if not steroids:
        return None
    line = steroid_timeline(facts, settings)
    current = line.in_force
    counted = line.counted
    not_computable = tuple(
        c for c in current if not c.dose.computable and has_prednisone_equivalent(c.medication)
    )
    total = line.total
    pulse = line.pulses[0] if line.pulses else None
    data: dict[str, Any] = {
        "timeline": line,
        "current": current,
        "counted": counted,
        "not_computable": not_computable,
        "total": total,
        "pulse": pulse,
        "neuroactive": current_medications(facts, VS.ANTICONVULSANTS),
        "ck": latest_final(facts, "ck", settings.lab_window_days),
    }
    if pulse is not None:
        return Finding("steroid", STEROID_REVIEW, WARNING, "pulse", data)
    if not current:
        return None
    finding = adult_steroid_band(data, settings)
    if finding is None or not total or not is_child(facts, settings):
        return finding
    # A child: the adult bands and the SLE maintenance target do not apply, so the card states the dose (per kg
    # of a recent weight) for review rather than grading it; it shows whenever an adult would get a card.
    weight = recent_weight(facts, settings)
    if weight is not None:
        data["per_kg"] = float(total) / float(weight.canonical)
    return Finding("steroid", STEROID_REVIEW, INFO, "child", data)


def adult_steroid_band(data: dict[str, Any], settings: Settings) -> Finding | None:
    """The adult dose bands (Buttgereit 2002) and the SLE maintenance target on the current total."""
    total = data["total"]
    if total > settings.steroid_very_high_above_mg:
        return Finding("steroid", STEROID_REVIEW, WARNING, "very-high", data)
    if total > settings.steroid_high_above_mg:
        return Finding("steroid", STEROID_REVIEW, WARNING, "high", data)
    if total > settings.steroid_low_max_mg:
        return Finding("steroid", STEROID_REVIEW, INFO, "medium", data)
    if data["not_computable"]:
        return Finding("steroid", STEROID_REVIEW, INFO, "not-computable", data)
    if total > settings.steroid_target_mg and settings.steroid_card_above_target:
        return Finding("steroid", STEROID_REVIEW, INFO, "above-target", data)
    return None


def neuroactive_rule(facts: PatientFacts, settings: Settings, steroid: Finding | None) -> Finding | None:
    """5.3 last row: a current anticonvulsant / gabapentinoid. Folded into the steroid card when there
    is one; a stand-alone info card otherwise."""
    drugs = current_medications(facts, VS.ANTICONVULSANTS)
    if not drugs or steroid is not None:
        return None
    return Finding("neuroactive", NEUROACTIVE_REVIEW, INFO, "neuroactive", {"drugs": drugs})


# ---------------------------------------------------------------------------------------- red flags

RED_FLAG_KINDS = (VS.DYSPHAGIA, VS.DYSARTHRIA, VS.DYSPNEA, VS.MUSCLE_WEAKNESS, VS.LOSS_OF_SENSATION)
#: bulbar signs: oropharyngeal / unspecified dysphagia and dysarthria count alike
BULBAR_KINDS = frozenset({VS.DYSPHAGIA, VS.DYSARTHRIA})


def cardiopulmonary_causes(facts: PatientFacts) -> tuple[tuple[str, ConditionFact], ...]:
    """Current diagnoses that explain shortness of breath, with their group ('interstitial lung disease',
    'heart failure', ...: the code-group of the value set include that holds the code)."""
    out = []
    for condition in facts.conditions_in(VS.CARDIOPULMONARY):
        if condition.is_current:
            coded = condition.coded_for(VS.CARDIOPULMONARY)
            group = terminology.group_of(VS.CARDIOPULMONARY, coded.system, coded.code)
            out.append((group or "heart or lung disease", condition))
    return tuple(out)


def weakness_onset(
    symptoms: tuple[SymptomFact, ...], facts: PatientFacts, days: float
) -> tuple[bool, datetime | None]:
    """(new, earliest onset): weakness is new only when an onset, not a recorded date, lies in the window."""
    onsets = [s.onset for s in symptoms if s.onset is not None]
    new = any(within_days(onset, facts.now, days) for onset in onsets)
    return new, (min(onsets) if onsets else None)


def red_flag_rule(facts: PatientFacts, settings: Settings) -> Finding | None:
    """5.4 / 10.4 Red flags with fasciculation.

    Critical: oropharyngeal or unspecified dysphagia or dysarthria (bulbar signs), weakness, loss of
    sensation, or shortness of breath with one of them or with nothing known to explain it. Shortness of breath
    alone in a patient with a current cardiopulmonary diagnosis (interstitial lung disease, pulmonary
    hypertension, pleuritis/pericarditis, pulmonary embolism or antiphospholipid syndrome, heart failure) is a
    warning naming both differentials: respiratory muscle weakness (FVC/NIF) and the known cause.
    """
    days = settings.red_flag_days
    flags = {kind: recent_symptoms(facts, kind, days, days) for kind in RED_FLAG_KINDS}
    flags = {k: v for k, v in flags.items() if v}
    if not flags:
        return None
    data: dict[str, Any] = {
        "flags": flags,
        "ck": latest_final(facts, "ck", settings.lab_window_days),
        "potassium": latest_final(facts, "potassium", settings.lab_window_days),
    }
    if VS.MUSCLE_WEAKNESS in flags:
        data["weakness_new"], data["weakness_onset"] = weakness_onset(flags[VS.MUSCLE_WEAKNESS], facts, days)
    if VS.DYSPNEA in flags:
        causes = cardiopulmonary_causes(facts)
        data["causes"] = causes
        if causes and flags.keys() == {VS.DYSPNEA}:
            return Finding("red-flag", RED_FLAG_URGENT, WARNING, "respiratory-explained", data)
        variant = "respiratory"
    elif BULBAR_KINDS & flags.keys():
        variant = "bulbar"
    else:
        variant = "weakness-sensory"
    return Finding("red-flag", RED_FLAG_URGENT, CRITICAL, variant, data)


# ------------------------------------------------------------------------------------------ NCS/EMG


def prior_ncs_emg(facts: PatientFacts, settings: Settings) -> tuple[OrderFact, ...]:
    """NCS/EMG done, ordered or being ordered within the look-back (or in this session's draftOrders)."""
    return tuple(
        o
        for o in facts.orders_of("ncs-emg")
        if o.from_draft_orders
        or (o.when is None and o.resource_type == "ServiceRequest")
        or within_days(o.when, facts.now, settings.ncs_lookback_days)
    )


def ncs_emg_rule(facts: PatientFacts, settings: Settings) -> Finding | None:
    """5.5 Nerve conduction studies / EMG."""
    sensory = symptom_window(facts, settings, VS.SENSORY_SYMPTOMS) + symptom_window(
        facts, settings, VS.LOSS_OF_SENSATION
    )
    neuropathy = tuple(c for c in facts.conditions_in(VS.PERIPHERAL_NEUROPATHY) if c.is_current)
    weakness = symptom_window(facts, settings, VS.MUSCLE_WEAKNESS)
    ck = latest_final(facts, "ck", settings.lab_window_days)
    ck_normal = ck is not None and labs.ck_elevated(ck, ck_uln(ck, facts, settings)[0]) is False
    if not (sensory or neuropathy or (weakness and ck_normal)):
        return None
    prior = prior_ncs_emg(facts, settings)
    if prior:
        return None
    data = {"sensory": sensory, "neuropathy": neuropathy, "weakness": weakness, "ck": ck}
    variant = "ncs-sensory" if (sensory or neuropathy) else "emg-weakness"
    return Finding("ncs-emg", NCS_EMG, INFO, variant, data, ("ncs-emg",))


# ------------------------------------------------------------------------------------------ running

#: rule id -> function, in the order they are evaluated (the steroid rule feeds the neuroactive rule)
RULES: dict[str, Callable[..., Finding | None]] = {
    "red-flag": red_flag_rule,
    "ck": ck_rule,
    "electrolytes": electrolyte_rule,
    "steroid": steroid_rule,
    "neuroactive": neuroactive_rule,
    "ncs-emg": ncs_emg_rule,
}


def evaluate(facts: PatientFacts, settings: Settings) -> tuple[Gate, list[Finding]]:
    """The gate and every finding for this patient (empty when the gate is closed)."""
    gate = evaluate_gate(facts, settings)
    if not gate.open:
        return gate, []
    steroid = steroid_rule(facts, settings)
    results = [
        red_flag_rule(facts, settings),
        ck_rule(facts, settings),
        electrolyte_rule(facts, settings),
        steroid,
        neuroactive_rule(facts, settings, steroid),
        ncs_emg_rule(facts, settings),
    ]
    return gate, [r for r in results if r is not None]
