"""The synthetic fixture patients of ``fixtures/``: find them, render them for a given "now", evaluate
prefetch templates against them, and compare cards with their golden files.

Date representation (one rule for every file under ``fixtures/``): every fixture is stored as it was on
its **anchor date**, :data:`ANCHOR` (recorded as ``Bundle.timestamp`` of each patient Bundle). Loading
a fixture for another ``now`` moves every full FHIR date, dateTime and instant by the same whole number
of days, ``now.date() - ANCHOR.date()``. Whole days keep each value's time of day and offset as
written, so the shifted files stay valid FHIR, the order of events is unchanged, and the dates quoted in
card summaries move by the same number of days (:func:`shift_text`), which keeps golden files stable.
The stored files are therefore real, directly usable data: the checked-in hook requests are the
requests of :data:`ANCHOR` (``lupus-cds evaluate --now 2026-11-25T12:00:00Z FILE`` reproduces the
golden cards on any day).

Fixture data never sits on the evaluation day itself (the newest item is a day before the anchor), so
a shifted fixture is never in the future, whatever the time of day when it is loaded.

The prefetch evaluator (:func:`search`) answers the small FHIR search subset the prefetch templates
use, in process, the way a FHIR server would: ``Type/id`` reads and type searches with ``patient=`` /
``subject=``, token ``code=`` (comma-OR of ``system|code``), ``status=`` (comma-OR), ``_sort=[-]date``
(``[-]effective-time`` for MedicationAdministration) and ``_count`` (first page, with ``total`` and a
``next`` link when there is more). Anything else raises, so a template change the evaluator does not
understand is noticed at build time.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

#: the instant every stored fixture describes (also ``Bundle.timestamp`` of each patient Bundle)
ANCHOR = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ANCHOR_TEXT = "2026-11-25T12:00:00Z"
HOOKS = ("patient-view", "order-select", "order-sign")
SERVICE_PREFIX = "lupus-fasciculation"
#: ``fhirServer`` of the stored no-prefetch requests: the default address of ``lupus-cds sandbox``
DEFAULT_FHIR_SERVER = "http://127.0.0.1:8090/fhir"

_DATE_VALUE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")
_DATE_IN_TEXT = re.compile(r"(?<![\d-])(\d{4}-\d{2}-\d{2})(?![\d-])")


# ------------------------------------------------------------------------------------------ locating


def fixtures_dir() -> Path:
    """``fixtures/`` of the repository: ``$LUPUS_CDS_FIXTURES_DIR``, else the copy a wheel carries
    (``plugin/fixture_files``, see setup.py), else next to this package (a checkout or an editable install),
    else ``./fixtures``."""
    configured = os.environ.get("LUPUS_CDS_FIXTURES_DIR")
    candidates = [Path(configured)] if configured else []
    here = Path(__file__).resolve().parent
    candidates += [here / "fixture_files", here.parent / "fixtures", Path.cwd() / "fixtures"]
    for candidate in candidates:
        if (candidate / "patients").is_dir():
            return candidate
    raise FileNotFoundError(
        "the fixture patients were not found: install lupus-cds from a wheel built from the repository "
        "(README.md, 'Install'), run from a checkout, or set LUPUS_CDS_FIXTURES_DIR")


def patient_names(root: Path | None = None) -> list[str]:
    """Names of the fixture patients (``fixtures/patients/<name>.json``), sorted."""
    root = root or fixtures_dir()
    return sorted(p.stem for p in (root / "patients").glob("*.json") if p.stem != "index")


def patient_index(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """name -> {title, shows}: what each patient demonstrates (``fixtures/patients/index.json``)."""
    root = root or fixtures_dir()
    return json.loads((root / "patients" / "index.json").read_text())


def request_path(name: str, hook: str, *, prefetch: bool = True, root: Path | None = None) -> Path:
    root = root or fixtures_dir()
    return root / "requests" / name / (f"{hook}.json" if prefetch else f"{hook}.no-prefetch.json")


def expected_path(name: str, hook: str, root: Path | None = None) -> Path:
    return (root or fixtures_dir()) / "expected" / name / f"{hook}.json"


# ------------------------------------------------------------------------------------------- dates


def shift_days(now: datetime | None) -> int:
    """Whole days between the anchor and ``now`` (0 for ``None``)."""
    if now is None:
        return 0
    return (now.astimezone(UTC).date() - ANCHOR.date()).days


def _shift_date(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def shift_dates(value: Any, days: int) -> Any:
    """A copy of ``value`` (JSON) with every full date/dateTime/instant string moved by ``days``; partial
    dates (``2020``, ``2020-05``) and all other strings stay as they are."""
    if isinstance(value, dict):
        return {key: shift_dates(item, days) for key, item in value.items()}
    if isinstance(value, list):
        return [shift_dates(item, days) for item in value]
    if days and isinstance(value, str):
        match = _DATE_VALUE.match(value)
        if match:
            return _shift_date(match.group(1), days) + value[10:]
    return value


def shift_text(text: str, days: int) -> str:
    """``text`` with every ``YYYY-MM-DD`` in it moved by ``days`` (for card summaries)."""
    if not days:
        return text
    return _DATE_IN_TEXT.sub(lambda m: _shift_date(m.group(1), days), text)


# ------------------------------------------------------------------------------------------ loading


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def load_bundle(name: str, now: datetime | None = None, root: Path | None = None) -> dict[str, Any]:
    """The transaction Bundle of patient ``name``, with its dates as of ``now`` (default: as stored)."""
    bundle = _read((root or fixtures_dir()) / "patients" / f"{name}.json")
    return shift_dates(bundle, shift_days(now))


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry", []) if isinstance(entry.get("resource"), dict)]


def load_request(name: str, hook: str, *, prefetch: bool = True, now: datetime | None = None,
                 fhir_server: str | None = None, root: Path | None = None) -> dict[str, Any]:
    """A stored hook request, with its dates as of ``now`` and (no-prefetch requests) ``fhirServer`` set to
    ``fhir_server`` when given."""
    body = shift_dates(_read(request_path(name, hook, prefetch=prefetch, root=root)), shift_days(now))
    if fhir_server and "fhirServer" in body:
        body["fhirServer"] = fhir_server.rstrip("/")
    return body


def load_expected(name: str, hook: str, now: datetime | None = None,
                  root: Path | None = None) -> list[dict[str, str]]:
    """The golden cards of one request, with the dates in their summaries as of ``now``."""
    cards = _read(expected_path(name, hook, root))["cards"]
    days = shift_days(now)
    return [{**card, "summary": shift_text(card["summary"], days)} for card in cards]


def card_digest(cards: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """What a golden file keeps of each card: topic, indicator and summary, in response order."""
    return [{"topic": card.get("source", {}).get("topic", {}).get("code", ""),
             "indicator": card.get("indicator", ""), "summary": card.get("summary", "")}
            for card in cards]


def write_expected(name: str, hook: str, cards: Iterable[Mapping[str, Any]], root: Path | None = None) -> None:
    path = expected_path(name, hook, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"evaluatedAt": ANCHOR_TEXT, "request": f"requests/{name}/{hook}.json", "cards": card_digest(cards)}
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------ prefetch evaluation


class UnsupportedSearch(ValueError):
    """A prefetch template uses search features the in-process evaluator does not implement."""


#: resource type -> the element(s) the ``date`` search parameter reads (FHIR R4 search parameters)
_DATE_ELEMENTS = {
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "Encounter": ("period",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod"),
}
#: (resource type, sort parameter) -> the elements it reads, beyond ``date`` (FHIR R4 search parameters)
_SORT_ELEMENTS = {
    ("MedicationAdministration", "effective-time"): ("effectiveDateTime", "effectivePeriod"),
}
#: resource type -> the element the ``code`` search parameter reads, when not ``code``
_CODE_ELEMENTS = {"MedicationRequest": "medicationCodeableConcept", "MedicationStatement": "medicationCodeableConcept"}


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """Fill the ``{{context.x}}`` tokens (the only ones the plugin's templates use)."""
    def value(match: re.Match[str]) -> str:
        field = match.group(1).strip()
        if not field.startswith("context.") or field[len("context."):] not in context:
            raise UnsupportedSearch(f"template token {{{{{field}}}}} cannot be filled")
        return str(context[field[len("context."):]])
    return re.sub(r"\{\{([^{}]+)\}\}", value, template)


def _subject_ids(resource: Mapping[str, Any]) -> set[str]:
    refs = set()
    for element in ("subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            refs.add(ref["reference"])
    return refs


def _token_match(concept: Any, tokens: list[tuple[str | None, str | None]]) -> bool:
    codings = concept.get("coding", []) if isinstance(concept, Mapping) else []
    for coding in codings:
        for system, code in tokens:
            if (system is None or coding.get("system") == system) and (code is None or coding.get("code") == code):
                return True
    return False


def _parse_tokens(value: str) -> list[tuple[str | None, str | None]]:
    tokens = []
    for item in value.split(","):
        if "|" in item:
            system, _, code = item.partition("|")
            tokens.append((system or None, code or None))
        else:
            tokens.append((None, item))
    return tokens


def _date_key(resource: Mapping[str, Any], parameter: str = "date") -> str:
    elements = (_DATE_ELEMENTS.get(resource["resourceType"], ()) if parameter == "date"
                else _SORT_ELEMENTS.get((resource["resourceType"], parameter), ()))
    for element in elements:
        value = resource.get(element)
        if isinstance(value, Mapping):
            value = value.get("start") or value.get("end")
        if isinstance(value, str):
            return value
    return ""


def _instant_key(value: str) -> float:
    """Sort key of a FHIR date/dateTime (dates compare as their first instant, UTC)."""
    if not value:
        return float("-inf")
    text = value.replace("Z", "+00:00")
    if len(text) == 10:
        text += "T00:00:00+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def search(resources: Iterable[Mapping[str, Any]], query: str, base: str = "urn:fixture") -> dict[str, Any] | None:
    """Answer one rendered prefetch query against ``resources`` as a FHIR server would: a read gives the
    resource (``None`` if absent), a search gives a ``searchset`` Bundle (first page only)."""
    path, _, query_string = query.partition("?")
    resource_type, _, resource_id = path.partition("/")
    pool = [r for r in resources if r.get("resourceType") == resource_type]
    if resource_id:
        if query_string:
            raise UnsupportedSearch(f"{query}: a read takes no parameters")
        return next((copy.deepcopy(dict(r)) for r in pool if r.get("id") == resource_id), None)
    count: int | None = None
    sort: str | None = None
    for part in filter(None, query_string.split("&")):
        name, _, raw = part.partition("=")
        value = unquote(raw)
        if name in ("patient", "subject"):
            wanted = {value, f"Patient/{value}"} if "/" not in value else {value}
            pool = [r for r in pool if _subject_ids(r) & wanted]
        elif name == "code":
            element = _CODE_ELEMENTS.get(resource_type, "code")
            tokens = _parse_tokens(value)
            pool = [r for r in pool if _token_match(r.get(element), tokens)]
        elif name == "status":
            statuses = set(value.split(","))
            pool = [r for r in pool if r.get("status") in statuses]
        elif name == "_count":
            count = int(value)
        elif name == "_sort":
            parameter = value.lstrip("-")
            if not ((parameter == "date" and resource_type in _DATE_ELEMENTS)
                    or (resource_type, parameter) in _SORT_ELEMENTS):
                raise UnsupportedSearch(f"{query}: _sort={value} is not supported for {resource_type}")
            sort = value
        else:
            raise UnsupportedSearch(f"{query}: search parameter {name!r} is not supported")
    if sort:
        # stable sort: equal dates keep file order, newest first for "-date"
        parameter = sort.lstrip("-")
        pool = sorted(pool, key=lambda r: _instant_key(_date_key(r, parameter)), reverse=sort.startswith("-"))
    total = len(pool)
    page = pool if count is None else pool[:count]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total,
                              "link": [{"relation": "self", "url": f"{base}/{query}"}],
                              "entry": [{"fullUrl": f"{base}/{resource_type}/{r['id']}",
                                         "resource": copy.deepcopy(dict(r)), "search": {"mode": "match"}}
                                        for r in page]}
    if count is not None and total > count:
        bundle["link"].append({"relation": "next", "url": f"{base}/{query}&_offset={count}"})
    return bundle


def evaluate_prefetch(templates: Mapping[str, str], context: Mapping[str, Any],
                      resources: Iterable[Mapping[str, Any]], base: str = "urn:fixture") -> dict[str, Any]:
    """key -> what a FHIR server holding ``resources`` answers to each rendered template (PF-8)."""
    resources = list(resources)
    return {key: search(resources, render_template(template, context), base)
            for key, template in templates.items()}
