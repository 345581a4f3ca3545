"""Medication facts from raw FHIR: which ingredient and strength a MedicationRequest, MedicationStatement
or MedicationAdministration is about, whether it is current and systemic, and the daily corticosteroid
dose of its dosage lines in prednisone equivalents (CLINICAL-CONTENT sections 3 and 4; which record's
lines count today is :mod:`plugin.timeline`'s business).

Real records carry product codes (RxNorm SCD/SBD/packs), not ingredients, so a product is identified
(in this order) from the checked-in table ``data/rxnorm-products.json``, from the RxNorm SCD name
grammar of a coding's display or the text ("prednisone 20 MG Oral Tablet", tall-man "predniSONE"
included), or from an ingredient-level code. Nothing is downloaded.

Dose arithmetic follows the CDC opioid MME pattern (OMTK): doses per day from ``timing`` times dose per
administration from ``doseAndRate``, multiplied by one pinned equivalence table.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from . import terminology
from .fhirdata import as_list, number_of, text_of

PRODUCT_TABLE = Path(__file__).resolve().parent / "data" / "rxnorm-products.json"

#: mg of prednisone per mg of ingredient (oral/IV anti-inflammatory potency). One table, pinned.
PREDNISONE_EQUIVALENCE: Mapping[str, float] = {
    # Written as 5 mg prednisone / equivalent mg, so dexamethasone 6 mg is exactly 40 mg.
    "prednisone": 1.0, "8640": 1.0,
    "prednisolone": 1.0, "8638": 1.0,
    "methylprednisolone": 5 / 4, "6902": 5 / 4,
    "triamcinolone": 5 / 4, "10759": 5 / 4,
    "hydrocortisone": 5 / 20, "5492": 5 / 20,
    "cortisone": 5 / 25, "2878": 5 / 25,
    "dexamethasone": 5 / 0.75, "3264": 5 / 0.75,
    "betamethasone": 5 / 0.75, "1514": 5 / 0.75,
    "deflazacort": 5 / 6, "22396": 5 / 6,
    "meprednisone": 5 / 4, "29523": 5 / 4,
    # Reported on cards but never added up: a mineralocorticoid, and a steroid with high first-pass.
    "fludrocortisone": 0.0, "4452": 0.0,
    "budesonide": 0.0, "19831": 0.0,
}
EQUIVALENCE_SOURCE = (
    "5 mg prednisone = 5 mg prednisolone = 4 mg methylprednisolone or triamcinolone = 20 mg hydrocortisone = "
    "25 mg cortisone = 0.75 mg dexamethasone or betamethasone = 6 mg deflazacort (BNF / gpnotebook "
    "corticosteroid equivalence table; globalrph converter after Meikle & Tyler 1977). Oral/IV use only; "
    "fludrocortisone and budesonide excluded."
)

_ROUTE_BY_SNOMED = {
    "26643006": "systemic-oral", "47625008": "systemic-parenteral", "78421000": "systemic-parenteral",
    "34206005": "systemic-parenteral", "6064005": "topical", "45890007": "topical", "54485002": "ophthalmic",
    "447694001": "inhaled", "18679011000001101": "inhaled", "46713006": "nasal", "10547007": "otic",
    "12130007": "depot", "37161004": "other",
}
# Dose-form words of RxNorm names -> route group. Order matters: the first match wins.
_FORM_ROUTES = (
    (re.compile(r"ophthalmic|eye", re.I), "ophthalmic"),
    (re.compile(r"otic|ear\b", re.I), "otic"),
    (re.compile(r"nasal", re.I), "nasal"),
    (re.compile(r"inhal|actuat|nebuliz", re.I), "inhaled"),
    (re.compile(r"topical|cream|ointment|lotion|gel\b|foam|shampoo|transdermal|paste|rectal|enema|"
                r"suppositor", re.I), "topical"),
    (re.compile(r"injectable suspension|intra-?articular|depot", re.I), "depot"),
    (re.compile(r"inject|intravenous|infusion|prefilled syringe|cartridge", re.I), "systemic-parenteral"),
    (re.compile(r"oral|tablet|capsule|elixir|syrup|solution|suspension|chewable|disintegrating", re.I),
     "systemic-oral"),
)
# "prednisone 20 MG Oral Tablet", "methylprednisolone sodium succinate 1000 MG Injection",
# "dexamethasone 1 MG/ML Ophthalmic Suspension", "{21 (predniSONE 5 MG Oral Tablet) } Pack"
_SCD = re.compile(
    r"(?P<ingredient>[A-Za-z][A-Za-z ,\-]*?)\s+(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>MG|MCG|G|UG|MEQ)"
    r"(?:/(?P<per_value>\d+(?:\.\d+)?)?\s*(?P<per_unit>ML|ACTUAT))?\s+"
    r"(?P<form>(?:\d+\s*HR\s+)?[A-Za-z][A-Za-z \-]*)", re.I)  # "24 HR Extended Release Oral Capsule"
_SALT_WORDS = re.compile(r"\b(sodium|succinate|phosphate|acetate|hydrochloride|hcl|acetonide|"
                         r"dipropionate|valerate|butyrate|hemisuccinate|tebutate|calcium|magnesium|"
                         r"potassium|maleate)\b", re.I)
_UNIT_TO_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "µg": 0.001, "ng": 1e-6}
#: units meaning "one unit of the product" (multiply by its strength): UCUM annotations ({pill} is what the
#: public CDS Hooks Sandbox sends, with no ``unit``), UCUM unity "1", and the words EHRs write
_COUNT_UNITS = frozenset({
    "", "1", "{pill}", "{pills}", "pill", "pills", "{tbl}", "{tab}", "{tabs}", "{tablet}", "{tablets}", "tab", "tabs",
    "tab(s)", "tablet", "tablets", "tablet(s)", "{cap}", "{caps}", "{capsule}", "{capsules}", "cap", "caps",
    "cap(s)", "capsule", "capsules", "capsule(s)", "each", "ea", "{each}", "dose", "{dose}", "unit"})
#: the longest text read as a medicine name: RxNorm's longest names (multi-ingredient packs) are a few hundred
#: characters, and the name grammar costs time quadratic in the length, so a longer text names nothing
MAX_NAME_LENGTH = 500
#: a daily dose above this many mg (100 g) is a data error, not a prescription: the line is skipped
MAX_MG_PER_DAY = 100_000.0
_GTS = {"QD": 1, "QOD": 0.5, "BID": 2, "TID": 3, "QID": 4, "AM": 1, "PM": 1, "QAM": 1, "QPM": 1, "QHS": 1,
        "Q4H": 6, "Q6H": 4, "Q8H": 3, "Q12H": 2, "Q24H": 1, "WK": 1 / 7}
_PERIOD_PER_DAY = {"s": 86400.0, "min": 1440.0, "h": 24.0, "d": 1.0, "wk": 1 / 7, "mo": 1 / 30, "a": 1 / 365}


@dataclass(frozen=True)
class Ingredient:
    rxcui: str | None
    name: str
    strength_mg: float | None = None
    per_unit: str | None = None  # "TABLET", "ML", "ACTUAT" ...


@dataclass(frozen=True)
class MedicationInfo:
    display: str
    ingredients: tuple[Ingredient, ...]
    route_group: str = "unknown"
    dose_form: str | None = None
    product_rxcui: str | None = None
    source: str = "unknown"  # table | name-grammar | ingredient-code | unknown


@dataclass(frozen=True)
class DoseResult:
    computable: bool
    mg_per_day: float | None = None
    mg_per_administration: float | None = None
    pred_eq_per_day: float | None = None
    pred_eq_per_administration: float | None = None
    arithmetic: str = ""
    reason: str | None = None


# --- identification ---------------------------------------------------------------------------------

@functools.cache
def _products() -> dict[str, dict[str, Any]]:
    table = json.loads(PRODUCT_TABLE.read_text())
    return {code: entry for code, entry in table.items() if not code.startswith("_")}


@functools.cache
def _ingredient_names() -> dict[str, str]:
    """ingredient name (lower case) -> RxCUI, from the drug-class value sets' displays."""
    names: dict[str, str] = {}
    for document in terminology.all_valuesets().values():
        for include in document.get("compose", {}).get("include", []):
            if terminology.normalize_system(include.get("system")) != terminology.RXNORM:
                continue
            for concept in include.get("concept", []):
                names[concept["display"].lower()] = concept["code"]
    return names


@functools.lru_cache(maxsize=4096)  # product names repeat across records and calls
def _ingredient_by_name(text: str) -> tuple[str | None, str]:
    if len(text) > MAX_NAME_LENGTH:
        return None, text[:MAX_NAME_LENGTH].lower()
    name = _SALT_WORDS.sub(" ", text.lower())
    name = re.sub(r"\s+", " ", name).strip(" ,-")
    names = _ingredient_names()
    if name in names:
        return names[name], name
    for known, rxcui in names.items():  # "hydrocortisone butyrate" -> hydrocortisone
        if re.search(rf"\b{re.escape(known)}\b", name):
            return rxcui, known
    return None, name


@functools.lru_cache(maxsize=4096)  # product names repeat across records and calls
def route_of_form(form: str | None) -> str:
    if form:
        for pattern, group in _FORM_ROUTES:
            if pattern.search(form):
                return group
    return "unknown"


@functools.lru_cache(maxsize=4096)  # product names repeat across records and calls
def parse_product_name(text: str) -> MedicationInfo | None:
    """Ingredient, strength and dose form from an RxNorm SCD/SBD/pack name; ``None`` if it isn't one."""
    if not isinstance(text, str) or len(text) > MAX_NAME_LENGTH:
        return None
    match = _SCD.search(text)
    if not match:
        return None
    rxcui, name = _ingredient_by_name(match["ingredient"])
    value = float(match["value"]) * _UNIT_TO_MG.get(match["unit"].lower(), 1.0)
    if match["unit"].upper() == "MEQ":
        return None
    form = re.sub(r"\s*\[.*$", "", match["form"]).strip()
    form = re.sub(r"\)\s*\}?\s*pack$", "", form, flags=re.I).strip(" )}")
    per_unit = (match["per_unit"] or "").upper() or ("TABLET" if re.search(r"tablet", form, re.I) else
                                                     "CAPSULE" if re.search(r"capsule", form, re.I) else None)
    per_value = float(match["per_value"]) if match["per_value"] else 1.0
    if not (math.isfinite(value) and per_value > 0):  # "20 MG/0 ML", a 400-digit strength: no strength
        return None
    strength = value / per_value
    return MedicationInfo(display=text.strip(), ingredients=(Ingredient(rxcui, name, strength, per_unit),),
                          route_group=route_of_form(form), dose_form=form, source="name-grammar")


def _table_strength(strength: Any) -> tuple[float | None, str | None]:
    """mg per unit and the unit ("TABLET", "ML") of a table strength ``{value, unit, per: {value, unit}}``."""
    if not isinstance(strength, dict):
        return None, None
    if "mg" in strength:  # compact form {"mg": 20, "per": "TABLET"}
        return number_of(strength["mg"]), strength.get("per")
    value = number_of(strength.get("value"))
    factor = _UNIT_TO_MG.get(str(strength.get("unit", "mg")).lower())
    per = strength.get("per") if isinstance(strength.get("per"), dict) else {}
    per_value = number_of(per.get("value")) or 1.0
    if value is None or factor is None:
        return None, per.get("unit")
    return value * factor / per_value, per.get("unit")


def _from_table(code: str, display: str) -> MedicationInfo | None:
    entry = _products().get(code)
    if entry is None:
        return None
    ingredients = tuple(Ingredient(i.get("rxcui"), i["name"], *_table_strength(i.get("strength")))
                        for i in entry["ingredients"])
    return MedicationInfo(display=display or entry["name"], ingredients=ingredients,
                          route_group=entry.get("route_group") or "unknown", dose_form=entry.get("dose_form"),
                          product_rxcui=code, source="table")


def _named_ingredients(texts: Iterable[Any]) -> set[str]:
    """RxCUIs of the ingredients the record's own words name (display, text), for cross-checking codes."""
    found = set()
    for text in texts:
        if isinstance(text, str) and text.strip():
            parsed = parse_product_name(text)
            rxcui = parsed.ingredients[0].rxcui if parsed else _ingredient_by_name(text)[0]
            if rxcui:
                found.add(rxcui)
    return found


def _agrees(info: MedicationInfo, named: set[str]) -> bool:
    """A table entry is trusted unless the record's words name a different ingredient: a wrong or
    unverified number must not turn one drug into another."""
    return not named or any(i.rxcui in named for i in info.ingredients)


def _concept_info(concept: Any) -> MedicationInfo | None:
    if not isinstance(concept, dict):
        return None
    codings = [c for c in as_list(concept.get("coding")) if isinstance(c, dict)]
    text = text_of(concept.get("text")) or ""
    rx = [c for c in codings if terminology.normalize_system(c.get("system")) == terminology.RXNORM]
    displays = [text_of(c.get("display")) for c in codings]  # a display that is no text counts as none
    named = _named_ingredients([*displays, text])
    for coding in rx:
        code = terminology.normalize_code(terminology.RXNORM, coding.get("code"))
        info = _from_table(code, text_of(coding.get("display")) or text) if code else None
        if info and _agrees(info, named):
            return info
    for candidate in [*displays, text]:
        if candidate:
            info = parse_product_name(candidate)
            if info:
                code = next((terminology.normalize_code(terminology.RXNORM, c.get("code")) for c in rx
                             if text_of(c.get("display")) == candidate), None)
                return MedicationInfo(info.display, info.ingredients, info.route_group, info.dose_form,
                                      code, info.source)
    for coding in rx:  # an ingredient-level code (IN) with no strength
        code = terminology.normalize_code(terminology.RXNORM, coding.get("code"))
        for name, rxcui in _ingredient_names().items():
            if rxcui == code:
                display = text_of(coding.get("display")) or text or name
                return MedicationInfo(display=display, ingredients=(Ingredient(rxcui, name),),
                                      product_rxcui=code, source="ingredient-code")
    if text or codings:
        display = text or next((d for d in displays if d), "")
        rxcui, name = _ingredient_by_name(display) if display else (None, "")
        if rxcui:
            return MedicationInfo(display=display, ingredients=(Ingredient(rxcui, name),), source="name-grammar")
    return None


def _dosage_list(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [d for d in as_list(resource.get("dosageInstruction", resource.get("dosage"))) if isinstance(d, dict)]


def _route_from_dosages(resource: Mapping[str, Any]) -> str:
    for dosage in _dosage_list(resource):
        route = dosage.get("route")
        if not isinstance(route, dict):
            continue
        for coding in as_list(route.get("coding")):
            code = text_of(coding.get("code")) if isinstance(coding, dict) else None
            if code in _ROUTE_BY_SNOMED:
                return _ROUTE_BY_SNOMED[code]
        group = route_of_form(text_of(route.get("text")))
        if group != "unknown":
            return group
    return "unknown"


def _ratio_strength(ratio: Any) -> tuple[float | None, str | None]:
    """mg per unit of a Medication.ingredient.strength Ratio (``20 mg / 1 TAB``, ``40 mg / 1 mL``)."""
    if not isinstance(ratio, dict):
        return None, None
    numerator = ratio.get("numerator") if isinstance(ratio.get("numerator"), dict) else {}
    denominator = ratio.get("denominator") if isinstance(ratio.get("denominator"), dict) else {}
    value = number_of(numerator.get("value"))
    factor = _UNIT_TO_MG.get((text_of(numerator.get("code")) or text_of(numerator.get("unit")) or "").lower())
    per_value = number_of(denominator.get("value")) if "value" in denominator else 1.0
    if value is None or factor is None or value < 0 or per_value is None or per_value <= 0:
        return None, None  # no strength rather than a wrong one ("20 mg / 0 mL")
    per_unit = (text_of(denominator.get("code")) or text_of(denominator.get("unit")) or "").strip("{}").upper()
    per_unit = {"TAB": "TABLET", "TBL": "TABLET", "CAP": "CAPSULE", "ML": "ML"}.get(per_unit, per_unit or None)
    return value * factor / per_value, per_unit


def _with_medication_details(info: MedicationInfo, medication: Mapping[str, Any]) -> MedicationInfo:
    """Fill strength and dose form from a Medication resource's ``ingredient`` and ``form`` where the code
    gave none (compounded or locally coded products)."""
    ingredients = list(info.ingredients)
    if ingredients and ingredients[0].strength_mg is None:
        for item in as_list(medication.get("ingredient")):
            if not isinstance(item, dict):
                continue
            strength, per_unit = _ratio_strength(item.get("strength"))
            item_info = _concept_info(item.get("itemCodeableConcept"))
            same = item_info is None or any(i.rxcui == ingredients[0].rxcui for i in item_info.ingredients)
            if strength is not None and same:
                first = ingredients[0]
                ingredients[0] = Ingredient(first.rxcui, first.name, strength, per_unit)
                break
    form_text = None
    form = medication.get("form")
    if isinstance(form, dict):
        form_text = text_of(form.get("text")) or next(
            (text_of(c.get("display")) for c in as_list(form.get("coding"))
             if isinstance(c, dict) and text_of(c.get("display"))), None)
    dose_form = info.dose_form or form_text
    route = info.route_group if info.route_group != "unknown" else route_of_form(dose_form)
    return MedicationInfo(info.display, tuple(ingredients), route, dose_form, info.product_rxcui, info.source)


def identify_medication(resource: Mapping[str, Any],
                        resolve_reference: Callable[[str], dict | None] = lambda ref: None) -> MedicationInfo | None:
    """What a MedicationRequest/MedicationStatement (raw JSON) is about, or ``None`` if unknown."""
    info = _concept_info(resource.get("medicationCodeableConcept"))
    if info is None:
        reference = resource.get("medicationReference")
        ref = text_of(reference.get("reference")) if isinstance(reference, dict) else None
        medication = None
        if ref is not None and ref.startswith("#"):
            medication = next((c for c in as_list(resource.get("contained")) if isinstance(c, dict)
                               and c.get("id") == ref[1:]), None)
        elif ref is not None:
            medication = resolve_reference(ref)
        if isinstance(medication, dict):
            info = _concept_info(medication.get("code"))
            if info is None:
                for item in as_list(medication.get("ingredient")):
                    if isinstance(item, dict):
                        info = _concept_info(item.get("itemCodeableConcept"))
                        if info:
                            break
            if info is not None:
                info = _with_medication_details(info, medication)
        if info is None and isinstance(reference, dict) and text_of(reference.get("display")):
            info = _concept_info({"text": reference["display"]})
    if info is None:
        return None
    if info.route_group == "unknown" or info.source == "ingredient-code":
        route = _route_from_dosages(resource)
        if route != "unknown":
            info = MedicationInfo(info.display, info.ingredients, route, info.dose_form, info.product_rxcui,
                                  info.source)
    return info


def has_ingredient_in(info: MedicationInfo, valueset_name: str) -> bool:
    """Does any ingredient of ``info`` belong to the drug-class ValueSet ``valueset_name``?"""
    for ingredient in info.ingredients:
        if ingredient.rxcui and terminology.in_valueset(valueset_name, terminology.RXNORM, ingredient.rxcui):
            return True
        rxcui = _ingredient_names().get(ingredient.name.lower())
        if rxcui and terminology.in_valueset(valueset_name, terminology.RXNORM, rxcui):
            return True
        if terminology.in_valueset(valueset_name, terminology.INGREDIENT_NAME, ingredient.name.lower()):
            return True  # a class member known by name only (no verified RxCUI)
    return False


def is_systemic(info: MedicationInfo) -> bool:
    """Oral or parenteral (depot injections are systemic too, but carry no daily dose). A medication of
    unknown route counts as systemic: missing a steroid is worse than one extra review card."""
    return info.route_group.startswith("systemic") or info.route_group in ("depot", "unknown")


# --- currency ------------------------------------------------------------------------------------------

def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        if len(text) == 4:
            return datetime(int(text), 12, 31, 23, 59, tzinfo=UTC)
        if len(text) == 7:
            year, month = map(int, text.split("-"))
            return datetime(year, month, 28, 23, 59, tzinfo=UTC)
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.max.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        return None


_CURRENT_REQUEST = {"active", "on-hold"}
_ORDER_INTENTS = {"order", "plan", "original-order", "instance-order"}
_CURRENT_STATEMENT = {"active", "intended"}
#: MedicationAdministration statuses meaning a dose was (or is being) given; not-done, on-hold, stopped
#: (halted before all of it was given), entered-in-error and unknown are not read
ADMINISTERED_STATUSES = frozenset({"completed", "in-progress"})
#: an administration given this recently (or one in progress) is a current medication
ADMINISTRATION_CURRENT_HOURS = 24


def end_instant(value: Any) -> datetime | None:
    """A FHIR date/dateTime read as the END of what it names (a date-only end is the end of that day)."""
    return _instant(value)


def administration_time(resource: Mapping[str, Any]) -> datetime | None:
    """When an administration happened: ``effectiveDateTime``, else the end (or start) of ``effectivePeriod``."""
    period = resource.get("effectivePeriod") if isinstance(resource.get("effectivePeriod"), dict) else {}
    for value in (resource.get("effectiveDateTime"), period.get("end"), period.get("start")):
        if isinstance(value, str) and len(value) > 10:
            moment = _instant(value)
            if moment is not None:
                return moment
        elif isinstance(value, str) and len(value) == 10:
            moment = _instant(value + "T00:00:00+00:00")
            if moment is not None:
                return moment
    return None


def is_current(resource: Mapping[str, Any], now: datetime, include_draft: bool = False) -> bool:
    """CLINICAL-CONTENT 4.3: is this medication being taken (or about to be, for a draft order)?"""
    kind = resource.get("resourceType")
    status = text_of(resource.get("status"))
    if kind in ("MedicationRequest", "MedicationOrder"):
        allowed = _CURRENT_REQUEST | ({"draft"} if include_draft else set())
        if status not in allowed:
            return False
        intent = resource.get("intent")
        if intent is not None and text_of(intent) not in _ORDER_INTENTS and not include_draft:
            return False
        dispense = resource.get("dispenseRequest")
        validity = dispense.get("validityPeriod") if isinstance(dispense, dict) else None
        end = _instant(validity.get("end")) if isinstance(validity, dict) else None
    elif kind == "MedicationStatement":
        if status not in _CURRENT_STATEMENT:
            return False
        period = resource.get("effectivePeriod") or {}
        end = _instant(period.get("end")) if isinstance(period, dict) else None
    elif kind == "MedicationAdministration":
        if status == "in-progress":
            return True
        given = administration_time(resource)
        return (status in ADMINISTERED_STATUSES and given is not None
                and now - given <= timedelta(hours=ADMINISTRATION_CURRENT_HOURS))
    else:
        return False
    return end is None or end >= now


# --- dose arithmetic -----------------------------------------------------------------------------------

def _doses_per_day(timing: Any) -> tuple[float | None, str]:
    if not isinstance(timing, dict):
        return None, "no timing"
    repeat = timing.get("repeat") if isinstance(timing.get("repeat"), dict) else {}
    frequency = number_of(repeat.get("frequencyMax")) or number_of(repeat.get("frequency"))
    # worst case, as OMTK: the most doses (frequencyMax) in the shortest period (period, not periodMax)
    period = number_of(repeat.get("period")) or number_of(repeat.get("periodMax"))
    unit = repeat.get("periodUnit") if isinstance(repeat.get("periodUnit"), str) else None
    if frequency is None:
        listed = repeat.get("timeOfDay") or repeat.get("when")
        if isinstance(listed, list) and listed:
            return float(len(listed)), f"{len(listed)}/day"
    if frequency is not None and period and unit in _PERIOD_PER_DAY:
        per_day = frequency * _PERIOD_PER_DAY[unit] / period
        return per_day, _describe_rate(frequency, period, unit, per_day)
    if frequency is not None and period is None and unit is None:
        return frequency, f"{_fmt(frequency)}/day"
    code = timing.get("code")
    if isinstance(code, dict):
        for value in [c.get("code") for c in as_list(code.get("coding")) if isinstance(c, dict)] + [code.get("text")]:
            text = (text_of(value) or "").upper()
            if text in _GTS:
                return _GTS[text], f"{text} ({_fmt(_GTS[text])}/day)"
    return None, "frequency not stated"


def _describe_rate(frequency: float, period: float, unit: str, per_day: float) -> str:
    if unit == "d" and period == 1:
        return f"{_fmt(frequency)}/day"
    return f"{_fmt(frequency)} every {_fmt(period)} {unit} ({_fmt(per_day)}/day)"


def _dose_quantity(dosage: Mapping[str, Any]) -> Any:
    rates = dosage.get("doseAndRate")
    rates = [rates] if isinstance(rates, dict) else rates if isinstance(rates, list) else []
    for rate in rates:
        if not isinstance(rate, dict):
            continue
        if isinstance(rate.get("doseQuantity"), dict):
            return rate["doseQuantity"]
        if isinstance(rate.get("doseRange"), dict):
            return (rate["doseRange"].get("high") or rate["doseRange"].get("low"))  # OMTK: the high end
    return None


def _quantity_units(quantity: Mapping[str, Any]) -> list[str]:
    """The unit words of a Quantity, ``code`` first, then ``unit`` (either may be absent: the CDS Hooks
    Sandbox sends only ``code``, Synthea neither)."""
    units = [str(quantity[k]).strip() for k in ("code", "unit") if isinstance(quantity.get(k), (str, int, float))
             and not isinstance(quantity.get(k), bool)]
    return [u for u in units if u] or [""]


def _mg_per_administration(quantity: Any, info: MedicationInfo) -> tuple[float | None, str]:
    if not isinstance(quantity, dict):
        return None, "no dose quantity"
    value = number_of(quantity.get("value"))
    if value is None or not math.isfinite(value) or value < 0:
        return None, "no usable dose value"
    units = _quantity_units(quantity)
    keys = [u.lower() for u in units]
    for key in keys:
        if key in _UNIT_TO_MG:
            mg = value * _UNIT_TO_MG[key]
            return mg, f"{_fmt(mg)} mg"
    strength = info.ingredients[0].strength_mg if info.ingredients else None
    if strength is None:
        return None, f"dose {_fmt(value)} {units[0] or '(no unit)'} but the product strength is unknown"
    per = (info.ingredients[0].per_unit or "").upper()
    if "ml" in keys and per == "ML":
        mg = value * strength
        return mg, f"{_fmt(value)} mL × {_fmt(strength)} mg/mL = {_fmt(mg)} mg"
    if any(key in _COUNT_UNITS for key in keys) and per != "ML":
        mg = value * strength
        noun = (per or "unit").lower()
        return mg, f"{_fmt(value)} {noun}{'s' if value != 1 else ''} × {_fmt(strength)} mg = {_fmt(mg)} mg"
    return None, f"dose unit {units[0]!r} cannot be converted to mg"


def _bounds(dosage: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    repeat = ((dosage.get("timing") or {}).get("repeat") or {}) if isinstance(dosage.get("timing"), dict) else {}
    period = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    if not isinstance(period, dict):
        return None, None
    start = period.get("start")
    return (_instant(start) if isinstance(start, str) and len(start) > 10 else
            _instant(start[:10] + "T00:00:00+00:00") if isinstance(start, str) and len(start) == 10 else None,
            _instant(period.get("end")))


def _active_lines(dosages: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Taper: the lines whose bounds contain ``now``; else the lines without bounds; else the first."""
    bounded = [d for d in dosages if _bounds(d) != (None, None)]
    if not bounded:
        return dosages
    current = [d for d in bounded if (_bounds(d)[0] is None or _bounds(d)[0] <= now)
               and (_bounds(d)[1] is None or now <= _bounds(d)[1])]
    unbounded = [d for d in dosages if _bounds(d) == (None, None)]
    if current or unbounded:
        return current + unbounded
    ordered = sorted(dosages, key=lambda d: number_of(d.get("sequence")) or 0)
    return ordered[:1]


def steroid_ingredient(info: MedicationInfo) -> Ingredient | None:
    """The corticosteroid ingredient of a product (a combination, e.g. with lidocaine, has one)."""
    return next((i for i in info.ingredients if i.name.lower() in PREDNISONE_EQUIVALENCE
                 or i.rxcui in PREDNISONE_EQUIVALENCE), info.ingredients[0] if info.ingredients else None)


def prednisone_factor(info: MedicationInfo) -> float | None:
    """mg prednisone per mg of the product's corticosteroid (section 4.1 table); ``None`` if not in it."""
    return next((PREDNISONE_EQUIVALENCE[k] for k in
                 [i.rxcui for i in info.ingredients] + [i.name.lower() for i in info.ingredients]
                 if k in PREDNISONE_EQUIVALENCE), None)


def _steroid_view(info: MedicationInfo) -> MedicationInfo:
    """``info`` with its corticosteroid first: the dose arithmetic is about that ingredient."""
    steroid = steroid_ingredient(info)
    if steroid is not None and info.ingredients[0] is not steroid:
        return MedicationInfo(info.display, (steroid,), info.route_group, info.dose_form, info.product_rxcui,
                              info.source)
    return info


def doses_per_day(timing: Any) -> float | None:
    """Administrations per day a Timing describes (``None`` if it does not say)."""
    return _doses_per_day(timing)[0]


def steroid_daily_dose(dosages: Iterable[dict] | dict | None, info: MedicationInfo, now: datetime) -> DoseResult:
    """Daily dose and prednisone equivalent of one corticosteroid (CLINICAL-CONTENT 4.3), with the
    arithmetic written out for the card detail. Of taper lines with ``boundsPeriod``, those containing
    ``now`` count (:mod:`plugin.timeline` places every kind of step on the calendar first)."""
    lines = [dosages] if isinstance(dosages, dict) else [d for d in dosages or [] if isinstance(d, dict)]
    return dose_of_lines(_active_lines(lines, now) if lines else lines, info)


def dose_of_lines(lines: Iterable[Mapping[str, Any]], info: MedicationInfo) -> DoseResult:
    """The daily dose of these dosage lines taken together (concurrent lines add up), without choosing
    among them."""
    info = _steroid_view(info)
    name = info.ingredients[0].name if info.ingredients else info.display
    factor = prednisone_factor(info)
    if info.route_group == "depot":
        return DoseResult(False, reason="depot injection: no daily dose")
    lines = [d for d in lines if isinstance(d, Mapping)]
    if not lines:
        return DoseResult(False, reason="no dosage instructions")
    total = 0.0
    largest = 0.0
    steps: list[str] = []
    for dosage in lines:
        quantity = _dose_quantity(dosage)
        per_day, rate = _doses_per_day(dosage.get("timing"))
        as_needed = dosage.get("asNeededBoolean") is True or isinstance(dosage.get("asNeededCodeableConcept"), dict)
        if as_needed:
            maximum = dosage.get("maxDosePerPeriod")
            if isinstance(maximum, dict) and isinstance(maximum.get("numerator"), dict):
                quantity = maximum["numerator"]
                denominator = maximum.get("denominator") if isinstance(maximum.get("denominator"), dict) else {}
                days = (number_of(denominator.get("value")) or 1) / _PERIOD_PER_DAY.get(
                    text_of(denominator.get("code")) or text_of(denominator.get("unit")) or "d", 1.0)
                per_day, rate = (1 / days if days and math.isfinite(days) else None), "maximum per period"
            else:
                return DoseResult(False, reason="as-needed dosing without a maximum")
        mg, dose_text = _mg_per_administration(quantity, info)
        if mg is None:
            text = text_of(dosage.get("text"))
            return DoseResult(False, reason=dose_text + (" (free-text dosage only)" if text and quantity is None
                                                         else ""))
        if per_day is None:
            bounds = ((dosage.get("timing") or {}).get("repeat") or {}) if isinstance(dosage.get("timing"),
                                                                                       dict) else {}
            if isinstance(bounds, dict) and (bounds.get("boundsDuration") or bounds.get("count")):
                per_day, rate = 1.0, "once daily (course)"  # "1 g IV daily x 3 days" often omits frequency
            else:
                return DoseResult(False, reason="frequency not stated")
        if not (math.isfinite(mg * per_day) and 0 <= mg * per_day <= MAX_MG_PER_DAY):
            return DoseResult(False, reason=f"implausible dose (not 0 to {_fmt(MAX_MG_PER_DAY)} mg/day): not read")
        total += mg * per_day
        largest = max(largest, mg)
        steps.append(f"{dose_text} × {rate}")
    arithmetic = f"{name}: " + " + ".join(steps) + f" = {_fmt(total)} mg/day"
    return _with_equivalent(total, largest, factor, arithmetic)


def _with_equivalent(total: float, largest: float, factor: float | None, arithmetic: str) -> DoseResult:
    if factor is None:
        return DoseResult(True, total, largest, None, None, arithmetic, reason="no prednisone equivalence")
    pred_day, pred_admin = total * factor, largest * factor
    if factor != 1.0:
        arithmetic += f"; × {_fmt(factor)} = {_fmt(pred_day)} mg prednisone-equivalent/day"
    else:
        arithmetic += " prednisone-equivalent"
    return DoseResult(True, total, largest, round(pred_day, 2), round(pred_admin, 2), arithmetic)


def administered_mg(dosage: Any, info: MedicationInfo, hours: float | None = None) -> tuple[float | None, str]:
    """mg of the corticosteroid one MedicationAdministration gave: ``dosage.dose`` (mg, g, or a count of
    tablets x strength), else an infusion ``rateQuantity`` in mg per hour/minute over ``hours``."""
    if not isinstance(dosage, Mapping):
        return None, "no dosage"
    info = _steroid_view(info)
    if isinstance(dosage.get("dose"), dict):
        mg, text = _mg_per_administration(dosage["dose"], info)
    else:
        rate = dosage.get("rateQuantity")
        mg, text = None, "no dose stated"
        if isinstance(rate, dict) and hours is not None:
            value = number_of(rate.get("value"))
            unit = (text_of(rate.get("code")) or text_of(rate.get("unit")) or "").lower()
            per_hour = {"mg/h": 1.0, "mg/hr": 1.0, "mg/min": 60.0, "g/h": 1000.0}.get(unit)
            if value is not None and per_hour is not None and math.isfinite(value) and value >= 0:
                mg = value * per_hour * hours
                text = f"{_fmt(value)} {unit} over {_fmt(hours)} h = {_fmt(mg)} mg"
    if mg is not None and not (math.isfinite(mg) and mg <= MAX_MG_PER_DAY):
        return None, "implausible dose: not read"
    return mg, text


def equivalent_of(total_mg: float, largest_mg: float, info: MedicationInfo, arithmetic: str) -> DoseResult:
    """A DoseResult for a daily total worked out elsewhere (one calendar day's administrations)."""
    return _with_equivalent(total_mg, largest_mg, prednisone_factor(_steroid_view(info)), arithmetic)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "?"
    rounded = round(value, 2)
    if rounded == int(rounded):
        return f"{int(rounded):,}"
    return f"{rounded:,.2f}".rstrip("0").rstrip(".")


fmt = _fmt
