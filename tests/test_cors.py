"""CORS for browser-based clients such as the CDS Hooks Sandbox (SEC-13)."""

from __future__ import annotations

import pytest

SANDBOX = "https://sandbox.cds-hooks.org"
URLS = ["/cds-services", "/cds-services/patient-greeter", "/cds-services/patient-greeter/feedback"]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.requirement("cds-hooks_2.0@208")
def test_sec_13_preflight_allowed_origin(make_app, url):
    client = make_app(LUPUS_CDS_CORS_ORIGINS=SANDBOX).test_client()
    response = client.options(url, headers={"Origin": SANDBOX, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_sec_13_other_origin_gets_no_cors_headers(make_app):
    client = make_app(LUPUS_CDS_CORS_ORIGINS=SANDBOX).test_client()
    response = client.options("/cds-services", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_sec_13_no_origins_configured_means_no_cors(client):
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.requirement("cds-hooks_2.0@208")
def test_sec_13_actual_request_and_errors_carry_the_header(make_app):
    client = make_app(LUPUS_CDS_CORS_ORIGINS=f"https://other.example, {SANDBOX}/").test_client()
    assert client.get("/cds-services", headers={"Origin": SANDBOX}).headers[
        "Access-Control-Allow-Origin"] == SANDBOX
    error = client.post("/cds-services/patient-greeter", data=b"{", content_type="application/json",
                        headers={"Origin": SANDBOX})
    assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_wildcard_origin_without_credentials(make_app):
    client = make_app(LUPUS_CDS_CORS_ORIGINS="*").test_client()
    response = client.get("/cds-services", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
