"""The fetcher against a FHIR server that misbehaves on purpose (a local ``http.server`` on 127.0.0.1):
slow drip past the deadline, hangs, 500, 401, invalid JSON, wrong Bundle type, looping or foreign
``next`` links, endless paging, huge pages, redirects. Whatever the server does, the hook call ends
within its budget with 200 (cards stating the gap) or 412 (required data missing), never a 5xx.

Also here: the SSRF rules (which servers may be called at all), the patient check, URL encoding, the
bearer header, concurrency, and that neither tokens nor patient ids reach the logs.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.register_assert_rewrite("fhir_testbed")
from fhir_testbed import ProbePlugin, hook_request, probe_result  # noqa: E402

from cds_hooks.fetch import FetchRequest  # noqa: E402
from cds_hooks.fhir_client import FetchLimits, FHIRFetcher, encode_query  # noqa: E402
from cds_hooks.models import PrefetchStatus  # noqa: E402

TOKEN = "fault-test-token-6f1d"
PATIENT = "pat-77"
BUDGET = 1.0
#: how long a hanging or dripping answer holds on (until the test's server closes): far beyond any budget,
#: so a call that ends within BUDGET + SLACK provably gave up at its deadline
HOLD = 60.0
#: scheduling slack on a loaded machine, added to deadlines in assertions (still far below HOLD)
SLACK = 4.0


def bundle(entries=(), links=(), bundle_type="searchset"):
    return {"resourceType": "Bundle", "type": bundle_type,
            "link": [{"relation": rel, "url": url} for rel, url in links],
            "entry": [{"resource": r} for r in entries]}


def observation(n):
    return {"resourceType": "Observation", "id": f"obs-{n}", "status": "final", "code": {"text": "x"}}


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def send_json(self, body, status=200, content_type="application/fhir+json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def drip(self, chunked):
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", "50000")
        self.end_headers()
        try:
            while not self.server.released.wait(0.05):  # a byte every 50 ms until the server closes
                self.wfile.write(b"1\r\n \r\n" if chunked else b" ")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up, as it should

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        fault = query.get("fault", [""])[0]
        base = f"http://127.0.0.1:{server.server_port}/fhir"
        if parts.path == "/fhir/.well-known/smart-configuration":
            return self.send_json({"token_endpoint": f"http://127.0.0.1:{server.server_port}/oauth/token"})
        if not parts.path.startswith("/fhir/"):
            return self.send_json({"resourceType": "OperationOutcome", "issue": []}, 404)
        if parts.path.startswith("/fhir/Patient/"):
            patient_id = parts.path.rsplit("/", 1)[1]
            if patient_id == "wrong-type":
                return self.send_json(observation(0))
            return self.send_json({"resourceType": "Patient", "id": patient_id})
        if fault == "together":
            try:  # answers only once every query of the call has arrived: proves they run at once
                server.together.wait()
            except threading.BrokenBarrierError:
                return self.send_json({"resourceType": "OperationOutcome", "issue": []}, 500)
            return self.send_json(bundle([observation(1)]))
        if fault == "drip":
            return self.drip(chunked=False)
        if fault == "drip-chunked":
            return self.drip(chunked=True)
        if fault == "hang":
            server.released.wait(HOLD)
            return None
        if fault in ("500", "401", "403", "503"):
            return self.send_json({"resourceType": "OperationOutcome",
                                   "issue": [{"severity": "error", "code": "exception"}]}, int(fault))
        if fault == "garbage":
            return self.send_json(b"<html>this is not json", 200, "text/html")
        if fault == "collection":
            return self.send_json(bundle([observation(1)], bundle_type="collection"))
        if fault == "loop":
            return self.send_json(bundle([observation(1)], [("next", base + "/" + self.path[6:])]))
        if fault == "loop2":
            page = query.get("page", ["a"])[0]
            other = "b" if page == "a" else "a"
            return self.send_json(bundle([observation(page)], [
                ("next", f"{base}/Observation?fault=loop2&page={other}")]))
        if fault == "endless":
            page = int(query.get("page", ["0"])[0])
            return self.send_json(bundle([observation(page)], [
                ("next", f"{base}/Observation?fault=endless&page={page + 1}")]))
        if fault == "elsewhere":
            return self.send_json(bundle([observation(1)], [("next", server.elsewhere + "/Observation?stolen=1")]))
        if fault == "outside-base":
            return self.send_json(bundle([observation(1)], [
                ("next", f"http://127.0.0.1:{server.server_port}/admin/Observation")]))
        if fault == "dot-segments":
            return self.send_json(bundle([observation(1)], [("next", f"{base}/../admin/Observation")]))
        if fault == "paged":
            page = int(query.get("page", ["0"])[0])
            links = [("next", f"{base}/Observation?fault=paged&page={page + 1}")] if page < 2 else []
            return self.send_json(bundle([observation(page)], links))
        if fault == "huge":
            return self.send_json(bundle([observation(n) for n in range(5000)]))
        if fault == "huge-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = json.dumps(bundle([observation(n) for n in range(5000)])).encode()
            for start in range(0, len(body), 8192):
                piece = body[start:start + 8192]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        if fault == "gzip":
            raw = gzip.compress(json.dumps(bundle([observation(1), observation(2)])).encode())
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return None
        if fault == "redirect":
            self.send_response(302)
            self.send_header("Location", server.elsewhere + "/Observation")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self.send_json(bundle([observation(1), observation(2)]))


def token_endpoint(handler):
    """POST /oauth/token: fails as ``server.token_fault`` says."""
    server = handler.server
    length = int(handler.headers.get("Content-Length") or 0)
    handler.rfile.read(length)
    with server.lock:
        server.requests.append({"path": handler.path, "authorization": None})
    if server.token_fault == "hang":
        server.released.wait(HOLD)
        return None
    if server.token_fault == "garbage":
        return handler.send_json(b"<html>", 200, "text/html")
    return handler.send_json({"error": "server_error"}, 500, "application/json")


FaultHandler.do_POST = token_endpoint


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # The client hanging up on a huge or dripping body is the behaviour under test, not an error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FaultServer:
    def __init__(self, elsewhere=""):
        self.httpd = QuietServer(("127.0.0.1", 0), FaultHandler)
        self.httpd.daemon_threads = True
        self.httpd.requests = []
        self.httpd.lock = threading.Lock()
        self.httpd.elsewhere = elsewhere
        self.httpd.token_fault = "500"
        self.httpd.released = threading.Event()  # set when the server closes: hanging answers end
        self.httpd.together = threading.Barrier(1)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self):
        return self.httpd.requests

    def reset(self):
        with self.httpd.lock:
            self.httpd.requests.clear()

    def close(self):
        self.httpd.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bystander():
    """A second server that must never be called (the target of foreign next links and redirects)."""
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def fault_server(bystander):
    server = FaultServer(elsewhere=bystander.base_url)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fresh_request_logs(fault_server, bystander):
    fault_server.reset()
    bystander.reset()


def templates(fault):
    return {"patient": "Patient/{{context.patientId}}",
            "data": "Observation?patient={{context.patientId}}&fault=" + fault}


@pytest.fixture
def fault_app(make_app, fault_server):
    def build(fault, required=None, probe_templates=None, **config):
        settings = {"LUPUS_CDS_SANDBOX_FHIR_SERVERS": fault_server.base_url, "LUPUS_CDS_FHIR_BUDGET": BUDGET,
                    "LUPUS_CDS_FHIR_MAX_RESPONSE_BYTES": 64 * 1024, "LUPUS_CDS_FHIR_MAX_PAGES": 3}
        settings.update(config)
        return make_app(plugins=[ProbePlugin(probe_templates or templates(fault), required)], **settings)
    return build


def call(app, server, **fields):
    body = hook_request(PATIENT, fhirServer=server.base_url,
                        fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 60,
                                           "scope": "user/Observation.read", "subject": "cds-service"})
    body.update(fields)
    started = time.monotonic()
    response = app.test_client().post("/cds-services/fetch-probe", json=body)
    return response, time.monotonic() - started


# --- deadlines ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["drip", "drip-chunked", "hang"])
def test_a_server_past_the_deadline_cannot_hold_the_call(fault_app, fault_server, fault):
    response, elapsed = call(fault_app(fault), fault_server)
    assert response.status_code == 412
    assert elapsed < BUDGET + SLACK  # the server holds on for HOLD seconds
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.data"]

    response, elapsed = call(fault_app(fault, required=frozenset({"patient"})), fault_server)
    result = probe_result(response)
    assert elapsed < BUDGET + SLACK
    assert result["keys"]["data"]["status"] == "missing"
    assert result["keys"]["patient"]["status"] == "satisfied"  # what was obtained is used
    assert result["gaps"] == ["data: the FHIR server did not answer in time"]


def test_queries_run_concurrently(fault_app, fault_server):
    """The server answers none of the four queries until all four have arrived: one after another, the
    first would wait in vain and fail."""
    four_queries = {f"q{n}": "Observation?patient={{context.patientId}}&fault=together&n=" + str(n)
                    for n in range(4)}
    fault_server.httpd.together = threading.Barrier(4, timeout=8)
    app = fault_app("together", probe_templates=four_queries, LUPUS_CDS_FHIR_BUDGET=10,
                    LUPUS_CDS_FHIR_TIMEOUT=10)
    response, _ = call(app, fault_server)
    result = probe_result(response)
    assert result["gaps"] == []
    assert all(entry["resources"] == ["Observation/obs-1"] for entry in result["keys"].values())


# --- bad answers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault,why", [
    ("500", "HTTP 500"), ("503", "HTTP 503"), ("401", "HTTP 401"), ("403", "HTTP 403"),
    ("garbage", "not valid JSON"), ("collection", "something other than a search result"),
    ("huge", "larger than allowed"), ("huge-chunked", "larger than allowed"), ("redirect", "HTTP 302"),
])
def test_a_bad_answer_is_a_stated_gap_or_412(fault_app, fault_server, bystander, fault, why):
    response, _ = call(fault_app(fault), fault_server)
    assert response.status_code == 412
    result = probe_result(call(fault_app(fault, required=frozenset({"patient"})), fault_server)[0])
    assert result["keys"]["data"]["status"] == "missing"
    assert len(result["gaps"]) == 1 and why in result["gaps"][0], result["gaps"]
    assert bystander.requests == []  # a redirect is never followed


def test_a_5xx_is_not_retried(fault_app, fault_server):
    call(fault_app("500"), fault_server)
    assert sum("fault=500" in r["path"] for r in fault_server.requests) == 1


def test_a_read_of_the_wrong_type_is_missing(fault_app, fault_server):
    app = fault_app("none", required=frozenset({"data"}))
    response, _ = call(app, fault_server, context={"userId": "Practitioner/x", "patientId": "wrong-type"})
    result = probe_result(response)
    assert result["keys"]["patient"]["status"] == "missing"
    assert "did not return a Patient" in result["gaps"][0]


@pytest.mark.parametrize("token_fault", ["500", "garbage", "hang"])
def test_a_failing_token_endpoint_gives_412_within_the_budget(make_app, fault_server, tmp_path, token_fault):
    from fhir_testbed import ClientKey, write_smart_clients

    fault_server.httpd.token_fault = token_fault
    key = ClientKey.generate(tmp_path, "cds-service")
    clients = write_smart_clients(tmp_path / "smart.json", [key.smart_clients_entry(fault_server.base_url,
                                                                                      "system/Patient.rs")])
    app = make_app(plugins=[ProbePlugin(templates("none"))], LUPUS_CDS_SMART_CLIENTS=str(clients),
                   LUPUS_CDS_SANDBOX_FHIR_SERVERS=fault_server.base_url, LUPUS_CDS_FHIR_BUDGET=BUDGET)
    started = time.monotonic()
    response = app.test_client().post("/cds-services/fetch-probe",
                                      json=hook_request(PATIENT, fhirServer=fault_server.base_url))
    assert response.status_code == 412
    assert time.monotonic() - started < BUDGET + SLACK
    assert [r["path"] for r in fault_server.requests] == ["/fhir/.well-known/smart-configuration", "/oauth/token"]


# --- paging ---------------------------------------------------------------------------------------------

def test_a_compressed_answer_is_read(fault_app, fault_server):
    result = probe_result(call(fault_app("gzip"), fault_server)[0])
    assert result["keys"]["data"]["resources"] == ["Observation/obs-1", "Observation/obs-2"]


@pytest.mark.requirement("cds-hooks_2.0@61")
def test_next_links_are_followed(fault_app, fault_server):
    result = probe_result(call(fault_app("paged"), fault_server)[0])
    assert result["keys"]["data"] == {"status": "satisfied", "complete": True,
                                      "resources": ["Observation/obs-0", "Observation/obs-1", "Observation/obs-2"]}
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fault_server.requests)


@pytest.mark.parametrize("fault,why", [
    ("loop", "loop"), ("loop2", "loop"), ("endless", "more pages than the 3 read"),
    ("elsewhere", "points elsewhere"), ("outside-base", "points elsewhere"), ("dot-segments", "points elsewhere"),
])
def test_bad_next_links_end_paging_with_a_stated_gap(fault_app, fault_server, bystander, fault, why):
    result = probe_result(call(fault_app(fault), fault_server)[0])
    data = result["keys"]["data"]
    assert data["status"] == "satisfied" and data["complete"] is False and data["resources"]
    assert any(why in gap for gap in result["gaps"]), result["gaps"]
    assert not any("in time" in gap for gap in result["gaps"])  # paging stopped, not the deadline
    assert bystander.requests == []
    assert not any(r["path"].startswith("/admin") for r in fault_server.requests)
    assert len(fault_server.requests) <= 1 + 3  # the patient read and at most 3 pages


def test_a_foreign_next_link_in_the_clients_prefetch_is_refused(fault_app, fault_server, bystander):
    first_page = bundle([observation(9)], [("next", bystander.base_url + "/Observation?page=2")])
    result = probe_result(call(fault_app("none"), fault_server, prefetch={"data": first_page})[0])
    assert result["keys"]["data"]["resources"] == ["Observation/obs-9"]
    assert result["keys"]["data"]["complete"] is False
    assert bystander.requests == []


# --- which servers may be called ------------------------------------------------------------------------

@pytest.mark.parametrize("fhir_server", [
    "{bystander}", "{fault}/../admin", "http://user@127.0.0.1:{port}/fhir", "{fault}/sub", "ftp://127.0.0.1/fhir",
    "{fault}?x=1",
])
def test_only_allowlisted_fhir_servers_are_called(fault_app, fault_server, bystander, fhir_server):
    url = fhir_server.format(bystander=bystander.base_url, fault=fault_server.base_url,
                             port=fault_server.httpd.server_port)
    app = fault_app("none")
    body = hook_request(PATIENT, fhirServer=url,
                        fhirAuthorization={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 60,
                                           "scope": "user/Observation.read", "subject": "cds-service"})
    response = app.test_client().post("/cds-services/fetch-probe", json=body)
    assert response.status_code in (400, 412)  # 400: the validator already refused the URL
    assert fault_server.requests == [] and bystander.requests == []


def test_without_sandbox_mode_the_sandbox_list_is_ignored(fault_server):
    fetcher = FHIRFetcher(sandbox_servers=[fault_server.base_url], allow_unsigned=False)
    result = fetcher.fetch(FetchRequest(fault_server.base_url, {"access_token": TOKEN, "token_type": "Bearer"},
                                        PATIENT, queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.MISSING
    assert "not one this service may call" in result["patient"].note
    assert fault_server.requests == []


@pytest.fixture
def sandbox_fetcher(fault_server):
    fetcher = FHIRFetcher(limits=FetchLimits(budget=BUDGET), sandbox_servers=[fault_server.base_url],
                          allow_unsigned=True)
    yield fetcher
    fetcher.close()


def test_a_token_for_another_patient_is_never_used(sandbox_fetcher, fault_server):
    result = sandbox_fetcher.fetch(FetchRequest(
        fault_server.base_url, {"access_token": TOKEN, "token_type": "Bearer", "patient": "someone-else"},
        PATIENT, queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.MISSING
    assert "another patient" in result["patient"].note
    assert fault_server.requests == []


@pytest.mark.parametrize("authorization", [
    {"access_token": TOKEN, "token_type": "MAC"},
    {"access_token": "with space", "token_type": "Bearer"},
    {"access_token": "line\r\nX-Injected: 1", "token_type": "Bearer"},
    {"access_token": "", "token_type": "Bearer"},
])
def test_unusable_tokens_are_not_sent(sandbox_fetcher, fault_server, authorization):
    result = sandbox_fetcher.fetch(FetchRequest(fault_server.base_url, authorization, PATIENT,
                                                queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.MISSING
    assert fault_server.requests == []


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
@pytest.mark.requirement("cds-hooks_2.0@61")
def test_token_type_in_any_case(sandbox_fetcher, fault_server, token_type):
    authorization = {"access_token": TOKEN, "token_type": token_type}
    result = sandbox_fetcher.fetch(FetchRequest(fault_server.base_url, authorization, PATIENT,
                                                queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.SATISFIED
    assert fault_server.requests[0]["authorization"] == f"Bearer {TOKEN}"


def test_an_open_sandbox_server_is_read_without_a_token(sandbox_fetcher, fault_server):
    result = sandbox_fetcher.fetch(FetchRequest(fault_server.base_url, None, PATIENT,
                                                queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.SATISFIED
    assert fault_server.requests[0]["authorization"] is None


def test_a_signed_client_reads_an_open_sandbox_server_it_may_call_without_a_token(fault_server):
    """``lupus-cds sandbox --clients``: the sandbox's open FHIR server, listed for the client, is read
    anonymously; the sandbox list still sends no client anywhere it may not call."""
    from cds_hooks.auth import VerifiedClient

    fetcher = FHIRFetcher(limits=FetchLimits(budget=BUDGET), sandbox_servers=[fault_server.base_url],
                          allow_unsigned=False)
    listed = VerifiedClient("https://ehr.example.org", None, "jti-1", (fault_server.base_url,))
    result = fetcher.fetch(FetchRequest(fault_server.base_url, None, PATIENT, client=listed,
                                        queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.SATISFIED
    assert fault_server.requests[0]["authorization"] is None
    fault_server.reset()
    unlisted = VerifiedClient("https://ehr.example.org", None, "jti-2", ("https://ehr.example.org/fhir",))
    result = fetcher.fetch(FetchRequest(fault_server.base_url, None, PATIENT, client=unlisted,
                                        queries={"patient": f"Patient/{PATIENT}"}))
    assert result["patient"].status is PrefetchStatus.MISSING and fault_server.requests == []
    fetcher.close()


def test_an_unreachable_server_is_a_quick_gap(fault_app):
    from readiness import free_port

    base = f"http://127.0.0.1:{free_port()}/fhir"  # reserved for this process: nothing listens there
    fetcher = FHIRFetcher(limits=FetchLimits(budget=30), sandbox_servers=[base], allow_unsigned=True)
    result = fetcher.fetch(FetchRequest(base, None, PATIENT, queries={"patient": f"Patient/{PATIENT}"}))
    assert "could not be reached" in result["patient"].note  # refused at once, not timed out at 30 s
    fetcher.close()


# --- what is sent and what is logged --------------------------------------------------------------------

def test_values_are_url_encoded():
    template = "Observation?patient=1&code=http://loinc.org|4548-4,http://x.org|1&date=ge2024-01-01T00:00:00+01:00"
    assert encode_query(template) == (
        "Observation?patient=1&code=http%3A%2F%2Floinc.org%7C4548-4,http%3A%2F%2Fx.org%7C1"
        "&date=ge2024-01-01T00%3A00%3A00%2B01%3A00")
    # values the template renderer already encoded are not encoded twice
    assert encode_query("Observation?subject=Patient%2F1&code=a%7Cb") == "Observation?subject=Patient%2F1&code=a%7Cb"


def test_the_request_reaches_the_server_encoded(make_app, fault_server):
    app = make_app(plugins=[ProbePlugin({"data": "Observation?patient={{context.patientId}}&code=http://x.org|1"})],
                   LUPUS_CDS_SANDBOX_FHIR_SERVERS=fault_server.base_url)
    probe_result(call(app, fault_server)[0])
    assert fault_server.requests[0]["path"] == f"/fhir/Observation?patient={PATIENT}&code=http%3A%2F%2Fx.org%7C1"


def test_tokens_and_patient_ids_stay_out_of_the_logs(fault_app, fault_server, caplog):
    caplog.set_level(logging.DEBUG)
    for fault in ("paged", "500", "elsewhere"):
        call(fault_app(fault), fault_server)
    assert caplog.records  # the fetch is logged...
    assert TOKEN not in caplog.text and PATIENT not in caplog.text  # ...without secrets or ids


def test_fetch_latency_and_errors_reach_the_metrics(fault_app, fault_server):
    """Issue 6: FHIR fetch latency and errors are Prometheus metrics (cds_fhir_fetch_*)."""
    app = fault_app("500", required=frozenset({"patient"}))
    call(app, fault_server)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'cds_fhir_fetch_errors_total{outcome="bad-response"}' in text
    assert 'cds_fhir_fetch_duration_seconds_count{outcome="ok"}' in text


# --- one server's slowness stays its own ---------------------------------------------------------------

def test_a_server_that_never_answers_cannot_take_the_fetch_capacity_of_another(fault_server, bystander):
    """Two tenants' servers, two threads per server: calls to a server that hangs fill its own pool
    (with more queued behind), while a call to the other server is answered at once."""
    fetcher = FHIRFetcher(limits=FetchLimits(budget=3.0), sandbox_servers=[fault_server.base_url,
                                                                           bystander.base_url],
                          allow_unsigned=True, max_workers=2)
    hanging = {f"q{n}": f"Observation?patient={PATIENT}&fault=hang&n={n}" for n in range(4)}
    stuck_calls = [threading.Thread(target=fetcher.fetch, args=(
        FetchRequest(fault_server.base_url, None, PATIENT, queries=hanging),)) for _ in range(3)]
    try:
        for call_thread in stuck_calls:
            call_thread.start()
        deadline = time.monotonic() + 5
        while len(fault_server.requests) < 2:  # the hanging server holds both of its threads
            assert time.monotonic() < deadline, "the hanging server was never called"
            time.sleep(0.01)
        started = time.monotonic()
        result = fetcher.fetch(FetchRequest(bystander.base_url, None, PATIENT,
                                            queries={"patient": f"Patient/{PATIENT}", "data": "Observation?x=1"}))
        elapsed = time.monotonic() - started
        assert all(entry.status is PrefetchStatus.SATISFIED for entry in result.values()), result
        assert elapsed < 1.0, f"the healthy server's call waited {elapsed:.2f} s behind the hanging one"
        assert len(fault_server.requests) == 2, "the hanging server never gets more than its 2 threads"
    finally:
        for call_thread in stuck_calls:
            call_thread.join(timeout=10)
        fetcher.close()
