"""``lupus-cds serve`` (granian, every worker a process) over real HTTP on 127.0.0.1: discovery, signed hook
calls and feedback; replay protection shared by the workers without Redis; clients that connect and send
nothing or trickle their headers do not delay a normal call; transport errors are 4xx; caller-chosen text
(request line, query string, X-Request-Id, unknown paths) stays out of the logs; SIGTERM stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ROOT, ClientKeys, spec_example
from readiness import free_port, wait_until_ready

LUPUS_CDS = Path(sys.executable).parent / "lupus-cds"
SERVICE = "/cds-services/lupus-fasciculation-patient-view"
PATIENT_ID = "PID-5c1e93"

pytest_plugins = ["servers"]


@contextlib.contextmanager
def serving(tmp_path: Path, workers: int, **env: str) -> Iterator[tuple[str, Path]]:
    """``lupus-cds serve`` with its own data directory; yields (base URL, log path); stops it with SIGTERM
    and checks that it exits cleanly."""
    port = free_port()
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "LUPUS_CDS_ALLOW_UNSIGNED": "0",
                   "LUPUS_CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'fb.sqlite3'}", **env}
    for name in ("LUPUS_CDS_PUBLIC_URL", "PROMETHEUS_MULTIPROC_DIR", "LUPUS_CDS_REPLAY_DB"):
        if name not in env:
            environment.pop(name, None)
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(LUPUS_CDS), "serve", "--port", str(port), "--workers", str(workers)],
                                   cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + "/healthz", process=process, log_path=log_path)
        yield base, log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert code == 0, f"serve exited with {code} after SIGTERM:\n{log_path.read_text()[-2000:]}"


def hook_body(service: dict, patient_id: str = PATIENT_ID) -> dict:
    return {"hook": "patient-view", "hookInstance": "7f0a3c2e-8e4b-4c55-9a51-0d2c1f3e9b10",
            "context": {"userId": "Practitioner/1", "patientId": patient_id},
            "prefetch": {key: None for key in service.get("prefetch", {})}}


@pytest.mark.integration
def test_serve_answers_discovery_hook_calls_and_feedback_with_redis(tmp_path, redis_url):
    keys = ClientKeys(tmp_path)
    with serving(tmp_path, 2, LUPUS_CDS_CLIENTS=str(keys.clients_file), LUPUS_CDS_REDIS_URL=redis_url) \
            as (base, log_path):
        services = requests.get(base + "/cds-services", timeout=5).json()["services"]
        service = next(s for s in services if s["hook"] == "patient-view")
        url = f"{base}/cds-services/{service['id']}"
        body = hook_body(service)
        assert requests.post(url, json=body, timeout=5).status_code == 401
        token = keys.token(url)
        response = requests.post(url, json=body, timeout=10, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json() == {"cards": []}  # null prefetch = no data: nothing to advise (PF-9, RESP-3)
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert requests.post(url, json=body, timeout=5,
                             headers={"Authorization": f"Bearer {token}"}).status_code == 401  # replay
        feedback = requests.post(url + "/feedback", json=spec_example("feedback-accepted.json"), timeout=5,
                                 headers=keys.header(url + "/feedback"))
        assert feedback.status_code == 200 and feedback.json() == {}
        garbage = requests.post(url, data=b"\x00" * 10, timeout=5, headers={"Authorization": "Bearer x"})
        assert garbage.status_code == 401
        assert requests.get(url, timeout=5).status_code == 405
    log_text = log_path.read_text()
    assert "granian" in log_text
    assert token not in log_text and PATIENT_ID not in log_text
    # the plain start lines: where, how many workers, how many trusted clients, JWTs checked
    assert f"lupus-cds: serving http://localhost:{base.rsplit(':', 1)[1]}/cds-services with 2 workers" in log_text
    assert "client JWTs are checked: 1 trusted client loaded from LUPUS_CDS_CLIENTS" in log_text


@pytest.mark.integration
def test_two_workers_without_redis_share_replay_protection(tmp_path):
    """Each token is used once, then replayed on a new connection (the kernel hands connections to
    either worker), until both workers have answered calls: every replay is refused."""
    keys = ClientKeys(tmp_path)
    metrics_dir = tmp_path / "metrics"
    with serving(tmp_path, 2, LUPUS_CDS_CLIENTS=str(keys.clients_file),
                 PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as (base, _):
        service = next(s for s in requests.get(base + "/cds-services", timeout=5).json()["services"]
                       if s["hook"] == "patient-view")
        url = base + f"/cds-services/{service['id']}"
        replays = 0
        for _ in range(100):
            token = keys.token(url)
            for expected in (200, 401):
                response = requests.post(url, json=hook_body(service), timeout=10,
                                         headers={"Authorization": f"Bearer {token}", "Connection": "close"})
                assert response.status_code == expected, response.text
            replays += 1
            workers = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("histogram_*.db")}
            if replays >= 10 and len(workers) >= 2:
                break
        assert len(workers) >= 2, "both workers answered calls"
        assert (tmp_path / "data" / "lupus-cds" / "replay.sqlite3").is_file()


def slow_client(port: int, first: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        connection.sendall(first)
    return connection


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """One worker (the worst case for stalls), sandbox mode, a small body limit."""
    tmp_path = tmp_path_factory.mktemp("serve")
    with serving(tmp_path, 1, LUPUS_CDS_ALLOW_UNSIGNED="1", LUPUS_CDS_MAX_BODY_BYTES="100000") as served:
        yield served


@pytest.mark.integration
def test_idle_and_slow_header_connections_do_not_delay_a_normal_call(one_worker):
    """50 connections that send nothing and 10 that trickle their headers, all open while normal calls
    are made: each call answers within a generous bound (the threaded server took 4-15 s, or never)."""
    base, _ = one_worker
    port = int(base.rsplit(":", 1)[1])
    url = base + SERVICE
    service = next(s for s in requests.get(base + "/cds-services", timeout=5).json()["services"]
                   if s["id"] == SERVICE.rsplit("/", 1)[1])
    assert requests.post(url, json=hook_body(service), timeout=10).status_code == 200  # warm
    idle = [slow_client(port, b"") for _ in range(50)]
    trickling = [slow_client(port, b"POST " + SERVICE.encode() + b" HTTP/1.1\r\nHost: a\r\n") for _ in range(10)]
    try:
        slowest = 0.0
        for step in range(10):
            for connection in trickling:  # one more header byte each, between the normal calls
                connection.sendall(b"X"[: 1] if step else b"X-Slow: ")
            started = time.monotonic()
            response = requests.post(url, json=hook_body(service), timeout=10, headers={"Connection": "close"})
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 200
        assert slowest < 2.0, f"a normal call took {slowest:.2f} s with idle and slow clients connected"
    finally:
        for connection in idle + trickling:
            connection.close()


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.integration
def test_transport_errors_are_4xx_and_caller_text_never_reaches_the_logs(one_worker):
    base, log_path = one_worker
    port = int(base.rsplit(":", 1)[1])
    head = (b"POST " + SERVICE.encode() + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    bad_chunk = raw_request(port, head + b"ZZZ\r\nabc\r\n0\r\n\r\n")
    assert bad_chunk.startswith(b"HTTP/1.1 4"), bad_chunk[:80]
    piece = b"x" * 60000
    over = raw_request(port, head + (b"%x\r\n" % len(piece) + piece + b"\r\n") * 2 + b"0\r\n\r\n")
    assert over.startswith(b"HTTP/1.1 413"), over[:80]
    assert b"OperationOutcome" in over
    bad_line = raw_request(port, f"GET /cds-services?patient={PATIENT_ID}-line HTTP/1.1 x\r\nHost: a\r\n\r\n"
                           .encode())
    assert bad_line.startswith(b"HTTP/1.1 400"), bad_line[:80]
    chosen = requests.get(base + "/healthz", timeout=5, headers={"X-Request-Id": f"{PATIENT_ID}-rid"})
    assert chosen.status_code == 200 and PATIENT_ID not in chosen.headers["X-Request-Id"]
    unknown = requests.get(base + f"/patients/{PATIENT_ID}-path?patient={PATIENT_ID}-query", timeout=5)
    assert unknown.status_code == 404
    unknown_service = requests.post(base + f"/cds-services/{PATIENT_ID}-service", json={}, timeout=5)
    assert unknown_service.status_code == 404
    requests.get(base + "/healthz", timeout=5)  # the access line of the last call is written before this one
    log_text = log_path.read_text()
    assert PATIENT_ID not in log_text
    access = [json.loads(line) for line in log_text.splitlines()
              if line.startswith("{") and json.loads(line)["logger"] == "cds_hooks.access"]
    assert {"<unmatched>", "/cds-services/<service_id>"} <= {line["path"] for line in access}
    assert {413, 404} <= {line["status"] for line in access}
