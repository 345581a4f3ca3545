"""Laboratory interpretation: one small function per analyte, so that every rule reads a result the same way
(CLINICAL-CONTENT 10.2).

The order is the same for every analyte:

1. a result whose unit cannot be read (no unit, and its LOINC property and magnitude do not fit one unit;
   see :func:`plugin.facts.read_unitless`) is *not interpretable*, and is never critical;
2. the lab's own interpretation flag (ObservationInterpretation H, HH, HU, L, LL, LU, A, AA, N) comes first;
3. else the lab's reference range;
4. else the default cut-off from the settings (each with its public source, see :mod:`plugin.settings`).

A critical cut-off (or an LL / HH / AA flag) makes a result critical whatever the lab's range says; an "N"
flag is the lab saying the result is normal, and is taken as such.

Total calcium is corrected for a same-day albumin (Ca + 0.8 x (4.0 - albumin g/dL); StatPearls Hypocalcemia)
before it is graded; the lab's plain L/H flag on the measured value then gives way to the corrected value,
its critical flags do not. A potassium from a haemolysed specimen is not a valid potassium.

Nothing here words anything: :mod:`plugin.cards` turns a :class:`Reading` into text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .facts import LabResult
from .settings import Settings

LOW, HIGH, NORMAL, ABNORMAL = "low", "high", "normal", "abnormal"
NOT_INTERPRETABLE, HAEMOLYSED = "not-interpretable", "haemolysed"

LOW_FLAGS = frozenset({"L", "LU", "<"})
HIGH_FLAGS = frozenset({"H", "HU", ">"})
CRITICAL_FLAGS = {"LL": LOW, "HH": HIGH, "AA": ABNORMAL}

#: the albumin correction of total calcium (StatPearls Hypocalcemia: total calcium falls about 0.8 mg/dL for
#: every 1 g/dL fall of albumin; 4.0 g/dL is the normal albumin the formula corrects to)
CALCIUM_PER_ALBUMIN = 0.8
NORMAL_ALBUMIN_G_DL = 4.0
#: LOINC codes already corrected for albumin: never corrected a second time
ALREADY_CORRECTED = frozenset({"29265-6"})


@dataclass(frozen=True)
class CalciumCorrection:
    """Corrected calcium = measured + 0.8 x (4.0 - albumin), all in mg/dL and g/dL (shown on the card)."""

    measured_mg_dl: float
    albumin: LabResult
    albumin_g_dl: float
    corrected_mg_dl: float


@dataclass(frozen=True)
class Reading:
    """How one result reads.

    :ivar state: low, high, normal, abnormal (flagged A without a direction), not-interpretable, haemolysed.
    :ivar critical: beyond a critical cut-off or flagged LL / HH / AA.
    :ivar basis: what decided it: "flag", "lab range", "default", "corrected" (corrected calcium), or "" when
        nothing could be graded.
    :ivar value: the value graded, in the analyte's canonical unit (the corrected calcium when corrected).
    :ivar cutoff: the default cut-off applied (basis "default"), for the card to show.
    """

    result: LabResult
    state: str
    critical: bool = False
    basis: str = ""
    value: float | None = None
    cutoff: float | None = None
    correction: CalciumCorrection | None = None

    @property
    def low(self) -> bool:
        return self.state == LOW

    @property
    def high(self) -> bool:
        return self.state == HIGH

    @property
    def usable(self) -> bool:
        """A valid result that says something (not unreadable, not a haemolysed specimen)."""
        return self.state not in (NOT_INTERPRETABLE, HAEMOLYSED)


@dataclass(frozen=True)
class Limits:
    """Default cut-offs of one analyte; ``None`` where a direction is not graded."""

    low: float | None = None
    critical_low: float | None = None
    high: float | None = None  # high at or above
    critical_high: float | None = None  # critical at or above


def _direction(value: float | None, result: LabResult, limits: Limits) -> str:
    """low / high / abnormal for a flag without a direction (A, AA), from the range or the defaults."""
    if value is None:
        return ABNORMAL
    low = result.ref_low if result.ref_low is not None else limits.low
    high = result.ref_high if result.ref_high is not None else limits.high
    if low is not None and value < low:
        return LOW
    if high is not None and value > high:
        return HIGH
    return ABNORMAL


def _beyond_critical(value: float | None, state: str, limits: Limits) -> bool:
    if value is None:
        return False
    if state == LOW and limits.critical_low is not None:
        return value < limits.critical_low
    if state == HIGH and limits.critical_high is not None:
        return value >= limits.critical_high
    return False


def grade(result: LabResult, limits: Limits, value: float | None = None, *, soft_flags: bool = True) -> Reading:
    """The reading of ``result`` (``value`` overrides its canonical value, for a corrected calcium).

    :param soft_flags: use the lab's plain L / H / A / N flags; off for a corrected calcium, whose measured
        value the flags were set on.
    """
    if not result.unit_interpretable:
        return Reading(result, NOT_INTERPRETABLE)
    value = result.canonical if value is None else value
    flags = set(result.flags)
    for flag, state in CRITICAL_FLAGS.items():
        if flag in flags:
            state = _direction(value, result, limits) if state == ABNORMAL else state
            return Reading(result, state, critical=True, basis="flag", value=value)
    if soft_flags and flags:
        state = (LOW if flags & LOW_FLAGS else HIGH if flags & HIGH_FLAGS
                 else _direction(value, result, limits) if "A" in flags else NORMAL if "N" in flags else "")
        if state:
            critical = state != NORMAL and _beyond_critical(value, state, limits)
            return Reading(result, state, critical=critical, basis="flag", value=value)
    if value is None:
        return Reading(result, NOT_INTERPRETABLE)
    state, basis, cutoff = NORMAL, "lab range", None
    low = result.ref_low if result.ref_low is not None else limits.low
    if low is not None and value < low:
        state, basis = LOW, ("lab range" if result.ref_low is not None else "default")
        cutoff = None if result.ref_low is not None else limits.low
    elif result.ref_high is not None and value > result.ref_high:
        state = HIGH
    elif result.ref_high is None and limits.high is not None and value >= limits.high:
        state, basis, cutoff = HIGH, "default", limits.high
    elif result.ref_low is None and result.ref_high is None:
        basis = "default"
    return Reading(result, state, critical=_beyond_critical(value, state, limits), basis=basis, value=value,
                   cutoff=cutoff)


# ------------------------------------------------------------------------------------------ analytes


def potassium_reading(result: LabResult, settings: Settings) -> Reading:
    """Low below 3.5, critical below 2.5; high at 5.5, critical at 6.0 mmol/L (defaults); a haemolysed
    specimen is no potassium at all (haemolysis releases red-cell potassium)."""
    if result.haemolysed:
        return Reading(result, HAEMOLYSED, value=result.canonical)
    return grade(result, Limits(settings.hypokalemia_mmol_l, settings.hypokalemia_critical_mmol_l,
                                settings.hyperkalemia_mmol_l, settings.hyperkalemia_critical_mmol_l))


def magnesium_reading(result: LabResult, settings: Settings) -> Reading:
    return grade(result, Limits(settings.hypomagnesemia_mg_dl, settings.hypomagnesemia_critical_mg_dl))


def correct_calcium(calcium: LabResult, albumin: LabResult | None) -> CalciumCorrection | None:
    """The albumin-corrected total calcium, when a readable same-day albumin exists and the result is not
    already a corrected calcium."""
    if calcium.coded.code in ALREADY_CORRECTED or calcium.canonical is None:
        return None
    if albumin is None or albumin.canonical is None:
        return None
    corrected = calcium.canonical + CALCIUM_PER_ALBUMIN * (NORMAL_ALBUMIN_G_DL - albumin.canonical)
    return CalciumCorrection(calcium.canonical, albumin, albumin.canonical, corrected)


def calcium_reading(result: LabResult, albumin: LabResult | None, settings: Settings) -> Reading:
    """Total calcium, corrected for a same-day albumin first: low below 8.5, critical below 6.0 mg/dL."""
    limits = Limits(settings.hypocalcemia_mg_dl, settings.hypocalcemia_critical_mg_dl)
    correction = correct_calcium(result, albumin) if result.unit_interpretable else None
    if correction is None:
        return grade(result, limits)
    reading = grade(result, limits, correction.corrected_mg_dl, soft_flags=False)
    basis = reading.basis if reading.basis == "flag" else "corrected"
    cutoff = limits.low if reading.low and result.ref_low is None else reading.cutoff
    return Reading(result, reading.state, reading.critical, basis, reading.value, cutoff, correction)


def ionized_calcium_reading(result: LabResult, settings: Settings) -> Reading:
    return grade(result, Limits(settings.ionized_hypocalcemia_mmol_l, settings.ionized_hypocalcemia_critical_mmol_l))


def phosphate_reading(result: LabResult, settings: Settings) -> Reading:
    return grade(result, Limits(settings.hypophosphatemia_mg_dl, settings.hypophosphatemia_critical_mg_dl))


def sodium_reading(result: LabResult, settings: Settings) -> Reading:
    return grade(result, Limits(settings.hyponatremia_mmol_l, settings.hyponatremia_critical_mmol_l))


def ck_elevated(result: LabResult, uln: float) -> bool | None:
    """Is the CK above the limit? The lab's flag first (a CK flagged H is elevated even below the default
    ULN); ``None`` when it cannot be read."""
    if not result.unit_interpretable or result.canonical is None:
        return None
    flags = set(result.flags)
    if flags & (HIGH_FLAGS | {"HH"}):
        return True
    if flags & (LOW_FLAGS | {"LL", "N"}):
        return False
    return result.canonical > uln
