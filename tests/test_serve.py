"""``lupus-cds serve`` under gunicorn: discovery, a signed hook call and feedback over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import ROOT, ClientKeys, spec_example
from readiness import free_port, wait_until_ready

LUPUS_CDS = Path(sys.executable).parent / "lupus-cds"

pytest_plugins = ["servers"]


@pytest.fixture
def served(tmp_path, redis_url):
    """Start ``lupus-cds serve`` (2 workers sharing a real Redis for the jti replay store) with a trusted
    test client; yield (base_url, ClientKeys, log path)."""
    keys = ClientKeys(tmp_path)
    port = free_port()
    env = dict(os.environ, LUPUS_CDS_CLIENTS=str(keys.clients_file),
               LUPUS_CDS_DATABASE_URL=f"sqlite:///{tmp_path / 'fb.sqlite3'}", LUPUS_CDS_ALLOW_UNSIGNED="0",
               LUPUS_CDS_REDIS_URL=redis_url)
    env.pop("LUPUS_CDS_PUBLIC_URL", None)
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([str(LUPUS_CDS), "serve", "--port", str(port), "--workers", "2"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + "/cds-services", process=process, log_path=tmp_path / "serve.log")
        yield base, keys, tmp_path / "serve.log"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


@pytest.mark.integration
def test_serve_answers_discovery_hook_calls_and_feedback(served):
    base, keys, log_path = served
    services = requests.get(base + "/cds-services", timeout=5).json()["services"]
    assert services, "the installed clinical plugin registers its services"
    service = next(s for s in services if s["hook"] == "patient-view")
    url = f"{base}/cds-services/{service['id']}"

    body = {"hook": "patient-view", "hookInstance": "7f0a3c2e-8e4b-4c55-9a51-0d2c1f3e9b10",
            "context": {"userId": "Practitioner/1", "patientId": "p-serve"},
            "prefetch": {key: None for key in service.get("prefetch", {})}}
    assert requests.post(url, json=body, timeout=5).status_code == 401
    token = keys.token(url)
    response = requests.post(url, json=body, timeout=10, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}  # null prefetch = no data: nothing to advise (PF-9, RESP-3)
    assert requests.post(url, json=body, timeout=5,
                         headers={"Authorization": f"Bearer {token}"}).status_code == 401  # replay

    feedback = requests.post(url + "/feedback", json=spec_example("feedback-accepted.json"), timeout=5,
                             headers=keys.header(url + "/feedback"))
    assert feedback.status_code == 200 and feedback.json() == {}

    garbage = requests.post(url, data=b"\x00" * 10, timeout=5, headers={"Authorization": "Bearer x"})
    assert garbage.status_code == 401
    assert requests.get(url, timeout=5).status_code == 405

    time.sleep(0.5)
    log_text = log_path.read_text()
    assert "gunicorn" in log_text.lower() or "Booting worker" in log_text
    assert token not in log_text and "p-serve" not in log_text


def test_default_workers_keep_replay_protection_without_redis(monkeypatch):
    """Without Redis each worker would have its own jti store, so serve defaults to one worker."""
    import runpy

    conf = ROOT / "cds_hooks" / "gunicorn_conf.py"
    for name in ("LUPUS_CDS_WORKERS", "LUPUS_CDS_REDIS_URL", "LUPUS_CDS_ALLOW_UNSIGNED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp")
    assert runpy.run_path(str(conf))["workers"] == 1
    monkeypatch.setenv("LUPUS_CDS_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert runpy.run_path(str(conf))["workers"] > 1 or os.cpu_count() == 0
