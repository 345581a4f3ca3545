"""The client-JWT profiles of the EHRs lupus-cds is registered with (deploy/REGISTRATION.md), end to end:
keys of each EHR's shape, JWK Sets served over HTTP by a local server, fetched with the real HTTP client.

* **Epic** (https://fhir.epic.com/Documentation?docId=cds-hooks, "Trusting CDS Clients"): RS384 by
  default, header ``jku`` (``.../api/epic/2019/Security/Open/PublicKeys/...``) and ``kid``; ``iss`` is the
  organisation's FHIR base URL, ``sub`` the CDS client id and ``aud`` the service URL, all three set up
  by the health system; ``nbf`` five minutes before ``iat``; 15 minutes' lifetime in Epic's example.
  ES384, the other algorithm CDS Hooks recommends, is tested with the same profile.
* **Oracle Health** (https://fhir.cerner.com/millennium/cds_hooks/, "Service Authorization"): ``iss`` is
  ``https://cds-hooks.cerner.com``; the token's ``jku`` must be one of the key URLs Oracle publishes
  (``https://authorization.cerner.com/jwk``), registered here as ``jwks_urls``.

JWK Sets are cached for their HTTP lifetime (Cache-Control / Expires, bounded) and fetched again on an
unknown ``kid`` (rotation). The clock of the authenticator is fixed, so cache decisions are exact.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import patient_view_request
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from cds_hooks.auth import (
    JWKS_DEFAULT_CACHE,
    JWKS_MAX_CACHE,
    JWKS_MIN_CACHE,
    ClientAuthenticator,
    cache_lifetime,
    load_clients,
)
from cds_hooks.errors import Unauthorized

NOW = 1_800_000_000
SERVICE = "/cds-services/patient-greeter"
AUD = "https://cds.example.org" + SERVICE
EPIC_ISS = "https://ehr.example.org/interconnect-fhir-oauth/api/FHIR/R4"
EPIC_CLIENT_ID = "12345678-ce08-4ac7-ac0c-12345678"
EPIC_KEYS_PATH = "/interconnect-fhir-oauth/api/epic/2019/Security/Open/PublicKeys/530013/530013"
ORACLE_ISS = "https://cds-hooks.cerner.com"


# --- a JWK Set server ------------------------------------------------------------------------------


class KeyServer:
    """Serves JWK Sets at paths on 127.0.0.1 with chosen response headers, and counts the requests."""

    def __init__(self):
        self.documents: dict[str, tuple[dict, dict[str, str]]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path not in server.documents:
                    self.send_error(404)
                    return
                document, headers = server.documents[self.path]
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def publish(self, path: str, *keys_and_kids, headers: dict[str, str] | None = None) -> str:
        self.documents[path] = (jwks(*keys_and_kids), headers or {})
        return self.url(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_server():
    server = KeyServer()
    yield server
    server.close()


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def jwks(*keys_and_kids) -> dict:
    keys = []
    for key, kid in keys_and_kids:
        data = key.as_dict(private=False)
        data.update(kid=kid, use="sig")
        keys.append(data)
    return {"keys": keys}


def token(key, *, alg: str, kid: str, jku: str | None, iss: str, at: float = NOW, **claims) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": kid} | ({"jku": jku} if jku else {})
    payload = {"iss": iss, "aud": AUD, "iat": int(at), "exp": int(at) + 300, "jti": str(uuid.uuid4())}
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}  # None: leave the claim out
    return jwt.encode(header, payload, key, algorithms=[alg])


def epic_token(key, jku, *, alg="RS384", kid="d3bmo5HzW61TUgikHZH+A8Tx4UOXz2iOs4KvVU4eLY0=", at=NOW, **claims):
    """Epic's documented shape: nbf five minutes before iat, 15 minutes' lifetime, sub = client id."""
    fields = {"sub": EPIC_CLIENT_ID, "nbf": int(at) - 300, "exp": int(at) + 900} | claims
    return token(key, alg=alg, kid=kid, jku=jku, iss=EPIC_ISS, at=at, **fields)


def authenticator(tmp_path, clients: list[dict], clock: Clock) -> ClientAuthenticator:
    """Built the way the service builds it: from a trusted-clients file, with the real HTTP client."""
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": clients}))
    return ClientAuthenticator(load_clients(path), clock=clock)


def reason(auth: ClientAuthenticator, compact: str) -> str:
    with pytest.raises(Unauthorized) as info:
        auth.verify(f"Bearer {compact}", [AUD])
    return info.value.reason


@pytest.fixture(scope="module")
def rsa_key():
    return RSAKey.generate_key(2048)


@pytest.fixture(scope="module")
def ec_key():
    return ECKey.generate_key("P-384")


# --- Epic ------------------------------------------------------------------------------------------


@pytest.mark.requirement("cds-hooks_2.0@176", "cds-hooks_2.0@205")
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_epic_token_with_jku_kid_and_sub_is_accepted(tmp_path, key_server, rsa_key, ec_key, alg):
    key = rsa_key if alg == "RS384" else ec_key
    kid = "d3bmo5HzW61TUgikHZH+A8Tx4UOXz2iOs4KvVU4eLY0="
    jku = key_server.publish(EPIC_KEYS_PATH, (key, kid))
    auth = authenticator(tmp_path, [{"iss": EPIC_ISS, "jwks_url": jku, "sub": EPIC_CLIENT_ID}], Clock())
    verified = auth.verify(f"Bearer {epic_token(key, jku, alg=alg, kid=kid)}", [AUD])
    assert verified.iss == EPIC_ISS
    assert key_server.hits == {EPIC_KEYS_PATH: 1}


@pytest.mark.requirement("cds-hooks_2.0@195")
@pytest.mark.parametrize("sub", ["another-client-id", None, 42])
def test_epic_registered_sub_must_match(tmp_path, key_server, rsa_key, sub):
    jku = key_server.publish(EPIC_KEYS_PATH, (rsa_key, "k1"))
    auth = authenticator(tmp_path, [{"iss": EPIC_ISS, "jwks_url": jku, "sub": EPIC_CLIENT_ID}], Clock())
    assert reason(auth, epic_token(rsa_key, jku, kid="k1", sub=sub)) == "sub"


def test_sub_is_not_required_unless_registered(tmp_path, key_server, rsa_key):
    """CDS Hooks 2.0 defines no ``sub`` (checklist 8.2): only a registered one is checked."""
    jku = key_server.publish(EPIC_KEYS_PATH, (rsa_key, "k1"))
    auth = authenticator(tmp_path, [{"iss": EPIC_ISS, "jwks_url": jku}], Clock())
    assert auth.verify(f"Bearer {epic_token(rsa_key, jku, kid='k1', sub=None)}", [AUD]).iss == EPIC_ISS


def test_epic_nbf_in_the_future_is_refused(tmp_path, key_server, rsa_key):
    jku = key_server.publish(EPIC_KEYS_PATH, (rsa_key, "k1"))
    auth = authenticator(tmp_path, [{"iss": EPIC_ISS, "jwks_url": jku, "sub": EPIC_CLIENT_ID}], Clock())
    assert reason(auth, epic_token(rsa_key, jku, kid="k1", nbf=NOW + 120)) == "nbf"


@pytest.mark.requirement("cds-hooks_2.0@176", "cds-hooks_2.0@205")
def test_epic_profile_through_the_hook_endpoint(make_app, tmp_path, key_server, rsa_key):
    """The clients file an operator writes for Epic, the service built from it, a real hook call."""
    jku = key_server.publish(EPIC_KEYS_PATH, (rsa_key, "k1"))
    clients = tmp_path / "epic-clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": EPIC_ISS, "jwks_url": jku, "sub": EPIC_CLIENT_ID}]}))
    client = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(clients)).test_client()
    at = time.time()
    good = epic_token(rsa_key, jku, kid="k1", at=at)
    assert client.post(SERVICE, json=patient_view_request(), headers={"Authorization": f"Bearer {good}"}
                       ).status_code == 200
    wrong_sub = epic_token(rsa_key, jku, kid="k1", at=at, sub="someone-else")
    assert client.post(SERVICE, json=patient_view_request(), headers={"Authorization": f"Bearer {wrong_sub}"}
                       ).status_code == 401


# --- Oracle Health -------------------------------------------------------------------------------


@pytest.fixture
def oracle(tmp_path, key_server, rsa_key, ec_key):
    """Three published key URLs, keys at the second and third; the first is never used by a token."""
    other = RSAKey.generate_key(2048)
    urls = [key_server.publish("/jwk/a", (other, "a-1")), key_server.publish("/jwk/b", (rsa_key, "b-1")),
            key_server.publish("/jwk/c", (ec_key, "c-1"))]
    auth = authenticator(tmp_path, [{"iss": ORACLE_ISS, "jwks_urls": urls}], Clock())
    return auth, urls


@pytest.mark.requirement("cds-hooks_2.0@195", "cds-hooks_2.0@205")
def test_oracle_token_naming_any_allowed_jku_is_accepted_and_only_that_url_is_fetched(
        oracle, key_server, rsa_key, ec_key):
    auth, urls = oracle
    assert auth.verify(f"Bearer {token(rsa_key, alg='RS384', kid='b-1', jku=urls[1], iss=ORACLE_ISS)}",
                       [AUD]).iss == ORACLE_ISS
    assert auth.verify(f"Bearer {token(ec_key, alg='ES384', kid='c-1', jku=urls[2], iss=ORACLE_ISS)}",
                       [AUD]).iss == ORACLE_ISS
    assert key_server.hits == {"/jwk/b": 1, "/jwk/c": 1}


@pytest.mark.requirement("cds-hooks_2.0@195")
def test_oracle_jku_not_on_the_list_is_refused_without_fetching(oracle, key_server, rsa_key):
    auth, urls = oracle
    foreign = key_server.publish("/attacker/jwk", (rsa_key, "b-1"))
    for jku in (foreign, urls[1] + "/", urls[1].replace("127.0.0.1", "localhost"), "https://authorization.cerner.com/jwk"):
        assert reason(auth, token(rsa_key, alg="RS384", kid="b-1", jku=jku, iss=ORACLE_ISS)) == "jku"
    assert key_server.hits == {}


@pytest.mark.requirement("cds-hooks_2.0@195")
def test_oracle_keys_of_one_url_never_vouch_for_another_jku(oracle, key_server, ec_key):
    """A token naming /jwk/b is checked against /jwk/b's keys only, though /jwk/c holds its kid."""
    auth, urls = oracle
    assert reason(auth, token(ec_key, alg="ES384", kid="c-1", jku=urls[1], iss=ORACLE_ISS)) == "kid"
    assert "/jwk/c" not in key_server.hits


def test_oracle_other_issuer_with_an_allowed_jku_is_refused(oracle, rsa_key):
    auth, urls = oracle
    assert reason(auth, token(rsa_key, alg="RS384", kid="b-1", jku=urls[1], iss="https://cds-hooks.example")) == "iss"


def test_without_jku_every_listed_url_may_hold_the_key(tmp_path, key_server, rsa_key, ec_key):
    urls = [key_server.publish("/k/1", (rsa_key, "one")), key_server.publish("/k/2", (ec_key, "two"))]
    auth = authenticator(tmp_path, [{"iss": ORACLE_ISS, "jwks_url": urls[0], "jwks_urls": urls[1:]}], Clock())
    assert auth.verify(f"Bearer {token(ec_key, alg='ES384', kid='two', jku=None, iss=ORACLE_ISS)}",
                       [AUD]).iss == ORACLE_ISS


# --- cache lifetime and rotation -----------------------------------------------------------------


def verify_at(auth, clock, key, kid, jku, at, alg="RS384"):
    clock.now = at
    return auth.verify(f"Bearer {token(key, alg=alg, kid=kid, jku=jku, iss=ORACLE_ISS, at=at)}", [AUD])


@pytest.mark.parametrize("headers, fresh_for", [
    (lambda: {"Cache-Control": "public, max-age=600"}, 600),
    (lambda: {"Cache-Control": "max-age=600", "Age": "100"}, 500),
    # Expires is measured from the server's own Date header, which http.server sets to the real time
    (lambda: {"Expires": formatdate(time.time() + 900, usegmt=True)}, 900),
    (lambda: {"Cache-Control": "no-store"}, JWKS_MIN_CACHE),
    (lambda: {"Cache-Control": "max-age=31536000"}, JWKS_MAX_CACHE),
    (lambda: {}, JWKS_DEFAULT_CACHE),
], ids=["max-age", "max-age-minus-age", "expires", "no-store-is-bounded", "year-is-bounded", "no-headers"])
def test_jwks_is_cached_for_its_http_lifetime_then_fetched_again(tmp_path, key_server, rsa_key, headers, fresh_for):
    jku = key_server.publish("/jwk", (rsa_key, "k"), headers=headers())
    clock = Clock()
    auth = authenticator(tmp_path, [{"iss": ORACLE_ISS, "jwks_urls": [jku]}], clock)
    verify_at(auth, clock, rsa_key, "k", jku, NOW)
    verify_at(auth, clock, rsa_key, "k", jku, NOW + fresh_for - 5)  # 5 s: HTTP dates have whole seconds
    assert key_server.hits["/jwk"] == 1, "still fresh: no fetch for a known kid"
    verify_at(auth, clock, rsa_key, "k", jku, NOW + fresh_for + 5)
    assert key_server.hits["/jwk"] == 2, "expired: fetched again before use"


@pytest.mark.parametrize("headers, expected", [
    ({"Cache-Control": "max-age=120"}, 120),
    ({"cache-control": "MAX-AGE=120, must-revalidate"}, 120),
    ({"Cache-Control": "max-age=120", "Expires": formatdate(NOW + 9000, usegmt=True)}, 120),
    ({"Cache-Control": "no-cache, max-age=600"}, 60),
    ({"Cache-Control": "max-age=-5"}, JWKS_DEFAULT_CACHE),
    ({"Expires": formatdate(NOW + 300, usegmt=True)}, 300),
    ({"Expires": "0"}, 60),
    ({"Expires": formatdate(NOW - 300, usegmt=True)}, 60),
    ({"Expires": formatdate(NOW + 10**7, usegmt=True)}, JWKS_MAX_CACHE),
    (None, JWKS_DEFAULT_CACHE),
])
def test_cache_lifetime_from_headers(headers, expected):
    assert cache_lifetime(headers, NOW, minimum=60) == expected


@pytest.mark.requirement("cds-hooks_2.0@195")
def test_rotation_new_kid_is_fetched_at_once_and_a_retired_key_stops_working(tmp_path, key_server, rsa_key):
    new_key = RSAKey.generate_key(2048)
    jku = key_server.publish("/jwk", (rsa_key, "old"), headers={"Cache-Control": "max-age=3600"})
    clock = Clock()
    auth = authenticator(tmp_path, [{"iss": ORACLE_ISS, "jwks_urls": [jku]}], clock)
    verify_at(auth, clock, rsa_key, "old", jku, NOW)

    # The EHR publishes its new key next to the old one and signs with it: one fetch, on the unknown kid.
    key_server.publish("/jwk", (rsa_key, "old"), (new_key, "new"), headers={"Cache-Control": "max-age=3600"})
    verify_at(auth, clock, new_key, "new", jku, NOW + JWKS_MIN_CACHE + 1)
    assert key_server.hits["/jwk"] == 2
    verify_at(auth, clock, rsa_key, "old", jku, NOW + JWKS_MIN_CACHE + 2)  # both valid during the overlap

    # The old key is retired: once the cache lifetime is over, a token signed with it is refused.
    key_server.publish("/jwk", (new_key, "new"), headers={"Cache-Control": "max-age=3600"})
    clock.now = NOW + JWKS_MIN_CACHE + 3601 + 3600
    with pytest.raises(Unauthorized) as info:
        verify_at(auth, clock, rsa_key, "old", jku, clock.now)
    assert info.value.reason == "kid"
    verify_at(auth, clock, new_key, "new", jku, clock.now + 1)
    assert key_server.hits["/jwk"] == 3


def test_expired_cache_is_kept_when_the_key_url_is_down(tmp_path, key_server, rsa_key):
    """An outage at the EHR's key URL does not lock the EHR out: the keys it last published still verify."""
    jku = key_server.publish("/jwk", (rsa_key, "k"), headers={"Cache-Control": "max-age=120"})
    clock = Clock()
    auth = authenticator(tmp_path, [{"iss": ORACLE_ISS, "jwks_urls": [jku]}], clock)
    verify_at(auth, clock, rsa_key, "k", jku, NOW)
    del key_server.documents["/jwk"]  # now 404
    verify_at(auth, clock, rsa_key, "k", jku, NOW + 500)
    verify_at(auth, clock, rsa_key, "k", jku, NOW + 510)
    assert key_server.hits["/jwk"] == 2, "one failed refresh, then rate-limited"


# --- the trusted-clients file --------------------------------------------------------------------


def test_jwks_url_and_jwks_urls_are_merged_in_order(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"clients": [{
        "iss": ORACLE_ISS, "jwks_url": "https://a.example/jwk",
        "jwks_urls": ["https://b.example/jwk", "https://a.example/jwk", "https://c.example/jwk"],
        "sub": "client-1"}]}))
    (client,) = load_clients(path)
    assert client.key_urls == ("https://a.example/jwk", "https://b.example/jwk", "https://c.example/jwk")
    assert client.sub == "client-1"


@pytest.mark.parametrize("entry, problem", [
    ({"jwks_urls": "https://a.example/jwk"}, "'jwks_urls' must be a non-empty list"),
    ({"jwks_urls": []}, "'jwks_urls' must be a non-empty list"),
    ({"jwks_urls": ["ftp://a.example/jwk"]}, "'jwks_urls' must be an absolute https URL"),
    ({"jwks_urls": [5]}, "'jwks_urls' must be a URL string"),
    ({"jwks_urls": ["https://a.example/jwk"], "sub": ""}, "'sub' must be a non-empty string"),
    ({"jwks_urls": ["https://a.example/jwk"], "jwks": {"keys": []}}, "with at least one key"),
])
def test_malformed_jwks_urls_or_sub_is_a_startup_error(tmp_path, entry, problem):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"clients": [{"iss": ORACLE_ISS, **entry}]}))
    with pytest.raises(ValueError, match=problem):
        load_clients(path)
