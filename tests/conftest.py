"""Shared fixtures: an app with the tiny test plugin, a fixed clock, request builders and spec examples."""

from __future__ import annotations

import copy
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_hooks import create_app

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "fixtures" / "spec-examples"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_plugin  # noqa: E402


def spec_example(name: str):
    text = (SPEC / name).read_text()
    return text if name.endswith(".txt") else json.loads(text)


@pytest.fixture
def make_app(tmp_path):
    """Build an app with the tiny plugin; keyword overrides go into the config."""
    def build(plugins=(tiny_plugin,), fetcher=None, authenticator=None, **config):
        base = {"LUPUS_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
                "LUPUS_CDS_REPLAY_DB": str(tmp_path / "replay.sqlite3"),
                "LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_PUBLIC_URL": "https://cds.example.org"}
        base.update(config)
        return create_app(base, plugins=list(plugins), fetcher=fetcher, authenticator=authenticator,
                          clock=lambda: NOW)
    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


PATIENT = {"resourceType": "Patient", "id": "1288992", "name": [{"given": ["Ada"]}]}


def patient_view_request(**overrides):
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": "1288992"},
        "prefetch": {"patientToGreet": copy.deepcopy(PATIENT),
                     "hemoglobin": {"resourceType": "Bundle", "type": "searchset", "entry": []}},
    }
    body.update(overrides)
    return body


# --- client JWTs (SEC-5..9) -----------------------------------------------------------------------------

class ClientKeys:
    """A trusted CDS client for tests: an ES384 key, its clients file, and a JWT factory."""

    ISS = "https://ehr.example.org"

    def __init__(self, directory: Path):
        from joserfc.jwk import ECKey

        self.key = ECKey.generate_key("P-384", parameters={"kid": "test-key-1"})
        public = self.key.as_dict(private=False)
        public.update(alg="ES384", use="sig")
        self.clients_file = directory / "clients.json"
        self.clients_file.write_text(json.dumps({"clients": [{"iss": self.ISS, "jwks": {"keys": [public]}}]}))

    def token(self, aud: str, now: int | None = None, **claims) -> str:
        import time

        from joserfc import jwt

        issued = int(now if now is not None else time.time())
        payload = {"iss": self.ISS, "aud": aud, "iat": issued, "exp": issued + 300, "jti": str(uuid.uuid4())}
        payload.update(claims)
        return jwt.encode({"alg": "ES384", "typ": "JWT", "kid": "test-key-1"}, payload, self.key,
                          algorithms=["ES384"])

    def header(self, aud: str, **claims) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(aud, **claims)}"}


@pytest.fixture
def client_keys(tmp_path) -> ClientKeys:
    return ClientKeys(tmp_path)


@pytest.fixture
def secure_app(make_app, client_keys):
    """An app that requires client JWTs, trusting ``client_keys``."""
    return make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file))
