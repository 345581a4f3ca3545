"""The fetch path against a real FHIR server (SEKMET, started by ``tests/fhir_testbed.py``) with the EHR's
token (``fhirAuthorization``, FHIR-2): what the service fetches for itself must equal what a client
prefetching everything would have sent (PF-8, PF-11, PF-12), and failures end in 412 or stated gaps.

The SMART Backend Services path (no EHR token) is in ``test_smart_backend.py``; misbehaving servers are
in ``test_fhir_faults.py``.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("fhir_testbed")
from fhir_testbed import PROBE_TEMPLATES, ProbePlugin, hook_request, probe_result  # noqa: E402
from readiness import wait_until  # noqa: E402

from cds_hooks.auth import VerifiedClient  # noqa: E402

pytest_plugins = ["fhir_testbed"]
pytestmark = pytest.mark.integration

TEMPLATES = PROBE_TEMPLATES


@pytest.fixture
def sandbox_app(make_app, fhir_server):
    """Unsigned sandbox mode, the SEKMET server allowlisted, the default (configured) fetcher."""
    def build(templates=TEMPLATES, required=None, **config):
        settings = {"LUPUS_CDS_SANDBOX_FHIR_SERVERS": fhir_server.base_url}
        settings.update(config)
        return make_app(plugins=[ProbePlugin(templates, required)], **settings)
    return build


def call(app, body):
    return app.test_client().post("/cds-services/fetch-probe", json=body)


def with_token(fhir_server, patient_id, token=None, prefetch=None, **authorization):
    return hook_request(patient_id, prefetch, fhirServer=fhir_server.base_url,
                        fhirAuthorization=fhir_server.fhir_authorization(token, **authorization))


@pytest.mark.requirement("cds-hooks_2.0@34", "cds-hooks_2.0@60")
def test_fetched_data_equals_full_prefetch(sandbox_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    app = sandbox_app()
    context = {"userId": "Practitioner/testbed", "patientId": ada}
    prefetched = probe_result(call(app, hook_request(ada, fhir_server.prefetch_for(TEMPLATES, context))))
    # SEKMET answers token_type in lower case; the EHR may too: any case is accepted.
    fetched = probe_result(call(app, with_token(fhir_server, ada, token_type="bearer")))
    assert fetched == prefetched
    keys = fetched["keys"]
    assert keys["patient"]["resources"] == [f"Patient/{ada}"]
    assert len(keys["observations"]["resources"]) == 12  # all 3 pages followed
    assert keys["observations"]["complete"] is True
    assert len(keys["conditions"]["resources"]) == 2
    assert len(keys["medications"]["resources"]) == 2  # the stopped one is filtered by the server
    assert fetched["gaps"] == []


def test_only_the_patient_in_context_is_read(sandbox_app, fhir_server, testbed_patients):
    app = sandbox_app()
    bo = probe_result(call(app, with_token(fhir_server, testbed_patients["bo"])))["keys"]
    ada = probe_result(call(app, with_token(fhir_server, testbed_patients["ada"])))["keys"]
    assert len(bo["observations"]["resources"]) == 3
    assert not set(bo["observations"]["resources"]) & set(ada["observations"]["resources"])
    assert bo["conditions"]["resources"] == [] and bo["conditions"]["status"] == "satisfied"


def test_partial_prefetch_is_completed_and_null_is_never_requeried(sandbox_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    app = sandbox_app()
    context = {"userId": "Practitioner/testbed", "patientId": ada}
    full = fhir_server.prefetch_for(TEMPLATES, context)
    partial = {
        "patient": full["patient"],
        # an error instead of data counts as not prefetched (PF-10): fetched
        "observations": {"resourceType": "OperationOutcome",
                         "issue": [{"severity": "error", "code": "timeout"}]},
        "conditions": None,  # "no data" (PF-9): used as is, never re-queried
    }  # medications absent: fetched
    result = probe_result(call(app, with_token(fhir_server, ada, prefetch=partial)))["keys"]
    assert len(result["observations"]["resources"]) == 12
    assert result["conditions"] == {"status": "no-data", "complete": True, "resources": []}
    assert len(result["medications"]["resources"]) == 2


def test_a_paginated_prefetch_is_completed_from_its_next_link(sandbox_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    app = sandbox_app()
    context = {"userId": "Practitioner/testbed", "patientId": ada}
    prefetch = fhir_server.prefetch_for(TEMPLATES, context)
    first_page = fhir_server.get(
        f"Observation?patient={ada}&code=http%3A%2F%2Floinc.org%7C4548-4&_sort=date&_count=5",
        fhir_server.static_token).json()
    assert len(first_page["entry"]) == 5 and any(link["relation"] == "next" for link in first_page["link"])
    prefetch["observations"] = first_page
    result = probe_result(call(app, with_token(fhir_server, ada, prefetch=prefetch)))
    assert len(result["keys"]["observations"]["resources"]) == 12
    assert len(set(result["keys"]["observations"]["resources"])) == 12
    assert result["keys"]["observations"]["complete"] is True


def test_paginated_prefetch_without_access_keeps_its_first_page_and_says_so(
        sandbox_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    app = sandbox_app(LUPUS_CDS_SANDBOX_FHIR_SERVERS="")  # the server may not be called
    context = {"userId": "Practitioner/testbed", "patientId": ada}
    prefetch = fhir_server.prefetch_for(TEMPLATES, context)
    prefetch["observations"] = fhir_server.get(
        f"Observation?patient={ada}&code=http%3A%2F%2Floinc.org%7C4548-4&_count=5", fhir_server.static_token).json()
    result = probe_result(call(app, with_token(fhir_server, ada, prefetch=prefetch)))
    assert len(result["keys"]["observations"]["resources"]) == 5
    assert result["keys"]["observations"]["complete"] is False
    assert any(gap.startswith("observations:") for gap in result["gaps"])


def test_a_patient_the_fhir_server_does_not_have_is_412_naming_it(sandbox_app, make_app, fhir_server):
    """A 404 on Patient/{id} in the fetch path: the EHR's context names a patient its own FHIR server does
    not have. Cards for an empty record (200 {"cards": []}) would read as "nothing to worry about": the
    answer is 412 naming the missing data (PF-12), without the id."""
    response = call(sandbox_app(), with_token(fhir_server, "no-such-patient"))
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.patient"]
    assert "the FHIR server has no Patient with the id given in the request's context" in issue["diagnostics"]
    assert "no-such-patient" not in response.get_data(as_text=True)

    from plugin import hooks as lupus  # the clinical service, called by an EHR that sends no prefetch

    app = make_app(plugins=[lupus], LUPUS_CDS_SANDBOX_FHIR_SERVERS=fhir_server.base_url)
    body = with_token(fhir_server, "no-such-patient")
    response = app.test_client().post("/cds-services/lupus-fasciculation-patient-view", json=body)
    assert response.status_code == 412, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.patient"]


def test_a_null_patient_prefetch_is_still_no_data(sandbox_app, fhir_server):
    """What the client prefetched as null stays "no data" (PF-9): only the service's own read is checked."""
    context = {"userId": "Practitioner/testbed", "patientId": "no-such-patient"}
    prefetch = fhir_server.prefetch_for(TEMPLATES, context)
    assert prefetch["patient"] is None
    result = probe_result(call(sandbox_app(), hook_request("no-such-patient", prefetch)))
    assert result["keys"]["patient"]["status"] == "no-data"


def test_scope_denial_leaves_a_stated_gap_or_412_when_required(sandbox_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    # A real SMART token from SEKMET that covers Patient and Observation only: Condition and
    # MedicationStatement searches get 403 from the server.
    narrow = fhir_server.backend_token(scope="system/Patient.rs system/Observation.rs")["access_token"]
    optional = sandbox_app(required=frozenset({"patient", "observations"}))
    result = probe_result(call(optional, with_token(fhir_server, ada, narrow)))
    assert len(result["keys"]["observations"]["resources"]) == 12
    assert result["keys"]["conditions"]["status"] == "missing"
    assert result["keys"]["medications"]["status"] == "missing"
    assert any("conditions" in gap and "403" in gap for gap in result["gaps"])

    required = sandbox_app()
    response = call(required, with_token(fhir_server, ada, narrow))
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["prefetch.conditions", "prefetch.medications"]


def test_an_expired_ehr_token_gives_412(make_app, short_token_fhir_server):
    server = short_token_fhir_server
    ada = server.load("two-patients.json")["urn:uuid:7e57bed0-0000-4000-8000-000000000001"]
    token = server.backend_token()["access_token"]  # lives 1 s
    assert server.get(f"Patient/{ada}", token).status_code == 200
    wait_until(lambda: server.get(f"Patient/{ada}", token).status_code == 401, "SEKMET refuses the expired token",
               deadline=60, interval=0.25)
    app = make_app(plugins=[ProbePlugin(TEMPLATES)], LUPUS_CDS_SANDBOX_FHIR_SERVERS=server.base_url)
    response = call(app, with_token(server, ada, token))
    assert response.status_code == 412
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_token_the_server_does_not_know_gives_412(sandbox_app, fhir_server, testbed_patients):
    response = call(sandbox_app(), with_token(fhir_server, testbed_patients["ada"], "not-a-token"))
    assert response.status_code == 412


def test_a_server_not_allowlisted_is_never_called(sandbox_app, fhir_server, testbed_patients):
    app = sandbox_app(LUPUS_CDS_SANDBOX_FHIR_SERVERS="https://other.example.org/fhir")
    response = call(app, with_token(fhir_server, testbed_patients["ada"]))
    assert response.status_code == 412


class StubAuthenticator:
    """Accepts every call as the given client (this module tests fetching, not JWTs)."""

    def __init__(self, client):
        self.client = client

    def verify(self, header, audiences):
        return self.client


def test_a_signed_client_may_use_its_listed_fhir_server_only(make_app, fhir_server, testbed_patients):
    ada = testbed_patients["ada"]
    # Listed with a trailing slash and upper-case host: the same server.
    listed = VerifiedClient("https://ehr.example.org", None, "jti-1",
                            (fhir_server.base_url.replace("127.0.0.1", "127.0.0.1") + "/",))
    app = make_app(plugins=[ProbePlugin(TEMPLATES)], authenticator=StubAuthenticator(listed),
                   LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_SANDBOX_FHIR_SERVERS=fhir_server.base_url)
    result = probe_result(call(app, with_token(fhir_server, ada)))
    assert len(result["keys"]["observations"]["resources"]) == 12

    unlisted = VerifiedClient("https://ehr.example.org", None, "jti-2", ("https://ehr.example.org/fhir",))
    # The sandbox allowlist does not apply to signed calls.
    app = make_app(plugins=[ProbePlugin(TEMPLATES)], authenticator=StubAuthenticator(unlisted),
                   LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_SANDBOX_FHIR_SERVERS=fhir_server.base_url)
    assert call(app, with_token(fhir_server, ada)).status_code == 412


@pytest.mark.requirement("cds-hooks_2.0@54")
def test_no_fhir_server_and_missing_prefetch_gives_412(sandbox_app, testbed_patients):
    response = call(sandbox_app(), hook_request(testbed_patients["ada"]))
    assert response.status_code == 412
    assert "prefetch.patient" in response.get_json()["issue"][0]["expression"]
