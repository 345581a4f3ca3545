"""``lupus-cds sandbox``: a local FHIR server holding the fixture patients plus the service in sandbox
mode, both on 127.0.0.1, ready for the public CDS Hooks Sandbox or for curl.

What it does, in order (each step reports its progress):

1. starts SEKMET (``cds_hooks.fhir_server``; the ``sandbox`` extra) with an empty database in a work
   folder;
2. loads every fixture patient with its dates rendered for today (``plugin.fixtures``);
3. writes today's hook requests to ``<workdir>/requests/<patient>/<hook>[.no-prefetch].json``: the
   prefetch ones for any service, the no-prefetch ones with ``fhirServer`` pointing at this FHIR server;
4. serves the service at ``http://127.0.0.1:PORT/cds-services`` with ``LUPUS_CDS_ALLOW_UNSIGNED=1`` (no
   client JWT needed), this FHIR server allowlisted for the fetch path (``LUPUS_CDS_SANDBOX_FHIR_SERVERS``),
   CORS open to the public CDS Hooks Sandbox (or the ``--cors-origin`` / ``LUPUS_CDS_CORS_ORIGINS``
   origins), feedback stored in ``<workdir>/feedback.sqlite3`` and the SMART app behind the cards on
   (``LUPUS_CDS_SMART_APP``, launchable from this FHIR server only). ``--clients FILE`` verifies client JWTs
   instead, trusting each client of FILE to make the service read this sandbox's FHIR server, whatever
   its port;
5. prints the URLs to paste into the CDS Hooks Sandbox (and, without JWTs, a curl command), then runs
   until Ctrl-C (or SIGTERM) and stops both servers.

Everything listens on 127.0.0.1 only: the service accepts unsigned calls in this mode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from cds_hooks.server import port_free as cds_port_free

from . import fixtures

HOST = "127.0.0.1"
PUBLIC_SANDBOX = "https://sandbox.cds-hooks.org"
FIRST_PATIENT = "sle-twitching-no-labs"


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of :data:`HOST` now (see :func:`cds_hooks.server.port_free`)."""
    return cds_port_free(HOST, port)


def write_requests(folder: Path, now: datetime, fhir_base: str) -> int:
    """Today's hook requests of every fixture patient under ``folder/requests``; returns how many."""
    written = 0
    for name in fixtures.patient_names():
        for hook in fixtures.HOOKS:
            for prefetch in (True, False):
                body = fixtures.load_request(name, hook, prefetch=prefetch, now=now, fhir_server=fhir_base)
                body["hookInstance"] = str(uuid.uuid4())
                path = fixtures.request_path(name, hook, prefetch=prefetch, root=folder)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(body, indent=1))
                written += 1
    return written


def cors_origins(options: tuple[str, ...], environ: Mapping[str, str]) -> str:
    """The browser origins the sandbox's service allows: ``--cors-origin`` values, else
    ``$LUPUS_CDS_CORS_ORIGINS`` (even empty: no CORS), else the public CDS Hooks Sandbox."""
    if options:
        return ",".join(options)
    if "LUPUS_CDS_CORS_ORIGINS" in environ:
        return environ["LUPUS_CDS_CORS_ORIGINS"]
    return PUBLIC_SANDBOX


def read_clients(path: str) -> dict[str, Any]:
    """The trusted-clients file given with ``--clients``, checked as the service will check it."""
    from cds_hooks.auth import load_clients

    try:
        load_clients(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def clients_for_this_sandbox(document: Mapping[str, Any], fhir_base: str) -> dict[str, Any]:
    """``document`` (a trusted-clients file) with this sandbox's FHIR server added to every client's
    ``fhir_servers``: the file names the default address, and ``--fhir-port`` moves it."""
    clients = []
    for entry in document["clients"]:
        entry = dict(entry)
        servers = list(entry.get("fhir_servers", []))
        if fhir_base not in servers:
            servers.append(fhir_base)
        entry["fhir_servers"] = servers
        clients.append(entry)
    return {**document, "clients": clients}


def sandbox_link(fhir_base: str, discovery: str, patient: str) -> str:
    return f"{PUBLIC_SANDBOX}/?" + urlencode({"fhirServiceUrl": fhir_base, "serviceDiscoveryURL": discovery,
                                              "patientId": patient})


class _Stop(Exception):
    """Raised in the main thread by SIGTERM, to leave like Ctrl-C."""


@click.command("sandbox")
@click.option("--port", default=8080, show_default=True, help="Port of the CDS service.")
@click.option("--fhir-port", default=8090, show_default=True, help="Port of the FHIR server.")
@click.option("--sekmet", "sekmet_path", default=None, type=click.Path(dir_okay=False),
              help="The sekmet program (default: next to this Python, .venv-sekmet/, or $PATH).")
@click.option("--workdir", default=None, type=click.Path(file_okay=False),
              help="Folder for the FHIR database, logs and today's requests (default: a temporary folder, "
                   "removed on exit).")
@click.option("--clients", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Verify client JWTs against this trusted-clients file (e.g. fixtures/clients.sandbox.json) "
                   "instead of accepting unsigned calls; its clients may make the service read this "
                   "sandbox's FHIR server.")
@click.option("--cors-origin", "cors_origin", multiple=True, metavar="ORIGIN",
              help="Browser origin allowed to call the service; repeatable, '*' for any. Default: "
                   f"$LUPUS_CDS_CORS_ORIGINS when set, else {PUBLIC_SANDBOX}.")
def sandbox_command(port: int, fhir_port: int, sekmet_path: str | None, workdir: str | None,
                    clients: str | None, cors_origin: tuple[str, ...]) -> None:
    """Start a FHIR server with the fixture patients and the service in sandbox mode, on 127.0.0.1."""
    from werkzeug.serving import make_server

    from cds_hooks import create_app
    from cds_hooks.fhir_server import FHIRServerError, LocalFHIRServer

    trusted = read_clients(clients) if clients else None  # a mistake in it is found before anything starts
    origins = cors_origins(cors_origin, os.environ)
    for label, number in (("--port", port), ("--fhir-port", fhir_port)):
        if not port_free(number):
            raise click.ClickException(f"{HOST}:{number} is in use; choose another with {label}")
    try:
        names = fixtures.patient_names()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    temporary = workdir is None
    folder = Path(workdir or tempfile.mkdtemp(prefix="lupus-cds-sandbox-"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot use {folder} as the work folder: {exc.strerror}") from None
    fhir: LocalFHIRServer | None = None
    server: Any = None

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    # A shell without job control starts background programs with SIGINT ignored, and Python then never
    # raises KeyboardInterrupt: make Ctrl-C (SIGINT) stop the sandbox however it was started.
    previous_int = signal.signal(signal.SIGINT, on_term)
    try:
        try:
            fhir = LocalFHIRServer(folder / "fhir", fhir_port, executable=sekmet_path)
        except FHIRServerError as exc:
            raise click.ClickException(str(exc)) from None
        step(f"Starting the FHIR server (SEKMET) at {fhir.base_url} ...")
        started = time.monotonic()
        try:
            fhir.start()
        except FHIRServerError as exc:
            raise click.ClickException(str(exc)) from None
        done(started)

        now = datetime.now(UTC)
        click.echo(f"Loading {len(names)} fixture patients, dates rendered for {now.date().isoformat()}:")
        for number, name in enumerate(names, 1):
            started = time.monotonic()
            bundle = fixtures.load_bundle(name, now=now)
            step(f"  [{number:>2}/{len(names)}] {name} ({len(bundle.get('entry', []))} resources) ...")
            try:
                fhir.load(bundle)
            except FHIRServerError as exc:
                raise click.ClickException(f"{name}: {exc}") from None
            done(started)

        count = write_requests(folder, now, fhir.base_url)
        click.echo(f"Wrote {count} hook requests dated today to {folder / 'requests'}")

        public_url = f"http://{HOST}:{port}"
        feedback_file = folder / "feedback.sqlite3"
        config: dict[str, Any] = {
            "LUPUS_CDS_ALLOW_UNSIGNED": trusted is None,
            "LUPUS_CDS_SANDBOX_FHIR_SERVERS": fhir.base_url,
            "LUPUS_CDS_PUBLIC_URL": public_url,
            "LUPUS_CDS_CORS_ORIGINS": origins,
            "LUPUS_CDS_DATABASE_URL": f"sqlite:///{feedback_file}",
            # the lab and steroid timeline behind the cards, launchable from this FHIR server only
            "LUPUS_CDS_SMART_APP": True,
            "LUPUS_CDS_SMART_APP_ISS": fhir.base_url,
            "LUPUS_CDS_SMART_APP_FRAME_ANCESTORS": f"'self' {PUBLIC_SANDBOX}",
            "LUPUS_CDS_LOG_FORMAT": "text",
        }
        if trusted is not None:
            clients_file = folder / "clients.json"
            clients_file.write_text(json.dumps(clients_for_this_sandbox(trusted, fhir.base_url), indent=1))
            config["LUPUS_CDS_CLIENTS"] = str(clients_file)
        app = create_app(config)
        server = make_server(HOST, port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="cds-service", daemon=True)
        thread.start()
        print_banner(public_url, fhir.base_url, folder, clients, origins, feedback_file, temporary)
        while thread.is_alive():
            thread.join(0.5)
    except (KeyboardInterrupt, _Stop):
        click.echo("\nStopping ...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if server is not None:
            server.shutdown()
        if fhir is not None:
            fhir.stop()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    click.echo("Sandbox stopped.")


def step(text: str) -> None:
    click.echo(text, nl=False)


def done(started: float) -> None:
    click.echo(f" ok ({time.monotonic() - started:.1f} s)")


def print_banner(public_url: str, fhir_base: str, folder: Path, clients: str | None, origins: str,
                 feedback_file: Path, temporary: bool) -> None:
    discovery = f"{public_url}/cds-services"
    request = fixtures.request_path(FIRST_PATIENT, "patient-view", prefetch=False, root=folder)
    jwts = ("not required (LUPUS_CDS_ALLOW_UNSIGNED=1)" if clients is None
            else f"verified against {clients} (its clients may read this FHIR server)")
    kept = "removed on exit; keep it with --workdir" if temporary else "kept"
    lines = [
        "",
        "lupus-cds sandbox is running (Ctrl-C stops both servers).",
        f"  CDS service discovery : {discovery}",
        f"  FHIR server           : {fhir_base}",
        f"  client JWTs           : {jwts}",
        f"  CORS origins          : {origins or 'none (no browser may call the service)'}",
        f"  feedback stored in    : {feedback_file} ({kept};",
        f"                          lupus-cds feedback-report --database-url sqlite:///{feedback_file})",
        f"  SMART app (timeline)  : {public_url}/smart-apps/trends/launch  (cards link to it; an EHR launch",
        f"                          needs an authorization server for {fhir_base}: see README)",
        "",
        "In the public CDS Hooks Sandbox (this machine's browser), open:",
        f"  {sandbox_link(fhir_base, discovery, FIRST_PATIENT)}",
        f"  (fhirServiceUrl={fhir_base}  serviceDiscoveryURL={discovery}  patientId={FIRST_PATIENT};",
        "   any fixture name is a patientId: lupus-cds demo lists them)",
        "",
    ]
    if clients is None:
        lines += [
            "Or send a request with curl (the service fetches the patient from the FHIR server):",
            f"  curl -s -X POST {public_url}/cds-services/{fixtures.SERVICE_PREFIX}-patient-view \\",
            f"       -H 'Content-Type: application/json' --data @{request}",
            "",
        ]
    else:
        lines += ["Calls need a client JWT signed by a client of that file: curl without one gets 401.", ""]
    click.echo("\n".join(lines))
