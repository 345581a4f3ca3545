"""SMART Backend Services (``cds_hooks.smart``): the service's own token when the EHR sends none.

Against SEKMET (FHIR server + token endpoint that its FHIR API enforces): discovery, private_key_jwt,
token caching, scope denial, refusal, a cached token the server no longer accepts, and keys registered
by URL from the service's ``/.well-known/jwks.json``. Against oidc-provider (a second, independent
authorization server): the same client assertion is accepted, its access token verifies against the
server's own keys, and a refused key is reported as such.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

pytest.register_assert_rewrite("fhir_testbed")
from fhir_testbed import FULL_SCOPE, PROBE_TEMPLATES, ClientKey, ProbePlugin, hook_request, probe_result  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402
from readiness import wait_until  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from cds_hooks.errors import FHIRUnauthorized  # noqa: E402
from cds_hooks.fhir_client import FHIRFetcher  # noqa: E402
from cds_hooks.smart import (  # noqa: E402
    ASSERTION_LIFETIME,
    BackendServices,
    MemoryTokenCache,
    SmartPrivateKeyJWT,
    load_smart_clients,
)

pytest_plugins = ["fhir_testbed", "servers"]
pytestmark = pytest.mark.integration


def call(app, body):
    return app.test_client().post("/cds-services/fetch-probe", json=body)


def no_token_request(fhir_server, patient_id, prefetch=None):
    """What an EHR sends when it gives no token: ``fhirServer`` only."""
    return hook_request(patient_id, prefetch, fhirServer=fhir_server.base_url)


@pytest.fixture
def backend_app(make_app, fhir_server, tmp_path):
    """Unsigned mode, the server on the sandbox allowlist (who may make us call it) and registered for
    SMART Backend Services (how we authenticate there)."""
    def build(scope=FULL_SCOPE, client=None, required=None, **config):
        clients = fhir_server.smart_clients_file(tmp_path / "smart-clients.json", scope, client)
        config.setdefault("LUPUS_CDS_SANDBOX_FHIR_SERVERS", fhir_server.base_url)
        return make_app(plugins=[ProbePlugin(PROBE_TEMPLATES, required)], LUPUS_CDS_SMART_CLIENTS=str(clients),
                        **config)
    return build


def backend_of(app) -> BackendServices:
    return app.extensions["cds_hooks"].fetcher.backend


@pytest.mark.parametrize("client_name", ["client_key", "es_client_key"])
def test_backend_token_fetch_equals_full_prefetch(backend_app, fhir_server, testbed_patients, client_name):
    ada = testbed_patients["ada"]
    app = backend_app(client=getattr(fhir_server, client_name))
    context = {"userId": "Practitioner/testbed", "patientId": ada}
    prefetched = probe_result(call(app, hook_request(ada, fhir_server.prefetch_for(PROBE_TEMPLATES, context))))
    fetched = probe_result(call(app, no_token_request(fhir_server, ada)))
    assert fetched == prefetched
    assert len(fetched["keys"]["observations"]["resources"]) == 12


def test_one_token_serves_consecutive_calls(backend_app, fhir_server, testbed_patients):
    app = backend_app()
    for _ in range(5):
        result = probe_result(call(app, no_token_request(fhir_server, testbed_patients["ada"])))
        assert result["gaps"] == []
    assert backend_of(app).token_requests == 1


def test_scope_denial_by_the_fhir_server(backend_app, fhir_server, testbed_patients):
    app = backend_app(scope="system/Patient.rs system/Observation.rs",
                      required=frozenset({"patient", "observations"}))
    result = probe_result(call(app, no_token_request(fhir_server, testbed_patients["ada"])))
    assert len(result["keys"]["observations"]["resources"]) == 12
    assert result["keys"]["conditions"]["status"] == "missing"
    assert any("conditions" in gap and "403" in gap for gap in result["gaps"])


def test_a_scope_the_registration_does_not_allow_gives_412(backend_app, fhir_server, testbed_patients):
    app = backend_app(scope="system/Practitioner.rs")  # SEKMET: 400 invalid_scope
    response = call(app, no_token_request(fhir_server, testbed_patients["ada"]))
    assert response.status_code == 412
    assert backend_of(app).token_requests == 1


def test_an_unregistered_key_gives_412(backend_app, fhir_server, testbed_patients, tmp_path):
    impostor = ClientKey.generate(tmp_path / "keys", "cds-service", "RS384")  # right id, wrong key
    app = backend_app(client=impostor)
    assert call(app, no_token_request(fhir_server, testbed_patients["ada"])).status_code == 412


class AsClient:
    """Accepts every call as one verified client (this module tests fetching, not JWTs)."""

    def __init__(self, fhir_servers):
        from cds_hooks.auth import VerifiedClient

        self.client = VerifiedClient("https://ehr-b.example.org", None, "jti", tuple(fhir_servers))

    def verify(self, header, audiences):
        return self.client


def test_a_registration_gives_no_client_reach_to_that_server(backend_app, fhir_server, testbed_patients):
    """Confused deputy: client B names the server our backend credentials are for (tenant A's). The
    service must not read it for B with its own token, or B learns A's patient data from the cards."""
    app = backend_app(authenticator=AsClient(["https://ehr-b.example.org/fhir"]), LUPUS_CDS_ALLOW_UNSIGNED=False)
    response = call(app, no_token_request(fhir_server, testbed_patients["ada"]))
    assert response.status_code == 412
    assert backend_of(app).token_requests == 0  # not even a token was asked for

    unsigned = backend_app(LUPUS_CDS_SANDBOX_FHIR_SERVERS="")  # anonymous callers: only the allowlist
    assert call(unsigned, no_token_request(fhir_server, testbed_patients["ada"])).status_code == 412
    assert backend_of(unsigned).token_requests == 0


def test_a_client_listing_the_server_gets_the_backend_token_fetch(backend_app, fhir_server, testbed_patients):
    app = backend_app(authenticator=AsClient([fhir_server.base_url]), LUPUS_CDS_ALLOW_UNSIGNED=False)
    result = probe_result(call(app, no_token_request(fhir_server, testbed_patients["ada"])))
    assert result["gaps"] == [] and len(result["keys"]["observations"]["resources"]) == 12
    assert backend_of(app).token_requests == 1


def test_a_cached_token_the_server_refuses_is_renewed_once(short_token_fhir_server, tmp_path):
    server = short_token_fhir_server
    ada = server.load("two-patients.json")["urn:uuid:7e57bed0-0000-4000-8000-000000000001"]
    clients = load_smart_clients(server.smart_clients_file(tmp_path / "smart.json"))
    backend = BackendServices(clients, cache=MemoryTokenCache())
    stale = server.backend_token()["access_token"]  # lives 1 s
    # Until SEKMET answers 401 "expired" to it; our cache will still believe in it.
    wait_until(lambda: server.get(f"Patient/{ada}", stale).status_code == 401, "SEKMET refuses the expired token",
               deadline=60, interval=0.25)
    backend.cache.set(clients[0].cache_key, {"access_token": stale, "expires_at": time.time() + 600},
                      time.time() + 600)
    fetcher = FHIRFetcher(backend=backend, allow_unsigned=True, sandbox_servers=[server.base_url])
    from cds_hooks.fetch import FetchRequest

    result = fetcher.fetch(FetchRequest(server.base_url, None, ada, queries={"patient": f"Patient/{ada}"}))
    assert result["patient"].status.value == "satisfied"
    assert backend.token_requests == 1
    fetcher.close()


def test_replicas_share_one_token_through_redis(backend_app, fhir_server, testbed_patients, redis_url):
    replicas = [backend_app(LUPUS_CDS_REDIS_URL=redis_url) for _ in range(2)]
    for app in replicas * 2:
        assert probe_result(call(app, no_token_request(fhir_server, testbed_patients["ada"])))["gaps"] == []
    assert [backend_of(app).token_requests for app in replicas] == [1, 0]


class ServedApp:
    """The Flask app on a real port, so an authorization server can fetch its JWKS by URL."""

    def __init__(self, app, port):
        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(5)


def test_jwks_is_published_and_registrable_by_url(make_app, fhir_server, testbed_patients, tmp_path):
    key = ClientKey.generate(tmp_path / "keys", "cds-service-by-url", "ES384")
    clients = fhir_server.smart_clients_file(tmp_path / "smart.json", client=key)
    app = make_app(plugins=[ProbePlugin(PROBE_TEMPLATES)], LUPUS_CDS_SMART_CLIENTS=str(clients),
                   LUPUS_CDS_SANDBOX_FHIR_SERVERS=fhir_server.base_url)
    published = app.test_client().get("/.well-known/jwks.json")
    assert published.status_code == 200
    jwks = published.get_json()
    assert [k["kid"] for k in jwks["keys"]] == [key.kid]
    assert all("d" not in k for k in jwks["keys"])  # public parts only
    assert jwks["keys"][0]["alg"] == "ES384" and jwks["keys"][0]["use"] == "sig"
    # SEKMET knows this client only by its jwks_url (our endpoint): it must fetch the key from us.
    with ServedApp(app, fhir_server.jwks_port):
        result = probe_result(call(app, no_token_request(fhir_server, testbed_patients["ada"])))
    assert result["gaps"] == [] and len(result["keys"]["observations"]["resources"]) == 12


def test_jwks_is_empty_without_registrations(make_app):
    assert make_app().test_client().get("/.well-known/jwks.json").get_json() == {"keys": []}


def test_the_client_assertion_follows_smart_rules(fhir_server):
    key = fhir_server.client_key
    signer = SmartPrivateKeyJWT(fhir_server.token_endpoint, key.kid, "RS384")
    auth = SimpleNamespace(client_id="cds-service", client_secret=key.key)
    first, second = (jwt.decode(signer.sign(auth, fhir_server.token_endpoint), key.key, algorithms=["RS384"])
                     for _ in range(2))
    for token in (first, second):
        assert token.header == {"alg": "RS384", "kid": key.kid, "typ": "JWT"}
        claims = token.claims
        assert claims["iss"] == claims["sub"] == "cds-service"
        assert claims["aud"] == fhir_server.token_endpoint
        assert 0 < claims["exp"] - int(time.time()) <= ASSERTION_LIFETIME <= 300
    assert first.claims["jti"] != second.claims["jti"]


# --- oidc-provider: an independent authorization server --------------------------------------------------

def oidc_backend(provider, key, scope):
    """The service's BackendServices registered at ``provider`` (whose root serves smart-configuration)."""
    from cds_hooks.smart import SmartClient

    client = SmartClient(fhir_server=provider.issuer, client_id=key.client_id, key=key.key, kid=key.kid,
                         alg=key.alg, scope=scope)
    return BackendServices([client])


def test_oidc_provider_accepts_the_assertion_and_issues_a_verifiable_token(
        oidc_provider_factory, fhir_server, tmp_path):
    key = ClientKey.generate(tmp_path / "keys", "cds-service", "RS384")
    scope = "system/Observation.rs system/Patient.rs"
    provider = oidc_provider_factory(key, scope, fhir_base=fhir_server.base_url)
    backend = oidc_backend(provider, key, scope)
    deadline = time.monotonic() + 10
    token = backend.access_token(provider.issuer, deadline)
    assert token.fresh
    claims = jwt.decode(token.access_token, KeySet.import_key_set(provider.jwks())).claims
    assert claims["aud"] == fhir_server.base_url
    assert claims["client_id"] == "cds-service"
    assert set(claims["scope"].split()) == set(scope.split())
    assert claims["exp"] > time.time()
    # cached, then renewed with a new assertion (a replayed jti would be refused by the provider)
    assert backend.access_token(provider.issuer, deadline).access_token == token.access_token
    backend.forget(provider.issuer)
    renewed = backend.access_token(provider.issuer, deadline)
    assert renewed.fresh and renewed.access_token != token.access_token
    assert backend.token_requests == 2


def test_oidc_provider_fetches_our_published_jwks(oidc_provider_factory, make_app, tmp_path):
    from fhir_testbed import free_port, write_smart_clients

    key = ClientKey.generate(tmp_path / "keys", "cds-service", "ES384")
    port = free_port()
    provider = oidc_provider_factory(key, "system/Observation.rs",
                                     jwks_uri=f"http://127.0.0.1:{port}/.well-known/jwks.json")
    clients = write_smart_clients(tmp_path / "smart.json",
                                  [key.smart_clients_entry(provider.issuer, "system/Observation.rs")])
    app = make_app(LUPUS_CDS_SMART_CLIENTS=str(clients))
    backend = backend_of(app)
    with ServedApp(app, port):
        token = backend.access_token(provider.issuer, time.monotonic() + 10)
    claims = jwt.decode(token.access_token, KeySet.import_key_set(provider.jwks())).claims
    assert claims["client_id"] == "cds-service"


def test_oidc_provider_refuses_a_key_it_does_not_know(oidc_provider_factory, tmp_path):
    registered = ClientKey.generate(tmp_path / "keys", "cds-service", "RS384")
    other = ClientKey.generate(tmp_path / "keys", "cds-service", "RS384")
    provider = oidc_provider_factory(registered, "system/Observation.rs")
    backend = oidc_backend(provider, other, "system/Observation.rs")
    with pytest.raises(FHIRUnauthorized) as refused:
        backend.access_token(provider.issuer, time.monotonic() + 10)
    assert "invalid_client" in str(refused.value)
    assert json.dumps(backend.public_jwks()).count(other.kid) == 1
