"""The SMART app host (``cds_hooks/smart_launch.py``) through Flask's test client: settings, the launch's
refusals made before any request, sessions, security headers, and readable error pages. The real launch
against a real authorization server is in ``test_smart_app_e2e.py``."""

from __future__ import annotations

import socket
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import NOW

from cds_hooks import config as settings
from cds_hooks import smart_launch
from cds_hooks.app_sessions import MemoryStore, digest
from cds_hooks.apps import SmartAppDefinition

ISS = "https://ehr.example.org/fhir"

pytest_plugins = ["fhir_testbed", "servers"]


def app_with_trends(make_app, **config):
    import plugin.hooks

    base = {"LUPUS_CDS_SMART_APP": True, "LUPUS_CDS_SMART_APP_ISS": ISS}
    base.update(config)
    return make_app(plugins=[plugin.hooks], **base)


def start_session(app, client, *, iss=ISS, expires_in=600, patient="p1", view_context="view=steroid"):
    """Put a session in the store as a finished launch would, and the browser cookie in ``client``."""
    browser, handle = "b" * 43, "h" * 22
    state = app.extensions["smart_apps"]
    state.store.put("session:" + digest(browser, handle), {
        "app": "trends", "iss": iss, "access_token": "secret-token", "patient": patient,
        "need_patient_banner": True, "app_context": view_context, "expires": NOW.timestamp() + expires_in}, 600)
    client.set_cookie(smart_launch.COOKIE, browser, domain="localhost", path=smart_launch.COOKIE_PATH)
    return handle


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings_parse_the_app_switch_and_the_allowed_servers():
    cfg = settings.load({"LUPUS_CDS_SMART_APP": "1", "LUPUS_CDS_SMART_APP_ISS": " https://a/fhir , https://b/r4 ",
                         "LUPUS_CDS_SMART_APP_SESSION_SECONDS": "900"}, environ={})
    assert cfg["LUPUS_CDS_SMART_APP"] is True
    assert cfg["LUPUS_CDS_SMART_APP_ISS"] == ["https://a/fhir", "https://b/r4"]
    assert cfg["LUPUS_CDS_SMART_APP_SESSION_SECONDS"] == 900
    defaults = settings.load({}, environ={})
    assert defaults["LUPUS_CDS_SMART_APP"] is False and defaults["LUPUS_CDS_SMART_APP_ISS"] == []


def test_the_app_is_not_served_unless_switched_on(make_app):
    import plugin.hooks

    client = make_app(plugins=[plugin.hooks]).test_client()
    assert client.get(f"/smart-apps/trends/launch?iss={ISS}&launch=x").status_code == 404


def test_launch_without_parameters_says_to_open_it_from_the_ehr(make_app):
    response = app_with_trends(make_app).test_client().get("/smart-apps/trends/launch")
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "Open this app from the EHR" in response.get_data(as_text=True)


@pytest.mark.parametrize("iss", ["https://evil.example.org/fhir", "http://169.254.169.254/latest",
                                 "https://ehr.example.org/fhir/../admin", "https://user@ehr.example.org/fhir",
                                 "file:///etc/passwd"])
def test_a_launch_from_a_server_not_allowed_is_refused_before_any_request(make_app, monkeypatch, iss):
    """SSRF: the service fetches nothing from an iss the operator did not allow."""
    app = app_with_trends(make_app)

    def no_request(*args, **kwargs):
        raise AssertionError("a request was made")

    monkeypatch.setattr(app.extensions["smart_apps"].http, "get", no_request)
    monkeypatch.setattr(app.extensions["smart_apps"].http, "post", no_request)
    response = app.test_client().get("/smart-apps/trends/launch", query_string={"iss": iss, "launch": "abc"})
    assert response.status_code == 403
    assert "This EHR is not allowed to launch the app" in response.get_data(as_text=True)


def test_an_unknown_app_is_a_readable_404(make_app):
    response = app_with_trends(make_app).test_client().get(f"/smart-apps/nope/launch?iss={ISS}&launch=x")
    assert response.status_code == 404 and "No such app" in response.get_data(as_text=True)


def stub_discovery(monkeypatch, app, body):
    class Answer:
        status_code = 200
        content = __import__("json").dumps(body).encode()

    monkeypatch.setattr(app.extensions["smart_apps"].http, "get", lambda *a, **k: Answer())


SMART_CONFIGURATION = {"issuer": "https://auth.example.org", "authorization_endpoint": "https://auth.example.org/auth",
                       "token_endpoint": "https://auth.example.org/token", "code_challenge_methods_supported": ["S256"],
                       "capabilities": ["launch-ehr", "client-public", "context-ehr-patient", "permission-v2"],
                       "grant_types_supported": ["authorization_code"]}


def test_launch_redirects_to_the_authorization_server_with_pkce_s256_state_aud_and_launch(make_app, monkeypatch):
    app = app_with_trends(make_app)
    stub_discovery(monkeypatch, app, SMART_CONFIGURATION)
    response = app.test_client().get("/smart-apps/trends/launch", query_string={"iss": ISS, "launch": "L-1"})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://auth.example.org/auth"
    assert params["response_type"] == "code" and params["client_id"] == "lupus-cds"
    assert params["redirect_uri"] == "https://cds.example.org/smart-apps/trends/callback"
    assert params["aud"] == ISS and params["launch"] == "L-1"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 40
    assert params["scope"].split() == ["launch", "openid", "fhirUser", "patient/Patient.rs", "patient/Observation.rs",
                                       "patient/MedicationRequest.rs", "patient/MedicationStatement.rs",
                                       "patient/MedicationAdministration.rs", "patient/Condition.rs"]
    # the PKCE verifier never leaves the server; the cookie is HttpOnly, Secure, SameSite=None outside localhost
    assert "code_verifier" not in response.headers["Location"]
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=None" in cookie
    assert "Path=/smart-apps/" in cookie


def test_on_http_localhost_the_cookie_is_lax_and_not_secure(make_app, monkeypatch):
    app = app_with_trends(make_app, LUPUS_CDS_PUBLIC_URL="http://127.0.0.1:8080")
    stub_discovery(monkeypatch, app, SMART_CONFIGURATION)
    response = app.test_client().get("/smart-apps/trends/launch", query_string={"iss": ISS, "launch": "L-1"})
    cookie = response.headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "Secure" not in cookie and "HttpOnly" in cookie


def test_a_server_without_pkce_s256_is_refused(make_app, monkeypatch):
    app = app_with_trends(make_app)
    stub_discovery(monkeypatch, app, {**SMART_CONFIGURATION, "code_challenge_methods_supported": ["plain"]})
    response = app.test_client().get("/smart-apps/trends/launch", query_string={"iss": ISS, "launch": "L-1"})
    assert response.status_code == 502 and "PKCE" in response.get_data(as_text=True)


def test_a_server_without_an_authorization_endpoint_is_refused(make_app, monkeypatch):
    app = app_with_trends(make_app)
    stub_discovery(monkeypatch, app, {"token_endpoint": "https://auth.example.org/token"})
    response = app.test_client().get("/smart-apps/trends/launch", query_string={"iss": ISS, "launch": "L-1"})
    assert response.status_code == 502 and "does not support app launch" in response.get_data(as_text=True)


def test_a_fhir_server_without_the_ehr_launch_is_refused_readably(make_app, fhir_server):
    """SEKMET (the sandbox's FHIR server) offers backend services only: its configuration names no
    launch-ehr capability, so the launch stops at a page saying so instead of at its authorize endpoint."""
    app = app_with_trends(make_app, LUPUS_CDS_SMART_APP_ISS=fhir_server.base_url)
    response = app.test_client().get("/smart-apps/trends/launch", query_string={
        "iss": fhir_server.base_url, "launch": "L-1"})
    assert response.status_code == 502 and "offers no EHR launch" in response.get_data(as_text=True)


def test_a_callback_with_an_unknown_state_is_refused(make_app):
    response = app_with_trends(make_app).test_client().get("/smart-apps/trends/callback?code=c&state=nope")
    assert response.status_code == 400 and "This launch is not known" in response.get_data(as_text=True)


def test_a_callback_from_another_authorization_server_is_refused(make_app, monkeypatch):
    """RFC 9207: ``iss`` of the authorization response must be the server the launch went to."""
    app = app_with_trends(make_app)
    stub_discovery(monkeypatch, app, SMART_CONFIGURATION)
    client = app.test_client()
    state = parse_qs(urlsplit(client.get("/smart-apps/trends/launch", query_string={
        "iss": ISS, "launch": "L"}).headers["Location"]).query)["state"][0]
    response = client.get("/smart-apps/trends/callback", query_string={"code": "c", "state": state,
                                                                       "iss": "https://evil.example.org"})
    assert response.status_code == 400 and "wrong server" in response.get_data(as_text=True)


def test_the_page_needs_a_session_of_this_browser(make_app):
    app = app_with_trends(make_app)
    client = app.test_client()
    handle = start_session(app, client)
    other_browser = app.test_client()
    response = other_browser.get(f"/smart-apps/trends/?s={handle}")
    assert response.status_code == 401 and "No open session" in response.get_data(as_text=True)
    assert client.get("/smart-apps/trends/").status_code == 401  # the cookie alone reaches nothing


def test_an_expired_session_is_a_readable_page_and_is_forgotten(make_app):
    app = app_with_trends(make_app)
    client = app.test_client()
    handle = start_session(app, client, expires_in=-1)
    response = client.get(f"/smart-apps/trends/?s={handle}")
    assert response.status_code == 401 and "The session has expired" in response.get_data(as_text=True)
    assert client.get(f"/smart-apps/trends/?s={handle}").status_code == 401
    assert "No open session" in client.get(f"/smart-apps/trends/?s={handle}").get_data(as_text=True)


def test_a_fhir_server_that_is_down_is_a_readable_page_not_a_500(make_app):
    app = app_with_trends(make_app, LUPUS_CDS_SMART_APP_ISS=f"http://127.0.0.1:{closed_port()}/fhir")
    client = app.test_client()
    handle = start_session(app, client, iss=app.config["LUPUS_CDS_SMART_APP_ISS"][0])
    started = time.monotonic()
    response = client.get(f"/smart-apps/trends/?s={handle}")
    assert response.status_code == 502 and response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    assert "cannot be reached" in text and "secret-token" not in text
    assert time.monotonic() - started < 20


def test_every_app_response_carries_the_security_headers(make_app):
    app = app_with_trends(make_app, LUPUS_CDS_SMART_APP_FRAME_ANCESTORS="https://ehr.example.org")
    response = app.test_client().get("/smart-apps/trends/launch")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors https://ehr.example.org" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    css = app.test_client().get("/smart-apps/trends/app.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and "svg.chart" in css.get_data(as_text=True)


def test_hook_cards_link_to_the_launch_url_only_when_the_app_is_served(make_app):
    import json

    from conftest import ROOT

    import plugin.hooks

    body = json.loads((ROOT / "fixtures/requests/sle-ck-elevated/patient-view.json").read_text())

    def smart_links(app):
        response = app.test_client().post("/cds-services/lupus-fasciculation-patient-view", json=body)
        assert response.status_code == 200
        return [link for card in response.get_json()["cards"] for link in card.get("links", [])
                if link["type"] == "smart"]

    assert smart_links(make_app(plugins=[plugin.hooks])) == []
    links = smart_links(app_with_trends(make_app))
    assert links and all(link["url"] == "https://cds.example.org/smart-apps/trends/launch" for link in links)
    assert {link["appContext"] for link in links} >= {"view=ck"}


def test_two_plugins_may_not_declare_one_app_id(make_app):
    from cds_hooks import hookimpl

    class Twice:
        @hookimpl
        def cds_smart_apps(self, config):
            page = SmartAppDefinition("trends", "x", ("patient/Patient.rs",), lambda p, n: {}, lambda page: "")
            return [page, page]

    with pytest.raises(ValueError, match="two plugins declare"):
        make_app(plugins=[Twice()], LUPUS_CDS_SMART_APP=True)


def test_app_definitions_check_their_id_and_read_the_view_from_app_context():
    with pytest.raises(ValueError):
        SmartAppDefinition("Trends/1", "x", ("patient/Patient.rs",), lambda p, n: {}, lambda page: "")
    app = SmartAppDefinition("t", "x", ("patient/Patient.rs",), lambda p, n: {}, lambda page: "",
                             views=(("ck", "CK"), ("steroid", "Steroid")))
    assert app.view_of("view=steroid") == "steroid" and app.view_of("ck") == "ck"
    assert app.view_of("view=nope") is None and app.view_of(None) is None and app.view_of({"view": "ck"}) is None


def test_the_memory_store_hands_a_pending_launch_out_once():
    store = MemoryStore()
    store.put("k", {"a": 1}, 60)
    assert store.pop("k") == {"a": 1} and store.pop("k") is None
    store.put("gone", {"a": 1}, -1)
    assert store.get("gone") is None


def test_serve_keeps_app_sessions_in_one_worker_without_redis(monkeypatch):
    """Launches and sessions live in memory without Redis: a launch started in one worker process must
    finish in the same one, so ``serve`` defaults to one worker then, even in unsigned sandbox mode; with
    Redis (or without the app) it uses every CPU."""
    from cds_hooks.server import build_server, default_workers

    for name in ("LUPUS_CDS_WORKERS", "LUPUS_CDS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LUPUS_CDS_PUBLIC_URL", "http://127.0.0.1:8080")  # build_server sets it when unset
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp")
    monkeypatch.setenv("LUPUS_CDS_ALLOW_UNSIGNED", "1")
    monkeypatch.setenv("LUPUS_CDS_SMART_APP", "1")
    assert build_server("127.0.0.1", 8080).workers == 1
    monkeypatch.setenv("LUPUS_CDS_REDIS_URL", "redis://127.0.0.1:1/0")
    assert build_server("127.0.0.1", 8080).workers == default_workers()
    monkeypatch.delenv("LUPUS_CDS_REDIS_URL")
    monkeypatch.setenv("LUPUS_CDS_SMART_APP", "0")
    assert build_server("127.0.0.1", 8080).workers == default_workers()


def test_with_redis_launches_and_sessions_are_shared_by_replicas_and_single_use(make_app, redis_url):
    """Two apps (two replicas) on one Redis: a session made by one is read by the other; a pending launch
    is handed out once; Redis holds digests as keys, never the browser cookie."""
    import redis

    from cds_hooks.app_sessions import RedisStore

    first = app_with_trends(make_app, LUPUS_CDS_REDIS_URL=redis_url)
    second = app_with_trends(make_app, LUPUS_CDS_REDIS_URL=redis_url)
    assert isinstance(first.extensions["smart_apps"].store, RedisStore)
    client = first.test_client()
    handle = start_session(first, client)
    other_replica = second.test_client()
    other_replica.set_cookie(smart_launch.COOKIE, "b" * 43, domain="localhost", path=smart_launch.COOKIE_PATH)
    response = other_replica.get(f"/smart-apps/trends/?s={handle}")
    assert response.status_code != 401  # found on the other replica (the FHIR server itself is not there)
    store = second.extensions["smart_apps"].store
    store.put("pending:x", {"a": 1}, 60)
    assert first.extensions["smart_apps"].store.pop("pending:x") == {"a": 1} and store.pop("pending:x") is None
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("*")]
    assert keys and not any("b" * 43 in k for k in keys)
