"""Observability: health probes, Prometheus metrics (in-process and merged across `serve`'s workers), and
structured JSON logs that never carry tokens, JWTs, patient ids or resource content."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import tiny_plugin
from conftest import ROOT, patient_view_request, spec_example
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cds_hooks import ServiceDefinition, hookimpl, logs, metrics

pytest_plugins = ["servers"]

BASE = "https://cds.example.org"
SERVICE = "/cds-services/patient-greeter"
LUPUS_CDS = Path(sys.executable).parent / "lupus-cds"


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- health --------------------------------------------------------------------------------------------

def test_healthz_and_readyz(app):
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "checks": {"database": "ok"}}


def test_readyz_is_503_without_detail_when_the_database_is_down(app, monkeypatch):
    def down():
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("password=hunter2 host=db"))

    monkeypatch.setattr(app.extensions["cds_hooks"].feedback_store, "ping", down)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
    assert "hunter2" not in response.get_data(as_text=True)
    assert app.test_client().get("/healthz").status_code == 200  # liveness does not depend on the DB


# --- metrics, in-process -------------------------------------------------------------------------------

def test_metrics_count_requests_cards_feedback_and_jwt_rejections(make_app, client_keys):
    app = make_app()
    client = app.test_client()
    labels = {"endpoint": "services.call_service", "service": "patient-greeter", "hook": "patient-view"}
    before = {
        "latency": sample("cds_request_duration_seconds_count", **labels),
        "ok": sample("cds_requests_total", **labels, status="200"),
        "cards": sample("cds_cards_total", service="patient-greeter", hook="patient-view", topic="greeting",
                        indicator="info"),
        "feedback": sample("cds_feedback_total", service="patient-greeter", topic="greeting",
                           outcome="accepted"),
    }
    response = client.post(SERVICE, json=patient_view_request())
    card = response.get_json()["cards"][0]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted",
                              "acceptedSuggestions": [{"id": "s1"}],
                              "outcomeTimestamp": "2026-11-25T12:01:00Z"}]}
    assert client.post(SERVICE + "/feedback", json=feedback).status_code == 200

    assert sample("cds_request_duration_seconds_count", **labels) == before["latency"] + 1
    assert sample("cds_requests_total", **labels, status="200") == before["ok"] + 1
    assert sample("cds_cards_total", service="patient-greeter", hook="patient-view", topic="greeting",
                  indicator="info") == before["cards"] + 1
    assert sample("cds_feedback_total", service="patient-greeter", topic="greeting",
                  outcome="accepted") == before["feedback"] + 1

    secure = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file))
    rejected = {family.name: family for family in text_string_to_metric_families(
        secure.test_client().get("/metrics").get_data(as_text=True))}.get("cds_jwt_rejections")
    total_before = sum(s.value for s in rejected.samples) if rejected else 0.0
    assert secure.test_client().post(SERVICE, json=patient_view_request()).status_code == 401
    families = {family.name: family for family in text_string_to_metric_families(
        secure.test_client().get("/metrics").get_data(as_text=True))}
    assert sum(s.value for s in families["cds_jwt_rejections"].samples
               if s.name.endswith("_total")) == total_before + 1


def test_unknown_service_ids_do_not_become_labels(app):
    app.test_client().post("/cds-services/" + uuid.uuid4().hex, json={})
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'service="unknown"' in exposition
    assert not re.search(r'service="[0-9a-f]{32}"', exposition)


def test_observe_fetch_records_latency_and_errors(app):
    before_ok = sample("cds_fhir_fetch_duration_seconds_count", outcome="ok")
    before_err = sample("cds_fhir_fetch_errors_total", outcome="timeout")
    metrics.observe_fetch(0.12, "ok")
    metrics.observe_fetch(2.5, "timeout")
    assert sample("cds_fhir_fetch_duration_seconds_count", outcome="ok") == before_ok + 1
    assert sample("cds_fhir_fetch_errors_total", outcome="timeout") == before_err + 1
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    assert "cds_fhir_fetch_duration_seconds_bucket" in exposition


def test_metrics_endpoint_can_be_turned_off(make_app):
    assert make_app(LUPUS_CDS_METRICS="0").test_client().get("/metrics").status_code == 404


def test_request_id_is_the_services_own_never_the_callers(app):
    """A caller's X-Request-Id is free text of its choosing (a patient id fits in a "plain id"): the
    service answers and logs its own id instead."""
    client = app.test_client()
    for chosen in ("PID-5c1e93-abc", "patient 12 <b>"):
        generated = client.get("/healthz", headers={"X-Request-Id": chosen}).headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated) and generated != chosen


# --- logs never carry identifiable data ----------------------------------------------------------------

PATIENT_ID = "PID-5c1e93"
SECRETS = [PATIENT_ID, "Zyxwvutsrq", "Qwertyname", "MRN-771234", "1971-03-14", "ACCESS-TOKEN-8d2f",
           "Free text clinical note 4471", "Dr. Fictional Comment", "Bearer-less-token-93a"]


class LeakyPlugin:
    """A plugin that handles identifiable data and fails with it in its exception message."""

    @staticmethod
    def crash(request):
        patient = request.prefetch.resources("patient")[0]
        raise ValueError(f"cannot handle {request.patient_id} {patient['name'][0]['family']}")

    @hookimpl
    def cds_services(self, config):
        return [ServiceDefinition(id="crashing", hook="patient-view", description="Raises.",
                                  handler=self.crash, prefetch={"patient": "Patient/{{context.patientId}}"})]


def identifiable_request(hook_instance: str) -> dict:
    patient = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1971-03-14",
               "identifier": [{"system": "urn:mrn", "value": "MRN-771234"}],
               "name": [{"family": "Zyxwvutsrq", "given": ["Qwertyname"]}]}
    note = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "note"},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "valueString": "Free text clinical note 4471"}
    return {
        "hook": "patient-view", "hookInstance": hook_instance,
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {"access_token": "ACCESS-TOKEN-8d2f", "token_type": "Bearer",
                              "expires_in": 300, "scope": "patient/*.read", "subject": "cds-service"},
        "context": {"userId": "Practitioner/example", "patientId": PATIENT_ID},
        "prefetch": {"patientToGreet": patient, "patient": patient,
                     "hemoglobin": {"resourceType": "Bundle", "type": "searchset",
                                    "entry": [{"resource": note}]}},
    }


def test_logs_never_contain_tokens_patient_ids_or_resource_content(make_app, client_keys):
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        app = make_app(plugins=(tiny_plugin, LeakyPlugin()), LUPUS_CDS_LOG_LEVEL="DEBUG",
                       LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file))
        client = app.test_client()
        instance = str(uuid.uuid4())
        token = client_keys.token(BASE + SERVICE)
        secrets = [*SECRETS, token, token.split(".")[1]]
        ok = client.post(SERVICE + f"?patient={PATIENT_ID}", json=identifiable_request(instance),
                         headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        replay = client.post(SERVICE, json=identifiable_request(str(uuid.uuid4())),
                             headers={"Authorization": f"Bearer {token}"})
        assert replay.status_code == 401
        wrong_aud = client_keys.token(f"https://evil.example.org/{PATIENT_ID}")
        secrets.append(wrong_aud)
        assert client.post(SERVICE, json=identifiable_request(str(uuid.uuid4())),
                           headers={"Authorization": f"Bearer {wrong_aud}"}).status_code == 401
        assert client.post(SERVICE, json=identifiable_request(str(uuid.uuid4())),
                           headers={"Authorization": "Bearer Bearer-less-token-93a"}).status_code == 401
        crash = client.post("/cds-services/crashing", json=identifiable_request(str(uuid.uuid4())),
                            headers=client_keys.header(BASE + "/cds-services/crashing"))
        assert crash.status_code == 500
        broken = identifiable_request(str(uuid.uuid4()))
        broken["context"]["patientId"] = ["not", "a", "string", PATIENT_ID]
        response = client.post(SERVICE, json=broken, headers=client_keys.header(BASE + SERVICE))
        assert response.status_code == 400
        feedback = spec_example("feedback-overridden-with-reason.json")
        feedback["feedback"][0]["overrideReason"]["userComment"] = "Dr. Fictional Comment"
        assert client.post(SERVICE + "/feedback", json=feedback,
                           headers=client_keys.header(BASE + SERVICE + "/feedback")).status_code == 200
        app.extensions["cds_hooks"].issued_cards.flush()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    text = stream.getvalue()
    assert text, "the requests were logged"
    for secret in secrets:
        assert secret not in text, f"{secret[:20]}... reached the logs"
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    crashed = [line for line in lines if "internal error" in line["message"]]
    assert crashed and all(line.get("request_id") for line in crashed)
    assert any(line.get("hook_instance") for line in crashed), "hook-call lines carry the hookInstance"
    rejected = [line for line in lines if "rejected client JWT" in line["message"]]
    assert len(rejected) >= 3 and all(line.get("request_id") for line in rejected)


def test_formatter_masks_jwts_and_bearer_tokens_that_reach_a_message():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s and %s and access_token=%s",
                               ("eyJhbGciOi.eyJzdWIiOiIx.c2ln", "Bearer abc.def", "zzz"), None)
    message = json.loads(logs.JSONFormatter().format(record))["message"]
    assert "eyJzdWIiOiIx" not in message and "abc.def" not in message and "zzz" not in message


# --- under `lupus-cds serve`, two workers -----------------------------------------------------------------------

@pytest.mark.integration
def test_metrics_and_json_logs_under_serve_with_two_workers(tmp_path):
    from readiness import free_port, wait_until_ready

    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = dict(os.environ, LUPUS_CDS_ALLOW_UNSIGNED="1", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
               LUPUS_CDS_DATABASE_URL=f"sqlite:///{tmp_path / 'fb.sqlite3'}")
    env.pop("LUPUS_CDS_PUBLIC_URL", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(LUPUS_CDS), "serve", "--port", str(port), "--workers", "2"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + "/healthz", process=process, log_path=log_path)
        def call(_):
            return requests.get(base + f"/cds-services?patient={PATIENT_ID}", timeout=10,
                                headers={"Connection": "close"}).status_code

        # Concurrent bursts until both workers have served some (the kernel picks who accepts).
        calls = 0
        with ThreadPoolExecutor(8) as pool:
            while calls < 400:
                assert set(pool.map(call, range(16))) == {200}
                calls += 16
                if len({p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}) >= 2:
                    break
        labels = '{endpoint="discovery.discover",hook="",service="",status="200"}'
        for _ in range(6):  # whichever worker answers, it reports every worker's counts
            exposition = requests.get(base + "/metrics", timeout=5, headers={"Connection": "close"}).text
            assert f"cds_requests_total{labels} {float(calls)}" in exposition, exposition[:3000]
            assert "cds_request_duration_seconds_bucket" in exposition
        pids = {re.search(r"_(\d+)\.db$", p.name).group(1) for p in metrics_dir.glob("*.db")}
        assert len(pids) >= 2, f"both workers wrote metrics: {sorted(p.name for p in metrics_dir.glob('*'))}"
        ready = requests.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "cds_hooks.access"]
    assert len(access) >= calls
    assert all(line["path"] and "?" not in line["path"] for line in access)
    assert any(line["logger"].startswith("_granian") for line in lines), "the server's own lines are JSON too"
    assert PATIENT_ID not in log_path.read_text()
