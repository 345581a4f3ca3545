"""Small, tolerant readers of raw FHIR JSON: dates, lists, codings, references and repair-then-validate.

The rules read only a handful of resources out of a patient record that can hold thousands, so the
plugin first looks at the raw JSON (cheaply, with these helpers) and validates with ``fhir.resources``
only what it will use (:func:`validate`). Real feeds break R4 in small ways: a single object where R4 has
an array, a dateTime without a timezone, a code with stray whitespace. Those are repaired on a copy;
anything else invalid is skipped by the caller with a note.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

JSON = dict[str, Any]

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


def as_list(value: Any) -> list[Any]:
    """``value`` as a list: ``[]`` for ``None``, ``[value]`` for a single object (tolerated where R4 has
    an array), the list itself otherwise."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant (or a ``datetime``/``date``) as an aware UTC ``datetime``.

    Partial dates (``2025``, ``2025-03``) resolve to the start of the period; a dateTime without a
    timezone is taken as UTC. Unparseable values give ``None``.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        return None
    return _parse_datetime_text(value)


@functools.lru_cache(maxsize=65536)  # a record's dates come back at every hook of the same patient
def _parse_datetime_text(value: str) -> datetime | None:
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
        code = coding.get("code")
        if isinstance(code, str):
            return code.strip()
    return None


def reference_of(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
        return value["reference"].strip()
    return None


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
        # distinct content once per process. The key is the canonical JSON of what gets validated
        # (orjson: the key is built at every call, so it must cost far less than the validation it saves).
        key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _validate_uncached(model, data, max_repairs)
    return _validate_cached(model, key, max_repairs)


@functools.lru_cache(maxsize=8192)
def _validate_cached(model: Any, key: bytes, max_repairs: int) -> tuple[Any | None, str | None]:
    """Cached :func:`validate`. The models it returns are shared between calls: callers only read them."""
    return _validate_uncached(model, orjson.loads(key), max_repairs)


def _validate_uncached(model: Any, data: Any, max_repairs: int) -> tuple[Any | None, str | None]:
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
