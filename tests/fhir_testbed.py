"""Real FHIR and SMART servers on 127.0.0.1 for the fetch tests (ports and readiness: ``tests/readiness.py``).

* **SEKMET** (``sekmet-fhir``, PyPI, pinned): a FHIR R4 server with a SMART Backend Services token
  endpoint that its FHIR API enforces (401 without or with a bad/expired token, 403 outside the
  token's scopes). It runs from its own virtualenv ``.venv-sekmet`` at the repository root (its FastAPI
  and pydantic pins never meet the app's), with a fresh data folder per test session.
* **oidc-provider** (npm, pinned): a second, independent authorization server, used to cross-check the
  client assertion the service signs. Installed into ``.test-servers/oidc-provider``.

Both are installed on first use (or ahead of time: ``python -m tests.fhir_testbed --install``, which
``deploy/bootstrap test`` runs). If they cannot be installed or started the tests FAIL: nothing here
ever skips, so a CI run can never pass without exercising the real fetch path.

Use from a test module with ``pytest_plugins = ["fhir_testbed"]``; fixtures:

``fhir_server``            session-wide :class:`FHIRTestServer` (tokens live 300 s)
``short_token_fhir_server`` a second SEKMET whose tokens live 1 s (expired-token tests)
``oidc_provider_factory``  starts :class:`OIDCProvider` instances, stopped at session end
``testbed_patients``       the ids of ``fixtures/testbed/two-patients.json`` loaded into ``fhir_server``

:class:`ProbePlugin` is a generic CDS service over any prefetch templates whose one card lists what
each key held, so a test can compare "full prefetch" with "fetched by the service" for any templates.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

try:
    from readiness import DEFAULT_DEADLINE, free_port, wait_until_ready
except ImportError:  # run as ``python -m tests.fhir_testbed`` (deploy/bootstrap)
    from tests.readiness import DEFAULT_DEADLINE, free_port, wait_until_ready

from cds_hooks import ServiceDefinition, hookimpl
from cds_hooks.fhir_server import FHIRServerError, LocalFHIRServer, stop_process
from cds_hooks.prefetch import next_link, render_template

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "testbed"

SEKMET_REQUIREMENT = "sekmet-fhir==0.1.1"
SEKMET_VENV = ROOT / ".venv-sekmet"
OIDC_PROVIDER_VERSION = "9.13.3"
OIDC_DIR = ROOT / ".test-servers" / "oidc-provider"
#: the test EHR of the SMART app tests (oidc-provider in an Express front), pinned by its package-lock.json
SMART_EHR_SOURCE = ROOT / "tests" / "smart_ehr"
SMART_EHR_DIR = ROOT / ".test-servers" / "smart-ehr"

#: the SMART scopes the test client may ask SEKMET for
FULL_SCOPE = ("system/Patient.rs system/Observation.rs system/Condition.rs system/MedicationStatement.rs "
              "system/MedicationRequest.rs system/Encounter.rs")
#: static bearer tokens SEKMET accepts: one plays the EHR's fhirAuthorization token, one loads data
EHR_STATIC_TOKEN = "ehr-static-token-" + uuid.uuid4().hex
LOADER_TOKEN = "loader-token-" + uuid.uuid4().hex


class TestbedError(RuntimeError):
    """A test server could not be installed or started."""


# --- processes and ports -------------------------------------------------------------------------------

def wait_for_http(url: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    try:
        wait_until_ready(url, process=process, log_path=log, statuses=range(200, 500))
    except AssertionError as exc:
        raise TestbedError(str(exc)) from None


def start_node(script: str | Path, folder: Path, env: Mapping[str, str], log_path: Path,
               ready_url: str) -> subprocess.Popen:
    """Start a Node.js test server (``node script`` in ``folder``, output to ``log_path``) and wait until
    ``ready_url`` answers; stopped again, and TestbedError raised, if it never does."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([shutil.which("node") or "node", str(script)], cwd=folder, env=dict(env),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(ready_url, process, log_path)
    except TestbedError:
        stop_process(process)
        raise
    return process


@contextlib.contextmanager
def _install_lock(name: str) -> Iterator[None]:
    # Two pytest runs (or pytest and the bootstrap script) must not install into one folder at once.
    lock_path = ROOT / ".test-servers" / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- installation --------------------------------------------------------------------------------------

def sekmet_executable() -> Path:
    return SEKMET_VENV / "bin" / "sekmet"


def ensure_sekmet() -> Path:
    """``.venv-sekmet/bin/sekmet`` at the pinned version, installing it from PyPI if needed."""
    with _install_lock("sekmet"):
        python = SEKMET_VENV / "bin" / "python"
        wanted = SEKMET_REQUIREMENT.split("==")[1]
        if python.exists() and sekmet_executable().exists():
            found = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                    "print(m.version('sekmet-fhir'))"], capture_output=True, text=True)
            if found.returncode == 0 and found.stdout.strip() == wanted:
                return sekmet_executable()
        if not python.exists():
            created = subprocess.run([sys.executable, "-m", "venv", str(SEKMET_VENV)], capture_output=True,
                                     text=True)
            if created.returncode != 0:
                raise TestbedError(f"cannot create {SEKMET_VENV}: {created.stderr[-1000:]}")
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", SEKMET_REQUIREMENT],
            capture_output=True, text=True, timeout=600)
        if installed.returncode != 0 or not sekmet_executable().exists():
            raise TestbedError(f"pip install {SEKMET_REQUIREMENT} into {SEKMET_VENV} failed:\n"
                               f"{installed.stderr[-2000:]}")
        return sekmet_executable()


def ensure_oidc_provider() -> Path:
    """The folder holding ``node_modules/oidc-provider`` at the pinned version, installing it if needed."""
    with _install_lock("oidc-provider"):
        package = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
        if package.exists() and json.loads(package.read_text()).get("version") == OIDC_PROVIDER_VERSION:
            return OIDC_DIR
        node, npm = shutil.which("node"), shutil.which("npm")
        if not node or not npm:
            raise TestbedError("node and npm are needed for oidc-provider (Debian packages nodejs, npm)")
        OIDC_DIR.mkdir(parents=True, exist_ok=True)
        manifest = OIDC_DIR / "package.json"
        if not manifest.exists():
            manifest.write_text(json.dumps({"name": "cds-test-oidc-provider", "private": True,
                                            "type": "module"}, indent=1) + "\n")
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
             f"oidc-provider@{OIDC_PROVIDER_VERSION}"],
            cwd=OIDC_DIR, capture_output=True, text=True, timeout=600)
        if installed.returncode != 0 or not package.exists():
            raise TestbedError(f"npm install oidc-provider@{OIDC_PROVIDER_VERSION} failed:\n"
                               f"{installed.stderr[-2000:]}")
        return OIDC_DIR


def ensure_smart_ehr() -> Path:
    """The folder of the test EHR (``tests/smart_ehr``) with its ``node_modules``, installed with ``npm ci``
    from the committed ``package-lock.json`` (exact versions and integrity hashes) when it changed."""
    with _install_lock("smart-ehr"):
        lock = (SMART_EHR_SOURCE / "package-lock.json").read_text()
        installed = SMART_EHR_DIR / "installed-package-lock.json"
        if installed.exists() and installed.read_text() == lock and (SMART_EHR_DIR / "node_modules").is_dir():
            return SMART_EHR_DIR
        npm = shutil.which("npm")
        if not npm or not shutil.which("node"):
            raise TestbedError("node and npm are needed for the test EHR (Debian packages nodejs, npm)")
        SMART_EHR_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SMART_EHR_SOURCE / name, SMART_EHR_DIR / name)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SMART_EHR_DIR,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise TestbedError(f"npm ci of the test EHR failed:\n{done.stderr[-2000:]}")
        installed.write_text(lock)
        return SMART_EHR_DIR


# --- keys ----------------------------------------------------------------------------------------------

@dataclass
class ClientKey:
    """A SMART backend-services client's key pair, written as a PEM file for ``LUPUS_CDS_SMART_CLIENTS``."""

    client_id: str
    kid: str
    alg: str
    private_key_path: Path
    key: Any = field(repr=False)

    @classmethod
    def generate(cls, directory: Path, client_id: str, alg: str = "RS384", kid: str | None = None
                 ) -> ClientKey:
        from joserfc.jwk import ECKey, RSAKey

        kid = kid or f"{client_id}-{uuid.uuid4().hex[:8]}"
        if alg.startswith("ES"):
            key = ECKey.generate_key("P-384" if alg == "ES384" else "P-256", parameters={"kid": kid})
        else:
            key = RSAKey.generate_key(2048, parameters={"kid": kid})
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{kid}.pem"
        path.write_bytes(key.as_pem(private=True))
        path.chmod(0o600)
        return cls(client_id, kid, alg, path, key)

    def public_jwks(self) -> dict[str, Any]:
        jwk = self.key.as_dict(private=False)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return {"keys": [jwk]}

    def assertion(self, audience: str, lifetime: int = 240) -> str:
        """A client assertion signed here with joserfc, independent of the service's own code."""
        from joserfc import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex}
        return jwt.encode({"alg": self.alg, "kid": self.kid, "typ": "JWT"}, claims, self.key,
                          algorithms=[self.alg])

    def smart_clients_entry(self, fhir_server: str, scope: str, **extra: Any) -> dict[str, Any]:
        entry = {"fhir_server": fhir_server, "client_id": self.client_id, "private_key": str(self.private_key_path),
                 "kid": self.kid, "alg": self.alg, "scope": scope}
        entry.update(extra)
        return entry


def write_smart_clients(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write a ``LUPUS_CDS_SMART_CLIENTS`` file; returns its path."""
    path.write_text(json.dumps({"servers": entries}, indent=1))
    return path


# --- SEKMET ---------------------------------------------------------------------------------------------

class FHIRTestServer(LocalFHIRServer):
    """One SEKMET process: FHIR R4 at :attr:`base_url`, SMART token endpoint at :attr:`token_endpoint`.

    The sandbox's launcher (:class:`cds_hooks.fhir_server.LocalFHIRServer`) starts and stops it; this
    class adds SMART authorization to its settings, and the clients and tokens tests need.

    Registered SMART clients (all may ask for :data:`FULL_SCOPE`):

    * ``cds-service``: :attr:`client_key` (RS384), public key registered inline;
    * ``cds-service-es``: :attr:`es_client_key` (ES384), inline;
    * ``cds-service-by-url``: keys fetched from ``http://127.0.0.1:{jwks_port}/.well-known/jwks.json``,
      where a test serves the app (whose JWKS endpoint publishes them).

    :attr:`static_token` is a bearer token the FHIR API accepts for everything: it plays the EHR's
    ``fhirAuthorization.access_token``.
    """

    def __init__(self, workdir: Path, *, token_lifetime: int = 300):
        super().__init__(workdir, free_port(), executable=ensure_sekmet())
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.jwks_port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.token_endpoint = f"{self.root_url}/auth/token"
        self.static_token = EHR_STATIC_TOKEN
        self.loader_token = LOADER_TOKEN
        self.token_lifetime = token_lifetime
        keys = workdir / "keys"
        self.client_key = ClientKey.generate(keys, "cds-service", "RS384")
        self.es_client_key = ClientKey.generate(keys, "cds-service-es", "ES384")
        self.jwks_url = f"http://127.0.0.1:{self.jwks_port}/.well-known/jwks.json"

    def start(self, timeout: float = DEFAULT_DEADLINE) -> FHIRTestServer:
        super().start(timeout)  # a loaded machine may need long for SEKMET's first start
        return self

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        settings["server_auth"] = {
            "types": ["smart", "bearer"], "tokens": [self.loader_token, self.static_token],
            "enforce_scopes": True, "token_lifetime": self.token_lifetime,
            "smart_clients": [
                {"client_id": "cds-service", "jwks": self.client_key.public_jwks(), "scopes": FULL_SCOPE},
                {"client_id": "cds-service-es", "jwks": self.es_client_key.public_jwks(), "scopes": FULL_SCOPE},
                {"client_id": "cds-service-by-url", "jwks_url": self.jwks_url, "scopes": FULL_SCOPE},
            ],
        }
        return settings

    # -- data --

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def get(self, path_or_url: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        absolute = path_or_url.startswith(("http://", "https://"))
        url = path_or_url if absolute else f"{self.base_url}/{path_or_url.lstrip('/')}"
        return requests.get(url, headers=self._headers(token or self.loader_token), timeout=30, **kwargs)

    def load(self, bundle: Mapping[str, Any] | str | Path) -> dict[str, str]:
        """POST a transaction Bundle (a dict, or a file under ``fixtures/testbed`` or any path).

        :return: ``{fullUrl (or request.url when no fullUrl): server-assigned logical id}``.
        """
        if not isinstance(bundle, Mapping):
            path = Path(bundle)
            if not path.exists():
                path = FIXTURES / path
            bundle = json.loads(path.read_text())
        response = requests.post(self.base_url, data=json.dumps(bundle), headers=self._headers(self.loader_token),
                                 timeout=120)
        if response.status_code != 200:
            raise TestbedError(f"loading the Bundle failed: HTTP {response.status_code} {response.text[:1000]}")
        ids: dict[str, str] = {}
        for sent, answered in zip(bundle.get("entry", []), response.json().get("entry", []), strict=True):
            location = (answered.get("response") or {}).get("location", "")
            resource_type = sent["resource"]["resourceType"]
            tail = location.split(f"{resource_type}/", 1)[-1] if f"{resource_type}/" in location else ""
            ids[sent.get("fullUrl") or sent["request"]["url"]] = tail.split("/", 1)[0]
        return ids

    def prefetch_for(self, templates: Mapping[str, str], context: Mapping[str, Any],
                     token: str | None = None) -> dict[str, Any]:
        """What an EHR prefetching every template would send (PF-8): each search with every page merged
        into one searchset Bundle, each read as the resource, or ``None`` when it does not exist."""
        prefetch: dict[str, Any] = {}
        for key, template in templates.items():
            rendered = render_template(template, context)
            assert rendered is not None, f"template {key} has no value in the context"
            response = self.get(rendered, token or self.static_token)
            if "?" not in template:
                prefetch[key] = response.json() if response.status_code == 200 else None
                continue
            assert response.status_code == 200, response.text
            bundle = response.json()
            entries = list(bundle.get("entry", []))
            more = next_link(bundle)
            while more:
                page = self.get(more, token or self.static_token).json()
                entries.extend(page.get("entry", []))
                more = next_link(page)
            prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                             "entry": entries}
        return prefetch

    # -- tokens --

    def backend_token(self, client: ClientKey | None = None, scope: str = FULL_SCOPE) -> dict[str, Any]:
        """A token response from SEKMET for ``client`` (default :attr:`client_key`), obtained with an
        assertion signed by the harness itself (not by the service's code)."""
        client = client or self.client_key
        response = requests.post(self.token_endpoint, data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client.assertion(self.token_endpoint)}, timeout=30)
        if response.status_code != 200:
            raise TestbedError(f"token request failed: HTTP {response.status_code} {response.text[:500]}")
        return response.json()

    def smart_clients_file(self, path: Path, scope: str = FULL_SCOPE, client: ClientKey | None = None,
                           **extra: Any) -> Path:
        """A ``LUPUS_CDS_SMART_CLIENTS`` file registering the service at this server."""
        client = client or self.client_key
        return write_smart_clients(path, [client.smart_clients_entry(self.base_url, scope, **extra)])

    def fhir_authorization(self, token: str | None = None, **overrides: Any) -> dict[str, Any]:
        """A CDS Hooks ``fhirAuthorization`` object (3.2) carrying ``token`` (default: the static token)."""
        value = {"access_token": token or self.static_token, "token_type": "Bearer", "expires_in": 300,
                 "scope": "user/Patient.read user/Observation.read", "subject": "cds-service"}
        value.update(overrides)
        return value


# --- oidc-provider --------------------------------------------------------------------------------------

#: an oidc-provider authorization server for client_credentials with private_key_jwt only, its port, client key
#: set and resource taken from the environment
OIDC_AS_SCRIPT = r"""
import fs from 'node:fs';
import Provider from 'oidc-provider';
const PORT = Number(process.env.PORT), ISSUER = `http://127.0.0.1:${PORT}`, FHIR = process.env.FHIR_BASE;
const SCOPES = process.env.SCOPES;
const client = { client_id: process.env.CLIENT_ID, grant_types: ['client_credentials'], response_types: [],
  redirect_uris: [], token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: process.env.CLIENT_ALG, scope: SCOPES };
if (process.env.CLIENT_JWKS_URI) client.jwks_uri = process.env.CLIENT_JWKS_URI;
else client.jwks = JSON.parse(fs.readFileSync(process.env.CLIENT_JWKS, 'utf8'));
const provider = new Provider(ISSUER, {
  // Its SSRF guard refuses loopback addresses; the test's jwks_uri is on 127.0.0.1 by design.
  fetch: (url, options) => { delete options.dispatcher; return globalThis.fetch(url, options); },
  clients: [client],
  scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
  enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'] },
  features: {
    devInteractions: { enabled: false }, clientCredentials: { enabled: true }, introspection: { enabled: true },
    resourceIndicators: { enabled: true, defaultResource: () => FHIR, useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: SCOPES, audience: FHIR, accessTokenFormat: 'jwt',
        accessTokenTTL: 300, jwt: { sign: { alg: 'RS256' } } }) },
  },
});
provider.use(async (ctx, next) => {  // SMART discovery (normally served by the FHIR server)
  if (ctx.path !== '/.well-known/smart-configuration') return next();
  ctx.body = { issuer: ISSUER, jwks_uri: `${ISSUER}/jwks`, token_endpoint: `${ISSUER}/token`,
    grant_types_supported: ['client_credentials'], token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'],
    capabilities: ['client-confidential-asymmetric', 'permission-v1', 'permission-v2'] };
});
for (const event of ['grant.error', 'server_error', 'jwks.error']) {  // why a request failed, in the log
  provider.on(event, (ctx, err) => {
    const e = err || ctx;
    console.error(event, e.error || '', e.error_description || '', e.cause || '', e.message || '');
  });
}
provider.listen(PORT, '127.0.0.1');
"""


class OIDCProvider:
    """oidc-provider as a SMART-style authorization server for one client (token endpoint only).

    Its root URL stands in for a FHIR base: it serves ``/.well-known/smart-configuration`` itself.
    """

    def __init__(self, workdir: Path, client: ClientKey, *, scope: str, fhir_base: str = "http://127.0.0.1:1/fhir",
                 jwks_uri: str | None = None):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.scope = scope
        self.fhir_base = fhir_base
        self.jwks_uri = jwks_uri
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.token_endpoint = f"{self.issuer}/token"
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "oidc-provider.log"

    def start(self) -> OIDCProvider:
        folder = ensure_oidc_provider()
        script = folder / "as.mjs"
        if not script.exists() or script.read_text() != OIDC_AS_SCRIPT:
            script.write_text(OIDC_AS_SCRIPT)
        jwks_path = self.workdir / "client-jwks.json"
        jwks_path.write_text(json.dumps(self.client.public_jwks()))
        env = dict(os.environ, PORT=str(self.port), FHIR_BASE=self.fhir_base, SCOPES=self.scope,
                   CLIENT_ID=self.client.client_id, CLIENT_ALG=self.client.alg, CLIENT_JWKS=str(jwks_path),
                   NODE_ENV="test")
        if self.jwks_uri:
            env["CLIENT_JWKS_URI"] = self.jwks_uri
        self.process = start_node(script, folder, env, self.log_path, f"{self.issuer}/.well-known/openid-configuration")
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def jwks(self) -> dict[str, Any]:
        return requests.get(f"{self.issuer}/jwks", timeout=10).json()


# --- a generic probe service ---------------------------------------------------------------------------

#: probe templates over ``two-patients.json``: one read and three searches; ``_count=5`` makes the 12
#: observations of patient TB-1 span 3 pages
PROBE_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code=http://loinc.org|4548-4&_sort=date&_count=5",
    "conditions": "Condition?patient={{context.patientId}}",
    "medications": "MedicationStatement?patient={{context.patientId}}&status=active",
}


class ProbePlugin:
    """A CDS service (``patient-view``) over any prefetch templates. Its one card's ``detail`` is JSON:
    per key, the status, whether complete, and the sorted ``Type/id`` of every resource, plus the gaps.

    Register it with ``create_app(..., plugins=[ProbePlugin(templates)])``.
    """

    def __init__(self, templates: Mapping[str, str], required: frozenset[str] | None = None,
                 service_id: str = "fetch-probe"):
        self.templates = dict(templates)
        self.required = required
        self.service_id = service_id

    def handler(self, request: Any) -> list[dict[str, Any]]:
        keys = {key: {"status": entry.status.value, "complete": entry.complete,
                      "resources": sorted(f"{r.get('resourceType')}/{r.get('id')}" for r in entry.resources)}
                for key, entry in request.prefetch.items()}
        detail = json.dumps({"keys": keys, "gaps": request.prefetch.gaps()}, sort_keys=True)
        return [{"summary": "Fetch probe", "indicator": "info", "detail": detail,
                 "source": {"label": "fetch probe"}}]

    @hookimpl
    def cds_services(self, config: Any) -> list[Any]:
        return [ServiceDefinition(id=self.service_id, hook="patient-view", description="Reports its prefetch.",
                                  handler=self.handler, prefetch=self.templates, required_prefetch=self.required)]


def probe_result(response: Any) -> dict[str, Any]:
    """The probe card's detail of a Flask test-client response (asserting a 200 with one card)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    cards = response.get_json()["cards"]
    assert len(cards) == 1, cards
    return json.loads(cards[0]["detail"])


def hook_request(patient_id: str, prefetch: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A ``patient-view`` request body for ``patient_id``."""
    body: dict[str, Any] = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
                            "context": {"userId": "Practitioner/testbed", "patientId": patient_id}}
    if prefetch is not None:
        body["prefetch"] = copy.deepcopy(dict(prefetch))
    body.update(fields)
    return body


# --- pytest fixtures -----------------------------------------------------------------------------------

def _start_or_fail(make: Any) -> Any:
    """``make()`` (which may install the server) and start it, or fail the test with how to pre-install."""
    try:
        return make().start()
    except (TestbedError, FHIRServerError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"test server could not start: {exc}\n(pre-install with: .venv/bin/python -m "
                    f"tests.fhir_testbed --install)", pytrace=False)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: Any) -> Iterator[FHIRTestServer]:
    server = _start_or_fail(lambda: FHIRTestServer(tmp_path_factory.mktemp("sekmet")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def short_token_fhir_server(tmp_path_factory: Any) -> Iterator[FHIRTestServer]:
    server = _start_or_fail(lambda: FHIRTestServer(tmp_path_factory.mktemp("sekmet-short"), token_lifetime=1))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def testbed_patients(fhir_server: FHIRTestServer) -> dict[str, str]:
    """``fixtures/testbed/two-patients.json`` loaded once: ``{"ada": id, "bo": id, fullUrl: id, ...}``."""
    ids = fhir_server.load("two-patients.json")
    return {"ada": ids["urn:uuid:7e57bed0-0000-4000-8000-000000000001"],
            "bo": ids["urn:uuid:7e57bed0-0000-4000-8000-000000000002"], **ids}


@pytest.fixture(scope="session")
def oidc_provider_factory(tmp_path_factory: Any) -> Iterator[Any]:
    """``start(client_key, scope, **kwargs) -> OIDCProvider``; every provider stops at session end."""
    started: list[OIDCProvider] = []

    def start(client: ClientKey, scope: str, **kwargs: Any) -> OIDCProvider:
        provider = _start_or_fail(lambda: OIDCProvider(tmp_path_factory.mktemp("oidc"), client, scope=scope,
                                                      **kwargs))
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install (and optionally smoke-test) the fetch test servers.")
    parser.add_argument("--install", action="store_true",
                        help="install SEKMET, oidc-provider and the SMART test EHR if missing")
    parser.add_argument("--check", action="store_true", help="start each server once and stop it")
    args = parser.parse_args(argv)
    if not (args.install or args.check):
        parser.print_help()
        return 2
    try:
        for what, ensure in ((f"SEKMET ({SEKMET_REQUIREMENT})", ensure_sekmet),
                             (f"oidc-provider {OIDC_PROVIDER_VERSION} (npm)", ensure_oidc_provider),
                             ("SMART test EHR (npm ci)", ensure_smart_ehr)):
            started = time.monotonic()
            print(f"{what}: {ensure()} ({time.monotonic() - started:.0f} s)", flush=True)
        if args.check:
            with tempfile.TemporaryDirectory() as scratch:
                server = FHIRTestServer(Path(scratch) / "sekmet").start()
                server.stop()
                print(f"SEKMET started and answered at {server.base_url}")
                provider = OIDCProvider(Path(scratch) / "oidc", server.client_key, scope=FULL_SCOPE).start()
                provider.stop()
                print(f"oidc-provider started and answered at {provider.issuer}")
    except (TestbedError, FHIRServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
