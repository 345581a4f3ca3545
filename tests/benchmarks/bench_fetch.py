"""Benchmark of the fetch path: a hook call whose 4 prefetch keys must all be fetched from a FHIR server
that takes 50 ms per query, through the whole Flask app, with a SMART Backend Services token.

Not a pytest test (run it as a script)::

    .venv/bin/python tests/benchmarks/bench_fetch.py [--latency 0.05] [--runs 30] [--calls 100]

Prints

* the median wall time of one hook call (4 queries) divided by the wall time of one query on its own.
  Target <= 1.5: the queries run concurrently (one after another would be about 4);
* how many token requests 100 consecutive hook calls caused, cold cache included. Target: 1.

The FHIR server and its token endpoint are a local ``http.server`` on 127.0.0.1 that checks each client
assertion's signature, ``aud``, lifetime and ``jti`` (so cached tokens are not bought with replays).
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import RSAKey  # noqa: E402

from cds_hooks import ServiceDefinition, create_app, hookimpl  # noqa: E402

TEMPLATES = {
    "first": "Observation?patient={{context.patientId}}&code=a",
    "second": "Condition?patient={{context.patientId}}",
    "third": "MedicationStatement?patient={{context.patientId}}",
    "fourth": "Encounter?patient={{context.patientId}}",
}


class BenchPlugin:
    @hookimpl
    def cds_services(self, config: Any) -> list[ServiceDefinition]:
        def handler(request: Any) -> list[dict[str, Any]]:
            counts = {key: len(entry.resources) for key, entry in request.prefetch.items()}
            return [{"summary": "bench", "indicator": "info", "detail": json.dumps(counts),
                     "source": {"label": "bench"}}]
        return [ServiceDefinition(id="bench", hook="patient-view", description="bench", handler=handler,
                                  prefetch=TEMPLATES)]


class FHIRAndTokenServer:
    """FHIR searches answering after ``latency`` seconds, plus SMART discovery and a token endpoint."""

    def __init__(self, latency: float, client_id: str, public_key: RSAKey):
        self.latency = latency
        self.token_requests = 0
        self.fhir_requests = 0
        self.seen_jti: set[str] = set()
        self.access_token = "bench-access-" + uuid.uuid4().hex
        bench = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in separate writes: without this, Nagle's algorithm and the
            # client's delayed ACK add ~40 ms to every response and the server is not "50 ms" any more
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/fhir/.well-known/smart-configuration":
                    return self.reply(200, {"token_endpoint": bench.token_endpoint,
                                            "token_endpoint_auth_methods_supported": ["private_key_jwt"]})
                if self.headers.get("Authorization") != f"Bearer {bench.access_token}":
                    return self.reply(401, {"resourceType": "OperationOutcome", "issue": []})
                bench.fhir_requests += 1
                time.sleep(bench.latency)
                resource_type = self.path.split("/fhir/", 1)[1].split("?", 1)[0]
                return self.reply(200, {"resourceType": "Bundle", "type": "searchset", "entry": [
                    {"resource": {"resourceType": resource_type, "id": f"{resource_type}-{n}"}} for n in range(3)]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(pair.split("=", 1) for pair in self.rfile.read(length).decode().split("&") if pair)
                bench.token_requests += 1
                try:
                    from urllib.parse import unquote_plus

                    token = jwt.decode(unquote_plus(form["client_assertion"]), public_key, algorithms=["RS384"])
                    claims = token.claims
                    assert claims["iss"] == claims["sub"] == client_id
                    assert claims["aud"] == bench.token_endpoint
                    assert claims["exp"] - time.time() <= 300
                    assert claims["jti"] not in bench.seen_jti
                    bench.seen_jti.add(claims["jti"])
                except Exception:
                    return self.reply(401, {"error": "invalid_client"})
                return self.reply(200, {"access_token": bench.access_token, "token_type": "bearer",
                                        "expires_in": 300, "scope": unquote_plus(form.get("scope", ""))})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_port
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        self.token_endpoint = f"http://127.0.0.1:{port}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def build_app(workdir: Path, server: FHIRAndTokenServer, key: RSAKey) -> Any:
    key_path = workdir / "bench.pem"
    key_path.write_bytes(key.as_pem(private=True))
    clients = workdir / "smart-clients.json"
    clients.write_text(json.dumps({"servers": [{
        "fhir_server": server.base_url, "client_id": "bench-service", "private_key": str(key_path),
        "kid": "bench-1", "alg": "RS384", "scope": "system/Observation.rs system/Condition.rs"}]}))
    return create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_SMART_CLIENTS": str(clients),
                       "LUPUS_CDS_SANDBOX_FHIR_SERVERS": server.base_url,  # who may make us call it
                       "LUPUS_CDS_DATABASE_URL": f"sqlite:///{workdir / 'feedback.sqlite3'}",
                       "LUPUS_CDS_LOG_FORMAT": "none", "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0},
                      plugins=[BenchPlugin()])


def hook_call(client: Any, server: FHIRAndTokenServer) -> float:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": server.base_url,
            "context": {"userId": "Practitioner/bench", "patientId": "bench-patient"}}
    started = time.perf_counter()
    response = client.post("/cds-services/bench", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"hook call failed: HTTP {response.status_code} {response.get_data(as_text=True)}")
    counts = json.loads(response.get_json()["cards"][0]["detail"])
    if counts != {key: 3 for key in TEMPLATES}:
        raise SystemExit(f"unexpected fetch result {counts}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.05, help="FHIR server latency per query (s)")
    parser.add_argument("--runs", type=int, default=30, help="timed hook calls")
    parser.add_argument("--calls", type=int, default=100, help="consecutive calls for the token count")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    key = RSAKey.generate_key(2048)
    server = FHIRAndTokenServer(args.latency, "bench-service", RSAKey.import_key(key.as_dict(private=False)))
    try:
        with tempfile.TemporaryDirectory() as scratch:
            # token requests: a fresh app (cold cache), N consecutive calls
            app = build_app(Path(scratch), server, key)
            client = app.test_client()
            for _ in range(args.calls):
                hook_call(client, server)
            token_requests = server.token_requests

            # one query on its own, through a pooled connection, as the reference latency
            session = requests.Session()
            one_query = []
            for _ in range(max(5, args.runs // 3)):
                started = time.perf_counter()
                session.get(f"{server.base_url}/Observation?patient=bench-patient",
                            headers={"Authorization": f"Bearer {server.access_token}"}, timeout=5).raise_for_status()
                one_query.append(time.perf_counter() - started)
            single = statistics.median(one_query)
            hook_times = [hook_call(client, server) for _ in range(args.runs)]
            whole = statistics.median(hook_times)
    finally:
        server.close()

    ratio = whole / single
    nominal_ratio = whole / args.latency
    print(f"FHIR latency per query         : {args.latency * 1000:.0f} ms (one query measured: {single * 1000:.1f} ms)")
    print(f"hook call with 4 fetched keys  : median {whole * 1000:.1f} ms, p90 "
          f"{statistics.quantiles(hook_times, n=10)[-1] * 1000:.1f} ms over {args.runs} calls")
    print(f"ratio to one query             : {ratio:.2f}  (target <= 1.5; sequential would be ~4)")
    print(f"ratio to the nominal latency   : {nominal_ratio:.2f}")
    print(f"token requests for {args.calls} calls   : {token_requests}  (target 1)")
    ok = ratio <= 1.5 and token_requests == 1
    print("result                         :", "OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
