"""A test EHR that runs the SMART App Launch for real, the service with its SMART app on, and headless
Chromium, all on 127.0.0.1 (``/work/shared/docs/TESTBED.md``, "SMART App Launch").

* **FHIR server**: SEKMET (``.venv-sekmet``) with SMART token checking on and scopes enforced; its
  ``base_url`` is the EHR front's ``/fhir``, which proxies to it. It accepts the access tokens the
  authorization server issues because both share one HS256 secret, written into SEKMET's database before
  it starts (SEKMET keeps its token secret in its SQLite ``kv`` table, created only when missing).
* **Authorization server and EHR**: ``tests/smart_ehr/ehr.mjs``, oidc-provider (npm) in an Express front,
  both pinned by ``tests/smart_ehr/package-lock.json`` and installed with ``npm ci`` into
  ``.test-servers/smart-ehr`` (``python -m tests.fhir_testbed --install``). It plays the EHR: it makes launch
  ids and shows the app in an iframe (``/ehr/open``).
* **The service**: ``create_app`` served by werkzeug in a thread of the test process, with
  ``LUPUS_CDS_SMART_APP`` on, the EHR's FHIR base allowed, and a clock the tests can move.
* **Browser**: Debian's ``/usr/bin/chromium`` driven by Playwright for Python (``executable_path``; no
  browser is ever downloaded: ``playwright install`` is never run).

Use with ``pytest_plugins = ["smart_testbed"]``; fixtures ``smart_world`` (everything started, the fixture
patients loaded) and ``chromium``. Nothing here skips: a server that cannot start fails the test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import trends_data
from fhir_testbed import (
    LOADER_TOKEN,
    ROOT,
    TestbedError,
    _start_or_fail,
    ensure_sekmet,
    ensure_smart_ehr,
    free_port,
    start_node,
)
from readiness import DEFAULT_DEADLINE

from cds_hooks import create_app
from cds_hooks.fhir_server import LocalFHIRServer, stop_process

CLIENT_ID = "lupus-cds-test"
CHROMIUM = os.environ.get("LUPUS_CDS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync", "--no-first-run",
                 "--disable-component-update", "--disable-default-apps", "--mute-audio"]
#: where screenshots are kept (printed by the tests); override with LUPUS_CDS_TEST_ARTEFACTS
ARTEFACTS = Path(os.environ.get("LUPUS_CDS_TEST_ARTEFACTS") or ROOT / "tmp" / "artefacts")


class SmartFHIRServer(LocalFHIRServer):
    """SEKMET checking SMART access tokens signed with ``secret``, for the FHIR base ``public_base``."""

    def __init__(self, workdir: Path, public_base: str, secret: str):
        super().__init__(workdir, free_port(), executable=ensure_sekmet())
        self.public_base = public_base
        self.secret = secret
        self.loader_token = LOADER_TOKEN

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        settings["base_url"] = self.public_base  # token aud, and the base of every link it writes
        settings["server_auth"] = {"types": ["smart", "bearer"], "tokens": [self.loader_token],
                                   "enforce_scopes": True}
        return settings

    def start(self, timeout: float = DEFAULT_DEADLINE) -> SmartFHIRServer:  # SEKMET's first start may be slow
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(data / "sekmet.db") as db:
            db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)")
            db.execute("INSERT OR REPLACE INTO kv VALUES ('jwt_secret', ?)", (self.secret,))
        super().start(timeout)
        return self

    def load(self, bundle: Any, timeout: float = 120) -> int:
        response = self.session.post(self.base_url, json=bundle, timeout=timeout, headers={
            "Content-Type": "application/fhir+json", "Authorization": f"Bearer {self.loader_token}"})
        if response.status_code != 200:
            raise TestbedError(f"loading failed: HTTP {response.status_code} {response.text[:500]}")
        return len(response.json().get("entry", []))


class TestEHR:
    """``tests/smart_ehr/ehr.mjs``: the authorization server and EHR front at :attr:`origin`."""

    def __init__(self, workdir: Path, port: int, fhir: SmartFHIRServer, redirect_uris: list[str],
                 token_ttl: int = 300):
        self.workdir = workdir
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.fhir_base = f"{self.origin}/fhir"
        self.other_fhir_base = f"{self.origin}/other-fhir"
        self.fhir = fhir
        self.redirect_uris = redirect_uris
        self.token_ttl = token_ttl
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / "ehr.log"

    def start(self) -> TestEHR:
        folder = ensure_smart_ehr()
        shutil.copyfile(ROOT / "tests" / "smart_ehr" / "ehr.mjs", folder / "ehr.mjs")
        env = dict(os.environ, PORT=str(self.port), SEKMET_URL=f"http://127.0.0.1:{self.fhir.port}",
                   JWT_SECRET=self.fhir.secret, CLIENT_ID=CLIENT_ID, REDIRECT_URIS=",".join(self.redirect_uris),
                   TOKEN_TTL=str(self.token_ttl), NODE_ENV="test")
        self.process = start_node("ehr.mjs", folder, env, self.log_path,
                                  f"{self.fhir_base}/.well-known/smart-configuration")
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def launch(self, patient: str, **options: Any) -> dict[str, str]:
        """A launch id (``{"launch", "iss", "other_iss"}``) as the EHR makes one when a user clicks a link."""
        response = requests.post(f"{self.origin}/ehr/launch", json={"patient": patient, **options}, timeout=10)
        response.raise_for_status()
        return response.json()

    def open_url(self, app_url: str, patient: str, **options: Any) -> str:
        """The EHR page that shows ``app_url`` in an iframe, launched for ``patient``."""
        return f"{self.origin}/ehr/open?" + urlencode({"app": app_url, "patient": patient, **options})

    def fhir_down(self, down: bool) -> None:
        requests.post(f"{self.origin}/ehr/fhir-down", json={"down": down}, timeout=10).raise_for_status()


class Clock:
    """The service's clock: pinned at ``start``; a test may move it (and must put it back)."""

    def __init__(self, start: datetime):
        self.start = start
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def reset(self) -> None:
        self.now = self.start


class Service:
    """The service (the lupus plugin, its SMART app on) in a thread of the test process."""

    def __init__(self, port: int, config: dict[str, Any], clock: Clock):
        from werkzeug.serving import make_server

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.clock = clock
        self.app = create_app(config, clock=clock)
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="smart-app-service", daemon=True)

    def start(self) -> Service:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)

    @property
    def launch_url(self) -> str:
        return f"{self.url}/smart-apps/trends/launch"

    def sessions(self) -> list[dict[str, Any]]:
        """Every record in the app's session store (for checking where tokens do and do not go)."""
        store = self.app.extensions["smart_apps"].store
        return [record for _, record in list(store._records.values())]


class SmartWorld:
    """Everything of one test session: FHIR server, EHR, service, the patients loaded, the clock."""

    def __init__(self, fhir: SmartFHIRServer, ehr: TestEHR, service: Service, now: datetime, patients: dict):
        self.fhir, self.ehr, self.service, self.now, self.patients = fhir, ehr, service, now, patients


def hook_request(world: SmartWorld, patient: str) -> dict[str, Any]:
    """A patient-view call without prefetch: the service fetches the record from the EHR's FHIR server."""
    import uuid

    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": world.ehr.fhir_base,
            "fhirAuthorization": {"access_token": world.fhir.loader_token, "token_type": "Bearer",
                                  "expires_in": 300, "scope": "patient/*.rs", "subject": "lupus-cds"},
            "context": {"userId": "Practitioner/dr-rheum", "patientId": patient}}


@pytest.fixture(scope="session")
def smart_world(tmp_path_factory: Any) -> Iterator[SmartWorld]:
    workdir = tmp_path_factory.mktemp("smart-ehr")
    ehr_port, service_port = free_port(), free_port()
    secret = secrets.token_urlsafe(48)
    fhir = _start_or_fail(lambda: SmartFHIRServer(workdir / "sekmet", f"http://127.0.0.1:{ehr_port}/fhir", secret))
    started: list[Any] = [fhir]
    try:
        callback = f"http://127.0.0.1:{service_port}/smart-apps/trends/callback"
        ehr = _start_or_fail(lambda: TestEHR(workdir, ehr_port, fhir, [callback]))
        started.append(ehr)
        now = datetime.now(UTC).replace(microsecond=0)
        patients = {"timeline": trends_data.timeline_patient(now),
                    "empty": trends_data.bundle([{"resourceType": "Patient", "id": "trends-empty", "gender": "male",
                                                  "name": [{"family": "Empty", "given": ["Eli"]}]}])}
        for bundle in patients.values():
            fhir.load(bundle)
        clock = Clock(now)
        config = {
            "LUPUS_CDS_SMART_APP": True, "LUPUS_CDS_SMART_APP_ISS": f"{ehr.fhir_base},{ehr.other_fhir_base}",
            "LUPUS_CDS_SMART_APP_CLIENT_ID": CLIENT_ID, "LUPUS_CDS_SMART_APP_FRAME_ANCESTORS": ehr.origin,
            "LUPUS_CDS_PUBLIC_URL": f"http://127.0.0.1:{service_port}", "LUPUS_CDS_ALLOW_UNSIGNED": True,
            "LUPUS_CDS_SANDBOX_FHIR_SERVERS": ehr.fhir_base, "LUPUS_CDS_FHIR_BUDGET": 20,
            "LUPUS_CDS_FHIR_TIMEOUT": 15, "LUPUS_CDS_LOG_FORMAT": "text",
            "LUPUS_CDS_DATABASE_URL": f"sqlite:///{workdir / 'feedback.sqlite3'}",
        }
        service = Service(service_port, config, clock).start()
        started.append(service)
        yield SmartWorld(fhir, ehr, service, now, patients)
    finally:
        for thing in reversed(started):
            thing.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (``executable_path``: nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: deploy/bootstrap test installs the Debian package chromium",
                    pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artefact_dir(name: str) -> Path:
    folder = ARTEFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder

