"""The hook endpoint: request validation, errors (checklist 12), prefetch states end to end, 412 (PF-12),
the fetch seam and DISC-8 dispatch."""

from __future__ import annotations

import json

import pytest
from conftest import PATIENT, patient_view_request, spec_example

from cds_hooks.cards import response_problems
from cds_hooks.models import PrefetchEntry, PrefetchStatus

URL = "/cds-services/patient-greeter"


def post(client, body, **kwargs):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kwargs)


def assert_outcome(response, status):
    assert response.status_code == status
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] in ("error", "fatal")
    return body


@pytest.mark.requirement("cds-hooks_2.0@16", "cds-hooks_2.0@28", "cds-hooks_2.0@74")
def test_resp_1_full_prefetch_gives_cards(client):
    response = post(client, patient_view_request())
    assert response.status_code == 200
    body = response.get_json()
    assert response_problems(body) == []
    assert body["cards"][0]["summary"] == "Hello Ada"
    assert "patientToGreet=satisfied:1:complete:prefetch" in body["cards"][0]["detail"]


@pytest.mark.requirement("cds-hooks_2.0@3")
def test_gen_4_plugin_empty_members_are_pruned(client):
    card = post(client, patient_view_request()).get_json()["cards"][0]
    assert "suggestions" not in card and "links" not in card


@pytest.mark.requirement("cds-hooks_2.0@3")
def test_gen_2_to_4_prune_drops_null_and_empty_members_and_keeps_zero_and_false():
    from cds_hooks.cards import prune

    card = {"summary": "s", "detail": "", "count": 0, "flag": False, "links": [], "source": {"topic": None},
            "suggestions": [{"label": "x", "actions": [{}, None, {"resource": {"a": [[], {"b": ""}]}}]}],
            "extension": {"nested": {"deeper": [None]}}}
    assert prune(card) == {"summary": "s", "count": 0, "flag": False, "suggestions": [{"label": "x"}]}
    assert prune([None, "", {}, [[]], 0]) == [0]


@pytest.mark.requirement("cds-hooks_2.0@77")
def test_resp_3_no_guidance_is_empty_cards(client):
    response = post(client, patient_view_request(prefetch={"patientToGreet": None, "hemoglobin": None}))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_application_fhir_json_is_accepted(client):
    response = client.post(URL, data=json.dumps(patient_view_request()), content_type="application/fhir+json")
    assert response.status_code == 200


def test_spec_example_request_patient_view(make_app):
    """The 2.0.1 example request (fhirAuthorization without patient; prefetch patientToGreet)."""
    response = post(make_app().test_client(), spec_example("request-patient-view.json"))
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["summary"] == "Hello there"


# --- malformed requests: 400 with an OperationOutcome (checklist 12) --------------------------------

@pytest.mark.parametrize("mutate, expression", [
    (lambda b: b.pop("hook"), "hook"),
    (lambda b: b.pop("hookInstance"), "hookInstance"),
    (lambda b: b.update(hookInstance=""), "hookInstance"),
    (lambda b: b.pop("context"), "context"),
    (lambda b: b.update(context=[]), "context"),
    (lambda b: b["context"].pop("patientId"), "context.patientId"),
    (lambda b: b["context"].pop("userId"), "context.userId"),
    (lambda b: b["context"].update(userId="example"), "context.userId"),
    (lambda b: b["context"].update(patientId=12), "context.patientId"),
    (lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer"}), "fhirServer"),
    (lambda b: b.update(fhirServer="not a url"), "fhirServer"),
    (lambda b: b.update(fhirServer="https://ehr/fhir", fhirAuthorization={"token_type": "Bearer"}),
     "fhirAuthorization.access_token"),
    (lambda b: b.update(fhirServer="https://ehr/fhir", fhirAuthorization={"access_token": "t",
                                                                          "token_type": "MAC"}),
     "fhirAuthorization.token_type"),
    (lambda b: b.update(fhirServer="https://ehr/fhir", fhirAuthorization={
        "access_token": "t", "token_type": "bearer", "patient": "someone-else"}), "fhirAuthorization.patient"),
    (lambda b: b.update(prefetch=[]), "prefetch"),
    (lambda b: b["prefetch"].update(patientToGreet="123"), "prefetch.patientToGreet"),
    (lambda b: b.update(extension="x"), "extension"),
])
@pytest.mark.requirement("cds-hooks_2.0@76")
def test_malformed_fields_get_400_with_operation_outcome(client, mutate, expression):
    body = patient_view_request()
    mutate(body)
    outcome = assert_outcome(post(client, body), 400)
    assert outcome["issue"][0]["expression"] == [expression]


def test_req_inv_1_and_token_type_case_insensitive(client):
    body = patient_view_request(fhirServer="https://ehr.example.org/fhir",
                                fhirAuthorization={"access_token": "t", "token_type": "bearer",
                                                   "expires_in": 300, "scope": "patient/*.read",
                                                   "subject": "cds", "patient": "1288992"})
    assert post(client, body).status_code == 200


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'"text"'])
@pytest.mark.requirement("cds-hooks_2.0@1", "cds-hooks_2.0@76")
def test_malformed_json_gets_400(client, raw):
    assert_outcome(client.post(URL, data=raw, content_type="application/json"), 400)


def _with_value(token: bytes) -> bytes:
    """A valid request body whose context carries an extra member with the raw JSON ``token`` as value."""
    body = json.dumps(patient_view_request()).encode()
    return body.replace(b'"context": {', b'"context": {"x": ' + token + b", ", 1)


@pytest.mark.parametrize("token", [
    b"NaN", b"Infinity", b"-Infinity",  # not JSON (RFC 8259 section 6), though Python's json reads them
    b"1e400",  # overflows a double
    b'"\\ud800"',  # an unpaired surrogate: no Unicode text holds it
    b"[" * 2000 + b"]" * 2000,  # nesting no FHIR resource has; the parser stops, it does not recurse away
])
@pytest.mark.requirement("cds-hooks_2.0@1")
def test_json_that_is_not_interoperable_gets_400(client, token):
    assert client.post(URL, data=_with_value(b"1"), content_type="application/json").status_code == 200
    raw = _with_value(token)
    assert raw != json.dumps(patient_view_request()).encode()  # the token did go in
    body = assert_outcome(client.post(URL, data=raw, content_type="application/json"), 400)
    assert "not valid JSON" in body["issue"][0]["diagnostics"]


def test_utf8_byte_order_mark_is_tolerated(client):
    """RFC 8259 section 8.1: a parser MAY ignore a BOM. Some Windows clients send one."""
    raw = b"\xef\xbb\xbf" + json.dumps(patient_view_request()).encode()
    assert client.post(URL, data=raw, content_type="application/json").status_code == 200


def test_utf16_body_is_400(client):
    """JSON exchanged between systems is UTF-8 (RFC 8259 section 8.1)."""
    raw = json.dumps(patient_view_request()).encode("utf-16")
    assert_outcome(client.post(URL, data=raw, content_type="application/json"), 400)


def test_spec_example_request_without_patient_id_is_400(client):
    """request-with-extension.json: patient-view without context.patientId (spec-examples README)."""
    assert_outcome(post(client, spec_example("request-with-extension.json")), 400)


@pytest.mark.requirement("cds-hooks_2.0@76")
def test_unknown_service_is_404(client):
    assert_outcome(client.post("/cds-services/nope", json=patient_view_request()), 404)


def test_unknown_path_is_404(client):
    assert_outcome(client.get("/somewhere"), 404)


@pytest.mark.requirement("cds-hooks_2.0@14", "cds-hooks_2.0@76")
def test_wrong_method_is_405(client):
    response = client.get(URL)
    assert_outcome(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_outcome(client.delete("/cds-services"), 405)
    assert_outcome(client.get(URL + "/feedback"), 405)


def test_hook_not_served_by_this_id_is_400(client):
    body = patient_view_request(hook="order-select")
    outcome = assert_outcome(post(client, body), 400)
    assert outcome["issue"][0]["expression"] == ["hook"]


@pytest.mark.requirement("cds-hooks_2.0@210", "cds-hooks_2.0@211")
def test_disc_8_same_id_dispatches_on_request_hook(client):
    body = {"hook": "order-sign", "hookInstance": "i-1",
            "context": {"userId": "Practitioner/1", "patientId": "1288992",
                        "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType":
                                                                                           "NutritionOrder"}}]}}}
    response = post(client, body)
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["summary"] == "1 draft orders seen at order-sign"


def test_order_sign_requires_draft_orders_bundle(client):
    body = {"hook": "order-sign", "hookInstance": "i-1",
            "context": {"userId": "Practitioner/1", "patientId": "1288992", "draftOrders": []}}
    assert_outcome(post(client, body), 400)


@pytest.mark.requirement("cds-hooks_2.0@76")
def test_oversized_body_is_413(make_app):
    client = make_app(LUPUS_CDS_MAX_BODY_BYTES=1000).test_client()
    body = patient_view_request()
    body["prefetch"]["patientToGreet"]["text"] = {"div": "x" * 2000}
    assert_outcome(post(client, body), 413)


def test_default_body_limit_is_5_mb(app):
    assert app.config["MAX_CONTENT_LENGTH"] == 5 * 1024 * 1024


@pytest.mark.requirement("cds-hooks_2.0@1", "cds-hooks_2.0@76")
def test_non_json_content_type_is_415(client):
    response = client.post(URL, data="hook=patient-view", content_type="application/x-www-form-urlencoded")
    assert_outcome(response, 415)


# --- prefetch states end to end (checklist 4.2, PF-9..12) ----------------------------------------------

@pytest.mark.requirement("cds-hooks_2.0@54")
def test_pf_12_required_key_absent_without_fhir_access_is_412(client):
    body = patient_view_request()
    del body["prefetch"]["patientToGreet"]
    outcome = assert_outcome(post(client, body), 412)
    assert outcome["issue"][0]["code"] == "incomplete"
    assert outcome["issue"][0]["expression"] == ["prefetch.patientToGreet"]
    assert "1288992" not in json.dumps(outcome)  # no patient data echoed


@pytest.mark.requirement("cds-hooks_2.0@54")
def test_pf_12_no_prefetch_at_all_is_412(client):
    assert_outcome(post(client, patient_view_request(prefetch=None) | {"prefetch": {}}), 412)


def test_pf_9_null_required_key_is_not_412(client):
    response = post(client, patient_view_request(prefetch={"patientToGreet": None, "hemoglobin": None}))
    assert response.status_code == 200


@pytest.mark.requirement("cds-hooks_2.0@52")
def test_pf_10_operation_outcome_in_required_key_is_412(client):
    body = patient_view_request()
    body["prefetch"]["patientToGreet"] = {"resourceType": "OperationOutcome",
                                          "issue": [{"severity": "error", "code": "exception"}]}
    assert_outcome(post(client, body), 412)


def test_optional_key_missing_still_answers_and_reports_the_gap(client):
    body = patient_view_request()
    del body["prefetch"]["hemoglobin"]
    response = post(client, body)
    assert response.status_code == 200
    assert "hemoglobin=missing:0" in response.get_json()["cards"][0]["detail"]


class RecordingFetcher:
    """Stands in for the FHIR client to observe the seam (the real one is tested against SEKMET)."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def fetch(self, request):
        self.calls.append(request)
        return {k: v for k, v in self.answers.items() if k in request.queries or k in request.next_pages}


@pytest.mark.requirement("cds-hooks_2.0@34", "cds-hooks_2.0@60")
def test_fetch_seam_receives_rendered_queries_and_authorization(make_app):
    fetcher = RecordingFetcher({"patientToGreet": PrefetchEntry("patientToGreet", PrefetchStatus.SATISFIED,
                                                                (PATIENT,), source="fhir")})
    client = make_app(fetcher=fetcher).test_client()
    body = patient_view_request(fhirServer="https://ehr.example.org/fhir",
                                fhirAuthorization={"access_token": "secret", "token_type": "Bearer"})
    del body["prefetch"]["patientToGreet"]
    response = post(client, body)
    assert response.status_code == 200
    (call,) = fetcher.calls
    assert call.queries == {"patientToGreet": "Patient/1288992"}
    assert call.fhir_server == "https://ehr.example.org/fhir"
    assert call.fhir_authorization["access_token"] == "secret"
    assert "patientToGreet=satisfied:1:complete:fhir" in response.get_json()["cards"][0]["detail"]


def test_fetch_seam_not_called_when_prefetch_is_complete(make_app):
    fetcher = RecordingFetcher()
    post(make_app(fetcher=fetcher).test_client(), patient_view_request())
    assert fetcher.calls == []


@pytest.mark.requirement("cds-hooks_2.0@54")
def test_fetcher_failure_on_required_key_is_412(make_app):
    fetcher = RecordingFetcher({"patientToGreet": PrefetchEntry(
        "patientToGreet", PrefetchStatus.MISSING, source="fhir", note="FHIR server answered 500")})
    body = patient_view_request(fhirServer="https://ehr.example.org/fhir")
    del body["prefetch"]["patientToGreet"]
    assert_outcome(post(make_app(fetcher=fetcher).test_client(), body), 412)


@pytest.mark.requirement("cds-hooks_2.0@76")
def test_unexpected_plugin_error_is_500_without_leaking_data(make_app, caplog):
    import tiny_plugin

    from cds_hooks import ServiceDefinition, hookimpl

    class Broken:
        @hookimpl
        def cds_services(self, config):
            def boom(request):
                raise KeyError(request.patient_id)
            return [ServiceDefinition(id="broken", hook="patient-view", description="d", handler=boom)]

    client = make_app(plugins=(tiny_plugin, Broken())).test_client()
    response = client.post("/cds-services/broken", json=patient_view_request())
    assert response.status_code == 500
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "1288992" not in caplog.text and "1288992" not in response.get_data(as_text=True)
