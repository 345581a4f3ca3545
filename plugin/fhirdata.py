"""Small, tolerant readers of raw FHIR JSON: text, numbers, dates, lists, codings, references and
repair-then-validate.

The rules read only a handful of resources out of a patient record that can hold thousands, so the
plugin first looks at the raw JSON (cheaply, with these helpers) and validates with ``fhir.resources``
only what it will use (:func:`validate`). Real feeds break R4 in small ways: a single object where R4 has
an array, a dateTime without a timezone, a code with stray whitespace. Those are repaired on a copy;
anything else invalid is skipped by the caller with a note.

Every raw read of the plugin goes through these accessors, and each is total: whatever JSON it gets (a list
where a code belongs, an object where a number belongs, 1e308, year 9999, NUL) it answers a value of the
type it promises or ``None``, never an exception. :func:`text_of` reads every status, code, system and
display; :func:`number_of` every number; :func:`parse_datetime` every date.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from .bounded_cache import byte_bounded_cache

JSON = dict[str, Any]

# Memory budgets of this module's caches, in estimated bytes (see plugin/bounded_cache.py). A validated
# model takes about 8 times its canonical JSON (measured with tracemalloc on typical lab Observations,
# Conditions and MedicationRequests, the canonical key included).
MODEL_BYTES_PER_JSON_BYTE = 8
#: validated whole resources: about six typical patients' records (their repeat hooks, minutes apart, hit)
VALIDATED_RESOURCES_BYTES = 8 * 1024 * 1024
#: validated complex elements (codings, reference ranges, sigs): what every patient shares
VALIDATED_ELEMENTS_BYTES = 4 * 1024 * 1024
#: parsed date strings
PARSED_DATES_BYTES = 2 * 1024 * 1024
#: a date string longer than this is not a FHIR date; it is parsed (and refused) without being cached
_LONGEST_DATE = 64

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


#: the largest magnitude :func:`number_of` accepts: no dose, strength, count or lab value comes near it, and
#: past 2**53 (about 9e15) a float no longer holds every whole number, so arithmetic on it means nothing
MAX_MAGNITUDE = 1e15
#: the length of a FHIR id (R4 ``id``: up to 64 characters); a longer one is shown cut to this
ID_LENGTH = 64


def text_of(value: Any) -> str | None:
    """A string element (code, system, display, status...) stripped of surrounding whitespace; ``None``
    for an empty string and for anything that is not a string (a list, an object, a number, ``true``)."""
    if isinstance(value, str):
        return value.strip() or None
    return None


def number_of(value: Any) -> float | None:
    """A JSON number (or a numeric string, as some feeds send) as a float; ``None`` for booleans, NaN,
    infinities, magnitudes above :data:`MAX_MAGNITUDE` and anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40:  # "9" * 400 is no number a record means
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            return None
    if not math.isfinite(number) or abs(number) > MAX_MAGNITUDE:
        return None
    return number + 0.0  # -0.0 reads as 0.0


def out_of_range(value: Any) -> bool:
    """``value`` is a number, but one too large for :func:`number_of` (so a note can say "out of range"
    rather than "not a number")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return not abs(float(value)) <= MAX_MAGNITUDE
    except OverflowError:
        return True


def status_of(resource: Mapping[str, Any]) -> str | None:
    """``resource.status`` as a code, or ``None`` when it is absent or not a string."""
    return text_of(resource.get("status"))


def id_of(resource: Any) -> str | None:
    """``resource.id`` as text (cut to :data:`ID_LENGTH` characters, for notes and card references), or
    ``None`` when it is absent or not a string."""
    if not isinstance(resource, Mapping):
        return None
    text = text_of(resource.get("id"))
    return text[:ID_LENGTH] if text else None


def as_list(value: Any) -> list[Any]:
    """``value`` as a list: ``[]`` for ``None``, ``[value]`` for a single object (tolerated where R4 has
    an array), the list itself otherwise."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant (or a ``datetime``/``date``) as an aware ``datetime``.

    Partial dates (``2025``, ``2025-03``) resolve to the start of the period; a dateTime without a
    timezone is taken as UTC. Unparseable values give ``None``, and so do instants that cannot be placed
    on the UTC time line (``0001-01-01T00:00:00+14:00`` is before year 1 in UTC).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        return None
    if len(value) > _LONGEST_DATE:
        return _parse_datetime_checked(value)
    return _parse_datetime_text(value)


def _date_entry_bytes(args: tuple[Any, ...], result: Any) -> int:
    return len(args[0]) + 200  # the string, a datetime, the entry


@byte_bounded_cache(PARSED_DATES_BYTES, _date_entry_bytes)  # a record's dates come back at every hook
def _parse_datetime_text(value: str) -> datetime | None:
    return _parse_datetime_checked(value)


def _parse_datetime_checked(value: str) -> datetime | None:
    """:func:`_parse_datetime_uncached`, refusing an instant that lies outside the calendar in UTC."""
    parsed = _parse_datetime_uncached(value)
    if parsed is None:
        return None
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed


def _parse_datetime_uncached(value: str) -> datetime | None:
    text = value.strip()
    if len(text) > 10:  # the common case, a full dateTime: no regex needed
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    partial = _PARTIAL_DATE.match(text)
    if partial:
        year, month, day = partial.groups()
        try:
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        except ValueError:
            return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def period_start(period: Any) -> datetime | None:
    return parse_datetime(period.get("start")) if isinstance(period, Mapping) else None


def period_end(period: Any) -> datetime | None:
    return parse_datetime(period.get("end")) if isinstance(period, Mapping) else None


def latest(*instants: datetime | None) -> datetime | None:
    present = [i for i in instants if i is not None]
    return max(present) if present else None


def days_between(earlier: datetime, later: datetime) -> float:
    return (later - earlier) / timedelta(days=1)


def within_days(instant: datetime | None, now: datetime, days: float) -> bool:
    """``instant`` is at most ``days`` before ``now`` (future instants count: clocks differ)."""
    return instant is not None and now - instant <= timedelta(days=days)


def codings(concept: Any) -> list[Mapping[str, Any]]:
    """The codings of a raw CodeableConcept (tolerating a single Coding object)."""
    if not isinstance(concept, Mapping):
        return []
    return [c for c in as_list(concept.get("coding")) if isinstance(c, Mapping)]


def status_code(concept: Any) -> str | None:
    """The first code of a status CodeableConcept (``clinicalStatus``, ``verificationStatus``)."""
    for coding in codings(concept):
        code = text_of(coding.get("code"))
        if code is not None:
            return code
    return None


def reference_of(value: Any) -> str | None:
    """``Reference.reference`` as text, or ``None``."""
    return text_of(value.get("reference")) if isinstance(value, Mapping) else None


def resources_in_bundle(bundle: Any) -> list[JSON]:
    """Resources of a Bundle-like context value: a Bundle (any or no ``type``), a list of resources or
    entries, or a single resource."""
    if isinstance(bundle, list):
        items = bundle
    elif isinstance(bundle, Mapping) and bundle.get("resourceType") == "Bundle":
        items = as_list(bundle.get("entry"))
    elif isinstance(bundle, Mapping) and "entry" in bundle and "resourceType" not in bundle:
        items = as_list(bundle.get("entry"))
    elif isinstance(bundle, Mapping):
        items = [bundle]
    else:
        return []
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        resource = item.get("resource") if "resource" in item and "resourceType" not in item else item
        if isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str):
            out.append(resource)
    return out


def _walk_to_parent(data: Any, loc: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """The container holding ``loc[-1]`` inside ``data`` and that key, or ``None`` if the path is gone."""
    node = data
    for step in loc[:-1]:
        if isinstance(node, Mapping) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            return None
    last = loc[-1]
    if isinstance(node, dict) and last in node:
        return node, last
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        return node, last
    return None


def _repair(data: JSON, errors: Iterable[Mapping[str, Any]]) -> bool:
    """Fix, in place, the tolerated deviations named by pydantic errors; ``True`` if anything changed."""
    changed = False
    for error in errors:
        loc = tuple(
            step
            for step in error.get("loc", ())
            if not (isinstance(step, str) and step.startswith("function"))
        )
        if not loc:
            continue
        found = _walk_to_parent(data, loc)
        if found is None:
            continue
        parent, key = found
        value = parent[key]
        if error.get("type") == "list_type" and isinstance(value, dict):
            parent[key] = [value]
            changed = True
        elif isinstance(value, str) and _NAIVE_DATETIME.match(value.strip()):
            parent[key] = value.strip() + "Z"
            changed = True
        elif isinstance(value, str) and value != value.strip():  # " 313822004" in an HL7 example card
            parent[key] = value.strip()
            changed = True
    return changed


def validate(
    model: Any, raw: Mapping[str, Any], elements: Iterable[str] | None = None, max_repairs: int = 3
) -> tuple[Any | None, str | None]:
    """``model.model_validate(raw)``, repairing single-object arrays, timezone-less dateTimes and codes
    with stray whitespace on a private copy.

    :param elements: validate only these top-level elements (the ones the caller reads); all if ``None``.
    :return: ``(instance, None)`` or ``(None, reason)``; never raises for bad data, never mutates ``raw``.
    """
    data: Any = dict(raw) if elements is None else {k: raw[k] for k in elements if k in raw}
    try:
        # The same resources come back at patient-view, order-select and order-sign: validate each
        # distinct content once per process, keyed by the canonical JSON of what gets validated.
        content = _Content(data)
    except TypeError:
        return _validate_uncached(model, data, max_repairs)
    return _validate_cached(model, content, max_repairs)


class _Content:
    """A cache key: the canonical JSON of a value (orjson: it is built at every call, so it must cost far
    less than the validation it saves). It carries the value itself to the cached function, which takes
    it, so a miss needs no second parse and the cache keeps no request JSON."""

    __slots__ = ("canonical", "value", "_hash")

    def __init__(self, value: Any):
        self.canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        self.value = value
        self._hash = hash(self.canonical)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Content) and self.canonical == other.canonical

    def take(self) -> Any:
        value, self.value = self.value, None
        return value


def _model_entry_bytes(args: tuple[Any, ...], result: Any) -> int:
    content = next(arg for arg in args if isinstance(arg, _Content))
    return MODEL_BYTES_PER_JSON_BYTE * len(content.canonical) + 256


@byte_bounded_cache(VALIDATED_RESOURCES_BYTES, _model_entry_bytes)
def _validate_cached(model: Any, content: _Content, max_repairs: int) -> tuple[Any | None, str | None]:
    """Cached :func:`validate`. The models it returns are shared between calls: callers only read them."""
    return _validate_uncached(model, content.take(), max_repairs)


def _validate_uncached(model: Any, data: Any, max_repairs: int) -> tuple[Any | None, str | None]:
    composed = _with_validated_elements(model, data)
    if composed is not None:
        try:
            return model.model_validate(composed), None
        except (ValidationError, TypeError, ValueError):
            pass  # the whole-resource path below repairs what it can and explains the rest
    copied = False  # nested values are still the request's own until the first repair
    for _ in range(max_repairs + 1):
        try:
            return model.model_validate(data), None
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if not copied:
                data, copied = copy.deepcopy(data), True
            if not _repair(data, errors):
                first = errors[0] if errors else {}
                where = ".".join(str(s) for s in first.get("loc", ())) or "resource"
                return None, f"{where}: {first.get('msg', 'invalid')}"
        except (TypeError, ValueError) as exc:  # fhir.resources raises plain errors for some shapes
            return None, str(exc).splitlines()[0][:160]
    return None, "could not be repaired"


# ------------------------------------------------------------------------------ element cache
# A patient seen for the first time brings resources no cache holds, but their complex elements are
# mostly ones every patient has: the LOINC coding of a potassium result, an "active" clinicalStatus, a
# lab's reference range, an EHR's sig template. Each distinct element is validated once per process and
# the validated instance is handed to the resource model, which takes model instances as they are.


def _element_model(annotation: Any) -> tuple[Any, bool] | None:
    """(model class, repeats?) of a complex element's annotation; ``None`` for primitives."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        present = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(present) != 1:
            return None
        annotation = present[0]
    repeats = typing.get_origin(annotation) in (list, typing.List)  # noqa: UP006 (what the models use)
    if repeats:
        annotation = typing.get_args(annotation)[0]
    klass = getattr(annotation, "get_model_klass", None)
    return (klass(), repeats) if callable(klass) else None


@functools.cache  # one entry per resource model class
def _complex_elements(model: Any) -> dict[str, tuple[Any, bool]]:
    found = {}
    for name, info in model.model_fields.items():
        element = _element_model(info.annotation)
        if element is not None:
            found[info.alias or name] = element
    return found


@byte_bounded_cache(VALIDATED_ELEMENTS_BYTES, _model_entry_bytes)
def _validated_element(klass: Any, content: _Content) -> Any | None:
    try:
        return klass.model_validate(content.take())
    except (ValidationError, TypeError, ValueError):
        return None  # the whole-resource path repairs it or says why


def _element(klass: Any, value: Any) -> Any | None:
    if not isinstance(value, dict):
        return None
    try:
        return _validated_element(klass, _Content(value))
    except TypeError:
        return None


def _with_validated_elements(model: Any, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``data`` with each complex element replaced by its validated instance (cached per distinct
    element); ``None`` if any element does not validate on its own."""
    elements = _complex_elements(model)
    composed: dict[str, Any] = {}
    for name, value in data.items():
        spec = elements.get(name)
        if spec is None or value is None:
            composed[name] = value
            continue
        klass, repeats = spec
        if repeats:
            if not isinstance(value, list):
                return None
            items = [_element(klass, item) for item in value]
            if any(item is None for item in items):
                return None
            composed[name] = items
        else:
            instance = _element(klass, value)
            if instance is None:
                return None
            composed[name] = instance
    return composed
