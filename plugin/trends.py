"""The lab and steroid timeline: a SMART app a clinician opens from the CK, electrolyte and steroid cards
to see the picture the card text cannot give. Has CK been rising since the dose went up? Did potassium
fall after the diuretic started? Where is the taper now?

Pure functions, no Flask and no HTTP: FHIR resources in (:class:`cds_hooks.apps.AppPage`), one HTML page
with SVG charts out. The protocol layer (``cds_hooks/smart_launch.py``) runs the SMART launch and reads
the resources this module asks for (:func:`queries`) with the clinician's token.

One page per patient, three views sharing one time axis (the last two years), so the charts line up:

* ``ck``: creatine kinase on a logarithmic axis, with the upper limit of normal (the lab's, else the
  default for the patient's sex) and its marked and critical multiples;
* ``electrolytes``: potassium, magnesium and total calcium (ionized calcium too, when there is any), each
  result read as the rules read it (their unit table, :mod:`plugin.labs` readings), with the lab's
  reference range, else the service's default low and high cut-offs, and the default critical cut-offs
  (the summary says which range is drawn); the dates diuretics, proton pump inhibitors and calcineurin
  inhibitors started are marked;
* ``steroid``: the prednisone-equivalent daily dose over time (:func:`prednisone_dose_series`: the steroid
  card's own medication timeline, :mod:`plugin.timeline`, at every instant the dose changes) against the
  dose bands, pulses drawn above the axis, doses given in hospital (MedicationAdministration) as points.

Every chart marks the dates of fasciculation and red-flag findings (weakness, loss of sensation, trouble
swallowing or breathing). Every point carries its FHIR ``Type/id``; a value without a unit, with an
unusable unit, no number or a status that is not a result (``entered-in-error``, ``cancelled``,
``registered``...) is listed in the table with the reason and never plotted as a number. Each chart has
the same data in a plain table for screen readers.
"""

from __future__ import annotations

import functools
import html
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from cds_hooks.apps import AppPage, SmartAppDefinition

from . import labs, medications, timeline
from .facts import (
    CANONICAL_UNITS,
    VS,
    Coded,
    LabResult,
    MedicationFact,
    _reference_limits,
    _Sources,
    build_medications,
    classify_observation_code,
    condition_date,
    haemolysis,
    is_negated,
    match_concept,
    medication_dates,
    observation_date,
    read_unitless,
    to_canonical,
)
from .facts import _flags as lab_flags
from .fhirdata import codings, status_code
from .rules import has_prednisone_equivalent
from .settings import Settings, settings_for
from .svgchart import Band, Chart, Dot, Event, Rule, Step, escape, number

APP_ID = "trends"
TITLE = "Lab and steroid timeline"
WINDOW_DAYS = 730
VIEWS: tuple[tuple[str, str], ...] = (
    ("ck", "Creatine kinase"),
    ("electrolytes", "Potassium, magnesium, calcium"),
    ("steroid", "Corticosteroid dose"),
)
#: what the app reads; the host adds "launch openid fhirUser"
SCOPES = (
    "patient/Patient.rs",
    "patient/Observation.rs",
    "patient/MedicationRequest.rs",
    "patient/MedicationStatement.rs",
    "patient/MedicationAdministration.rs",
    "patient/Condition.rs",
)
PLOTTED_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
RED_FLAG_KINDS = {
    VS.MUSCLE_WEAKNESS: "muscle weakness",
    VS.DYSPHAGIA: "trouble swallowing",
    VS.DYSPNEA: "shortness of breath",
    VS.LOSS_OF_SENSATION: "loss of sensation",
}
EVENT_KINDS = {VS.FASCICULATION: "fasciculation", **RED_FLAG_KINDS}
#: medicine classes marked on the electrolyte charts (they move potassium or magnesium)
ELECTROLYTE_DRUGS = {
    VS.LOOP_DIURETICS: "loop diuretic",
    VS.THIAZIDES: "thiazide diuretic",
    VS.PPIS: "proton pump inhibitor",
    VS.CALCINEURIN_INHIBITORS: "calcineurin inhibitor",
}
_SKIPPED_MEDICATION_STATUSES = frozenset({"entered-in-error", "cancelled", "not-taken", "draft"})


# ------------------------------------------------------------------------------------------ the app


def queries(patient_id: str, now: datetime) -> dict[str, str]:
    """The FHIR searches of one page (run with the clinician's token; every page is followed)."""
    from .hooks import LOINC, SNOMED, code_param  # hooks imports this module for its hookimpl

    since = (now - timedelta(days=WINDOW_DAYS)).date().isoformat()
    patient = f"patient={patient_id}"
    labs = code_param([VS.CK_TOTAL, VS.POTASSIUM, VS.MAGNESIUM, VS.CALCIUM, VS.CALCIUM_IONIZED], [LOINC],
                      [VS.POTASSIUM_EXCLUDE, VS.MAGNESIUM_EXCLUDE])
    symptoms = code_param([VS.SYMPTOM_OBSERVATION_CODE, *EVENT_KINDS], [LOINC, SNOMED])
    return {
        "labs": f"Observation?{patient}&code={labs}&date=ge{since}&_sort=date&_count=1000",
        "symptoms": f"Observation?{patient}&code={symptoms}&date=ge{since}&_count=500",
        "conditions": f"Condition?{patient}&_count=500",
        "medicationRequests": f"MedicationRequest?{patient}&_count=500",
        "medicationStatements": f"MedicationStatement?{patient}&_count=500",
        "medicationAdministrations": f"MedicationAdministration?{patient}&_count=500",
    }


def definition() -> SmartAppDefinition:
    return SmartAppDefinition(id=APP_ID, title=TITLE, scopes=SCOPES, queries=queries, render=render,
                              views=VIEWS, stylesheet=STYLESHEET)


# ----------------------------------------------------------------------------------------- lab data


@dataclass(slots=True)  # not frozen: a two-year daily record builds thousands, and frozen init is slower
class LabPoint:
    """One lab result as the chart and its table show it.

    :ivar value: in the chart's unit (:data:`CHART_UNITS`, the unit the rules read), or ``None`` when not
        plotted (``why_not``).
    :ivar shown: the value as the lab sent it, with its unit ("4.1 mmol/L", "0.62 (no unit)").
    :ivar flags: the ObservationInterpretation flags the rules read (``flag``: the first code of any kind).
    :ivar unit_note: how a value sent without a unit was read (:func:`plugin.facts.read_unitless`).
    """

    analyte: str
    when: datetime
    source: str
    status: str
    value: float | None
    shown: str
    code: str
    flag: str | None = None
    ref_low: float | None = None
    ref_high: float | None = None
    why_not: str | None = None
    coded: Coded | None = None
    flags: tuple[str, ...] = ()
    unit_note: str | None = None

    @property
    def plotted(self) -> bool:
        return self.value is not None


#: each chart's unit is the unit the rules read the analyte in (plugin.facts.CANONICAL_UNITS)
CHART_UNITS = {analyte: CANONICAL_UNITS[analyte] for analyte in ("ck", "potassium", "magnesium", "calcium",
                                                                  "ionized-calcium")}
DECIMALS = {"ck": 0, "potassium": 1, "magnesium": 2, "calcium": 1, "ionized-calcium": 2}
NAMES = {"ck": "Creatine kinase (CK)", "potassium": "Potassium", "magnesium": "Magnesium",
         "calcium": "Calcium, total", "ionized-calcium": "Calcium, ionized"}


_FACTORS: dict[tuple[str, str], float | None] = {}


def _factor(analyte: str, unit: str, coded: Coded) -> float | None:
    """What a value in ``unit`` is multiplied by to be in the chart's unit (``None``: a unit the rules do not
    read for this analyte): the rules' own unit table, which goes by analyte and unit (a series has one or two
    units, so the answer is kept by those two, cheaper to hash than the coding)."""
    key = (analyte, unit)
    try:
        return _FACTORS[key]
    except KeyError:
        if len(_FACTORS) > 1024:
            _FACTORS.clear()
        found = _FACTORS[key] = to_canonical(analyte, 1.0, unit, coded)[0]
        return found


@functools.lru_cache(maxsize=1024)
def _unitless(analyte: str, value: float, coded: Coded) -> tuple[str | None, str]:
    """The unit a value sent without one is read in, as the rules read it (``None``: not interpretable)."""
    return read_unitless(analyte, value, coded)


def _status(raw: Mapping[str, Any]) -> str | None:
    status = raw.get("status")
    return status if isinstance(status, str) else None


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is not float and kind is not int:  # bool (an int subclass) and everything else: not a number
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too big for a float
        return None
    return number if math.isfinite(number) else None


def _unit_of(quantity: Mapping[str, Any]) -> str | None:
    for key in ("code", "unit"):
        text = quantity.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip()
    return None


_RANGES: dict[tuple[Any, ...], tuple[float | None, float | None]] = {}


def _range(raw: Mapping[str, Any], analyte: str, unit: str | None, coded: Coded) -> tuple[float | None, float | None]:
    """The lab's reference range in the chart's unit, read as the rules read it. A lab sends the same few
    ranges with every result, so the usual shape (one range, a low and a high quantity) is looked up by its
    values."""
    ranges = raw.get("referenceRange")
    if type(ranges) is list and len(ranges) == 1 and type(ranges[0]) is dict:
        low, high = ranges[0].get("low"), ranges[0].get("high")
        if type(low) is dict and type(high) is dict:
            key = (analyte, coded.code, unit, low.get("value"), low.get("code"), low.get("unit"), high.get("value"),
                   high.get("code"), high.get("unit"))
            try:
                return _RANGES[key]
            except KeyError:
                pass
            except TypeError:  # an unhashable value: read it the long way
                return _reference_limits(analyte, raw, unit, coded)
            if len(_RANGES) > 4096:
                _RANGES.clear()
            found = _RANGES[key] = _reference_limits(analyte, raw, unit, coded)
            return found
    return _reference_limits(analyte, raw, unit, coded)


def _as_sent(value: Any) -> str:
    kind = type(value)
    return str(value) if kind is float or kind is int else repr(value)[:40]


def lab_point(raw: Mapping[str, Any], analyte: str, coded: Coded, when: datetime) -> LabPoint:
    """One Observation as a point: plotted when it is a result with a number in a unit the rules read (a value
    without a unit is read as the rules read it, or is not interpretable and not plotted)."""
    source = f"Observation/{raw.get('id', '?')}"
    status = raw.get("status")
    if type(status) is not str or not status:
        status = "(no status)"
    flags, flag = lab_flags(raw) if "interpretation" in raw else ((), None)
    quantity = raw.get("valueQuantity")
    if type(quantity) is not dict and not isinstance(quantity, Mapping):
        absent = raw.get("dataAbsentReason")
        reason = next((c.get("code") for c in codings(absent) if isinstance(c.get("code"), str)), None) \
            if isinstance(absent, Mapping) else None
        text = raw.get("valueString") if isinstance(raw.get("valueString"), str) else None
        shown = f'"{text[:60]}"' if text else (f"no value ({reason})" if reason else "no value")
        return LabPoint(analyte, when, source, status, None, shown, coded.code, flag, None, None, "no numeric value",
                        coded, flags)
    # the usual shape first (a finite float and a UCUM code, as sent thousands of times), the general reading
    # for everything else
    raw_value = quantity.get("value")
    value = raw_value if type(raw_value) is float and math.isfinite(raw_value) else _number(raw_value)
    unit = quantity.get("code")
    unit = unit.strip() if type(unit) is str else None
    if not unit:
        unit = _unit_of(quantity)
    sent = raw_value if type(raw_value) is float else _as_sent(raw_value)
    shown = f"{sent} {unit}" if unit else f"{sent} (no unit)"
    unit_note = None
    read_unit = unit
    if unit is None and value is not None:
        read_unit, unit_note = _unitless(analyte, value, coded)
    low, high = _range(raw, analyte, read_unit, coded) if read_unit else (None, None)
    why_not = None
    converted = None
    if status not in PLOTTED_STATUSES:
        why_not = f"status {status}"
    elif value is None:
        why_not = "the value is not a number"
    elif read_unit is None:
        why_not = f"not interpretable: {unit_note}" if unit_note else "no unit"
    else:
        factor = _factor(analyte, read_unit, coded)
        converted = None if factor is None else value * factor
        if converted is None:
            why_not = f"not interpretable: unit {unit} is not one the service reads for this test"
        elif not 0 <= converted < 1e7:
            why_not, converted = "implausible value", None
        elif analyte == "potassium" and ("note" in raw or "interpretation" in raw or "specimen" in raw) \
                and (haemolysed := haemolysis(raw, {})):
            # a haemolysed specimen is no potassium at all (the card does not read it either)
            why_not, converted = f"haemolysed specimen ({haemolysed}): not a valid potassium", None
    return LabPoint(analyte, when, source, status, converted, shown, coded.code, flag, low, high, why_not, coded,
                    flags, unit_note)


_CHARTED = frozenset(CHART_UNITS)


def lab_series(observations: Iterable[Mapping[str, Any]], since: datetime, now: datetime
               ) -> tuple[dict[str, list[LabPoint]], int]:
    """Analyte -> its points in the window, oldest first; and how many results had no date."""
    # Sees every lab result of the record (thousands): exact type checks first, an ABC check only for the rest.
    series: dict[str, list[LabPoint]] = {}
    undated = 0
    seen: set[str] = set()
    latest = now + timedelta(days=1)
    charted = _CHARTED
    for raw in observations:
        if type(raw) is not dict and not isinstance(raw, Mapping):
            continue
        rid = raw.get("id")
        if type(rid) is str:
            if rid in seen:
                continue
            seen.add(rid)
        lab = classify_observation_code(raw.get("code"))[0]
        if lab is None or lab[0] not in charted:
            continue
        when = observation_date(raw)
        if when is None:
            undated += 1
            continue
        if when < since or when > latest:
            continue
        point = lab_point(raw, lab[0], lab[1], when)
        found = series.get(point.analyte)
        if found is None:
            found = series[point.analyte] = []
        found.append(point)
    for points in series.values():
        points.sort(key=lambda p: p.when)
    return series, undated


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Finding:
    """A dated fasciculation or red-flag finding, or a medicine started (marked on the charts)."""

    when: datetime
    kind: str
    label: str
    source: str
    red_flag: bool = False


def symptom_events(conditions: Iterable[Mapping[str, Any]], observations: Iterable[Mapping[str, Any]],
                   since: datetime, now: datetime) -> list[Finding]:
    """Fasciculation and red-flag findings in the window, from Conditions and (not negated) Observations."""
    kinds = tuple(EVENT_KINDS)
    found: list[Finding] = []
    for raw in conditions:
        if not isinstance(raw, Mapping) or status_code(raw.get("verificationStatus")) in ("refuted",
                                                                                          "entered-in-error"):
            continue
        matched = match_concept(raw.get("code"), kinds)
        when = condition_date(raw) if matched else None
        if when is None or not since <= when <= now + timedelta(days=1):
            continue
        for kind, coded in matched.items():
            found.append(Finding(when, kind, _event_label(kind, coded), f"Condition/{raw.get('id', '?')}",
                                 kind in RED_FLAG_KINDS))
    for raw in observations:
        if not isinstance(raw, Mapping) or _status(raw) not in PLOTTED_STATUSES or is_negated(raw):
            continue
        matched = match_concept(raw.get("code"), kinds)
        if not matched and match_concept(raw.get("code"), (VS.SYMPTOM_OBSERVATION_CODE,)):
            matched = match_concept(raw.get("valueCodeableConcept"), kinds)
        when = observation_date(raw) if matched else None
        if when is None or not since <= when <= now + timedelta(days=1):
            continue
        for kind, coded in matched.items():
            found.append(Finding(when, kind, _event_label(kind, coded), f"Observation/{raw.get('id', '?')}",
                                 kind in RED_FLAG_KINDS))
    return sorted(found, key=lambda f: f.when)


def _event_label(kind: str, coded: Coded) -> str:
    return EVENT_KINDS[kind] + (f" ({coded.display})" if coded.display else "")


def medicine_starts(resources: Iterable[Mapping[str, Any]], since: datetime, now: datetime) -> list[Finding]:
    """When a diuretic, proton pump inhibitor or calcineurin inhibitor started, within the window."""
    found: list[Finding] = []
    for raw in resources:
        if not isinstance(raw, Mapping) or _status(raw) in _SKIPPED_MEDICATION_STATUSES:
            continue
        info = medications.identify_medication(raw)
        if info is None:
            continue
        start = medication_dates(raw)[0]
        if start is None or not since <= start <= now:
            continue
        for cls, label in ELECTROLYTE_DRUGS.items():
            if medications.has_ingredient_in(info, cls):
                name = info.ingredients[0].name if info.ingredients else info.display
                found.append(Finding(start, cls, f"{name} started ({label})",
                                     f"{raw.get('resourceType')}/{raw.get('id', '?')}"))
                break
    return sorted(found, key=lambda f: f.when)


# ------------------------------------------------------------------------------------ steroid dose


@dataclass(frozen=True)
class DoseStep:
    """The prednisone-equivalent daily dose from ``start`` to ``end`` (``None``: not computable)."""

    start: datetime
    end: datetime
    mg: float | None
    sources: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class GivenDose:
    """Corticosteroid given on one day (MedicationAdministration), in prednisone equivalents."""

    day: datetime
    mg: float | None
    sources: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class DoseSeries:
    steps: tuple[DoseStep, ...]
    given: tuple[GivenDose, ...] = ()
    notes: tuple[str, ...] = ()


#: statuses of a record that ran and is over: it counted while it ran (the card, at ``now``, never counts it)
_FINISHED_STATUSES = frozenset({"completed", "stopped"})
_TICK = timedelta(microseconds=1)  # the instant after an inclusive end (timeline lines end 1 µs before the next)
#: a dose that holds for less than this is not a step of the chart (see :func:`prednisone_dose_series`)
_BLINK = timedelta(seconds=1)
_ADMINISTRATION_HOURS = timedelta(hours=medications.ADMINISTRATION_CURRENT_HOURS)


def steroid_records(resources: Iterable[Any], now: datetime, notes: list[str]) -> tuple[MedicationFact, ...]:
    """The systemic corticosteroid records as the steroid card reads them: :func:`plugin.facts.build_medications`
    (identified, validated, dated; an invalid one is skipped with a note), then ``rules.systemic_steroids``'
    filter."""
    sources = _Sources()
    for raw in resources:
        if type(raw) is dict or isinstance(raw, Mapping):
            sources.add(raw, False)
    found = build_medications(sources, now, notes).in_class(VS.SYSTEMIC_CORTICOSTEROIDS)
    return tuple(m for m in found if medications.is_systemic(m.info))


def _after(moment: datetime | None, span: timedelta = timedelta(0)) -> datetime | None:
    """The first instant after ``moment + span`` (an inclusive end); ``None`` past year 9999."""
    try:
        return moment + span + _TICK if moment is not None else None
    except OverflowError:
        return None


def _given_at(med: MedicationFact) -> datetime | None:
    """When an administration was given, as the timeline reads it."""
    return med.effective_end or med.effective_start


def _is_running(med: MedicationFact, now: datetime) -> bool:
    """Do the record's status and intent make it current (the card's rule, :func:`medications.is_current`,
    without its end date)?"""
    return medications.is_current({"resourceType": med.resource_type, "status": med.status, "intent": med.intent},
                                  now)


@dataclass(frozen=True, eq=False)
class _Span:
    """When one stored record (request or statement) was in force before ``now``: from ``start`` (``None``:
    unknown, taken as before the window) to ``end`` inclusive (``None``: open)."""

    med: MedicationFact
    running: bool  # an active / on-hold / intended record (the card's current, at now)
    start: datetime | None
    end: datetime | None
    changes: tuple[datetime, ...]  # where its dose can change: its dosage lines' bounds (timeline.schedule)

    @property
    def instants(self) -> tuple[datetime | None, ...]:
        """Where the dose can change: its start, the instant after its end, its lines' bounds."""
        return (self.start, _after(self.end), *self.changes)

    def in_force(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (self.end is None or moment <= self.end)


def _span(med: MedicationFact, now: datetime, notes: list[str]) -> _Span | None:
    record = timeline.schedule(med, now)
    notes.extend(record.notes)
    where = record.where
    changes: list[datetime] = []
    for line in record.lines:  # a line applies from its start to its end inclusive
        changes += [moment for moment in (line.start, _after(line.end)) if moment is not None]
    start = med.started
    if _is_running(med, now):
        end = med.validity_end if med.resource_type == "MedicationRequest" else med.effective_end
        if start is None:
            notes.append(f"{where} ({med.name}) has no start date: charted as in force over the whole two years, "
                         "as the card counts it today")
        return _Span(med, True, start, end, tuple(changes))
    if med.status not in _FINISHED_STATUSES:
        return None
    if start is None:
        notes.append(f"{where} ({med.name}) is {med.status} with no start date: not charted")
        return None
    ends = [e for e in (record.ended_at, med.course_end, med.effective_end, med.validity_end) if e is not None]
    if ends:
        end = max(ends)
    else:
        end = start + timedelta(days=1) - _TICK
        notes.append(f"{where} ({med.name}) is {med.status} with no end date: charted for its first day only")
    # a finished record is over by now (the card does not count it): at most up to now
    return _Span(med, False, start, min(end, now - _TICK), tuple(changes))


def _dose_at(meds: Sequence[MedicationFact], moment: datetime, settings: Settings
             ) -> tuple[float | None, tuple[str, ...], str]:
    """(prednisone-equivalent mg/day or ``None`` when not computable, the records it comes from, how) of the
    timeline (:func:`plugin.timeline.build_timeline`) of these records at ``moment``."""
    line = timeline.build_timeline(meds, moment, pulse_mg=settings.steroid_pulse_mg,
                                   pulse_days=settings.pulse_lookback_days)
    sources: list[str] = []
    parts: list[str] = []
    unknown: list[str] = []
    for course in line.in_force:
        dose = course.dose
        if course.chosen is not None:
            sources.append(course.chosen.where)
        sources += [f"{m.resource_type}/{m.resource_id}" for m in course.administrations]
        if course.pred_eq_per_day is not None:
            parts.append(dose.arithmetic or f"{course.name}: {medications.fmt(course.pred_eq_per_day)} mg/day")
        elif has_prednisone_equivalent(course.medication):
            unknown.append(f"{course.name}: dose not computable ({dose.reason or 'unknown'})")
        else:
            parts.append(f"{course.name}: no prednisone equivalent, not added")
        if course.also:
            parts.append(f"also recorded, the same {course.name} therapy (not added): "
                         + ", ".join(r.where for r in course.also))
    mg = None if unknown else round(float(line.total), 2)
    return mg, tuple(sorted(set(sources))), "; ".join(parts + unknown) or "no systemic corticosteroid recorded"


_LATER_DAYS = "; the same dose from the administrations of the days after (each listed as given)"


def _same_dose(step: DoseStep, mg: float | None, sources: tuple[str, ...]) -> bool:
    """Does a dose continue ``step``: the same mg/day from the same orders and statements? Administrations
    count as one source (a dose given daily is one step, not one per day: each day is listed as given)."""
    def orders(found: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
        kept = tuple(s for s in found if not s.startswith("MedicationAdministration/"))
        return kept, len(kept) != len(found)

    return step.mg == mg and orders(step.sources) == orders(sources)


def prednisone_dose_series(resources: Iterable[Any], since: datetime, now: datetime,
                           settings: Settings | None = None) -> DoseSeries:
    """The prednisone-equivalent daily dose over ``[since, now]``, as steps, and the doses given in hospital
    (MedicationAdministration) per day: the steroid card's own medication timeline (:mod:`plugin.timeline`)
    evaluated at every instant where the dose can change, so the chart and the card never disagree.

    At ``now`` the timeline sees exactly what the card sees. Before ``now``, it sees the records in force at
    that instant: a record from its start (``authoredOn``, effective or dosage start) to its end (for an
    active one its validity or effective end; for a completed or stopped one the last of its ends, or its
    first day when it has none), and the administrations of the 48 hours before (the timeline counts the last
    calendar day with one, given in the last 24 hours). Its dosage lines are placed on the calendar by the
    timeline (consecutive steps, ``boundsPeriod``, ``count``), which also picks one record per ingredient.
    A dose holding for less than a second is not drawn: taper lines written as ``boundsPeriod`` dateTimes
    where one step ends at the very instant the next begins both apply at that instant (bounds are
    inclusive), and that instant is no step of the taper.
    """
    settings = settings or settings_for({})
    notes: list[str] = []
    meds = steroid_records(resources, now, notes)
    spans = [s for s in (_span(m, now, notes) for m in meds if m.resource_type != "MedicationAdministration")
             if s is not None]
    given = sorted(((when, m) for m in meds if m.resource_type == "MedicationAdministration"
                    and (when := _given_at(m)) is not None), key=lambda item: item[0])
    given_at = [when for when, _ in given]

    instants: set[datetime | None] = set()
    for span in spans:
        instants.update(span.instants)
    # The timeline counts an administration from when it was given, for 24 hours: its dose changes when one is
    # given, and when the latest of an ingredient turns 24 hours old (not when an earlier one does: a daily
    # dose recorded in a care home's administration record is hundreds of them).
    next_given: dict[str, datetime] = {}
    for when, med in reversed(given):
        key = timeline.ingredient_key(med)[0]
        later = next_given.get(key)
        instants.add(when)
        if later is None or later - when > _ADMINISTRATION_HOURS:
            instants.add(_after(when, _ADMINISTRATION_HOURS))
        next_given[key] = when
    ordered = [since, *sorted(t for t in instants if t is not None and since < t < now)]

    steps: list[DoseStep] = []

    def add(begin: datetime, finish: datetime, value: tuple[float | None, tuple[str, ...], str]) -> None:
        mg, sources, detail = value
        if steps and _same_dose(steps[-1], mg, sources):
            last = steps[-1]
            if last.sources != sources and not last.detail.endswith(_LATER_DAYS):
                detail = last.detail + _LATER_DAYS  # the same daily dose given day after day: one step
            else:
                detail = last.detail
            steps[-1] = DoseStep(last.start, finish, mg, last.sources, detail)
        else:
            steps.append(DoseStep(begin, finish, mg, sources, detail))

    skipped: datetime | None = None
    for begin, finish in zip(ordered, [*ordered[1:], now], strict=True):
        if finish - begin < _BLINK:  # two inclusive bounds meeting at one instant (a line's end, the next start)
            skipped = skipped or begin  # the next step is drawn from here, so the steps stay contiguous
            continue
        in_force = [replace(s.med, current=True) for s in spans if s.in_force(begin)]
        recent = [m for _, m in given[bisect_left(given_at, begin - 2 * _ADMINISTRATION_HOURS):
                                      bisect_right(given_at, begin)]]
        add(skipped or begin, finish, _dose_at([*in_force, *recent], begin, settings))
        skipped = None
    # the card's timeline, exactly; administrations older than 48 hours cannot change today's dose (they only
    # feed the timeline's pulse list, which this chart does not read), and a care home's record has hundreds
    recent_enough = now - 2 * _ADMINISTRATION_HOURS
    current = _dose_at([m for m in meds if m.resource_type != "MedicationAdministration"]
                       + [m for when, m in given if when >= recent_enough], now, settings)
    if not steps or not _same_dose(steps[-1], *current[:2]):  # a change at now itself (a record dated now)
        add(now, now, current)

    days: dict[date, list[tuple[datetime, MedicationFact]]] = {}
    for when, med in given:
        if since <= when <= now:
            days.setdefault(when.date(), []).append((when, med))
    given_days = []
    for _, items in sorted(days.items()):
        # that day's administrations, as the timeline reads a day of them (the current dose right after the last)
        mg, sources, detail = _dose_at([m for _, m in items], items[-1][0], settings)
        start = items[0][0].replace(hour=0, minute=0, second=0, microsecond=0)
        given_days.append(GivenDose(start, mg, sources, detail))
    return DoseSeries(tuple(steps), tuple(given_days), tuple(dict.fromkeys(notes)))


def dose_band(mg: float | None, settings: Settings) -> str:
    if mg is None:
        return "not computable"
    if mg == 0:
        return "none"
    if mg >= settings.steroid_pulse_mg:
        return "pulse"
    if mg > settings.steroid_very_high_above_mg:
        return "very high"
    if mg > settings.steroid_high_above_mg:
        return "high"
    if mg > settings.steroid_low_max_mg:
        return "medium"
    return "low" if mg > settings.steroid_target_mg else "at or below the SLE target"


# ------------------------------------------------------------------------------------------ page


def render(page: AppPage) -> str:
    """The page's main content: navigation, then the three views (the chosen one first)."""
    settings = settings_for(page.config)
    now = page.now
    since = now - timedelta(days=WINDOW_DAYS)
    res = page.resources
    series, undated = lab_series(res.get("labs", ()), since, now)
    events = symptom_events(res.get("conditions", ()), res.get("symptoms", ()), since, now)
    medication_records = (*res.get("medicationRequests", ()), *res.get("medicationStatements", ()))
    dose = prednisone_dose_series((*medication_records, *res.get("medicationAdministrations", ())), since, now)
    starts = medicine_starts(medication_records, since, now)
    patient = next(iter(res.get("patient", ())), {})
    sex = patient.get("gender") if isinstance(patient, Mapping) else None

    sections = {
        "ck": ck_section(series.get("ck", []), events, settings, sex, since, now),
        "electrolytes": electrolyte_section(series, events, starts, settings, since, now),
        "steroid": steroid_section(dose, events, settings, since, now),
    }
    first = page.view if page.view in sections else "ck"
    order = [first, *(v for v, _ in VIEWS if v != first)]
    nav = "".join(
        f'<a href="{escape(page.view_urls.get(view, "?view=" + view))}"'
        + (' aria-current="page"' if view == first else "") + f">{escape(label)}</a>"
        for view, label in VIEWS)
    notices = [f"{escape(key)}: {escape(note)}" for key, note in sorted(page.notes.items())]
    if undated:
        notices.append(f"{undated} lab result{'s' if undated != 1 else ''} without a date "
                       f"{'are' if undated != 1 else 'is'} not shown.")
    notices += [escape(note) for note in dose.notes]
    head = (f'<h1>{escape(TITLE)}</h1><p class="lede">The last two years, to {now.date().isoformat()}. '
            "Dashed lines mark fasciculation (F) and red-flag findings (R); every point names its FHIR "
            "resource (hover it, or see the table under each chart).</p>"
            f'<nav class="views" aria-label="Views">{nav}</nav>')
    if notices:
        head += '<div class="notice" role="note"><p>Not complete:</p><ul>' + "".join(
            f"<li>{n}</li>" for n in notices) + "</ul></div>"
    return head + "".join(sections[view] for view in order)


def _event_marks(events: Sequence[Finding]) -> list[Event]:
    return [Event(e.when, "R" if e.red_flag else ("F" if e.kind == VS.FASCICULATION else "Rx"),
                  f"{e.when.date().isoformat()}: {e.label} ({e.source})",
                  {"source": e.source, "date": e.when.date().isoformat(), "kind": e.kind},
                  "event red-flag" if e.red_flag else ("event fasciculation" if e.kind == VS.FASCICULATION
                                                       else "event medicine"))
            for e in events]


def _section(view: str, title: str, summary: str, charts: Sequence[str], tables: Sequence[str]) -> str:
    return (f'<section class="view" id="view-{view}" data-view="{view}" aria-labelledby="h-{view}">'
            f'<h2 id="h-{view}">{escape(title)}</h2><p class="summary">{summary}</p>'
            + "".join(charts) + "".join(tables) + "</section>")


@functools.lru_cache(maxsize=1 << 14)  # a series repeats few values
def _fmt(value: float | None, analyte: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.{DECIMALS.get(analyte, 1)}f}"


_NEEDS_ESCAPE = re.compile(r"[&<>\"']").search


def dots_and_table(points: Sequence[LabPoint], note: Any, table_id: str, caption: str) -> tuple[list[Dot], str]:
    """The chart's points and the same data as a plain table (every result, plotted or not, newest first, as
    clinicians read results), in one pass: a two-year daily series is thousands of results."""
    if not points:
        return [], lab_table_html(table_id, caption, [])
    analyte = points[0].analyte
    unit, name, decimals = CHART_UNITS[analyte], escape(NAMES[analyte]), DECIMALS.get(analyte, 1)
    dots, rows = [], []
    for p in points:
        day = p.when.date().isoformat()
        # a source is unique (not worth the cache) and almost never has a character to escape: one scan for them
        source = html.escape(p.source) if _NEEDS_ESCAPE(p.source) else p.source
        status = escape(p.status)
        remark = note(p) if p.value is not None else ""
        if p.unit_note and p.value is not None:  # a value sent without a unit, read as the rules read it
            remark = f"{remark}; {p.unit_note}" if remark else p.unit_note
        if p.value is not None:
            shown = _fmt(p.value, analyte)
            # the title is built from escaped parts (names, numbers and dates need none)
            dots.append(Dot(p.when, p.value,
                            f"{name} {shown} {unit} on {day}" + (f" ({escape(remark)})" if remark else "")
                            + f"; {status}; {source}",
                            f' data-source="{source}" data-value="{p.value:.{decimals}f}" data-unit="{unit}" '
                            f'data-date="{day}" data-status="{status}"',
                            "dot preliminary" if p.status == "preliminary" else "dot"))
            plotted = f"{shown} {unit}"
        else:
            plotted = "not plotted"
        rows.append(f'<tr data-source="{source}"><td class="date">{day}</td><td>{escape(p.shown)}</td>'
                    f"<td>{escape(plotted)}</td><td>{status}</td><td>{_ref_text(p.ref_low, p.ref_high, analyte)}</td>"
                    f"<td>{escape(p.flag or '')}</td><td>{escape(p.why_not or remark or '')}</td>"
                    f"<td>{source}</td></tr>")
    rows.reverse()
    return dots, lab_table_html(table_id, caption, rows)


@functools.lru_cache(maxsize=1024)
def _ref_text(low: float | None, high: float | None, analyte: str) -> str:
    if low is None and high is None:
        return ""
    return escape(f"{_fmt(low, analyte) if low is not None else ''}–{_fmt(high, analyte) if high is not None else ''}")


def lab_table_html(table_id: str, caption: str, rows: Sequence[str]) -> str:
    return (f'<table class="data" id="{table_id}"><caption>{escape(caption)}</caption><thead><tr>'
            "<th scope=col>Date</th><th scope=col>Result as sent</th><th scope=col>Charted</th>"
            "<th scope=col>Status</th><th scope=col>Reference range</th><th scope=col>Flag</th>"
            "<th scope=col>Note</th><th scope=col>FHIR resource</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def event_table(table_id: str, events: Sequence[Finding]) -> str:
    if not events:
        return ""
    rows = "".join(f'<tr data-source="{escape(e.source)}"><td class="date">{e.when.date().isoformat()}</td>'
                   f"<td>{escape(e.label)}</td><td>{'red flag' if e.red_flag else ''}</td>"
                   f"<td>{escape(e.source)}</td></tr>" for e in events)
    return (f'<table class="data events" id="{table_id}"><caption>Marked on the charts</caption><thead><tr>'
            "<th scope=col>Date</th><th scope=col>Finding</th><th scope=col></th><th scope=col>FHIR resource</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _latest_plotted(points: Sequence[LabPoint]) -> LabPoint | None:
    return next((p for p in reversed(points) if p.value is not None and p.status != "preliminary"), None)


def ck_section(points: list[LabPoint], events: Sequence[Finding], settings: Settings, sex: Any,
               since: datetime, now: datetime) -> str:
    latest = _latest_plotted(points)
    with_limit = next((p for p in reversed(points) if p.value is not None and p.ref_high), None)
    if with_limit is not None:
        uln, origin = float(with_limit.ref_high or 0), "the lab's upper limit"
    elif sex == "male":
        uln, origin = settings.ck_uln_male, "default for men (the lab gave none)"
    elif sex == "female":
        uln, origin = settings.ck_uln_female, "default for women (the lab gave none)"
    else:
        uln, origin = settings.ck_uln_unknown_sex, "default, sex unknown (the lab gave none)"
    marked, critical = uln * settings.ck_marked_multiple, uln * settings.ck_critical_multiple

    def multiple(p: LabPoint) -> str:
        limit = p.ref_high or uln
        return f"{p.value / limit:.1f} × ULN" if p.value is not None and limit else ""

    if not points:
        return _section("ck", "Creatine kinase (CK)", "No creatine kinase results in the last two years.",
                        [], [event_table("events-ck", events)])
    if latest is not None:
        summary = (f"Latest CK {_fmt(latest.value, 'ck')} U/L on {latest.when.date().isoformat()} "
                   f"({escape(multiple(latest))}); upper limit {number(uln)} U/L, {escape(origin)}. ")
    else:
        summary = "No final CK result to chart. "
    summary += _counts(points)
    values = [p.value for p in points if p.value is not None]
    top = max([critical * 1.3, *(v * 1.3 for v in values)])
    bottom = max(1.0, min([uln / 4, *(v / 1.5 for v in values if v > 0)]))
    dots, table = dots_and_table(points, multiple, "table-ck", "Creatine kinase results, newest first")
    chart = Chart("chart-ck", f"Creatine kinase over two years, log scale; upper limit {number(uln)} U/L",
                  since, now, 10 ** math.floor(math.log10(bottom)), top, "U/L", log=True, described_by="table-ck",
                  bands=[Band(None, uln, "within the upper limit", "band-normal"),
                         Band(uln, marked, "above the upper limit", "band-high"),
                         Band(marked, critical, f"{settings.ck_marked_multiple:g} × ULN or more", "band-marked"),
                         Band(critical, None, f"{settings.ck_critical_multiple:g} × ULN or more: possible "
                              "rhabdomyolysis", "band-critical")],
                  rules=[Rule(uln, f"ULN {number(uln)}", "rule-limit"),
                         Rule(marked, f"{settings.ck_marked_multiple:g} × ULN", "rule-marked"),
                         Rule(critical, f"{settings.ck_critical_multiple:g} × ULN", "rule-critical")],
                  series=[dots], events=_event_marks(events))
    return _section("ck", "Creatine kinase (CK)", summary, [chart.svg()], [table, event_table("events-ck", events)])


def _counts(points: Sequence[LabPoint]) -> str:
    skipped = sum(1 for p in points if p.value is None)
    text = f"{len(points)} result{'s' if len(points) != 1 else ''} in two years"
    return text + (f"; {skipped} not charted (see the table)." if skipped else ".")


#: how the rules read each charted electrolyte (plugin/labs.py). Total calcium is graded as measured: the
#: card corrects it for a same-day albumin, which this page does not read.
_READINGS: dict[str, Any] = {
    "potassium": labs.potassium_reading,
    "magnesium": labs.magnesium_reading,
    "calcium": lambda result, settings: labs.calcium_reading(result, None, settings),
    "ionized-calcium": labs.ionized_calcium_reading,
}
#: the value range each electrolyte chart shows at least
_AXES = {"potassium": (2.0, 6.5), "magnesium": (0.6, 3.0), "calcium": (5.5, 12.0), "ionized-calcium": (0.7, 1.6)}
_STATE_WORDS = {labs.LOW: "low", labs.HIGH: "high", labs.ABNORMAL: "abnormal"}


def lab_reading(point: LabPoint, settings: Settings) -> labs.Reading:
    """How the rules read a plotted point: :mod:`plugin.labs` on its value (in the rules' unit), flags and the
    lab's range; the service's default cut-offs where the lab gave no range."""
    unit = CHART_UNITS[point.analyte]
    result = LabResult(point.analyte, point.coded or Coded("", point.code), point.when, point.status, point.value,
                       unit, point.value, unit, point.flag, point.ref_low, point.ref_high, point.source, point.flags)
    return _READINGS[point.analyte](result, settings)


def _reading_words(reading: labs.Reading) -> str:
    words = _STATE_WORDS.get(reading.state, "")
    if reading.critical:
        words = f"critical {words}".strip()
    if words and reading.basis == "default":
        words += " (default cut-off)"
    return words


def electrolyte_bands(analyte: str, points: Sequence[LabPoint], settings: Settings
                      ) -> tuple[list[Band], list[Rule], str]:
    """The bands and lines of one electrolyte chart, and a sentence saying which range they are: the lab's
    reference range (its newest result with one) when it gave one, else the service's default low and high
    cut-offs; the critical cut-offs are always the service's (a lab sends none), as in the readings."""
    unit = CHART_UNITS[analyte]
    limits = labs.default_limits(analyte, settings)
    ranged = next((p for p in reversed(points) if p.value is not None
                   and (p.ref_low is not None or p.ref_high is not None)), None)
    bands: list[Band] = []
    rules: list[Rule] = []
    if ranged is not None:
        bands.append(Band(ranged.ref_low, ranged.ref_high, "the lab's reference range", "band-normal"))
        for bound, label in ((ranged.ref_low, "range low"), (ranged.ref_high, "range high")):
            if bound is not None:
                rules.append(Rule(bound, f"{label} {_fmt(bound, analyte)}", "rule-limit"))
        used = (f"the lab's reference range, {_ref_text(ranged.ref_low, ranged.ref_high, analyte)} {unit} (on its "
                f"newest result with one, {ranged.when.date().isoformat()})")
    else:
        cutoffs = []
        if limits.low is not None and limits.high is not None:
            bands.append(Band(limits.low, limits.high, "within the service's default limits", "band-normal"))
        if limits.low is not None:
            bands.append(Band(limits.critical_low, limits.low, f"low: below {limits.low:g} {unit} (the service's "
                              "default; the lab gave no range)", "band-low"))
            rules.append(Rule(limits.low, f"low {limits.low:g}", "rule-low"))
            cutoffs.append(f"low below {limits.low:g}")
        if limits.high is not None:
            bands.append(Band(limits.high, limits.critical_high, f"high: {limits.high:g} {unit} or more (the "
                              "service's default; the lab gave no range)", "band-high"))
            rules.append(Rule(limits.high, f"high {limits.high:g}", "rule-limit"))
            cutoffs.append(f"high from {limits.high:g}")
        used = f"the service's default cut-offs, {' and '.join(cutoffs)} {unit} (the lab gave no reference range)"
    critical = []
    if limits.critical_low is not None:
        bands.append(Band(None, limits.critical_low, f"critical: below {limits.critical_low:g} {unit} (the "
                          "service's default)", "band-critical"))
        rules.append(Rule(limits.critical_low, f"critical {limits.critical_low:g}", "rule-critical"))
        critical.append(f"below {limits.critical_low:g}")
    if limits.critical_high is not None:
        bands.append(Band(limits.critical_high, None, f"critical: {limits.critical_high:g} {unit} or more (the "
                          "service's default)", "band-critical"))
        rules.append(Rule(limits.critical_high, f"critical {limits.critical_high:g}", "rule-critical"))
        critical.append(f"from {limits.critical_high:g}")
    text = f"Range drawn: {used}; critical {' and '.join(critical)} {unit} (the service's defaults)."
    return bands, rules, text


def electrolyte_section(series: Mapping[str, list[LabPoint]], events: Sequence[Finding], starts: Sequence[Finding],
                        settings: Settings, since: datetime, now: datetime) -> str:
    marks = sorted([*events, *starts], key=lambda e: e.when)
    charts, tables, summaries = [], [], []
    for analyte in ("potassium", "magnesium", "calcium", "ionized-calcium"):
        points = series.get(analyte, [])
        if not points:
            if analyte != "ionized-calcium":
                summaries.append(f"No {NAMES[analyte].lower()} results in the last two years.")
            continue
        unit = CHART_UNITS[analyte]
        bands, rules, used = electrolyte_bands(analyte, points, settings)
        words: dict[tuple[Any, ...], str] = {}  # a series repeats few (value, flags, range) combinations

        def remark(p: LabPoint, words: dict[tuple[Any, ...], str] = words) -> str:
            if p.value is None:
                return ""
            key = (p.value, p.flags, p.ref_low, p.ref_high)
            found = words.get(key)
            if found is None:
                found = words[key] = _reading_words(lab_reading(p, settings))
            return found

        values = [p.value for p in points if p.value is not None]
        limits = [v for b in bands for v in (b.low, b.high) if v is not None]
        axis = (min([_AXES[analyte][0], *(v * 0.9 for v in values + limits)]),
                max([_AXES[analyte][1], *(v * 1.1 for v in values), *limits]))
        latest = _latest_plotted(points)
        summary = f"{escape(NAMES[analyte])}: "
        if latest is not None:
            state = remark(latest)
            summary += (f"latest {_fmt(latest.value, analyte)} {unit} on {latest.when.date().isoformat()}"
                        f"{' (' + escape(state) + ')' if state else ''}; ")
        summary += _counts(points) + " " + escape(used)
        if analyte == "calcium":
            summary += " Graded as measured: the card corrects a total calcium for a same-day albumin."
        summaries.append(summary)
        table_id = f"table-{analyte}"
        dots, table = dots_and_table(points, remark, table_id, f"{NAMES[analyte]} results, newest first")
        chart = Chart(f"chart-{analyte}", f"{NAMES[analyte]} over two years. {used}", since, now, axis[0], axis[1],
                      unit, height=190, described_by=table_id, bands=bands, rules=rules,
                      series=[dots], events=_event_marks(marks))
        charts.append(f'<h3>{escape(NAMES[analyte])}</h3>{chart.svg()}')
        tables.append(table)
    if not charts:
        return _section("electrolytes", "Potassium, magnesium and calcium", " ".join(summaries), [],
                        [event_table("events-electrolytes", marks)])
    return _section("electrolytes", "Potassium, magnesium and calcium", "<br>".join(summaries), charts,
                    [*tables, event_table("events-electrolytes", marks)])


def steroid_section(dose: DoseSeries, events: Sequence[Finding], settings: Settings, since: datetime,
                    now: datetime) -> str:
    recorded = [s for s in dose.steps if s.sources]
    if not recorded and not dose.given:
        return _section("steroid", "Corticosteroid dose (prednisone equivalent)",
                        "No systemic corticosteroid recorded in the last two years.", [],
                        [event_table("events-steroid", events)])
    current = dose.steps[-1] if dose.steps else None
    if current is not None and current.mg is not None:
        summary = (f"Now: {number(current.mg)} mg/day prednisone equivalent "
                   f"({escape(dose_band(current.mg, settings))}), since {current.start.date().isoformat()}.")
    elif current is not None:
        summary = "Now: the current dose cannot be computed (see the table)."
    else:
        summary = ""
    below_pulse = [s.mg for s in dose.steps if s.mg is not None and s.mg < settings.steroid_pulse_mg]
    below_pulse += [g.mg for g in dose.given if g.mg is not None and g.mg < settings.steroid_pulse_mg]
    top = max([settings.steroid_high_above_mg + 10, *(mg * 1.2 for mg in below_pulse)])
    # one pulse per run of pulse-dose steps (an order and then its administrations can be two steps of one pulse)
    pulse_mg = settings.steroid_pulse_mg
    pulses = [s for n, s in enumerate(dose.steps) if s.mg is not None and s.mg >= pulse_mg
              and not (n and dose.steps[n - 1].end == s.start and (dose.steps[n - 1].mg or 0) >= pulse_mg)]
    if pulses:
        summary += (f" {len(pulses)} pulse{'s' if len(pulses) != 1 else ''} (≥ {number(settings.steroid_pulse_mg)} "
                    "mg/day) drawn at the top of the chart with the dose.")
    steps = [Step(s.start, s.end, s.mg,
                  f"{s.start.date().isoformat()} to {s.end.date().isoformat()}: "
                  + (f"{number(s.mg)} mg/day ({dose_band(s.mg, settings)})" if s.mg is not None else "not computable")
                  + f"; {s.detail}" + (f"; {', '.join(s.sources)}" if s.sources else ""),
                  {"source": " ".join(s.sources), "value": "" if s.mg is None else f"{s.mg:g}",
                   "start": s.start.date().isoformat(), "end": s.end.date().isoformat()})
             for s in dose.steps]
    given = [Dot(g.day, g.mg, escape(f"given {g.day.date().isoformat()}: {number(g.mg)} mg prednisone equivalent; "
                                      f"{g.detail}; {', '.join(g.sources)}"),
                 {"source": " ".join(g.sources), "value": f"{g.mg:g}", "date": g.day.date().isoformat()}, "dot given")
             for g in dose.given if g.mg is not None]
    chart = Chart("chart-steroid", "Prednisone-equivalent daily dose over two years", since, now, 0, top, "mg/day",
                  described_by="table-steroid",
                  bands=[Band(None, settings.steroid_target_mg, f"SLE target: {settings.steroid_target_mg:g} mg/day "
                              "or less", "band-normal"),
                         Band(settings.steroid_target_mg, settings.steroid_low_max_mg, "low dose", "band-low-dose"),
                         Band(settings.steroid_low_max_mg, settings.steroid_high_above_mg, "medium dose",
                              "band-medium"),
                         Band(settings.steroid_high_above_mg, settings.steroid_very_high_above_mg, "high dose",
                              "band-marked"),
                         Band(settings.steroid_very_high_above_mg, None, "very high dose", "band-critical")],
                  rules=[Rule(settings.steroid_target_mg, f"target {settings.steroid_target_mg:g}", "rule-target"),
                         Rule(settings.steroid_high_above_mg, f"high > {settings.steroid_high_above_mg:g}",
                              "rule-marked")],
                  steps=steps, series=[given] if given else [], events=_event_marks(events))
    rows = []
    for s in dose.steps:
        rows.append((s.start, f'<tr data-source="{escape(" ".join(s.sources))}">'
                     f'<td class="date">{s.start.date().isoformat()}</td>'
                     f'<td class="date">{s.end.date().isoformat()}</td>'
                     f"<td>{escape(number(s.mg)) if s.mg is not None else 'not computable'}</td>"
                     f"<td>{escape(dose_band(s.mg, settings))}</td><td>{escape(s.detail)}</td>"
                     f"<td>{escape(', '.join(s.sources))}</td></tr>"))
    for g in dose.given:
        rows.append((g.day, f'<tr class="given" data-source="{escape(" ".join(g.sources))}">'
                     f'<td class="date">{g.day.date().isoformat()}</td><td>given that day</td>'
                     f"<td>{escape(number(g.mg)) if g.mg is not None else 'not computable'}</td>"
                     f"<td>{escape(dose_band(g.mg, settings))}</td><td>{escape(g.detail)}</td>"
                     f"<td>{escape(', '.join(g.sources))}</td></tr>"))
    rows = [row for _, row in sorted(rows, key=lambda r: r[0], reverse=True)]
    table = ('<table class="data" id="table-steroid"><caption>Prednisone-equivalent daily dose, newest first'
             "</caption><thead><tr><th scope=col>From</th><th scope=col>To</th><th scope=col>mg/day</th>"
             "<th scope=col>Band</th><th scope=col>How it was computed</th><th scope=col>FHIR resources</th>"
             "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    return _section("steroid", "Corticosteroid dose (prednisone equivalent)", summary, [chart.svg()],
                    [table, event_table("events-steroid", events)])


# ---------------------------------------------------------------------------------------- styles

STYLESHEET = """
h1{font-size:1.35em;margin:.4em 0 .2em}
h2{font-size:1.15em;margin:1.2em 0 .3em;border-bottom:1px solid #ccd;padding-bottom:.2em}
h3{font-size:1em;margin:.8em 0 .2em}
.lede{color:#444;margin:.2em 0 .6em}
.views{display:flex;gap:6px;margin:.4em 0 .8em}
.views a{padding:4px 10px;border:1px solid #1f3a5f;border-radius:4px;color:#1f3a5f;text-decoration:none}
.views a[aria-current]{background:#1f3a5f;color:#fff}
.notice{border-left:4px solid #b26a00;background:#fff6e5;padding:4px 12px;margin:.6em 0}
.notice p{margin:.2em 0}
.summary{margin:.3em 0 .5em}
svg.chart{display:block;max-width:100%;height:auto;font-size:11px;background:#fff}
svg.chart .axis{stroke:#555;stroke-width:1}
svg.chart .grid{stroke:#e6e6e6;stroke-width:1}
svg.chart .tick,svg.chart .unit{fill:#444}
svg.chart .band-normal{fill:#e3f4e6}
svg.chart .band-low-dose{fill:#f1f7de}
svg.chart .band-low,svg.chart .band-high,svg.chart .band-medium{fill:#fff3d6}
svg.chart .band-marked{fill:#ffe2c4}
svg.chart .band-critical{fill:#fbd5d2}
svg.chart .rule line{stroke:#777;stroke-dasharray:4 3}
svg.chart .rule text{fill:#333}
svg.chart .rule-critical line{stroke:#b3261e}
svg.chart .rule-critical text{fill:#b3261e}
svg.chart .rule-target line{stroke:#2e7d32}
svg.chart .trend{fill:none;stroke:#1f3a5f;stroke-width:1.2;opacity:.55}
svg.chart circle.dot{fill:#1f3a5f;stroke:#fff;stroke-width:.8}
svg.chart circle.preliminary{fill:#fff;stroke:#1f3a5f;stroke-width:1.4}
svg.chart circle.given{fill:#8e24aa}
svg.chart .step line{stroke:#1f3a5f;stroke-width:3}
svg.chart .step text{fill:#8e24aa;font-weight:600}
svg.chart .step.clipped line{stroke:#8e24aa}
svg.chart rect.unknown{fill:#9e9e9e;opacity:.25}
svg.chart .event line{stroke:#6d4c41;stroke-dasharray:2 3;stroke-width:1.2}
svg.chart .event text{fill:#6d4c41;font-weight:600}
svg.chart .red-flag line{stroke:#b3261e}
svg.chart .red-flag text{fill:#b3261e}
svg.chart .medicine line{stroke:#00796b}
svg.chart .medicine text{fill:#00796b}
table.data{border-collapse:collapse;margin:.6em 0 1em;font-size:.85em;width:100%}
table.data caption{text-align:left;font-weight:600;padding:.3em 0}
table.data th,table.data td{border:1px solid #d5d5d5;padding:2px 6px;text-align:left;vertical-align:top}
table.data th{background:#f3f5f8}
table.data td.date{white-space:nowrap}
"""
