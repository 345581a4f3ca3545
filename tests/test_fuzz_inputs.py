"""Property-based fuzzing of the two POST endpoints (issue 11, "No 5xx for any input"): the README promises
"never a 5xx for bad input", so no request body, however hostile, may be answered with a 5xx.

Hook calls start from the real fixture requests (``fixtures/requests/<patient>/<hook>.json``) and mutate
them: a field the plugin reads gets a value of the wrong type (a list or an object for a code, a string for a
number), an extreme number (1e308, -0, 2**64-1), an impossible or extreme date (year 0001, 9999-12-31,
month 13), odd unicode (NUL, right-to-left override, very long text), or a random JSON tree; read fields are
also added where the fixture has none (a ``boundsDuration`` on a dosage, an ``effectivePeriod``...). Starting
from real records reaches deep code (dose arithmetic, the steroid timeline, the lab interpretation) far more
often than random JSON would. Feedback bodies start from the CDS Hooks specification's examples and are
mutated the same way, against SQLite and a real PostgreSQL.

Hypothesis runs derandomized with no example database, so CI sees the same examples on every run; the
example counts keep the module to well under a minute on a 2-core machine.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import spec_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin import fixtures
from plugin.demo import make_app

pytest_plugins = ["servers"]

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)

#: FHIR elements the plugin reads (plugin/facts.py, medications.py, timeline.py, labs.py): a mutation picks
#: one of these three times out of four, and adds missing ones to the objects of a resource
READ_FIELDS = (
    "resourceType", "id", "status", "intent", "code", "coding", "system", "display", "text", "category",
    "valueQuantity", "value", "unit", "valueCodeableConcept", "valueBoolean", "valueString",
    "effectiveDateTime", "effectivePeriod", "effectiveInstant", "start", "end", "issued", "interpretation",
    "referenceRange", "low", "high", "specimen", "note", "contained", "condition",
    "dosageInstruction", "dosage", "timing", "repeat", "boundsDuration", "boundsPeriod", "count", "frequency",
    "frequencyMax", "period", "periodMax", "periodUnit", "timeOfDay", "when", "sequence", "doseAndRate",
    "doseQuantity", "doseRange", "dose", "rateQuantity", "route", "asNeededBoolean", "asNeededCodeableConcept",
    "maxDosePerPeriod", "numerator", "denominator", "medicationCodeableConcept", "medicationReference",
    "reference", "ingredient", "itemCodeableConcept", "strength", "form", "authoredOn", "dispenseRequest",
    "validityPeriod", "dateAsserted", "clinicalStatus", "verificationStatus", "onsetDateTime", "onsetPeriod",
    "recordedDate", "abatementDateTime", "performedDateTime", "performedPeriod", "occurrenceDateTime",
    "gender", "birthDate", "subject", "entry", "resource", "fullUrl",
)

# ------------------------------------------------------------------------------------------ hostile values

EXTREME_NUMBERS = (0, -0.0, 1, -1, 0.5, 1e-9, 5e-324, -5e-324, 1e15, 1e16, 3_000_000, 1e308, -1e308,
                   1.7976931348623157e308, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1)
ODD_STRINGS = ("", " ", "\x00", "a\x00b", "\u202eenil\u202c", "\ufeff", "\U0001d518\U0001d52b", "e\u0301",
               "null", "true", "NaN", "Infinity", "-Infinity", "1e308", "1e999", "-0", "9" * 400, "0x10",
               " final ", "FINAL", "x" * 20_000, "\n", "Patient/", "#", "%s%n{0}", "<script>")
ODD_DATES = ("0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31", "9999-12-31T23:59:59-14:00",
             "9999-12-31T23:59:59.999999Z", "9999", "9999-12", "0000", "0000-00-00", "2026-13-45T99:99:99Z",
             "2026-02-30", "2026-00", "2026-1-1", "20261125", "2026-11-25T12:00", "2026-11-25T25:00:00Z",
             "2026-11-25T12:00:00+99:99", "-2026-11-25", "+2026-11-25", "2026-11-25T12:00:00.12345678901234Z",
             "1849-12-31", "2026-11-25T11:00:00Z", "2026-11-24", "2026")
ODD_SHAPES: tuple[Any, ...] = (
    None, True, False, [], {}, [None], [{}], [[]], [1], {"coding": "x"}, {"coding": [1, None, "x"]},
    {"coding": {"system": "http://loinc.org", "code": "2823-3"}},
    {"coding": [{"system": ["http://snomed.info/sct"], "code": {"value": "55464009"}, "display": 20}]},
    {"value": 1e308, "unit": ["mg"], "code": {"x": 1}}, {"value": "40", "code": "mg"}, {"value": True},
    {"start": "9999-12-31", "end": "0001-01-01"}, {"start": ["2026-01-01"]}, {"reference": ["#x"]},
    {"reference": "#"}, {"reference": "#" + "x" * 5000}, {"numerator": {"value": 20, "unit": "mg"},
                                                        "denominator": {"value": 0, "unit": "mL"}},
    {"repeat": {"boundsDuration": {"value": 3_000_000, "unit": "d"}}},
    {"repeat": {"boundsPeriod": {"start": "9999-12-31"}, "count": 1e308, "frequency": 0, "period": 0}},
    {"text": "prednisone 20 MG/0 ML Oral Solution"}, {"text": "prednisone " + "9" * 400 + " MG Oral Tablet"},
    [{"doseQuantity": {"value": 1e308, "unit": "mg"}}], [{"doseRange": {"high": {"value": -1, "unit": "g"}}}],
)
NO_SURROGATES = st.characters(exclude_categories=("Cs",))  # lone surrogates are not valid UTF-8 (nor JSON)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(NO_SURROGATES, max_size=40),
)
JSON_TREES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.sampled_from(READ_FIELDS) | st.text(NO_SURROGATES, max_size=6),
                                            children, max_size=4), max_leaves=12)
HOSTILE = st.one_of(
    st.sampled_from(EXTREME_NUMBERS), st.sampled_from(ODD_STRINGS), st.sampled_from(ODD_DATES),
    st.sampled_from(ODD_SHAPES), SCALARS, JSON_TREES,
)

# ------------------------------------------------------------------------------------------ the mutations

Path = tuple[Any, ...]


def walk(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) below ``node`` (``node`` itself first)."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def at(node: Any, path: Path) -> Any:
    for step in path:
        node = node[step]
    return node


#: one resource of a seed: its path, field name -> the paths below it ending in that field the plugin reads,
#: and the objects inside it (where a read field may be added)
Resource = tuple[Path, dict[str, tuple[Path, ...]], tuple[Path, ...]]


@functools.cache
def seed(name: str, hook: str) -> tuple[bytes, dict[str, tuple[Resource, ...]]]:
    """A fixture request (its bytes) and its resources by type."""
    raw = fixtures.request_path(name, hook).read_bytes()
    by_type: dict[str, list[Resource]] = {}
    for path, value in walk(json.loads(raw)):
        if isinstance(value, dict) and isinstance(value.get("resourceType"), str) and path:
            below = [(path + p, v) for p, v in walk(value) if p]
            read: dict[str, list[Path]] = {}
            for p, _ in below:
                if isinstance(p[-1], str) and p[-1] in READ_FIELDS:
                    read.setdefault(p[-1], []).append(p)
            objects = (path, *(p for p, v in below if isinstance(v, dict)))
            by_type.setdefault(value["resourceType"], []).append(
                (path, {field: tuple(paths) for field, paths in read.items()}, objects))
    return raw, {rtype: tuple(found) for rtype, found in by_type.items()}


def confuse(value: Any, draw: st.DrawFn) -> Any:
    """``value`` with its type changed but its content kept: the confusions real feeds make (a status sent as
    ``["final"]``, a code as ``{"value": "2823-3"}``, a number as text, an object where an array belongs)."""
    how = draw(st.sampled_from(("list", "object", "text", "number", "unwrap")))
    if how == "list":
        return [value]
    if how == "object":
        return {"value": value, "code": value}
    if how == "text":
        return json.dumps(value) if not isinstance(value, str) else value + draw(st.sampled_from(ODD_STRINGS[:8]))
    if how == "number":
        return draw(st.sampled_from(EXTREME_NUMBERS)) if isinstance(value, (str, dict, list)) else str(value)
    if isinstance(value, list) and value:
        return value[0]
    if isinstance(value, dict) and value:
        return next(iter(value.values()))
    return None


#: the fixture requests the hook fuzz starts from (the 250 KB Synthea record makes each example slow
#: without reaching code the others do not)
SEEDS = tuple((name, hook) for name in fixtures.patient_names() if name != "sle-synthea-large"
              for hook in fixtures.HOOKS)


HOLE, DROP = object(), object()  # in a graft: where a hostile value goes; a key the graft removes
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
PREDNISONE = {"coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}]}
DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}
#: (where, fields): several related fields set at once, one of them hostile, so that a mutation reaches code
#: that reads a combination (a contained Medication's strength, an as-needed maximum, a timed course)
GRAFTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("resource", {"medicationCodeableConcept": DROP, "medicationReference": {"reference": "#med"},
                  "contained": [{"resourceType": "Medication", "id": "med", "code": PREDNISONE, "ingredient": [
                      {"itemCodeableConcept": {"text": "prednisone"},
                       "strength": {"numerator": {"value": HOLE, "unit": "mg"},
                                    "denominator": {"value": 1, "unit": "TAB"}}}]}]}),
    ("resource", {"medicationCodeableConcept": DROP, "medicationReference": {"reference": "#med"},
                  "contained": [{"resourceType": "Medication", "id": "med", "code": {"text": "prednisone"},
                                 "form": HOLE, "ingredient": [
                                     {"itemCodeableConcept": PREDNISONE,
                                      "strength": {"numerator": {"value": 5, "unit": "mg"},
                                                   "denominator": {"value": HOLE, "unit": "mL"}}}]}]}),
    ("resource", {"medicationCodeableConcept": DROP, "medicationReference": HOLE}),
    ("resource", {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": HOLE, "display": HOLE}]}}),
    ("resource", {"medicationCodeableConcept": {"text": HOLE}}),
    ("resource", {"effectivePeriod": {"start": HOLE, "end": HOLE}}),
    ("resource", {"effectiveDateTime": HOLE, "effectivePeriod": DROP}),
    ("resource", {"dispenseRequest": {"validityPeriod": {"end": HOLE}}}),
    ("resource", {"onsetPeriod": {"start": HOLE}, "onsetDateTime": DROP}),
    ("resource", {"valueQuantity": {"value": HOLE, "unit": "mmol/L", "code": "mmol/L"}}),
    ("resource", {"valueQuantity": {"value": 3.1, "unit": HOLE, "code": DROP}}),
    ("resource", {"valueQuantity": {"value": HOLE}}),
    ("resource", {"referenceRange": [{"low": {"value": HOLE, "unit": "mmol/L"}, "high": {"value": HOLE}}]}),
    ("resource", {"interpretation": [{"coding": [{"system": HOLE, "code": HOLE}]}]}),
    ("resource", {"specimen": {"reference": "#sp"},
                  "contained": [{"resourceType": "Specimen", "id": "sp", "condition": HOLE, "note": HOLE}]}),
    ("resource", {"note": [{"text": HOLE}]}),
    ("resource", {"birthDate": HOLE, "gender": HOLE}),
    ("dosage", {"asNeededBoolean": True, "maxDosePerPeriod": {"numerator": {"value": HOLE, "unit": "mg"},
                                                              "denominator": {"value": HOLE, "code": "d"}}}),
    ("dosage", {"timing": {"repeat": {"boundsDuration": {"value": HOLE, "code": "d"}, **DAILY}}}),
    ("dosage", {"timing": {"repeat": {"boundsDuration": {"value": 3, "code": HOLE}}}}),
    ("dosage", {"timing": {"repeat": {"boundsPeriod": {"start": HOLE, "end": HOLE}, **DAILY}}}),
    ("dosage", {"timing": {"repeat": {"count": HOLE, **DAILY}}}),
    ("dosage", {"timing": {"repeat": {"frequency": HOLE, "period": HOLE, "periodUnit": HOLE}}}),
    ("dosage", {"timing": {"repeat": {"frequencyMax": HOLE, "periodMax": HOLE, "timeOfDay": HOLE}}}),
    ("dosage", {"timing": {"code": {"coding": [{"code": HOLE}], "text": HOLE}}}),
    ("dosage", {"doseAndRate": [{"doseQuantity": {"value": HOLE, "unit": "mg", "code": "mg"}}]}),
    ("dosage", {"doseAndRate": [{"doseQuantity": {"value": 2, "unit": HOLE, "code": DROP}}]}),
    ("dosage", {"doseAndRate": [{"doseRange": {"low": HOLE, "high": {"value": HOLE, "unit": "mg"}}}]}),
    ("dosage", {"sequence": HOLE, "timing": {"repeat": {"count": 3, **DAILY}}}),
    ("dosage", {"route": {"coding": [{"system": "http://snomed.info/sct", "code": HOLE}], "text": HOLE}}),
    ("dosage", {"dose": {"value": HOLE, "unit": "mg"}}),
    ("dosage", {"dose": DROP, "rateQuantity": {"value": HOLE, "unit": "mg/h"}}),
)


def fill(template: Any, draw: st.DrawFn) -> Any:
    if template is HOLE:
        return copy.deepcopy(draw(HOSTILE))
    if isinstance(template, dict):
        return {key: fill(value, draw) for key, value in template.items() if value is not DROP}
    if isinstance(template, list):
        return [fill(value, draw) for value in template]
    return template


def graft(resource: dict[str, Any], where: str, fields: dict[str, Any], draw: st.DrawFn) -> None:
    target = resource
    if where == "dosage":
        key = "dosage" if "dosage" in resource else "dosageInstruction"
        dosages = resource.setdefault(key, [{}])
        if isinstance(dosages, list) and dosages and isinstance(dosages[0], dict):
            target = dosages[0]
        elif isinstance(dosages, dict):
            target = dosages
        else:
            return
    for key, value in fields.items():
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = fill(value, draw)


FIELD_MUTATIONS = ("replace", "confuse", "add", "delete")
ALL_MUTATIONS = ("replace", "confuse", "confuse", "add", "delete", "graft", "graft")


@st.composite
def mutated_requests(draw: st.DrawFn, kinds: tuple[str, ...] = ALL_MUTATIONS) -> tuple[str, dict[str, Any]]:
    """A fixture request with one to four mutations, each in one resource: a resource type is drawn first
    (so the few MedicationRequests are hit more often than the many Observations), then one of its resources,
    then what to do: replace a field the plugin reads (chosen by name, so that ``status`` is as likely as
    ``display``), change its type keeping its content, add or delete one, or graft related fields."""
    name, hook = draw(st.sampled_from(SEEDS))
    raw, by_type = seed(name, hook)
    body = json.loads(raw)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        # medicines three times as often: their dose arithmetic and timeline hold the most code
        rtype = draw(st.sampled_from([*sorted(by_type), *[t for t in sorted(by_type) if t.startswith("Medication")]
                                      * 2]))
        where, read, objects = draw(st.sampled_from(by_type[rtype]))
        kind = draw(st.sampled_from(kinds))
        try:
            if kind == "graft" and where:
                resource = at(body, where)
                if isinstance(resource, dict):
                    graft(resource, *draw(st.sampled_from(GRAFTS)), draw)
                continue
            value = draw(HOSTILE)
            if kind in ("add", "graft") or not read:
                parent = at(body, draw(st.sampled_from(objects)))
                parent[draw(st.sampled_from(READ_FIELDS))] = copy.deepcopy(value)
                continue
            path = draw(st.sampled_from(read[draw(st.sampled_from(sorted(read)))]))
            parent = at(body, path[:-1])
            if kind == "delete":
                del parent[path[-1]]
            elif kind == "confuse":
                parent[path[-1]] = confuse(copy.deepcopy(parent[path[-1]]), draw)
            else:
                parent[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a container on this path: nothing to mutate here
    return hook, body


def post(client: Any, url: str, body: Any) -> Any:
    return client.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def service():
    return make_app().test_client()


def check_hook_call(service: Any, hook: str, body: dict[str, Any]) -> None:
    response = post(service, f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", body)
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code == 200:
        cards = response.get_json()["cards"]
        assert isinstance(cards, list) and all(isinstance(card.get("summary"), str) for card in cards)


@FUZZ
@given(case=mutated_requests(FIELD_MUTATIONS))
def test_issue_11_no_5xx_for_any_field_of_a_fixture_request_of_the_wrong_type(service, case):
    """Issue 11: a fixture request whose read fields are replaced, re-typed, added or deleted is answered 2xx or
    4xx, and a 200 carries a card list."""
    check_hook_call(service, *case)


@FUZZ
@given(case=mutated_requests())
def test_issue_11_no_5xx_for_any_fixture_request_with_hostile_grafts(service, case):
    """Issue 11: the same with grafts (a contained Medication with a hostile strength, an as-needed maximum, a
    timed course, a haemolysed specimen...), which reach the dose arithmetic, the timeline and the labs."""
    check_hook_call(service, *case)


# ------------------------------------------------------------------------------------------ feedback

FEEDBACK_FIELDS = ("card", "outcome", "outcomeTimestamp", "acceptedSuggestions", "overrideReason", "reason",
                   "system", "code", "display", "userComment", "id", "feedback")
FEEDBACK_SEEDS = ("feedback-accepted.json", "feedback-overridden-no-reason.json",
                  "feedback-overridden-with-reason.json")
#: a feedback body with every field the store keeps (the specification's examples each leave some out)
EVERY_FIELD = {"feedback": [{
    "card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
    "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
    "overrideReason": {"reason": {"system": "https://example.com/cds-hooks/override-reason-system",
                                  "code": "d7ecf885", "display": "Patient declined"},
                       "userComment": "A comment entered by the clinician."},
    "outcomeTimestamp": "2026-11-25T12:00:00Z"}]}
FEEDBACK_HOSTILE = st.one_of(
    HOSTILE, st.text(NO_SURROGATES, min_size=190, max_size=600),
    st.sampled_from(("a" * 201, "a" * 10_000, "card\x00id", "2026-11-25T12:00:00." + "1" * 100 + "Z",
                     "2026-11-25T12:00:00Z", "0001-01-01T00:00:00+14:00", "accepted", "overridden")),
    st.lists(st.one_of(st.builds(dict), st.fixed_dictionaries({"id": SCALARS}), SCALARS), max_size=3),
)


@st.composite
def mutated_feedback(draw: st.DrawFn) -> dict[str, Any]:
    """A feedback example of the specification with one to three mutations (a field replaced, its type changed,
    or a field added), sometimes several items, sometimes the outcome flipped (an "overridden" item keeping
    the accepted suggestions of an "accepted" one)."""
    seed_name = draw(st.sampled_from((*FEEDBACK_SEEDS, "every-field")))
    body = copy.deepcopy(EVERY_FIELD if seed_name == "every-field" else spec_example(seed_name))
    if draw(st.booleans()):  # several items in one post
        body["feedback"] = body["feedback"] * draw(st.integers(min_value=1, max_value=3))
        body["feedback"] = [copy.deepcopy(item) for item in body["feedback"]]
    if draw(st.integers(min_value=0, max_value=2)) == 0:
        for item in body["feedback"]:
            item["outcome"] = {"accepted": "overridden", "overridden": "accepted"}[item["outcome"]]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p, _ in walk(body) if p]
        named = [p for p in paths if isinstance(p[-1], str) and p[-1] in FEEDBACK_FIELDS]
        value = draw(FEEDBACK_HOSTILE)
        if draw(st.integers(min_value=0, max_value=3)) == 0:  # add a field where the example has none
            objects = [p for p, v in walk(body) if isinstance(v, dict)]
            parent = at(body, draw(st.sampled_from(objects)))
            parent[draw(st.sampled_from(FEEDBACK_FIELDS))] = copy.deepcopy(value)
            continue
        by_name: dict[str, list[Path]] = {}
        for p in named:
            by_name.setdefault(p[-1], []).append(p)
        path = draw(st.sampled_from(by_name[draw(st.sampled_from(sorted(by_name)))])) if by_name else \
            draw(st.sampled_from(paths))
        parent = at(body, path[:-1])
        parent[path[-1]] = confuse(parent[path[-1]], draw) if draw(st.booleans()) else copy.deepcopy(value)
    return body


FEEDBACK_URL = f"/cds-services/{fixtures.SERVICE_PREFIX}-patient-view/feedback"


def feedback_app(database_url: str) -> Any:
    from cds_hooks import create_app

    return create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": database_url,
                       "LUPUS_CDS_LOG_FORMAT": "none", "LUPUS_CDS_METRICS": False,
                       "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0})


@pytest.fixture(scope="module")
def sqlite_feedback():
    return feedback_app("sqlite://").test_client()


@pytest.fixture(scope="module")
def postgres_feedback(postgres):
    return feedback_app(postgres.new_database()).test_client()


def check_feedback(client: Any, body: Any) -> None:
    response = post(client, FEEDBACK_URL, body)
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code == 200:
        assert response.get_json() == {}


@settings(FUZZ, max_examples=400)
@given(body=mutated_feedback())
def test_issue_11_no_5xx_for_any_feedback_body_on_sqlite(sqlite_feedback, body):
    check_feedback(sqlite_feedback, body)


@settings(FUZZ, max_examples=150)
@given(body=mutated_feedback())
def test_issue_11_no_5xx_for_any_feedback_body_on_postgresql(postgres_feedback, body):
    """The same bodies on PostgreSQL, which enforces column lengths and refuses NUL where SQLite does not."""
    check_feedback(postgres_feedback, body)
