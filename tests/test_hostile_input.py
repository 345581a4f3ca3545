"""Issue 11, "No 5xx for any input": each request body the red team found answered with HTTP 500, as a regression
test, in the issue's own words. A malformed element of a record is skipped and stated (a note under the card's
"Data gaps"), never a crash; a feedback value the store cannot hold is a 400 naming the field, the same on
SQLite and PostgreSQL; a feedback post holds at most 100 items (413 past that).

The property-based counterpart, which mutates every field the plugin reads, is ``tests/test_fuzz_inputs.py``.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cds_hooks.feedback import MAX_FEEDBACK_ITEMS
from plugin import fixtures
from plugin.demo import make_app

pytest_plugins = ["servers"]

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def service():
    return make_app().test_client()


def resources(node: Any, under: str | None = None, inside: bool = False) -> Iterator[dict[str, Any]]:
    """Every FHIR resource in a request body (only those below the key ``under``, when given)."""
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str) and (under is None or inside):
            yield node
        for key, value in node.items():
            yield from resources(value, under, inside or key == under)
    elif isinstance(node, list):
        for value in node:
            yield from resources(value, under, inside)


def call(service, name: str, hook: str, rtype: str, mutate: Mutation, under: str | None = None,
         raw: bytes | None = None) -> tuple[Any, int]:
    """POST the fixture request of ``name``/``hook`` with ``mutate`` applied to each ``rtype`` resource;
    (response, how many resources were mutated)."""
    body = json.loads(fixtures.request_path(name, hook).read_text())
    mutated = 0
    for resource in resources(body, under):
        if resource.get("resourceType") == rtype:
            mutate(resource)
            mutated += 1
    data = raw if raw is not None else json.dumps(body).encode()
    response = service.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", data=data,
                            headers={"Content-Type": "application/json"})
    return response, mutated


def call_with_copy(service, name: str, hook: str, rtype: str, mutate: Mutation, under: str | None = None) -> Any:
    """POST the fixture request with, beside each ``rtype`` resource, a mutated copy of it (id ``<id>-bad``): the
    original still gives its card, on which the skipped copy is stated."""
    body = json.loads(fixtures.request_path(name, hook).read_text())
    copies = 0
    for bundle in [b for b in resources(body, under) if b.get("resourceType") == "Bundle"]:
        for entry in list(bundle.get("entry", [])):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == rtype:
                bad = copy.deepcopy(resource)
                bad["id"] = f"{resource['id']}-bad"
                mutate(bad)
                bundle["entry"].append({"resource": bad})
                copies += 1
    assert copies, f"no {rtype} in {name}/{hook}"
    return service.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", json=body)


def details(response) -> str:
    return "\n".join(card.get("detail", "") for card in response.get_json()["cards"])


def topics(response) -> set[str]:
    return {card["source"]["topic"]["code"] for card in response.get_json()["cards"]}


def set_field(key: str, value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        resource[key] = copy.deepcopy(value)
    return mutate


def med_codings(key: str, value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        for coding in resource.get("medicationCodeableConcept", {}).get("coding", []):
            coding[key] = copy.deepcopy(value)
    return mutate


def code_as_object(resource: dict[str, Any]) -> None:
    for key in ("code", "medicationCodeableConcept"):
        for coding in (resource.get(key) or {}).get("coding", []):
            coding["code"] = {"value": coding.get("code")}


def on_repeat(**fields: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        for dosage in resource.get("dosageInstruction", []):
            dosage.setdefault("timing", {}).setdefault("repeat", {}).update(copy.deepcopy(fields))
    return mutate


def dose_value(value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        for dosage in resource.get("dosageInstruction", []):
            for rate in dosage.get("doseAndRate", []):
                rate["doseQuantity"]["value"] = value
    return mutate


STATUS_SHAPES = [pytest.param(["final"], id="list"), pytest.param({"code": "final"}, id="object")]
K_LOW = "sle-low-potassium-on-furosemide"
CK_ORDERED = "sle-ck-order-pending"
NO_LABS = "sle-twitching-no-labs"
NCS_DONE = "sle-paresthesia-recent-ncs"
PRED_40 = "sle-on-prednisone-40"
TAPER_SIGN = "sle-prednisone-taper-order-sign"


# ------------------------------------------------------------------------------------------ hook calls


@pytest.mark.parametrize("status", STATUS_SHAPES)
def test_issue_11_a_status_that_is_a_list_or_an_object_observation(service, status):
    """"a status that is a list or an object (Observation)": the results are skipped and the card says so."""
    response, mutated = call(service, K_LOW, "patient-view", "Observation", set_field("status", status))
    assert mutated and response.status_code == 200
    assert "skipped: its status is not a code" in details(response)


@pytest.mark.parametrize("status", STATUS_SHAPES)
def test_issue_11_a_status_that_is_a_list_or_an_object_service_request(service, status):
    """"a status that is a list or an object (ServiceRequest)": the pending CK order is skipped, and stated."""
    response, mutated = call(service, CK_ORDERED, "patient-view", "ServiceRequest", set_field("status", status))
    assert mutated and response.status_code == 200
    assert "ServiceRequest/" in details(response) and "skipped: its status is not a code" in details(response)


@pytest.mark.parametrize("status", STATUS_SHAPES)
def test_issue_11_a_status_that_is_a_list_or_an_object_service_request_in_draft_orders(service, status):
    """"a status that is a list or an object (ServiceRequest incl. draftOrders)"."""
    response, mutated = call(service, NO_LABS, "order-select", "ServiceRequest", set_field("status", status),
                             under="draftOrders")
    assert mutated and response.status_code == 200
    assert "skipped: its status is not a code" in details(response)


@pytest.mark.parametrize("status", STATUS_SHAPES)
def test_issue_11_a_status_that_is_a_list_or_an_object_procedure(service, status):
    """"a status that is a list or an object (Procedure)": a recent NCS whose status cannot be read does not
    suppress the NCS card, which says it was skipped."""
    response, mutated = call(service, NCS_DONE, "patient-view", "Procedure", set_field("status", status))
    assert mutated and response.status_code == 200
    body = json.loads(fixtures.request_path(NCS_DONE, "patient-view").read_text())
    (ncs,) = [r for r in resources(body) if r.get("resourceType") == "Procedure"]
    ncs["status"] = status
    body = json.loads(fixtures.request_path("sle-paresthesia-needs-ncs", "patient-view").read_text())
    body["prefetch"]["procedures"]["entry"].append({"resource": ncs})
    response = service.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-patient-view", json=body)
    assert response.status_code == 200 and "ncs-emg" in topics(response)
    assert f"Procedure/{ncs['id']} skipped: its status is not a code" in details(response)


@pytest.mark.parametrize("status", STATUS_SHAPES)
@pytest.mark.parametrize("name, hook", [(PRED_40, "patient-view"), (TAPER_SIGN, "order-sign")])
def test_issue_11_a_status_that_is_a_list_or_an_object_medication_request(service, status, name, hook):
    """"a status that is a list or an object (MedicationRequest)", stored and draft orders alike: the record is
    skipped; beside a readable one, the card says so."""
    response, mutated = call(service, name, hook, "MedicationRequest", set_field("status", status))
    assert mutated and response.status_code == 200
    response = call_with_copy(service, PRED_40, "patient-view", "MedicationRequest", set_field("status", status))
    assert response.status_code == 200 and "steroid-review" in topics(response)
    assert "-bad skipped: its status is not a code" in details(response)


@pytest.mark.parametrize("name, rtype", [(K_LOW, "Observation"), (PRED_40, "MedicationRequest"),
                                         (PRED_40, "Condition"), (CK_ORDERED, "ServiceRequest")])
def test_issue_11_a_coding_code_that_is_an_object(service, name, rtype):
    """"a coding code that is an object": the coding matches nothing (as if it had no code)."""
    response, mutated = call(service, name, "patient-view", rtype, code_as_object)
    assert mutated and response.status_code == 200


@pytest.mark.parametrize("key, value", [("system", [RXNORM]), ("code", ["312617"])])
def test_issue_11_a_medication_coding_system_or_code_that_is_a_list(service, key, value):
    """"a medication coding system/code that is a list": the record is not valid FHIR, so it is skipped; beside a
    readable one, the card says so."""
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest", med_codings(key, value))
    assert mutated and response.status_code == 200
    response = call_with_copy(service, PRED_40, "patient-view", "MedicationRequest", med_codings(key, value))
    assert response.status_code == 200 and "steroid-review" in topics(response)
    assert "-bad skipped: not valid FHIR R4" in details(response)


def test_issue_11_a_numeric_display_with_an_unknown_rxcui(service):
    """"a numeric display with an unknown RxCUI": nothing identifies the medicine, so it is not read."""
    unknown = {"coding": [{"system": RXNORM, "code": "99999999", "display": 20}]}
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest",
                             set_field("medicationCodeableConcept", unknown))
    assert mutated and response.status_code == 200


@pytest.mark.parametrize("name", ["prednisone 20 MG/0 ML Oral Solution", "prednisone 0.0 MG/0.0 ML Oral Solution"])
def test_issue_11_a_product_name_20_mg_per_0_ml_division_by_zero(service, name):
    """"a product name "20 MG/0 ML" (division by zero)": the strength is unknown, and the card says why no dose
    could be computed."""
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest",
                             set_field("medicationCodeableConcept", {"text": name}))
    assert mutated and response.status_code == 200


@pytest.mark.parametrize("name, hook", [(PRED_40, "patient-view"), (TAPER_SIGN, "order-sign")])
def test_issue_11_bounds_duration_of_3_000_000_days(service, name, hook):
    """"boundsDuration of 3,000,000 days": the dosage line is skipped and named ("out of range")."""
    response, mutated = call(service, name, hook, "MedicationRequest",
                             on_repeat(boundsDuration={"value": 3_000_000, "unit": "d", "code": "d"}))
    assert mutated and response.status_code == 200
    assert "boundsDuration of 3e+06 d is out of range" in details(response)


@pytest.mark.parametrize("name, hook", [(PRED_40, "patient-view"), (TAPER_SIGN, "order-sign")])
@pytest.mark.parametrize("repeat", [{"boundsPeriod": {"start": "9999-12-31"}},
                                    {"boundsPeriod": {"start": "9999-12-31T23:59:59Z"},
                                     "boundsDuration": {"value": 5, "code": "d"}}])
def test_issue_11_bounds_period_start_9999_12_31(service, name, hook, repeat):
    """"boundsPeriod.start 9999-12-31": a line starting then is not in force; one that would end after year 9999
    is skipped and named."""
    response, mutated = call(service, name, hook, "MedicationRequest", on_repeat(**repeat))
    assert mutated and response.status_code == 200


@pytest.mark.parametrize("name, hook", [(PRED_40, "patient-view"), (TAPER_SIGN, "order-sign")])
def test_issue_11_a_dose_of_1e308(service, name, hook):
    """"a dose of 1e308": no dose is computed from it, and the card says which record it is."""
    response, mutated = call(service, name, hook, "MedicationRequest", dose_value(1e308))
    assert mutated and response.status_code == 200
    assert "no usable dose value" in details(response)


def contained_strength(value: Any) -> Mutation:
    def mutate(resource: dict[str, Any]) -> None:
        resource.pop("medicationCodeableConcept", None)
        resource["medicationReference"] = {"reference": "#med"}
        resource["contained"] = [{
            "resourceType": "Medication", "id": "med",
            "code": {"coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}]},
            "ingredient": [{"itemCodeableConcept": {"text": "prednisone"},
                            "strength": {"numerator": {"value": value, "unit": "mg"},
                                         "denominator": {"value": 1, "unit": "TAB"}}}]}]
        for dosage in resource.get("dosageInstruction", []):
            dosage["doseAndRate"] = [{"doseQuantity": {"value": 2, "unit": "tablet"}}]
    return mutate


def test_issue_11_a_400_digit_strength_as_a_json_number_is_a_400(service):
    """"a 400-digit strength" written as a JSON number: no double holds it, so the body is not JSON the service
    reads (RFC 8259 section 6 lets a parser limit numbers): 400, not 500."""
    body = json.loads(fixtures.request_path(PRED_40, "patient-view").read_text())
    for resource in resources(body):
        if resource.get("resourceType") == "MedicationRequest":
            contained_strength("@@")(resource)
    raw = json.dumps(body).replace('"@@"', "9" * 400).encode()
    response, _ = call(service, PRED_40, "patient-view", "MedicationRequest", lambda r: None, raw=raw)
    assert response.status_code == 400


@pytest.mark.parametrize("strength", ["9" * 400, 1e308, "1" + "0" * 400 + ".5"])
def test_issue_11_a_400_digit_strength_in_a_contained_medication(service, strength):
    """"a 400-digit strength" as text or a near-overflow number: no strength is read, so no dose either."""
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest", contained_strength(strength))
    assert mutated and response.status_code == 200
    assert "product strength is unknown" in details(response)


def test_issue_11_a_400_digit_strength_in_a_product_name(service):
    name = "prednisone " + "9" * 400 + " MG Oral Tablet"
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest",
                             set_field("medicationCodeableConcept", {"text": name}))
    assert mutated and response.status_code == 200


@pytest.mark.parametrize("birth_date", ["9999-12", "9999-12-31", "0001-01", "2026-13"])
def test_issue_11_a_birth_date_at_the_end_of_the_calendar(service, birth_date):
    """Found while fixing issue 11: birthDate "9999-12" overflowed the last-day-of-month arithmetic. Now it is
    a date in the future, so the age is unknown, and the card says so."""
    response, mutated = call(service, "sle-child-15-on-prednisone", "patient-view", "Patient",
                             set_field("birthDate", birth_date))
    assert mutated and response.status_code == 200
    assert f"birthDate '{birth_date}' is not a usable date" in details(response)


def test_issue_11_a_very_long_medicine_name_is_not_parsed_for_seconds(service):
    """Found while fixing issue 11: the RxNorm name grammar took seconds on a 20,000-character display (its regex
    is quadratic in the length). Names longer than RxNorm's longest are not parsed as names."""
    from plugin import medications

    assert medications.parse_product_name("prednisone 20 MG Oral Tablet").ingredients[0].strength_mg == 20
    assert medications.parse_product_name("x" * 20_000) is None
    assert medications.parse_product_name("prednisone " * 2000 + "20 MG Oral Tablet") is None
    response, mutated = call(service, PRED_40, "patient-view", "MedicationRequest",
                             set_field("medicationCodeableConcept", {"text": "prednisone " * 2000}))
    assert mutated and response.status_code == 200


# ------------------------------------------------------------------------------------------ the raw readers


def test_text_of_and_number_of_are_the_one_place_raw_values_are_read():
    """The plugin's raw accessors answer a value of their type or None, for any JSON."""
    from plugin.fhirdata import number_of, out_of_range, parse_datetime, text_of

    assert text_of(" final ") == "final" and text_of(["final"]) is None and text_of({"code": "x"}) is None
    assert text_of("") is None and text_of(20) is None and text_of(None) is None
    assert number_of(40) == 40.0 and number_of("2.5") == 2.5 and number_of(-0.0) == 0.0
    for bad in (True, 1e308, 10**30, "9" * 400, "NaN", "Infinity", [1], {"value": 1}, None, "abc"):
        assert number_of(bad) is None, bad
    assert out_of_range(1e308) and out_of_range(2**64 - 1) and not out_of_range("x") and not out_of_range(5)
    assert parse_datetime("0001-01-01T00:00:00+14:00") is None  # before year 1 in UTC
    assert parse_datetime("9999-12-31T23:59:59-14:00") is None  # after year 9999 in UTC
    assert parse_datetime("2026-13-45T99:99:99Z") is None and parse_datetime(["2026-01-01"]) is None
    assert parse_datetime("9999-12-31").year == 9999


# ------------------------------------------------------------------------------------------ feedback

FEEDBACK = f"/cds-services/{fixtures.SERVICE_PREFIX}-patient-view/feedback"


def item(**fields: Any) -> dict[str, Any]:
    base = {"card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
            "outcomeTimestamp": "2026-11-25T12:00:00Z"}
    base.update(fields)
    return base


def feedback_app(url: str, **config: Any) -> Any:
    from cds_hooks import create_app

    base = {"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": url, "LUPUS_CDS_LOG_FORMAT": "none",
            "LUPUS_CDS_METRICS": False, "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0}
    base.update(config)
    return create_app(base)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Each feedback test runs on SQLite and on a real PostgreSQL (which enforces what SQLite does not)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def feedback_store_app(database_url):
    return feedback_app(database_url)


FEEDBACK_CASES = [
    pytest.param(item(acceptedSuggestions=[1]), "acceptedSuggestions", id="overridden-acceptedSuggestions-[1]"),
    pytest.param(item(acceptedSuggestions=[{}]), "acceptedSuggestions", id="overridden-acceptedSuggestions-[{}]"),
    pytest.param(item(outcome="accepted", acceptedSuggestions=[1]), "acceptedSuggestions", id="accepted-[1]"),
    pytest.param(item(overrideReason={"reason": {"system": "urn:x", "code": "c", "display": {"text": "x"}}}),
                 "overrideReason.reason", id="display-that-is-an-object"),
    pytest.param(item(card="c" * 201), "feedback[0].card", id="card-id-over-200-characters"),
    pytest.param(item(card="card\x00id"), "feedback[0].card", id="NUL-in-a-card-id"),
    pytest.param(item(overrideReason={"userComment": "not\x00now"}), "userComment", id="NUL-in-a-comment"),
    pytest.param(item(outcomeTimestamp="2026-11-25T12:00:00." + "1" * 100 + "Z"), "outcomeTimestamp",
                 id="long-outcomeTimestamp"),
    pytest.param(item(overrideReason={"reason": {"system": "urn:x", "code": "c" * 201}}),
                 "overrideReason.reason.code", id="long-reason-code"),
    pytest.param(item(overrideReason={"reason": {"system": "urn:x" + "x" * 500, "code": "c"}}),
                 "overrideReason.reason.system", id="long-reason-system"),
    pytest.param(item(outcomeTimestamp="2026-13-45T99:99:99Z"), "outcomeTimestamp", id="2026-13-45T99:99:99Z"),
    pytest.param(item(outcomeTimestamp="2026-02-30T12:00:00Z"), "outcomeTimestamp", id="February-30"),
    pytest.param(item(outcomeTimestamp="2026-11-25T12:00:00+24:00"), "outcomeTimestamp", id="offset-24h"),
]


@pytest.mark.parametrize("feedback, field", FEEDBACK_CASES)
def test_issue_11_feedback_the_store_cannot_hold_is_a_400_on_sqlite_and_postgresql(feedback_store_app, feedback,
                                                                                 field):
    """Feedback: "overridden with acceptedSuggestions [1] or [{}], a display that is an object; on PostgreSQL only,
    a card id over 200 characters, NUL in a card id or comment, a long outcomeTimestamp or reason code", and
    "outcomeTimestamp accepts 2026-13-45T99:99:99Z (must be 400)": each is a 400 naming the field, on both
    engines, and nothing is stored."""
    response = feedback_store_app.test_client().post(FEEDBACK, json={"feedback": [feedback]})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert field in response.get_json()["issue"][0]["diagnostics"]
    assert feedback_store_app.extensions["cds_hooks"].feedback_store.all() == []


@pytest.mark.parametrize("timestamp", ["2026-11-25T12:00:00Z", "2026-11-25T12:00:00.123456789+05:30",
                                       "2016-12-31T23:59:60Z"])
def test_issue_11_real_instants_are_still_accepted(feedback_store_app, timestamp):
    """RFC 3339 date-times, a leap second included, still store (FB-4)."""
    client = feedback_store_app.test_client()
    assert client.post(FEEDBACK, json={"feedback": [item(outcomeTimestamp=timestamp)]}).status_code == 200
    (row,) = feedback_store_app.extensions["cds_hooks"].feedback_store.all()
    assert row["outcome_timestamp"] == timestamp


def test_issue_11_the_longest_values_a_column_holds_are_stored(feedback_store_app):
    """The limits are the columns' own: 200 characters of card id and reason code are stored on both engines."""
    feedback = item(card="c" * 200, overrideReason={"reason": {"system": "urn:x", "code": "r" * 200,
                                                                "display": "d" * 500}, "userComment": "é" * 5000})
    assert feedback_store_app.test_client().post(FEEDBACK, json={"feedback": [feedback]}).status_code == 200
    (row,) = feedback_store_app.extensions["cds_hooks"].feedback_store.all()
    assert (len(row["card_uuid"]), len(row["override_reason_code"])) == (200, 200)


def test_issue_11_a_tenant_claim_over_200_characters_is_a_400(database_url, client_keys):
    """"a tenant claim over 200 characters": the verified client's tenant cannot be stored, so its feedback is
    refused with a 400 that names the claim (and not its value), on both engines."""
    app = feedback_app(database_url, LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file),
                       LUPUS_CDS_PUBLIC_URL="https://cds.example.org")
    header = client_keys.header(f"https://cds.example.org{FEEDBACK}", tenant="t" * 201)
    response = app.test_client().post(FEEDBACK, json={"feedback": [item()]}, headers=header)
    assert response.status_code == 400
    assert "tenant claim is longer than 200" in response.get_json()["issue"][0]["diagnostics"]
    assert "t" * 201 not in response.get_data(as_text=True)
    assert app.extensions["cds_hooks"].feedback_store.all() == []
    header = client_keys.header(f"https://cds.example.org{FEEDBACK}", tenant="t" * 200)
    assert app.test_client().post(FEEDBACK, json={"feedback": [item()]}, headers=header).status_code == 200


def test_issue_11_a_40000_item_feedback_post_is_a_413_past_the_documented_limit(tmp_path):
    """"a 40,000-item feedback post takes seconds": one post holds at most 100 items (README); past that it is a
    413 before any item is validated or written."""
    app = feedback_app(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    client = app.test_client()
    many = {"feedback": [item(card=f"card-{n}") for n in range(40_000)]}
    response = client.post(FEEDBACK, json=many)
    assert response.status_code == 413 and response.get_json()["issue"][0]["code"] == "too-costly"
    assert app.extensions["cds_hooks"].feedback_store.all() == []
    most = {"feedback": [item(card=f"card-{n}") for n in range(MAX_FEEDBACK_ITEMS)]}
    assert client.post(FEEDBACK, json=most).status_code == 200
    assert len(app.extensions["cds_hooks"].feedback_store.all()) == MAX_FEEDBACK_ITEMS == 100


# ------------------------------------------------------------------------------------------ transport


class InvalidChunkSize(Exception):
    """What a WSGI server's body reader raises on a malformed chunk (a server-specific exception class)."""


class BrokenChunks:
    """A server's body reader that fails part-way, as a WSGI server's does on an invalid chunk size."""

    def read(self, size: int = -1) -> bytes:
        raise InvalidChunkSize("invalid chunk size: b'zz'")

    readline = read


def post_chunked(app, url: str, stream: Any) -> tuple[str, dict[str, Any]]:
    """POST ``stream`` as a server hands over a chunked body: no Content-Length, ``wsgi.input_terminated``."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path=url, method="POST", headers={"Content-Type": "application/json",
                                                               "Transfer-Encoding": "chunked"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": stream, "wsgi.input_terminated": True})
    body, status, _ = run_wsgi_app(app, environ, buffered=True)
    return status, json.loads(b"".join(body))


def test_issue_11_a_body_the_server_cannot_read_is_a_400(tmp_path):
    """Transport, app level: "an invalid chunk size (500 today)": when reading the body raises (a WSGI
    server's InvalidChunkSize), the answer is a 400."""
    app = feedback_app(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    status, outcome = post_chunked(app, f"/cds-services/{fixtures.SERVICE_PREFIX}-patient-view", BrokenChunks())
    assert status.startswith("400") and "could not be read" in outcome["issue"][0]["diagnostics"]


def test_issue_11_a_chunked_body_over_the_limit_is_a_413_and_one_at_the_limit_is_read(tmp_path):
    """Transport, app level: "a chunked body over the limit (400 instead of 413)": werkzeug cut a body without a
    Content-Length at LUPUS_CDS_MAX_BODY_BYTES and handed on the truncated JSON (a 400); now it is a 413, and a
    body of exactly the limit is still read."""
    body = json.dumps({"feedback": [item(card=f"card-{n}") for n in range(10)]}).encode()
    app = feedback_app(f"sqlite:///{tmp_path / 'over.sqlite3'}", LUPUS_CDS_MAX_BODY_BYTES=len(body) - 1)
    status, outcome = post_chunked(app, FEEDBACK, io.BytesIO(body))
    assert status.startswith("413") and outcome["issue"][0]["code"] == "too-costly"
    app = feedback_app(f"sqlite:///{tmp_path / 'exact.sqlite3'}", LUPUS_CDS_MAX_BODY_BYTES=len(body))
    status, _ = post_chunked(app, FEEDBACK, io.BytesIO(body))
    assert status.startswith("200") and len(app.extensions["cds_hooks"].feedback_store.all()) == 10
