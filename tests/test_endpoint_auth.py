"""Client authentication at the endpoints (SEC-3..12): every JWT failure mode gives 401 with no detail.

The verifier itself is unit-tested in test_auth.py; these tests prove the endpoints use it, with the
right ``aud`` for each URL, and that nothing about the token leaks into responses or logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from conftest import ClientKeys, patient_view_request

BASE = "https://cds.example.org"
SERVICE = "/cds-services/patient-greeter"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


def hs256(payload: dict, secret: bytes) -> str:
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'test-key-1'}).encode())}." \
                    f"{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(aud=BASE + SERVICE, **extra):
    now = int(time.time())
    payload = {"iss": ClientKeys.ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": f"j-{time.monotonic_ns()}"}
    payload.update(extra)
    return payload


def call(app, authorization=None):
    headers = {"Authorization": authorization} if authorization else {}
    return app.test_client().post(SERVICE, json=patient_view_request(), headers=headers)


def assert_401(response, token=None, caplog=None):
    assert response.status_code == 401
    body = response.get_json()
    assert body == {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}
    if token:
        assert token not in response.get_data(as_text=True)
        if caplog is not None:
            assert token not in caplog.text


@pytest.mark.requirement("cds-hooks_2.0@176")
def test_sec_4_valid_jwt_is_accepted(secure_app, client_keys):
    assert call(secure_app, f"Bearer {client_keys.token(BASE + SERVICE)}").status_code == 200


def test_sec_8_aud_as_one_element_array_is_accepted(secure_app, client_keys):
    assert call(secure_app, f"Bearer {client_keys.token([BASE + SERVICE])}").status_code == 200


@pytest.mark.requirement("cds-hooks_2.0@176", "cds-hooks_2.0@177")
def test_sec_4_missing_authorization_is_401(secure_app):
    assert_401(call(secure_app))


@pytest.mark.parametrize("case", ["alg-none", "hs256", "bad-signature", "unknown-iss", "unknown-kid",
                                  "wrong-aud", "expired", "too-long-lived", "garbage"])
@pytest.mark.requirement("cds-hooks_2.0@176", "cds-hooks_2.0@195", "cds-hooks_2.0@201", "cds-hooks_2.0@203")
def test_sec_6_to_12_each_jwt_failure_is_401_without_detail(secure_app, client_keys, case, caplog):
    if case == "alg-none":
        token = unsigned({"alg": "none", "typ": "JWT", "kid": "test-key-1"}, claims())
    elif case == "hs256":
        token = hs256(claims(), json.dumps(client_keys.key.as_dict(private=False)).encode())
    elif case == "bad-signature":
        good = client_keys.token(BASE + SERVICE)
        head, body, sig = good.split(".")
        token = f"{head}.{b64(json.dumps(claims(iss=ClientKeys.ISS, extra='x')).encode())}.{sig}"
    elif case == "unknown-iss":
        token = client_keys.token(BASE + SERVICE, iss="https://intruder.example")
    elif case == "unknown-kid":
        from joserfc import jwt
        from joserfc.jwk import ECKey
        other = ECKey.generate_key("P-384")
        token = jwt.encode({"alg": "ES384", "typ": "JWT", "kid": "other"}, claims(), other, algorithms=["ES384"])
    elif case == "wrong-aud":
        token = client_keys.token(BASE + "/cds-services/another-service")
    elif case == "expired":
        token = client_keys.token(BASE + SERVICE, now=int(time.time()) - 4000)
    elif case == "too-long-lived":
        now = int(time.time())
        token = client_keys.token(BASE + SERVICE, now=now, exp=now + 7200)
    else:
        token = "not.a.jwt"
    assert_401(call(secure_app, f"Bearer {token}"), token, caplog)


def test_sec_12_replayed_jti_is_401(secure_app, client_keys):
    token = client_keys.token(BASE + SERVICE)
    assert call(secure_app, f"Bearer {token}").status_code == 200
    assert_401(call(secure_app, f"Bearer {token}"))


def test_spec_jwt_test_vector_is_rejected(make_app, tmp_path):
    """jwt-compact.txt verifies with jwks-public.json but expired in 2015 (checklist 8.2 test vector)."""
    from conftest import spec_example

    clients = tmp_path / "spec-clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": "https://fhir-ehr.example.com/",
                                                "jwks": spec_example("jwks-public.json")}]}))
    app = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(clients))
    header = spec_example("jwt-compact.txt").strip().split(":", 1)[-1].strip()
    response = app.test_client().post("/cds-services/patient-greeter", json=patient_view_request(),
                                      headers={"Authorization": header})
    assert_401(response)


def test_feedback_requires_jwt_and_accepts_both_audiences(secure_app, client_keys):
    from conftest import spec_example

    client = secure_app.test_client()
    url = SERVICE + "/feedback"
    body = spec_example("feedback-accepted.json")
    assert_401(client.post(url, json=body))
    assert client.post(url, json=body, headers=client_keys.header(BASE + url)).status_code == 200
    assert client.post(url, json=body, headers=client_keys.header(BASE + SERVICE)).status_code == 200
    assert_401(client.post(url, json=body, headers=client_keys.header(BASE + "/cds-services")))


def test_auth_runs_before_the_body_is_read(secure_app):
    response = secure_app.test_client().post(SERVICE, data=b"{not json", content_type="application/json")
    assert_401(response)


@pytest.mark.requirement("cds-hooks_2.0@5", "cds-hooks_2.0@14")
def test_discovery_is_open_by_default_and_can_require_auth(make_app, client_keys):
    open_app = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file))
    assert open_app.test_client().get("/cds-services").status_code == 200
    closed = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file),
                      LUPUS_CDS_DISCOVERY_REQUIRES_AUTH=True).test_client()
    assert closed.get("/cds-services").status_code == 401
    assert closed.get("/cds-services", headers=client_keys.header(BASE + "/cds-services")).status_code == 200


def test_unsigned_mode_logs_a_loud_warning(make_app, caplog):
    with caplog.at_level("WARNING", logger="cds_hooks"):
        make_app(LUPUS_CDS_ALLOW_UNSIGNED=True)
    assert "WITHOUT a client JWT" in caplog.text


@pytest.mark.requirement("cds-hooks_2.0@177")
def test_sec_3_authentication_is_the_default(tmp_path, monkeypatch):
    """A service built with no settings refuses unsigned hook and feedback calls; only
    LUPUS_CDS_ALLOW_UNSIGNED=1 (a sandbox with synthetic data) turns the check off."""
    import tiny_plugin

    from cds_hooks import create_app

    monkeypatch.delenv("LUPUS_CDS_ALLOW_UNSIGNED", raising=False)
    monkeypatch.delenv("LUPUS_CDS_CLIENTS", raising=False)
    app = create_app({"LUPUS_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}"},
                     plugins=[tiny_plugin])
    assert app.config["LUPUS_CDS_ALLOW_UNSIGNED"] is False
    client = app.test_client()
    assert_401(client.post(SERVICE, json=patient_view_request()))
    assert_401(client.post(SERVICE + "/feedback", json={"feedback": []}))
