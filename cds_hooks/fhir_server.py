"""A local FHIR R4 server for sandboxes: SEKMET (``sekmet-fhir`` on PyPI, the ``sandbox`` extra) started as
a subprocess on 127.0.0.1, plus loading FHIR transaction Bundles into it.

The server is open (no authorization), keeps its SQLite data in a folder of the caller's choosing and
runs in its own process group, so :meth:`LocalFHIRServer.stop` ends it and anything it started, by PID.
SEKMET's order simulator is switched off: it would act on the orders we load.

Where the ``sekmet`` program is looked for, first found wins: the ``executable`` argument or
``$LUPUS_CDS_SEKMET``; next to the running Python (``pip install 'lupus-cds[sandbox]'``); the
repository's ``.venv-sekmet`` (what the test suite installs); ``$PATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

FHIR_JSON = "application/fhir+json"


class FHIRServerError(RuntimeError):
    """The FHIR server could not be found, started, or refused data."""


def find_sekmet(executable: str | Path | None = None) -> Path:
    """The ``sekmet`` program (see the module docstring for the search order)."""
    configured = executable or os.environ.get("LUPUS_CDS_SEKMET")
    if configured:
        path = Path(configured)
        if path.is_file():
            return path
        raise FHIRServerError(f"SEKMET not found at {path}")
    candidates = [Path(sys.executable).parent / "sekmet",
                  Path(__file__).resolve().parent.parent / ".venv-sekmet" / "bin" / "sekmet"]
    on_path = shutil.which("sekmet")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FHIRServerError(
        "SEKMET (the sandbox FHIR server) is not installed: pip install 'lupus-cds[sandbox]' "
        "(or point --sekmet / LUPUS_CDS_SEKMET at a sekmet program)")


def stop_process(process: subprocess.Popen | None) -> None:
    """Stop a server process we started in its own session: its process group, by PID (TERM, then KILL)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class LocalFHIRServer:
    """One open SEKMET server at ``http://127.0.0.1:{port}/fhir``; data kept under ``workdir``."""

    def __init__(self, workdir: Path, port: int, executable: str | Path | None = None):
        self.workdir = Path(workdir)
        self.port = port
        self.executable = find_sekmet(executable)
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self.log_path = self.workdir / "fhir-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    def settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "host": "127.0.0.1", "port": self.port,
                "data_dir": str(self.workdir / "data"), "log_inbound": False,
                "simulator": {"enabled": False}, "server_auth": {"types": ["none"]}}

    def start(self, timeout: float = 60) -> LocalFHIRServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "settings.yaml"
        config.write_text(json.dumps(self.settings(), indent=1))  # JSON is valid YAML
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(self.executable), "serve", "-c", str(config)], cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise FHIRServerError(f"the FHIR server exited with {self.process.returncode}:\n{tail}")
            try:
                if self.session.get(f"{self.base_url}/metadata", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise FHIRServerError(f"the FHIR server did not answer at {self.base_url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the server's process group (started by us, so addressed by its PID)."""
        process, self.process = self.process, None
        stop_process(process)
        self.session.close()

    def load(self, bundle: Mapping[str, Any], timeout: float = 120) -> int:
        """POST one transaction Bundle; returns the number of entries stored."""
        response = self.session.post(self.base_url, data=json.dumps(bundle),
                                     headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, timeout=timeout)
        if response.status_code != 200:
            raise FHIRServerError(f"the FHIR server refused a transaction: HTTP {response.status_code} "
                                  f"{response.text[:1000]}")
        return len(response.json().get("entry", []))

    def __enter__(self) -> LocalFHIRServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
