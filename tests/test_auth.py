"""Unit tests of the client-JWT verifier, :class:`cds_hooks.auth.ClientAuthenticator` (checklist 8.2).

Keys are generated at test time; the clock is fixed so every expiry decision is deterministic.
Each failure test asserts the ``Unauthorized.reason`` code, which feeds logs and metrics only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import uuid
from pathlib import Path

import pytest
from conftest import patient_view_request
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from cds_hooks.auth import (
    ClientAuthenticator,
    InMemoryReplayStore,
    TrustedClient,
    VerifiedClient,
    load_clients,
)
from cds_hooks.errors import Unauthorized

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "spec-examples"
NOW = 1_800_000_000
ISS = "https://ehr.example.org"
OTHER_ISS = "https://other-ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
BASE = "https://cds.example.org/cds-services"
AUD = f"{BASE}/lupus-twitching"


# --- helpers -------------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict) -> str:
    return b64(json.dumps(value).encode())


def claims(**overrides) -> dict:
    payload = {"iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 300, "jti": str(uuid.uuid4())}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def sign(key, payload: dict | None = None, *, alg="ES384", kid="key-1", typ="JWT", **header) -> str:
    head = {"alg": alg, "kid": kid, "typ": typ, **header}
    head = {k: v for k, v in head.items() if v is not None}
    payload = claims() if payload is None else payload
    return jwt.encode(head, payload, key, algorithms=[alg], default_type=None)


def public_jwks(*keys_and_kids) -> dict:
    keys = []
    for key, kid in keys_and_kids:
        data = key.as_dict(private=False)
        data["kid"] = kid
        keys.append(data)
    return {"keys": keys}


class FakeClock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeResponse:
    def __init__(self, document, status_code=200):
        self.document = document
        self.status_code = status_code

    def json(self):
        return self.document


class FakeHTTP:
    """An injected ``http_get`` that serves one JWK Set and counts the calls."""

    def __init__(self, document, status_code=200):
        self.document = document
        self.status_code = status_code
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url, timeout):
        self.calls.append((url, timeout))
        return FakeResponse(self.document, self.status_code)


def reason_of(auth: ClientAuthenticator, header: str | None, audiences=(AUD,)) -> str:
    with pytest.raises(Unauthorized) as info:
        auth.verify(header, list(audiences))
    return info.value.reason


@pytest.fixture(scope="module")
def ec_key():
    return ECKey.generate_key("P-384", parameters={"kid": "key-1"})


@pytest.fixture(scope="module")
def rsa_key():
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def auth(ec_key, rsa_key, clock):
    """One statically keyed client (an EC and an RSA key), fixed clock."""
    client = TrustedClient(iss=ISS, jwks=load_static(public_jwks((ec_key, "key-1"), (rsa_key, "rsa-1"))),
                           fhir_servers=("https://ehr.example.org/fhir",))
    return ClientAuthenticator([client], clock=clock, http_get=fail_http)


def load_static(jwks: dict):
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(jwks)


def fail_http(url, timeout):  # static-key clients must never fetch anything
    raise AssertionError(f"unexpected fetch of {url}")


def remote_auth(clock, http, **kwargs):
    client = TrustedClient(iss=ISS, jwks_url=JWKS_URL)
    return ClientAuthenticator([client], clock=clock, http_get=http, **kwargs)


# --- the happy path ------------------------------------------------------------------------------

@pytest.mark.requirement("cds-hooks_2.0@176", "cds-hooks_2.0@199", "cds-hooks_2.0@205")
def test_sec_4_valid_es384_token_is_accepted(auth, ec_key):
    payload = claims()
    result = auth.verify(f"Bearer {sign(ec_key, payload)}", [AUD])
    assert result == VerifiedClient(iss=ISS, tenant=None, jti=payload["jti"],
                                    fhir_servers=("https://ehr.example.org/fhir",))


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
@pytest.mark.requirement("cds-hooks_2.0@200", "cds-hooks_2.0@205")
def test_sec_11_rsa_algorithms_are_accepted(auth, rsa_key, alg):
    assert auth.verify(f"Bearer {sign(rsa_key, alg=alg, kid='rsa-1')}", [AUD]).iss == ISS


@pytest.mark.parametrize(("alg", "curve"), [("ES256", "P-256"), ("ES512", "P-521")])
@pytest.mark.requirement("cds-hooks_2.0@200")
def test_sec_11_other_ec_curves_are_accepted(clock, alg, curve):
    key = ECKey.generate_key(curve)
    client = TrustedClient(iss=ISS, jwks=load_static(public_jwks((key, "k"))))
    auth = ClientAuthenticator([client], clock=clock, http_get=fail_http)
    assert auth.verify(f"Bearer {sign(key, alg=alg, kid='k')}", [AUD]).iss == ISS


def test_sec_4_scheme_is_case_insensitive_and_typ_too(auth, ec_key):
    auth.verify(f"bearer {sign(ec_key)}", [AUD])
    auth.verify(f"BEARER   {sign(ec_key, typ='jwt')}", [AUD])


# --- SEC-4: the header ---------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   "])
def test_sec_4_missing_token(auth, header):
    assert reason_of(auth, header) == "missing"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc.def.ghi", "JWT abc.def.ghi"])
def test_sec_4_not_bearer(auth, header):
    assert reason_of(auth, header) == "scheme"


@pytest.mark.parametrize("token", [
    "not-a-jwt", "a.b", "a.b.c.d.e", "abc.def.ghi", "ab$.cd.ef",
    f"{b64json({'alg': 'ES384'})}.{b64(b'not json')}.sig",
    "x" * 20_000 + ".y.z",
])
def test_garbage_token_is_malformed(auth, token):
    assert reason_of(auth, f"Bearer {token}") == "malformed"


def test_header_that_is_not_an_object_is_rejected(auth):
    token = f"{b64(b'[1]')}.{b64json(claims())}.c2ln"
    assert reason_of(auth, f"Bearer {token}") in {"malformed", "alg"}


# --- SEC-6 and SEC-10: header checks, before any key lookup -------------------------------------

@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.requirement("cds-hooks_2.0@201")
def test_sec_10_alg_none_is_rejected(auth, alg):
    token = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': 'key-1'})}.{b64json(claims())}."
    assert reason_of(auth, f"Bearer {token}") == "alg"


@pytest.mark.parametrize(("alg", "digest"), [("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                                             ("HS512", hashlib.sha512)])
@pytest.mark.requirement("cds-hooks_2.0@203")
def test_sec_10_hmac_with_public_key_as_secret_is_rejected(auth, ec_key, rsa_key, alg, digest):
    """The classic confusion attack: HMAC keyed with the client's *public* key, which anyone has."""
    for key, kid in ((ec_key, "key-1"), (rsa_key, "rsa-1")):
        for secret in (json.dumps(key.as_dict(private=False)).encode(), key.as_pem(private=False)):
            signing_input = f"{b64json({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64json(claims())}"
            signature = hmac.new(secret, signing_input.encode(), digest).digest()
            assert reason_of(auth, f"Bearer {signing_input}.{b64(signature)}") == "alg"


@pytest.mark.parametrize("alg", ["EdDSA", "RSA1_5", "ES256K", "", None, 5])
@pytest.mark.requirement("cds-hooks_2.0@200", "cds-hooks_2.0@207")
def test_sec_10_algorithms_outside_the_allowlist_are_rejected(auth, alg):
    head = {"typ": "JWT", "kid": "key-1"} | ({} if alg is None else {"alg": alg})
    assert reason_of(auth, f"Bearer {b64json(head)}.{b64json(claims())}.c2ln") == "alg"


@pytest.mark.parametrize("typ", ["JOSE", "at+jwt", "", None])
def test_sec_6_wrong_or_missing_typ(auth, ec_key, typ):
    assert reason_of(auth, f"Bearer {sign(ec_key, typ=typ)}") == "typ"


@pytest.mark.parametrize("kid", [None, ""])
def test_sec_6_missing_kid(auth, ec_key, kid):
    assert reason_of(auth, f"Bearer {sign(ec_key, kid=kid)}") == "kid"


def test_sec_9_unknown_kid(auth):
    stranger = ECKey.generate_key("P-384")
    assert reason_of(auth, f"Bearer {sign(stranger, kid='not-ours')}") == "kid"


# --- SEC-5/SEC-9: signature ----------------------------------------------------------------------

@pytest.mark.requirement("cds-hooks_2.0@176")
def test_sec_5_tampered_payload_fails_the_signature(auth, ec_key):
    head, _, sig = sign(ec_key).split(".")
    forged = f"{head}.{b64json(claims(tenant='someone-else'))}.{sig}"
    assert reason_of(auth, f"Bearer {forged}") == "signature"


def test_sec_5_key_of_another_party_under_our_kid_fails_the_signature(auth):
    attacker = ECKey.generate_key("P-384")
    assert reason_of(auth, f"Bearer {sign(attacker, kid='key-1')}") == "signature"


def test_sec_5_algorithm_not_matching_the_key_type_fails(auth, rsa_key):
    """An ES384 header naming the RSA key: no key confusion, just a failure."""
    head, body, sig = sign(rsa_key, alg="RS384", kid="rsa-1").split(".")
    token = f"{b64json({'alg': 'ES384', 'typ': 'JWT', 'kid': 'rsa-1'})}.{body}.{sig}"
    assert reason_of(auth, f"Bearer {token}") in {"signature", "alg"}


@pytest.mark.requirement("cds-hooks_2.0@207")
def test_sec_11_key_bound_to_another_algorithm_is_refused(clock, ec_key):
    jwks = public_jwks((ec_key, "key-1"))
    jwks["keys"][0]["alg"] = "ES512"
    client = TrustedClient(iss=ISS, jwks=load_static(jwks))
    auth = ClientAuthenticator([client], clock=clock, http_get=fail_http)
    assert reason_of(auth, f"Bearer {sign(ec_key)}") == "alg"


# --- SEC-7/SEC-12: iss ---------------------------------------------------------------------------

@pytest.mark.parametrize("iss", ["https://intruder.example", ISS + "/", None, 42])
@pytest.mark.requirement("cds-hooks_2.0@195")
def test_sec_12_untrusted_or_missing_iss(auth, ec_key, iss):
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(iss=iss))}") == "iss"


def test_sec_12_no_trusted_clients_rejects_everything(ec_key, clock):
    auth = ClientAuthenticator.from_config({"LUPUS_CDS_CLIENTS": None}, clock=clock)
    assert reason_of(auth, f"Bearer {sign(ec_key)}") == "iss"


# --- SEC-8: aud ----------------------------------------------------------------------------------

def test_sec_8_wrong_aud(auth, ec_key):
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(aud=BASE + '/another-service'))}") == "aud"
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(aud=BASE))}") == "aud"


def test_sec_8_aud_as_one_element_array_is_accepted(auth, ec_key):
    assert auth.verify(f"Bearer {sign(ec_key, claims(aud=[AUD]))}", [AUD]).iss == ISS


@pytest.mark.parametrize("aud", [[AUD, BASE + "/other"], [BASE + "/other", AUD], [], [AUD, AUD], 7, {"a": 1}])
def test_sec_8_multi_element_empty_or_odd_aud_is_rejected(auth, ec_key, aud):
    """Decision: ``aud`` names THE endpoint; a token for several services could be replayed at each."""
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(aud=aud))}") == "aud"


def test_sec_7_missing_aud(auth, ec_key):
    payload = claims()
    del payload["aud"]
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}") == "aud"


def test_sec_8_feedback_accepts_both_audiences(auth, ec_key):
    feedback = [f"{AUD}/feedback", AUD]
    assert auth.verify(f"Bearer {sign(ec_key, claims(aud=f'{AUD}/feedback'))}", feedback).iss == ISS
    assert auth.verify(f"Bearer {sign(ec_key, claims(aud=AUD))}", feedback).iss == ISS


def test_sec_8_no_accepted_audience_rejects(auth, ec_key):
    assert reason_of(auth, f"Bearer {sign(ec_key)}", audiences=()) == "aud"


# --- SEC-7 and checklist 12: exp, iat, lifetime --------------------------------------------------

def test_sec_7_expired_token(auth, ec_key):
    payload = claims(iat=NOW - 400, exp=NOW - 61)
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}") == "exp"


def test_checklist_12_expiry_within_leeway_is_accepted(auth, ec_key):
    assert auth.verify(f"Bearer {sign(ec_key, claims(iat=NOW - 400, exp=NOW - 59))}", [AUD]).iss == ISS


def test_sec_7_iat_in_the_future(auth, ec_key):
    payload = claims(iat=NOW + 61, exp=NOW + 300)
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}") == "iat"


def test_checklist_12_iat_within_leeway_is_accepted(auth, ec_key):
    assert auth.verify(f"Bearer {sign(ec_key, claims(iat=NOW + 59, exp=NOW + 300))}", [AUD]).iss == ISS


@pytest.mark.parametrize("name", ["exp", "iat", "jti"])
def test_sec_7_required_claims_missing(auth, ec_key, name):
    payload = claims()
    del payload[name]
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}") == name


@pytest.mark.parametrize(("name", "value"), [("exp", "soon"), ("iat", "now"), ("exp", True), ("jti", 12),
                                             ("jti", ""), ("jti", "x" * 600)])
def test_sec_7_claims_of_the_wrong_type(auth, ec_key, name, value):
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(**{name: value}))}") == name


def test_checklist_12_too_long_lived_token(auth, ec_key):
    payload = claims(iat=NOW, exp=NOW + 3601)
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}") == "lifetime"


def test_checklist_12_lifetime_exactly_at_the_cap_is_accepted(auth, ec_key):
    assert auth.verify(f"Bearer {sign(ec_key, claims(iat=NOW, exp=NOW + 3600))}", [AUD]).iss == ISS


def test_checklist_12_exp_before_iat_is_rejected(auth, ec_key):
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(iat=NOW, exp=NOW - 10))}") == "lifetime"


def test_checklist_12_max_lifetime_and_leeway_come_from_config(tmp_path, ec_key, clock):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": public_jwks((ec_key, "key-1"))}]}))
    config = {"LUPUS_CDS_CLIENTS": str(path), "LUPUS_CDS_JWT_MAX_LIFETIME": "300",
              "LUPUS_CDS_JWT_LEEWAY": "5"}
    auth = ClientAuthenticator.from_config(config, clock=clock)
    assert (auth.max_lifetime, auth.leeway) == (300, 5)
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(exp=NOW + 301))}") == "lifetime"
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(iat=NOW - 100, exp=NOW - 6))}") == "exp"
    assert auth.verify(f"Bearer {sign(ec_key, claims(exp=NOW + 300))}", [AUD]).iss == ISS


# --- SEC-12 (BP step 6): jti replay --------------------------------------------------------------

def test_sec_12_replayed_jti(auth, ec_key):
    token = sign(ec_key)
    auth.verify(f"Bearer {token}", [AUD])
    assert reason_of(auth, f"Bearer {token}") == "replay"
    # A fresh token reusing the jti is a replay too, even though its signature is new.
    reused = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(jti=reused, iat=NOW + 1))}") == "replay"


def test_sec_12_jti_is_stored_only_after_every_other_check(auth, ec_key):
    """A token failing on aud must not burn the jti of the legitimate token that follows."""
    payload = claims()
    assert reason_of(auth, f"Bearer {sign(ec_key, payload)}", audiences=[BASE + "/other"]) == "aud"
    assert auth.verify(f"Bearer {sign(ec_key, payload)}", [AUD]).jti == payload["jti"]


def test_sec_12_jti_is_per_issuer(ec_key, clock):
    other = ECKey.generate_key("P-384")
    clients = [TrustedClient(iss=ISS, jwks=load_static(public_jwks((ec_key, "key-1")))),
               TrustedClient(iss=OTHER_ISS, jwks=load_static(public_jwks((other, "key-1"))))]
    auth = ClientAuthenticator(clients, clock=clock, http_get=fail_http)
    auth.verify(f"Bearer {sign(ec_key, claims(jti='same'))}", [AUD])
    assert auth.verify(f"Bearer {sign(other, claims(iss=OTHER_ISS, jti='same'))}", [AUD]).iss == OTHER_ISS


def test_sec_12_replay_store_gets_iss_jti_key_and_exp_plus_leeway(ec_key, clock):
    class Recorder:
        def __init__(self):
            self.calls = []

        def add_if_new(self, key, expires_at):
            self.calls.append((key, expires_at))
            return True

    store = Recorder()
    client = TrustedClient(iss=ISS, jwks=load_static(public_jwks((ec_key, "key-1"))))
    auth = ClientAuthenticator([client], clock=clock, replay_store=store, http_get=fail_http)
    auth.verify(f"Bearer {sign(ec_key, claims(jti='j-1', exp=NOW + 100))}", [AUD])
    assert store.calls == [(f"{ISS}|j-1", NOW + 100 + 60)]


def test_replay_store_unavailable_propagates_unauthorized(ec_key, clock):
    """A shared store that cannot answer raises Unauthorized itself (fail closed, see redis_state)."""
    class Down:
        def add_if_new(self, key, expires_at):
            raise Unauthorized("replay-store-unavailable")

    client = TrustedClient(iss=ISS, jwks=load_static(public_jwks((ec_key, "key-1"))))
    auth = ClientAuthenticator([client], clock=clock, replay_store=Down(), http_get=fail_http)
    assert reason_of(auth, f"Bearer {sign(ec_key)}") == "replay-store-unavailable"


def test_in_memory_replay_store_evicts_expired_entries():
    clock = FakeClock(100.0)
    store = InMemoryReplayStore(clock)
    assert store.add_if_new("a|1", 150.0)
    assert not store.add_if_new("a|1", 150.0)
    assert store.add_if_new("a|2", 500.0)
    clock.now = 151.0
    assert store.add_if_new("a|3", 200.0)  # the add evicts a|1
    assert len(store) == 2
    assert store.add_if_new("a|1", 300.0)  # forgotten after its expiry, so new again
    assert not store.add_if_new("a|2", 900.0)


def test_in_memory_replay_store_is_thread_safe():
    store = InMemoryReplayStore(FakeClock(0.0))
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        for n in range(200):
            results.append(store.add_if_new(f"iss|{n}", 10.0))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 200


# --- tenant --------------------------------------------------------------------------------------

def tenant_auth(ec_key, clock):
    client = TrustedClient(iss=ISS, jwks=load_static(public_jwks((ec_key, "key-1"))), tenant="org-1")
    return ClientAuthenticator([client], clock=clock, http_get=fail_http)


@pytest.mark.parametrize("tenant", ["org-2", None, 1])
def test_sec_7_tenant_mismatch_or_missing(ec_key, clock, tenant):
    auth = tenant_auth(ec_key, clock)
    assert reason_of(auth, f"Bearer {sign(ec_key, claims(tenant=tenant))}") == "tenant"


def test_sec_7_matching_tenant_is_accepted_and_reported(ec_key, clock):
    result = tenant_auth(ec_key, clock).verify(f"Bearer {sign(ec_key, claims(tenant='org-1'))}", [AUD])
    assert result.tenant == "org-1"


def test_sec_7_tenant_claim_is_passed_through_when_not_configured(auth, ec_key):
    assert auth.verify(f"Bearer {sign(ec_key, claims(tenant='org-9'))}", [AUD]).tenant == "org-9"


# --- SEC-9/SEC-12: jku and jwks_url --------------------------------------------------------------

@pytest.mark.requirement("cds-hooks_2.0@195")
def test_sec_12_foreign_jku_is_rejected_without_fetching(clock, ec_key):
    http = FakeHTTP(public_jwks((ec_key, "key-1")))
    auth = remote_auth(clock, http)
    for jku in ("https://attacker.example/jwks.json", JWKS_URL + "?x=1", JWKS_URL.replace("ehr", "EHR"),
                JWKS_URL + "/", "http://ehr.example.org/.well-known/jwks.json"):
        assert reason_of(auth, f"Bearer {sign(ec_key, jku=jku)}") == "jku"
    assert http.calls == []


def test_sec_12_jku_on_a_client_with_static_keys_is_rejected(auth, ec_key):
    assert reason_of(auth, f"Bearer {sign(ec_key, jku='https://attacker.example/jwks.json')}") == "jku"


def test_sec_9_matching_jku_is_accepted(clock, ec_key):
    http = FakeHTTP(public_jwks((ec_key, "key-1")))
    auth = remote_auth(clock, http)
    assert auth.verify(f"Bearer {sign(ec_key, jku=JWKS_URL)}", [AUD]).iss == ISS
    assert [url for url, _ in http.calls] == [JWKS_URL]


def test_sec_9_jwks_url_is_fetched_once_and_cached(clock, ec_key):
    http = FakeHTTP(public_jwks((ec_key, "key-1")))
    auth = remote_auth(clock, http)
    for n in range(25):
        clock.now = NOW + n * 100  # well past the refresh interval: still no fetch for a known kid
        auth.verify(f"Bearer {sign(ec_key, claims(iat=clock.now, exp=clock.now + 300))}", [AUD])
    assert len(http.calls) == 1
    assert 0 < http.calls[0][1] <= 5, "the fetch must carry a short timeout"


def test_sec_9_key_rotation_refreshes_on_unknown_kid_but_rate_limited(clock, ec_key):
    new_key = ECKey.generate_key("P-384")
    http = FakeHTTP(public_jwks((ec_key, "key-1")))
    auth = remote_auth(clock, http)
    auth.verify(f"Bearer {sign(ec_key)}", [AUD])
    assert len(http.calls) == 1

    # Forged kids within the interval: no fetch per request.
    for n in range(10):
        assert reason_of(auth, f"Bearer {sign(new_key, kid=f'forged-{n}')}") == "kid"
    assert len(http.calls) == 1

    # The client rotates; after the interval, an unknown kid triggers one refresh.
    http.document = public_jwks((ec_key, "key-1"), (new_key, "key-2"))
    clock.now = NOW + 61
    fresh = claims(iat=clock.now, exp=clock.now + 300)
    assert auth.verify(f"Bearer {sign(new_key, fresh, kid='key-2')}", [AUD]).iss == ISS
    assert len(http.calls) == 2
    # ... and then the new kid is cached; further forged kids wait for the next interval again.
    auth.verify(f"Bearer {sign(new_key, claims(iat=clock.now, exp=clock.now + 300), kid='key-2')}", [AUD])
    assert reason_of(auth, f"Bearer {sign(new_key, kid='forged-x')}") == "kid"
    assert len(http.calls) == 2


@pytest.mark.parametrize("failure", ["status", "exception", "not-a-jwks", "bad-json"])
def test_sec_9_failed_fetch_keeps_cached_keys_and_is_rate_limited(clock, ec_key, failure):
    http = FakeHTTP(public_jwks((ec_key, "key-1")))
    auth = remote_auth(clock, http)
    auth.verify(f"Bearer {sign(ec_key)}", [AUD])

    def broken(url, timeout):
        http.calls.append((url, timeout))
        if failure == "exception":
            raise OSError("connection refused")
        if failure == "status":
            return FakeResponse({}, 500)
        if failure == "bad-json":
            class Bad(FakeResponse):
                def json(self):
                    raise ValueError("no JSON")
            return Bad(None)
        return FakeResponse(["not", "a", "jwks"])

    auth.http_get = broken
    clock.now = NOW + 61
    assert reason_of(auth, f"Bearer {sign(ec_key, kid='unknown')}") == "kid"
    assert reason_of(auth, f"Bearer {sign(ec_key, kid='unknown')}") == "kid"
    assert len(http.calls) == 2, "one refresh attempt, then rate-limited even though it failed"
    fresh = claims(iat=clock.now, exp=clock.now + 300)
    assert auth.verify(f"Bearer {sign(ec_key, fresh)}", [AUD]).iss == ISS, "cached key still works"


def test_sec_9_fetched_set_ignores_symmetric_and_private_parts(clock, ec_key):
    document = public_jwks((ec_key, "key-1"))
    document["keys"].insert(0, {"kty": "oct", "kid": "key-1", "k": b64(b"secret")})
    document["keys"].append({"kty": "EC", "kid": "broken"})
    auth = remote_auth(clock, FakeHTTP(document))
    assert auth.verify(f"Bearer {sign(ec_key)}", [AUD]).iss == ISS


# --- the spec test vector (checklist 8.2) --------------------------------------------------------

def spec_vector():
    header = (SPEC / "jwt-compact.txt").read_text().strip().split(":", 1)[1].strip()
    token = header.split(" ", 1)[1]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    jwks = json.loads((SPEC / "jwks-public.json").read_text())
    jku = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["jku"]
    return header, token, payload, jwks, jku


def spec_auth(clock_value, **kwargs):
    _, _, payload, jwks, jku = spec_vector()
    client = TrustedClient(iss=payload["iss"], jwks_url=jku)
    return ClientAuthenticator([client], clock=FakeClock(clock_value), http_get=FakeHTTP(jwks), **kwargs)


def test_spec_vector_is_rejected_as_expired():
    header, _, payload, _, _ = spec_vector()
    assert reason_of(spec_auth(NOW), header, [payload["aud"]]) == "exp"


def test_spec_vector_signature_verifies_when_the_clock_is_just_after_iat():
    """The 2.0.1 example lives 3.5 years, so only a huge lifetime cap lets it through; it proves the
    ES384 signature check works on the real vector, and the default cap then rejects it."""
    header, _, payload, _, _ = spec_vector()
    at = payload["iat"] + 10
    result = spec_auth(at, max_lifetime=10**9).verify(header, [payload["aud"]])
    assert result == VerifiedClient(iss=payload["iss"], tenant=payload["tenant"], jti=payload["jti"],
                                    fhir_servers=())
    assert reason_of(spec_auth(at), header, [payload["aud"]]) == "lifetime"


def test_spec_vector_with_a_flipped_signature_bit_fails():
    header, token, payload, _, _ = spec_vector()
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 1
    forged = f"Bearer {head}.{body}.{b64(bytes(raw))}"
    auth = spec_auth(payload["iat"] + 10, max_lifetime=10**9)
    assert reason_of(auth, forged, [payload["aud"]]) == "signature"


def test_spec_vector_with_static_keys_rejects_its_jku():
    """Decision: a jku is only accepted when it equals the client's configured jwks_url."""
    header, _, payload, jwks, _ = spec_vector()
    client = TrustedClient(iss=payload["iss"], jwks=load_static(jwks))
    auth = ClientAuthenticator([client], clock=FakeClock(payload["iat"] + 10), max_lifetime=10**9,
                               http_get=fail_http)
    assert reason_of(auth, header, [payload["aud"]]) == "jku"


def test_spec_vector_verifies_against_pinned_keys_when_the_client_also_names_its_jwks_url():
    """The CDS Hooks Sandbox puts a jku in every token. A client registered with its keys inline AND its
    jwks_url is verified against the inline keys (pinned, offline), never fetched; the jku must still be
    that jwks_url."""
    header, token, payload, jwks, jku = spec_vector()
    client = TrustedClient(iss=payload["iss"], jwks=load_static(jwks), jwks_url=jku)
    auth = ClientAuthenticator([client], clock=FakeClock(payload["iat"] + 10), max_lifetime=10**9,
                               http_get=fail_http)
    assert auth.verify(header, [payload["aud"]]).iss == payload["iss"]


def test_pinned_keys_refuse_a_foreign_jku_and_an_unknown_kid_without_fetching(clock, ec_key, tmp_path):
    path = write(tmp_path, {"clients": [{"iss": ISS, "jwks": public_jwks((ec_key, "key-1")), "jwks_url": JWKS_URL}]})
    (client,) = load_clients(path)
    assert client.jwks is not None and client.jwks_url == JWKS_URL
    auth = ClientAuthenticator([client], clock=clock, http_get=fail_http)
    assert auth.verify(f"Bearer {sign(ec_key, jku=JWKS_URL)}", [AUD]).iss == ISS
    assert auth.verify(f"Bearer {sign(ec_key)}", [AUD]).iss == ISS
    assert reason_of(auth, f"Bearer {sign(ec_key, jku='https://attacker.example/jwks.json')}") == "jku"
    assert reason_of(auth, f"Bearer {sign(ec_key, kid='rotated', jku=JWKS_URL)}") == "kid"


def test_a_wrong_aud_is_logged_with_the_audience_expected(secure_clients_app, caplog):
    """The usual cause is LUPUS_CDS_PUBLIC_URL: the log names what was expected (never the token)."""
    app, keys = secure_clients_app
    token = keys.token("http://internal-host:8080/cds-services/patient-greeter")
    caplog.set_level(logging.INFO)
    response = app.test_client().post("/cds-services/patient-greeter", json=patient_view_request(),
                                      headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    line = next(r.getMessage() for r in caplog.records if "rejected client JWT" in r.getMessage())
    assert "expected 'https://cds.example.org/cds-services/patient-greeter'" in line
    assert "same path on another base URL: check LUPUS_CDS_PUBLIC_URL" in line
    assert "internal-host" not in caplog.text  # the token's own aud is not quoted: it could hold anything
    assert token not in caplog.text and "1288992" not in caplog.text  # no token, no patient id


@pytest.fixture
def secure_clients_app(make_app, client_keys):
    return make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file)), client_keys


# --- nothing leaks -------------------------------------------------------------------------------

def test_token_never_appears_in_exceptions_or_logs(auth, ec_key, rsa_key, clock, caplog):
    stranger = ECKey.generate_key("P-384")
    tokens = [
        sign(ec_key, claims(aud=BASE + "/elsewhere")), sign(ec_key, claims(iss="https://x.example")),
        sign(stranger), sign(stranger, kid="nope"), sign(ec_key, claims(exp=NOW - 1000, iat=NOW - 1100)),
        sign(ec_key, typ="JOSE"), sign(ec_key, jku="https://attacker.example"),
        f"{b64json({'alg': 'none', 'typ': 'JWT', 'kid': 'key-1'})}.{b64json(claims())}.",
    ]
    replayed = sign(ec_key)
    auth.verify(f"Bearer {replayed}", [AUD])
    tokens.append(replayed)
    remote = remote_auth(clock, lambda url, timeout: (_ for _ in ()).throw(OSError("down")))
    with caplog.at_level(logging.DEBUG):
        for token in tokens:
            with pytest.raises(Unauthorized) as info:
                auth.verify(f"Bearer {token}", [AUD])
            exc = info.value
            for text in (str(exc), repr(exc), repr(exc.args), exc.reason, str(exc.operation_outcome())):
                assert token not in text
                for part in token.split("."):
                    assert not part or part not in text
            # No joserfc exception chained in: a logged traceback shows only the reason code.
            assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
        with pytest.raises(Unauthorized) as info:
            remote.verify(f"Bearer {tokens[0]}", [AUD])
        assert info.value.reason == "kid"
    for token in tokens:
        assert token not in caplog.text
        assert all(part not in caplog.text for part in token.split(".") if part)


# --- the trusted-clients file --------------------------------------------------------------------

def write(tmp_path, document) -> Path:
    path = tmp_path / "clients.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


@pytest.mark.requirement("cds-hooks_2.0@199")
def test_clients_file_is_loaded(tmp_path, ec_key, clock):
    path = write(tmp_path, {"clients": [
        {"iss": ISS, "jwks": public_jwks((ec_key, "key-1")), "tenant": "org-1",
         "fhir_servers": ["https://ehr.example.org/fhir"]},
        {"iss": OTHER_ISS, "jwks_url": "https://other-ehr.example.org/jwks"},
    ]})
    first, second = load_clients(path)
    assert (first.iss, first.tenant, first.fhir_servers, first.jwks_url) == (
        ISS, "org-1", ("https://ehr.example.org/fhir",), None)
    assert (second.iss, second.jwks, second.jwks_url, second.fhir_servers) == (
        OTHER_ISS, None, "https://other-ehr.example.org/jwks", ())
    auth = ClientAuthenticator.from_config({"LUPUS_CDS_CLIENTS": str(path)}, clock=clock, http_get=fail_http)
    result = auth.verify(f"Bearer {sign(ec_key, claims(tenant='org-1'))}", [AUD])
    assert result.fhir_servers == ("https://ehr.example.org/fhir",)


@pytest.mark.parametrize(("document", "problem"), [
    ("{not json", "not valid JSON"),
    ([], '{"clients"'),
    ({"client": []}, '{"clients"'),
    ({"clients": ["x"]}, "expected an object"),
    ({"clients": [{"jwks_url": JWKS_URL}]}, "'iss'"),
    ({"clients": [{"iss": ISS}]}, "'jwks_url'/'jwks_urls' (where it publishes them) or both"),
    ({"clients": [{"iss": ISS, "jwks_url": JWKS_URL, "jwks": {"keys": []}}]}, "at least one key"),
    ({"clients": [{"iss": ISS, "jwks_uri": JWKS_URL}]}, "jwks_uri"),
    ({"clients": [{"iss": ISS, "jwks_url": "ftp://x.example/jwks"}]}, "jwks_url"),
    ({"clients": [{"iss": ISS, "jwks_url": JWKS_URL, "tenant": 5}]}, "tenant"),
    ({"clients": [{"iss": ISS, "jwks_url": JWKS_URL, "fhir_servers": "https://x"}]}, "fhir_servers"),
    ({"clients": [{"iss": ISS, "jwks_url": JWKS_URL}, {"iss": ISS, "jwks_url": JWKS_URL}]}, "duplicate iss"),
    ({"clients": [{"iss": ISS, "jwks": {"keys": []}}]}, "at least one key"),
    ({"clients": [{"iss": ISS, "jwks": {"keys": [{"kty": "oct", "kid": "a", "k": "c2VjcmV0"}]}}]}, "kty"),
    ({"clients": [{"iss": ISS, "jwks": {"keys": [{"kty": "EC", "kid": "a", "crv": "P-384"}]}}]},
     "not a valid public JWK"),
])
def test_malformed_clients_file_is_a_clear_startup_error(tmp_path, document, problem):
    path = write(tmp_path, document)
    with pytest.raises(ValueError) as info:
        ClientAuthenticator.from_config({"LUPUS_CDS_CLIENTS": str(path)})
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_clients_file_missing(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_clients(tmp_path / "nope.json")


def test_clients_file_errors_never_print_key_material(tmp_path, ec_key):
    private = ec_key.as_dict(private=True)
    path = write(tmp_path, {"clients": [{"iss": ISS, "jwks": {"keys": [private]}}]})
    with pytest.raises(ValueError) as info:
        load_clients(path)
    assert "private key material" in str(info.value)
    for field in ("d", "x", "y"):
        assert private[field] not in str(info.value)

    without_kid = ec_key.as_dict(private=False)
    without_kid.pop("kid", None)
    path = write(tmp_path, {"clients": [{"iss": ISS, "jwks": {"keys": [without_kid]}}]})
    with pytest.raises(ValueError, match="'kid' is required") as info:
        load_clients(path)
    assert without_kid["x"] not in str(info.value)


@pytest.mark.parametrize(("setting", "value"), [("LUPUS_CDS_JWT_MAX_LIFETIME", 0),
                                                 ("LUPUS_CDS_JWT_LEEWAY", -1)])
def test_out_of_range_settings_are_startup_errors(setting, value):
    with pytest.raises(ValueError, match=setting):
        ClientAuthenticator.from_config({"LUPUS_CDS_CLIENTS": None, setting: value})
