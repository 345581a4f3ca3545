"""The corticosteroid timeline of one patient: which dose is current for each ingredient, what a draft
order proposes, and which pulses were given recently (CLINICAL-CONTENT.md 10.1, which changes 4.3).

Every MedicationRequest, MedicationStatement, MedicationAdministration and draft order is grouped by
ingredient (RxNorm ingredient RxCUI). Records of one ingredient describe one therapy, so they are never
added up: the ingredient's current daily dose comes from ONE record, in this order of preference

1. the active MedicationRequest whose dosage applies today (the most recently authored, if several);
2. else the most recent current MedicationStatement whose dosage applies today;
3. else the administrations of the last calendar day with one, if the latest was given in the last
   24 hours (or is in progress): the day's doses added up.

Different ingredients are still added up as prednisone equivalents. A draft order for an ingredient is a
proposed change ("current 40 -> proposed 10 mg/day"): the dose bands are judged on the proposed dose.

Dosage lines are placed on the calendar first (:func:`schedule`): lines with ``timing.repeat``
``boundsDuration`` or ``count`` are consecutive steps, in ``Dosage.sequence`` order (lines sharing a
sequence number run together), starting at ``authoredOn`` (``effectivePeriod.start`` for a statement; now,
for a draft without one); ``count`` doses at the line's frequency bound a course; a line with
``boundsPeriod`` counts only inside it. A record whose every line has an end that has passed has ended,
whatever its status says. A day with at least the pulse dose (prednisone-equivalent) is a pulse; one that
ended within the look-back is reported with its dates.

Pure functions of :class:`plugin.facts.MedicationFact` values and ``now``; nothing here raises for bad
data: an unreadable or out-of-range line (a bound of 3,000,000 days, a start in year 9999) is skipped and
named in :attr:`Timeline.notes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from . import medications
from .fhirdata import number_of, out_of_range, parse_datetime

#: a dosage bound longer than this is a data error (the line is skipped with a note)
MAX_BOUND_DAYS = 36_500
#: UCUM (and common word) units of ``boundsDuration`` -> days
_DAYS_PER_UNIT = {
    "s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0,
    "hour": 1 / 24, "hours": 1 / 24, "day": 1.0, "days": 1.0, "week": 7.0, "weeks": 7.0, "month": 30.0,
    "months": 30.0, "year": 365.0, "years": 365.0,
}
_TICK = timedelta(microseconds=1)
_RANGE_ERRORS = (OverflowError, ValueError)  # date arithmetic past year 1 or 9999


# ---------------------------------------------------------------------------------------- the calendar


@dataclass(frozen=True, eq=False)
class Line:
    """One dosage line of a record, placed on the calendar."""

    index: int  # 1-based position in the record
    dosage: Mapping[str, Any]
    start: datetime | None  # None: from whenever the record began
    end: datetime | None  # inclusive; None: open-ended
    last_dose: datetime | None  # when the last dose of a bounded line falls
    step: int | None = None  # position among consecutive steps (boundsDuration / count)
    steps: int = 0

    def applies(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (self.end is None or moment <= self.end)


def _hands_over(line: Line, later: Line) -> bool:
    """Does ``line`` end within a day of ``later``'s start, ``later`` having started after it (a step change)?"""
    if later is line or later.start is None or line.end is None:
        return False
    if line.start is not None and later.start <= line.start:
        return False
    return timedelta(0) <= line.end - later.start <= timedelta(days=1)


@dataclass(frozen=True, eq=False)
class Record:
    """A medication record with its dosage lines on the calendar."""

    medication: Any  # plugin.facts.MedicationFact
    lines: tuple[Line, ...]
    notes: tuple[str, ...]

    def lines_at(self, moment: datetime) -> tuple[Line, ...]:
        applying = [line for line in self.lines if line.applies(moment)]
        if len(applying) < 2:
            return tuple(applying)
        # Consecutive steps written with date-only bounds touch on their changeover day (step 1 ends on the
        # 15th, step 2 starts on the 15th): the next step takes over that day, the two doses are never added.
        # Lines that start together (a morning and an evening dose) or truly overlap still both apply.
        return tuple(line for line in applying if not any(_hands_over(line, later) for later in applying))

    @property
    def ended_at(self) -> datetime | None:
        """The end of the last line, when every line has an end; ``None`` if any is open-ended."""
        if not self.lines or any(line.end is None for line in self.lines):
            return None
        return max(line.end for line in self.lines if line.end is not None)

    @property
    def last_dose_at(self) -> datetime | None:
        """When the last dose of an ended record fell (``None`` while any line is open-ended)."""
        if self.ended_at is None:
            return None
        return max((line.last_dose or line.end) for line in self.lines)  # type: ignore[type-var]

    @property
    def where(self) -> str:
        return f"{self.medication.resource_type}/{self.medication.resource_id}"


def _sequence(dosage: Mapping[str, Any]) -> float | None:
    return number_of(dosage.get("sequence"))


def _repeat(dosage: Mapping[str, Any]) -> Mapping[str, Any]:
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
    return repeat if isinstance(repeat, Mapping) else {}


def _is_step(dosage: Mapping[str, Any]) -> bool:
    repeat = _repeat(dosage)
    return "boundsDuration" in repeat or "count" in repeat


def _bound_days(duration: Any) -> tuple[float | None, str | None]:
    """Days of a ``boundsDuration`` (None if absent) and the problem if it cannot be read."""
    if duration is None:
        return None, None
    if not isinstance(duration, Mapping):
        return None, "boundsDuration is not a Duration"
    value = number_of(duration.get("value"))
    unit = next((str(duration[k]).strip().lower() for k in ("code", "unit") if isinstance(duration.get(k), str)),
                "d")
    if out_of_range(duration.get("value")):
        return None, "boundsDuration is out of range"
    if value is None or value <= 0 or unit not in _DAYS_PER_UNIT:
        return None, "boundsDuration has no usable value and unit"
    days = value * _DAYS_PER_UNIT[unit]
    if days > MAX_BOUND_DAYS:
        return None, f"boundsDuration of {value:g} {unit} is out of range"
    return days, None


def _count_days(count: Any, per_day: float) -> tuple[float | None, float | None, str | None]:
    """(number of doses, days they take) of ``timing.repeat.count``, and the problem if unreadable."""
    if count is None:
        return None, None, None
    doses = number_of(count)
    if out_of_range(count):
        return None, None, "count is out of range"
    if doses is None or doses < 1 or doses != int(doses):
        return None, None, "count is not a whole number of doses"
    days = doses / per_day
    if days > MAX_BOUND_DAYS:
        return None, None, f"count of {doses:g} doses is out of range"
    return doses, days, None


def _anchor(medication: Any, now: datetime) -> datetime | None:
    """Where consecutive steps start: authoredOn (a request), effective start (a statement); now for a
    draft that has neither."""
    if medication.resource_type == "MedicationRequest":
        anchor = medication.authored_on
    else:
        anchor = medication.effective_start
    if anchor is None and medication.from_draft_orders:
        anchor = now
    return anchor


def schedule(medication: Any, now: datetime) -> Record:
    """Place the dosage lines of one record on the calendar (see the module docstring)."""
    where = f"{medication.resource_type}/{medication.resource_id}"
    notes: list[str] = []
    dosages = [d for d in medication.dosages if isinstance(d, Mapping)]
    stepped = any(_is_step(d) for d in dosages)
    anchor = _anchor(medication, now)
    if stepped and anchor is None:
        notes.append(f"{where}: dosage steps without a start date (authoredOn): the first step is taken as today's")
        anchor = now
    numbered = list(enumerate(dosages, 1))
    if numbered and all(_sequence(d) is not None for _, d in numbered):
        groups: dict[float, list[tuple[int, Mapping[str, Any]]]] = {}
        for index, dosage in numbered:
            groups.setdefault(_sequence(dosage), []).append((index, dosage))  # type: ignore[arg-type]
        ordered = [groups[key] for key in sorted(groups)]
    else:
        ordered = [[item] for item in numbered]
    step_groups = [g for g in ordered if any(_is_step(d) for _, d in g)]
    cursor = anchor if stepped else None
    lines: list[Line] = []
    for group in ordered:
        ends: list[datetime] = []
        step = step_groups.index(group) + 1 if group in step_groups else None
        for index, dosage in group:
            try:
                line, problem = _place(index, dosage, cursor, stepped)
            except _RANGE_ERRORS:
                line, problem = None, "its bounds are out of range"
            if line is None:
                notes.append(f"{where}: dosage line {index} skipped: {problem}")
                continue
            if step is not None:
                line = Line(line.index, line.dosage, line.start, line.end, line.last_dose, step, len(step_groups))
            lines.append(line)
            if line.end is not None:
                ends.append(line.end)
        if stepped and ends and cursor is not None:
            try:
                cursor = max(max(ends) + _TICK, cursor)
            except _RANGE_ERRORS:
                cursor = None  # nothing can follow a step that ends past year 9999
    return Record(medication, tuple(lines), tuple(notes))


def _place(index: int, dosage: Mapping[str, Any], cursor: datetime | None,
           stepped: bool) -> tuple[Line | None, str | None]:
    repeat = _repeat(dosage)
    per_day = medications.doses_per_day(dosage.get("timing")) or 1.0  # "x 3 days" often omits frequency
    if not (math.isfinite(per_day) and per_day > 0):
        per_day = 1.0
    duration, problem = _bound_days(repeat.get("boundsDuration"))
    if problem:
        return None, problem
    doses, count_days, problem = _count_days(repeat.get("count"), per_day)
    if problem:
        return None, problem
    period = repeat.get("boundsPeriod")
    course_days = min((d for d in (duration, count_days) if d is not None), default=None)
    start: datetime | None
    end: datetime | None
    if isinstance(period, Mapping) and (period.get("start") is not None or period.get("end") is not None):
        start = parse_datetime(period.get("start")) if period.get("start") is not None else cursor
        end = medications.end_instant(period.get("end")) if period.get("end") is not None else None
        if (period.get("start") is not None and start is None) or (period.get("end") is not None and end is None):
            return None, "boundsPeriod has a date that cannot be read"
        if end is None and start is not None and course_days is not None:
            end = start + timedelta(days=course_days) - _TICK
    elif course_days is not None:
        start = cursor
        end = None if start is None else start + timedelta(days=course_days) - _TICK
    else:
        start, end = (cursor if stepped else None), None
    if start is not None and end is not None and end < start:
        return None, "boundsPeriod ends before it starts"
    last_dose = end
    if start is not None and end is not None and course_days is not None:
        count = doses if doses is not None else max(1.0, math.floor(course_days * per_day + 1e-9))
        last_dose = min(end, start + timedelta(days=(count - 1) / per_day))
    return Line(index, dosage, start, end, last_dose), None


# ------------------------------------------------------------------------------------------ the doses


@dataclass(frozen=True, eq=False)
class Pulse:
    """Days with at least the pulse dose of one ingredient (prednisone-equivalent per day)."""

    name: str  # ingredient
    medication: Any  # the record it comes from (plugin.facts.MedicationFact)
    first: datetime | None
    last: datetime | None  # the last dose given (or planned, while ongoing)
    mg_per_day: float
    pred_eq_per_day: float
    ongoing: bool  # current today (or, with ``proposed``, being ordered)
    proposed: bool = False
    arithmetic: str = ""
    administrations: int = 0  # how many MedicationAdministrations it was read from


@dataclass(frozen=True, eq=False)
class Course:
    """One ingredient's place on the timeline: the record its current dose comes from, a proposed change,
    and the records that were read but not added."""

    key: str
    name: str  # ingredient name, lower case
    chosen: Record | None  # the one record the current dose comes from (None: administrations, or none)
    current: Any  # plugin.medications.DoseResult | None (None: nothing current)
    administrations: tuple[Any, ...]  # the administrations the current dose comes from
    draft: Any  # plugin.facts.MedicationFact | None: the draft order proposing a change
    proposed: Any  # plugin.medications.DoseResult | None
    also: tuple[Record, ...]  # other records in force for this ingredient: same therapy, not added
    ended: tuple[tuple[Record, datetime], ...]  # (record, last dose): status says current, every bound passed
    lines: tuple[Line, ...]  # the chosen record's lines in force today (a taper step)
    proposed_lines: tuple[Line, ...] = ()

    @property
    def dose(self) -> Any:
        """The dose the bands are judged on: the proposed one when a draft proposes a change."""
        return self.proposed if self.draft is not None else self.current

    @property
    def medication(self) -> Any:
        """The record of :attr:`dose` (the draft, the chosen record, or the latest administration)."""
        if self.draft is not None:
            return self.draft
        if self.chosen is not None:
            return self.chosen.medication
        return self.administrations[-1] if self.administrations else None

    @property
    def is_change(self) -> bool:
        return self.draft is not None and self.current is not None

    @property
    def pred_eq_per_day(self) -> float | None:
        dose = self.dose
        return dose.pred_eq_per_day if dose is not None and dose.computable else None


@dataclass(frozen=True, eq=False)
class Timeline:
    courses: tuple[Course, ...]
    pulses: tuple[Pulse, ...]  # ongoing first, then the most recent
    notes: tuple[str, ...]

    @property
    def in_force(self) -> tuple[Course, ...]:
        """Ingredients with a current or proposed dose."""
        return tuple(c for c in self.courses if c.dose is not None)

    @property
    def counted(self) -> tuple[Course, ...]:
        return tuple(c for c in self.in_force if c.pred_eq_per_day is not None)

    @property
    def total(self) -> float:
        """Prednisone-equivalent mg/day, summed over ingredients (one dose each)."""
        return sum(float(c.pred_eq_per_day or 0.0) for c in self.counted)


def ingredient_key(medication: Any) -> tuple[str, str]:
    """(grouping key, ingredient name) of a record: the corticosteroid ingredient's RxCUI, else its name."""
    ingredient = medications.steroid_ingredient(medication.info)
    if ingredient is None:
        return medication.name.lower(), medication.name.lower()
    return (ingredient.rxcui or ingredient.name.lower()), ingredient.name.lower()


def _dose(lines: Sequence[Line], medication: Any, notes: Sequence[str]) -> Any:
    if lines:
        return medications.dose_of_lines([line.dosage for line in lines], medication.info)
    if medication.dosages:  # there were lines, but none could be read
        return medications.DoseResult(False, reason="no readable dosage line (" + "; ".join(notes)[:200] + ")")
    return medications.dose_of_lines([], medication.info)


def _day_dose(dose: Any) -> float:
    """The largest prednisone-equivalent given on one day: the daily total, or one administration
    (alternate-day dosing gives the whole dose on its day)."""
    if dose is None or not dose.computable:
        return 0.0
    return max(float(dose.pred_eq_per_day or 0.0), float(dose.pred_eq_per_administration or 0.0))


def _in_force(record: Record, now: datetime) -> tuple[bool, tuple[Line, ...]]:
    """Is this (non-draft) record a current dose today, and which of its lines apply."""
    if not record.medication.current:
        return False, ()
    if not record.lines:
        return True, ()  # no readable dosage: current, dose not computable
    applying = record.lines_at(now)
    return bool(applying), applying


def _proposed_lines(record: Record, now: datetime) -> tuple[Line, ...]:
    """The lines of a draft that apply when it starts: now, else at its first future start."""
    applying = record.lines_at(now)
    if applying:
        return applying
    future = sorted(line.start for line in record.lines if line.start is not None and line.start > now)
    if future:
        return record.lines_at(future[0])
    return tuple(line for line in record.lines if line.start is None and line.end is None) or record.lines[:1]


def _day(moment: datetime) -> date:
    return moment.date()


def _administered(medications_given: Sequence[Any]) -> list[tuple[datetime, float | None, str, Any]]:
    """(when, mg, arithmetic, record) of each administration, oldest first."""
    out = []
    for given in medications_given:
        when = given.effective_end or given.effective_start
        if when is None:
            continue
        hours = None
        if given.effective_start is not None and given.effective_end is not None:
            hours = max(0.0, (given.effective_end - given.effective_start) / timedelta(hours=1))
        mg, text = medications.administered_mg(given.dosages[0] if given.dosages else None, given.info, hours)
        out.append((when, mg, text, given))
    out.sort(key=lambda item: item[0])
    return out


def _administration_dose(day: date, items: Sequence[tuple[datetime, float | None, str, Any]], name: str,
                         info: Any) -> Any:
    on_day = [item for item in items if _day(item[0]) == day]
    if any(mg is None for _, mg, _, _ in on_day):
        problem = next(text for _, mg, text, _ in on_day if mg is None)
        return medications.DoseResult(False, reason=f"an administration on {day.isoformat()}: {problem}")
    total = sum(float(mg or 0.0) for _, mg, _, _ in on_day)
    largest = max(float(mg or 0.0) for _, mg, _, _ in on_day)
    parts = " + ".join(text for _, _, text, _ in on_day)
    arithmetic = (f"{name}: {parts} given on {day.isoformat()} ({len(on_day)} administration"
                  f"{'s' if len(on_day) != 1 else ''}) = {medications.fmt(total)} mg/day")
    return medications.equivalent_of(total, largest, info, arithmetic)


def _administration_pulses(name: str, items: Sequence[tuple[datetime, float | None, str, Any]], now: datetime,
                           pulse_mg: float) -> list[Pulse]:
    days = sorted({_day(when) for when, _, _, _ in items if when <= now + timedelta(hours=1)})
    pulses: list[Pulse] = []
    for day in days:
        info = next(item[3].info for item in items if _day(item[0]) == day)
        dose = _administration_dose(day, items, name, info)
        if _day_dose(dose) < pulse_mg:
            continue
        given = [item for item in items if _day(item[0]) == day]
        previous = pulses[-1] if pulses else None
        if previous is not None and previous.last is not None and (day - _day(previous.last)).days <= 1:
            pulses[-1] = Pulse(name, previous.medication, previous.first, given[-1][0],
                               max(previous.mg_per_day, dose.mg_per_day), max(previous.pred_eq_per_day,
                                                                              dose.pred_eq_per_day),
                               False, False, previous.arithmetic, previous.administrations + len(given))
        else:
            pulses.append(Pulse(name, given[0][3], given[0][0], given[-1][0], dose.mg_per_day,
                                dose.pred_eq_per_day, False, False, dose.arithmetic, len(given)))
    return pulses


def _record_pulses(record: Record, name: str, now: datetime, pulse_mg: float,
                   skip: Iterable[Line]) -> list[Pulse]:
    """Pulse lines of a record that started by now (those in force today are the current dose instead)."""
    skipped = set(map(id, skip))
    med = record.medication
    pulses = []
    for line in record.lines:
        if id(line) in skipped:
            continue
        start = line.start or med.started
        if start is not None and start > now:
            continue
        dose = medications.dose_of_lines([line.dosage], med.info)
        if _day_dose(dose) < pulse_mg:
            continue
        last = line.last_dose or line.end or med.effective_end or med.validity_end or start
        if last is not None and last > now:
            last = now  # a course stopped early (its status says so): its last dose is not after today
        pulses.append(Pulse(name, med, start, last, dose.mg_per_day, dose.pred_eq_per_day, False, False,
                            dose.arithmetic))
    return pulses


def _start_key(pulse: Pulse) -> float:
    moment = pulse.first or pulse.last
    return moment.timestamp() if moment is not None else float("-inf")


def _merge(pulses: list[Pulse]) -> list[Pulse]:
    """One pulse per run of days: an order and its administrations describe one pulse (the administrations
    are what was given, so their record is named)."""
    merged: list[Pulse] = []
    for pulse in sorted(pulses, key=_start_key):
        previous = merged[-1] if merged else None
        if (previous is not None and previous.last is not None and pulse.first is not None
                and previous.proposed == pulse.proposed
                and (_day(pulse.first) - _day(previous.last)).days <= 1):  # no date arithmetic past 9999
            keep = pulse if pulse.administrations > previous.administrations else previous
            merged[-1] = Pulse(
                keep.name, keep.medication, previous.first or pulse.first,
                max(previous.last, pulse.last or previous.last), max(previous.mg_per_day, pulse.mg_per_day),
                max(previous.pred_eq_per_day, pulse.pred_eq_per_day), previous.ongoing or pulse.ongoing,
                previous.proposed, keep.arithmetic, previous.administrations + pulse.administrations)
        else:
            merged.append(pulse)
    return merged


def _current_pulse(name: str, dose: Any, medication: Any, lines: Sequence[Line],
                   administrations: Sequence[Any], proposed: bool) -> Pulse:
    first = min((line.start for line in lines if line.start is not None), default=None)
    last = max((line.last_dose for line in lines if line.last_dose is not None), default=None)
    if administrations:
        given = [a.effective_end or a.effective_start for a in administrations]
        first, last = min(given), max(given)
    first = first or (medication.started if medication is not None else None)
    return Pulse(name, medication, first, last, dose.mg_per_day, dose.pred_eq_per_day, True, proposed,
                 dose.arithmetic, len(administrations))


def build_timeline(meds: Iterable[Any], now: datetime, *, pulse_mg: float, pulse_days: float) -> Timeline:
    """The timeline of these corticosteroid records (see the module docstring).

    :param pulse_mg: prednisone-equivalent mg in one day that make a pulse
    :param pulse_days: an ended pulse whose last dose is at most this many days old is reported
    """
    by_key: dict[str, list[Any]] = {}
    names: dict[str, str] = {}
    for med in meds:
        key, name = ingredient_key(med)
        by_key.setdefault(key, []).append(med)
        names.setdefault(key, name)
    courses: list[Course] = []
    pulses: list[Pulse] = []
    notes: list[str] = []
    lookback = timedelta(days=pulse_days)
    for key, group in by_key.items():
        name = names[key]
        records = [schedule(m, now) for m in group if m.resource_type != "MedicationAdministration"]
        for record in records:
            notes.extend(record.notes)
        stored = [r for r in records if not r.medication.from_draft_orders]
        drafts = [r for r in records if r.medication.from_draft_orders]
        given = [m for m in group if m.resource_type == "MedicationAdministration"]

        in_force: list[tuple[Record, tuple[Line, ...]]] = []
        ended: list[tuple[Record, datetime]] = []
        for record in stored:
            current, applying = _in_force(record, now)
            if current:
                in_force.append((record, applying))
            elif record.medication.current and record.ended_at is not None and record.ended_at < now:
                ended.append((record, record.last_dose_at or record.ended_at))

        def recency(item: tuple[Record, tuple[Line, ...]]) -> float:
            med = item[0].medication
            moment = (med.authored_on if med.resource_type == "MedicationRequest"
                      else med.asserted or med.effective_start)
            return moment.timestamp() if moment is not None else float("-inf")

        requests = sorted((i for i in in_force if i[0].medication.resource_type == "MedicationRequest"),
                          key=recency)
        statements = sorted((i for i in in_force if i[0].medication.resource_type == "MedicationStatement"),
                            key=recency)
        chosen_item = requests[-1] if requests else statements[-1] if statements else None
        chosen: Record | None = chosen_item[0] if chosen_item else None
        lines = chosen_item[1] if chosen_item else ()
        current = _dose(lines, chosen.medication, chosen.notes) if chosen is not None else None

        items = _administered(given)
        administrations: tuple[Any, ...] = ()
        if chosen is None and items:
            latest_when, _, _, latest = items[-1]
            if latest.status == "in-progress" or timedelta(0) <= now - latest_when <= timedelta(
                    hours=medications.ADMINISTRATION_CURRENT_HOURS) or (latest_when > now and latest.current):
                day = _day(latest_when)
                current = _administration_dose(day, items, name, latest.info)
                administrations = tuple(item[3] for item in items if _day(item[0]) == day)

        draft = drafts[-1] if drafts else None
        proposed_lines = _proposed_lines(draft, now) if draft is not None else ()
        proposed = _dose(proposed_lines, draft.medication, draft.notes) if draft is not None else None
        also = tuple(r for r, _ in in_force if r is not chosen)
        course = Course(key, name, chosen, current, administrations, draft.medication if draft else None,
                        proposed, also, tuple(ended), lines, proposed_lines)
        courses.append(course)

        found = _administration_pulses(name, items, now, pulse_mg)
        for record in stored:
            found.extend(_record_pulses(record, name, now, pulse_mg, lines if record is chosen else ()))
        found = [p for p in found if p.last is not None and now - p.last <= lookback]
        if _day_dose(current) >= pulse_mg:
            medication = chosen.medication if chosen is not None else administrations[-1]
            found.append(_current_pulse(name, current, medication, lines, administrations, False))
        if draft is not None and _day_dose(proposed) >= pulse_mg:
            found.append(_current_pulse(name, proposed, draft.medication, proposed_lines, (), True))
        pulses.extend(_merge(found))
    pulses.sort(key=lambda p: (p.ongoing, p.last.timestamp() if p.last else float("-inf")), reverse=True)
    return Timeline(tuple(courses), tuple(pulses), tuple(notes))
