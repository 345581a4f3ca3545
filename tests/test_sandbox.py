"""``lupus-cds sandbox`` end to end (issue #5, "done when"): the command starts SEKMET with the fixture
patients and the service in sandbox mode; fixture requests sent with curl give their golden cards, both
with full prefetch and through the fetch path (no prefetch, ``fhirServer`` = the sandbox's FHIR server);
the curl command the sandbox prints works as printed; Ctrl-C stops both servers.

SEKMET comes from ``.venv-sekmet`` (installed by ``tests/fhir_testbed.py`` if missing). Nothing here skips:
if SEKMET cannot be installed or started, the test fails.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from readiness import free_port, wait_until

from plugin import fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def lupus_cds() -> list[str]:
    """``lupus-cds`` of THIS checkout: run with ``cwd=ROOT``, ``python -c`` imports the packages from the
    checkout first. (The venv's ``lupus-cds`` script imports whatever checkout the venv was installed from,
    which need not be the one under test.)"""
    return [sys.executable, "-c", "from cds_hooks.cli import main; main()"]


def curl(url: str, body_file: Path) -> dict:
    done = subprocess.run(["curl", "-s", "-f", "-X", "POST", url, "-H", "Content-Type: application/json",
                           "--data", f"@{body_file}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"curl {url} failed ({done.returncode}): {done.stderr}{done.stdout[:500]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from fhir_testbed import TestbedError, ensure_sekmet

    if not shutil.which("curl"):
        pytest.fail("curl is needed (Debian package curl)", pytrace=False)
    try:
        sekmet = ensure_sekmet()
    except TestbedError as exc:
        pytest.fail(f"SEKMET could not be installed: {exc}", pytrace=False)
    workdir = tmp_path_factory.mktemp("sandbox")
    port, fhir_port = free_port(), free_port()
    log_path = workdir / "sandbox.out"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*lupus_cds(), "sandbox", "--port", str(port), "--fhir-port", str(fhir_port),
                                    "--sekmet", str(sekmet), "--workdir", str(workdir / "run")],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "is running" in log_path.read_text(), "lupus-cds sandbox prints that it is running",
                   process=process, log_path=log_path, deadline=300)
    except AssertionError as exc:
        process.kill()
        pytest.fail(str(exc), pytrace=False)
    output = log_path.read_text()
    rendered_for = re.search(r"dates rendered for (\d{4}-\d{2}-\d{2})", output).group(1)
    info = {"process": process, "log": log_path, "workdir": workdir, "service": f"http://127.0.0.1:{port}",
            "fhir": f"http://127.0.0.1:{fhir_port}/fhir", "fhir_port": fhir_port,
            # the sandbox's own "today", so a run across midnight UTC compares like with like
            "now": datetime.fromisoformat(rendered_for + "T12:00:00+00:00").astimezone(UTC)}
    yield info
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_discovery_and_fhir_server_answer(sandbox):
    services = requests.get(f"{sandbox['service']}/cds-services", timeout=10).json()["services"]
    assert {s["id"] for s in services} >= {f"{fixtures.SERVICE_PREFIX}-{hook}" for hook in fixtures.HOOKS}
    patient = requests.get(f"{sandbox['fhir']}/Patient/sle-twitching-no-labs", timeout=10)
    assert patient.status_code == 200 and patient.json()["id"] == "sle-twitching-no-labs"
    output = sandbox["log"].read_text()
    assert "serviceDiscoveryURL=" in output and "fhirServiceUrl=" in output and "patientId=" in output


def test_the_printed_curl_command_returns_the_expected_cards(sandbox):
    output = sandbox["log"].read_text()
    command = re.search(r"(curl -s -X POST \S+ \\\n\s+-H .*)", output).group(1).replace("\\\n", " ")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cards = fixtures.card_digest(json.loads(done.stdout)["cards"])
    assert cards == fixtures.load_expected("sle-twitching-no-labs", "patient-view", now=sandbox["now"])
    assert cards, "the first patient of the banner shows cards"


@pytest.mark.parametrize("name", fixtures.patient_names())
def test_fixture_requests_give_the_golden_cards_with_prefetch_and_through_the_fetch_path(sandbox, name, tmp_path):
    for hook in fixtures.HOOKS:
        expected = fixtures.load_expected(name, hook, now=sandbox["now"])
        url = f"{sandbox['service']}/cds-services/{fixtures.SERVICE_PREFIX}-{hook}"
        for prefetch in (True, False):
            body = fixtures.load_request(name, hook, prefetch=prefetch, now=sandbox["now"],
                                         fhir_server=sandbox["fhir"])
            path = tmp_path / f"{hook}-{prefetch}.json"
            path.write_text(json.dumps(body))
            cards = fixtures.card_digest(curl(url, path)["cards"])
            how = "full prefetch" if prefetch else "fetched from the sandbox FHIR server"
            assert cards == expected, f"{name}/{hook} ({how})"


def test_the_stored_no_prefetch_request_works_once_its_fhir_server_is_filled_in(sandbox, tmp_path):
    """The checked-in no-prefetch files carry the default sandbox address; the context has no dates, so
    only ``fhirServer`` changes with the ports."""
    body = json.loads(fixtures.request_path("sle-low-magnesium-on-ppi", "patient-view", prefetch=False).read_text())
    assert body["fhirServer"] == fixtures.DEFAULT_FHIR_SERVER
    body["fhirServer"] = sandbox["fhir"]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    cards = curl(f"{sandbox['service']}/cds-services/{fixtures.SERVICE_PREFIX}-patient-view", path)["cards"]
    assert fixtures.card_digest(cards) == fixtures.load_expected("sle-low-magnesium-on-ppi", "patient-view",
                                                                 now=sandbox["now"])


def test_ctrl_c_stops_both_servers(sandbox):
    process = sandbox["process"]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert "Sandbox stopped." in sandbox["log"].read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sandbox['fhir']}/metadata", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sandbox['service']}/cds-services", timeout=2)


# --- the command's own checks (no servers started) -------------------------------------------------------

def _tcp_states(port: int) -> set[str]:
    """The states of the IPv4 TCP sockets whose local port is ``port`` (/proc/net/tcp; 06 = TIME_WAIT)."""
    states = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.add(fields[3])
    return states


def test_a_port_whose_server_just_stopped_is_free_again():
    """Restarting right after Ctrl-C: the stopped server's connections linger in TIME_WAIT, which the servers
    (binding with SO_REUSEADDR) do not mind, so the port check must not mind either."""
    from plugin.sandbox import HOST, port_free

    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen()
    client = socket.create_connection((HOST, port))
    accepted, _ = listener.accept()
    assert not port_free(port)  # a server listens
    accepted.close()  # the server side closes first, so its end waits in TIME_WAIT
    client.close()
    listener.close()
    wait_until(lambda: _tcp_states(port) == {"06"}, "the stopped server's connection is in TIME_WAIT", deadline=30)
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind((HOST, port))  # what the old check did: "in use"
    assert port_free(port)


def test_cors_origins_come_from_the_option_then_the_environment_then_the_public_sandbox():
    from plugin.sandbox import PUBLIC_SANDBOX, cors_origins

    assert cors_origins((), {}) == PUBLIC_SANDBOX
    assert cors_origins((), {"LUPUS_CDS_CORS_ORIGINS": "https://ehr.example.org"}) == "https://ehr.example.org"
    assert cors_origins((), {"LUPUS_CDS_CORS_ORIGINS": ""}) == ""  # set but empty: no CORS, as for serve
    assert cors_origins(("https://a.example", "*"), {"LUPUS_CDS_CORS_ORIGINS": "https://b.example"}) \
        == "https://a.example,*"


def test_the_clients_file_is_extended_with_the_sandboxs_own_fhir_server():
    from plugin.sandbox import clients_for_this_sandbox, read_clients

    shipped = read_clients(str(fixtures.fixtures_dir() / "clients.sandbox.json"))
    extended = clients_for_this_sandbox(shipped, "http://127.0.0.1:18090/fhir")
    (client,) = extended["clients"]
    assert client["fhir_servers"] == ["http://127.0.0.1:8090/fhir", "http://127.0.0.1:18090/fhir"]
    assert clients_for_this_sandbox(shipped, "http://127.0.0.1:8090/fhir")["clients"][0]["fhir_servers"] == [
        "http://127.0.0.1:8090/fhir"]
    assert shipped["clients"][0]["fhir_servers"] == ["http://127.0.0.1:8090/fhir"]  # the file itself unchanged


def test_a_bad_clients_file_is_refused_before_anything_starts(tmp_path):
    from click.testing import CliRunner

    from plugin.sandbox import sandbox_command

    bad = tmp_path / "clients.json"
    bad.write_text('{"clients": [{"iss": "https://x.example"}]}')
    result = CliRunner().invoke(sandbox_command, ["--clients", str(bad), "--sekmet", "/nonexistent/sekmet"])
    assert result.exit_code == 1 and "'jwks'" in result.output and "SEKMET" not in result.output


# --- verified JWTs, another FHIR port, another CORS origin -----------------------------------------------

def test_with_clients_and_another_fhir_port_signed_calls_fetch_from_the_sandbox(tmp_path):
    """``--clients`` trusts the file's clients to make the service read THIS sandbox's FHIR server (the
    file names port 8090); the banner drops the unsigned curl hint; ``--cors-origin`` is honoured."""
    from conftest import ClientKeys
    from fhir_testbed import ensure_sekmet

    keys = ClientKeys(tmp_path)  # a trusted client whose keys are inline: no network needed
    port, fhir_port = free_port(), free_port()
    log_path = tmp_path / "sandbox.out"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*lupus_cds(), "sandbox", "--port", str(port), "--fhir-port", str(fhir_port),
                                    "--sekmet", str(ensure_sekmet()), "--clients", str(keys.clients_file),
                                    "--cors-origin", "https://ehr.example.org", "--workdir", str(tmp_path / "run")],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "is running" in log_path.read_text(), "lupus-cds sandbox --clients is running",
                   process=process, log_path=log_path, deadline=300)
        banner = log_path.read_text()
        assert "curl -s -X POST" not in banner and "need a client JWT" in banner
        assert "CORS origins          : https://ehr.example.org" in banner
        assert f"feedback stored in    : {tmp_path / 'run' / 'feedback.sqlite3'}" in banner

        now = datetime.fromisoformat(re.search(r"dates rendered for (\d{4}-\d{2}-\d{2})", banner).group(1)
                                     + "T12:00:00+00:00").astimezone(UTC)
        url = f"http://127.0.0.1:{port}/cds-services/{fixtures.SERVICE_PREFIX}-patient-view"
        body = fixtures.load_request("sle-twitching-no-labs", "patient-view", prefetch=False, now=now,
                                     fhir_server=f"http://127.0.0.1:{fhir_port}/fhir")
        assert requests.post(url, json=body, timeout=60).status_code == 401  # unsigned: refused
        answer = requests.post(url, json=body, timeout=60,
                               headers={**keys.header(url), "Origin": "https://ehr.example.org"})
        assert answer.status_code == 200, answer.text  # not 412: the sandbox's FHIR server may be read
        assert answer.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
        assert fixtures.card_digest(answer.json()["cards"]) == fixtures.load_expected(
            "sle-twitching-no-labs", "patient-view", now=now)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
