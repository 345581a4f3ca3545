"""A feedback database that is down does not stop the service: it starts, ``/readyz`` answers 503 until
the database is back, hook calls still answer, and feedback is refused with 503 meanwhile (then stored
once the database answers). Against a real PostgreSQL, stopped and started, and an address nothing
listens on."""

from __future__ import annotations

import logging

import pytest
from conftest import patient_view_request, spec_example
from readiness import free_port

pytest_plugins = ["servers"]
pytestmark = pytest.mark.integration

SERVICE = "/cds-services/patient-greeter"
FEEDBACK = spec_example("feedback-accepted.json")


def assert_running_without_its_database(client):
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"] == "unavailable"
    assert client.get("/healthz").status_code == 200  # alive: no restart loop
    call = client.post(SERVICE, json=patient_view_request())
    assert call.status_code == 200 and call.get_json()["cards"]  # hook calls still answer
    refused = client.post(SERVICE + "/feedback", json=FEEDBACK)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"]
    outcome = refused.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"


def test_an_unreachable_database_at_start_is_reported_not_fatal(make_app, caplog):
    url = f"postgresql+psycopg://postgres:pw-77@127.0.0.1:{free_port()}/cds"  # nothing listens there
    caplog.set_level(logging.WARNING)
    app = make_app(LUPUS_CDS_DATABASE_URL=url)
    assert any("feedback database unreachable at start" in r.getMessage() for r in caplog.records)
    assert "pw-77" not in caplog.text
    assert_running_without_its_database(app.test_client())


def test_postgresql_stopped_at_start_then_started(make_app, own_postgres):
    url = own_postgres.new_database()
    own_postgres.pause()
    app = make_app(LUPUS_CDS_DATABASE_URL=url)
    client = app.test_client()
    assert_running_without_its_database(client)

    own_postgres.resume()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()  # migrated on the first use once it answers
    assert client.post(SERVICE + "/feedback", json=FEEDBACK).status_code == 200
    (row,) = app.extensions["cds_hooks"].feedback_store.all()
    assert row["card_uuid"] == FEEDBACK["feedback"][0]["card"]


def test_postgresql_stopped_while_running_then_started(make_app, own_postgres):
    app = make_app(LUPUS_CDS_DATABASE_URL=own_postgres.new_database())
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    own_postgres.pause()
    assert_running_without_its_database(client)
    own_postgres.resume()
    assert client.get("/readyz").status_code == 200
    assert client.post(SERVICE + "/feedback", json=FEEDBACK).status_code == 200
