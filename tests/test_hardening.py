"""Hostile input the app itself refuses or hides: ids that would steer a FHIR query elsewhere, answers a
cache or browser could misuse, and caller-chosen text (paths, request ids) that must not reach the logs."""

from __future__ import annotations

import pytest
from conftest import patient_view_request

from cds_hooks import logs

SERVICE = "/cds-services/patient-greeter"


@pytest.mark.parametrize("patient_id", ["../Observation", "a/b", "p 1", "x?_id=1", "", "a" * 65, 7, ["p"]])
def test_patient_id_that_is_not_a_fhir_id_is_400_with_an_operation_outcome(client, patient_id):
    body = patient_view_request()
    body["context"]["patientId"] = patient_id
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["context.patientId"]


def test_fhir_ids_of_every_allowed_character_pass(client):
    body = patient_view_request()
    body["context"]["patientId"] = "Ab-9.z" + "x" * 58  # 64 characters
    assert client.post(SERVICE, json=body).status_code == 200


def test_encounter_id_is_checked_as_a_fhir_id_too(client):
    body = patient_view_request()
    body["context"]["encounterId"] = "../../Patient"
    assert client.post(SERVICE, json=body).status_code == 400


def test_answers_carry_no_store_and_nosniff(client):
    for response in (client.post(SERVICE, json=patient_view_request()), client.get("/cds-services"),
                     client.post(SERVICE, json={"hook": "patient-view"}), client.get("/no/such/path")):
        assert response.headers["Cache-Control"] == "no-store", response.status_code
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.headers["Cache-Control"] == "public, max-age=300"  # public keys may be cached
    assert jwks.headers["X-Content-Type-Options"] == "nosniff"


def test_loggable_path_shows_only_routes_and_known_service_ids(app):
    known = {"patient-greeter"}
    assert logs.loggable_path(app, "/cds-services/patient-greeter", known) == "/cds-services/patient-greeter"
    assert logs.loggable_path(app, "/cds-services/patient-greeter/feedback", known) \
        == "/cds-services/patient-greeter/feedback"
    assert logs.loggable_path(app, "/cds-services/PID-5c1e93", known) == "/cds-services/<service_id>"
    assert logs.loggable_path(app, "/cds-services/PID-5c1e93/feedback", known) \
        == "/cds-services/<service_id>/feedback"
    assert logs.loggable_path(app, "/healthz", known) == "/healthz"
    for unknown in ("/patients/PID-5c1e93", "/cds-services/a/b/c", "/%00", "", "/healthz/PID-5c1e93"):
        assert logs.loggable_path(app, unknown, known) == logs.UNMATCHED_PATH


def test_a_body_the_wsgi_server_cannot_decode_is_400_not_500(app):
    """Under another WSGI server (gunicorn raises InvalidChunkSize from wsgi.input), not a 500."""
    class BrokenInput:
        def read(self, *args):
            raise OSError("Invalid chunk size")

        readline = read

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": SERVICE, "SERVER_NAME": "x", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": BrokenInput(),
               "wsgi.input_terminated": True, "CONTENT_TYPE": "application/json", "wsgi.errors": None,
               "HTTP_TRANSFER_ENCODING": "chunked"}
    statuses = []
    b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses[0].startswith("400")
