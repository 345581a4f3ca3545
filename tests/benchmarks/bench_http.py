"""Benchmark of ``lupus-cds serve`` over HTTP, side by side with a floor app on the same server.

Not a pytest test (run it as a script; it needs ``wrk`` from Debian)::

    .venv/bin/python tests/benchmarks/bench_http.py [--seconds 10] [--patients 10000]

Two servers run on 127.0.0.1, each with the defaults of ``serve`` (one worker per CPU, granian with the
:mod:`cds_hooks.serving` adapter and its limits):

- ``serve``: ``lupus-cds serve`` as shipped, signed mode: every call carries a client JWT (ES384), each
  token used once (replay protection shared by the workers in SQLite), the lupus plugin evaluates it;
- ``floor``: a Flask app served the same way (same server, adapter, limits and JSON logs) that parses the
  same body with orjson and answers ``{"cards": []}``: what any Python service pays for the same bytes.

Requests: the typical patient of ``bench_hook_call.py`` (about 200 resources, ~150 KB), 64 variants
with other patient ids (so caches of one patient's resources do not answer for the next), and a pool
of pre-signed JWTs (the wrk Lua script takes a different ``Authorization`` header for every request).

Printed, with the machine's load average (other work on the machine lowers every figure):

1. saturation throughput of both (wrk, closed loop) and their ratio (target >= 0.8x the floor);
2. p50/p99 latency at fixed rates (an open-loop generator: each request is sent at its scheduled time
   and timed from it, so a slow answer cannot hide the ones queued behind it; target p99 <= 50 ms at
   200 req/s);
3. at 2x the measured capacity, open loop: useful throughput (200s) >= 90% of capacity, the rest 503
   within 100 ms, ``/healthz`` under 100 ms;
4. a normal call's latency while 50 idle and 10 slow-header connections are open (<= 100 ms added);
5. worker RSS after 10,000 different patients (<= 150 MB, and flat).

Traffic goes to 127.0.0.1 only; every phase is bounded in requests and time.

Options: ``--only 13`` runs phases 1 and 3 (``F``: overload on the floor too), ``--alg RS384`` signs with
RSA (an ES384 signature costs the service about 1 ms of CPU to verify, more than a typical call's rules),
``--keep-logs DIR`` keeps the servers' logs; ``BENCH_ENV='{"LUPUS_CDS_THREADS": "4"}'`` sets environment
variables of both servers (to compare settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_hook_call as hookbench  # noqa: E402

SERVICE = hookbench.SERVICE
PATH = f"/cds-services/{SERVICE}"
ISS = "https://bench-ehr.example.org"
VARIANTS = 64

WRK_SCRIPT = r"""
-- One token per request (each is accepted once), bodies in turn; a thread takes every n-th token.
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local threads, tokens_path, bodies_prefix, nbodies = tonumber(args[1]), args[2], args[3], tonumber(args[4])
  tokens, bodies, n = {}, {}, 0
  local i = 0
  for line in io.lines(tokens_path) do
    if i % threads == id then tokens[#tokens + 1] = line end
    i = i + 1
  end
  for b = 0, nbodies - 1 do
    local f = io.open(bodies_prefix .. b .. ".json", "rb")
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
end
function request()
  n = n + 1
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = "Bearer " .. tokens[((n - 1) % #tokens) + 1]}
  return wrk.format("POST", nil, headers, bodies[((n - 1) % #bodies) + 1])
end
function done(summary, latency, requests)
  io.write(string.format("WRK {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, \"errors\": %d}\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


# --- the floor app (a worker of the second server imports this module) ------------------------------------

def floor_app() -> Any:
    """The floor: Flask, served like ``serve`` (same adapter and limits, JSON logs), parsing with orjson."""
    import orjson
    from flask import Flask, Response, request

    from cds_hooks import config, logs
    from cds_hooks.serving import RSGIApp, ServeLimits

    cfg = config.load({})
    logs.configure(cfg["LUPUS_CDS_LOG_FORMAT"], str(cfg["LUPUS_CDS_LOG_LEVEL"]))
    app = Flask("floor")

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        orjson.loads(request.get_data())
        return Response(orjson.dumps({"cards": []}), mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return RSGIApp(app, ServeLimits.from_config(cfg), route_of=lambda path: path)


# --- set-up -------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Signer:
    """The benchmark's CDS client: a key (ES384 by default, as CDS Hooks recommends; or RS384), its
    trusted-clients file, and JWTs for one audience."""

    def __init__(self, directory: Path, alg: str = "ES384"):
        from joserfc.jwk import ECKey, RSAKey

        self.alg = alg
        self.key = (ECKey.generate_key("P-384", parameters={"kid": "bench-1"}) if alg == "ES384"
                    else RSAKey.generate_key(2048, parameters={"kid": "bench-1"}))
        public = self.key.as_dict(private=False)
        public.update(alg=alg, use="sig")
        self.clients_file = directory / "clients.json"
        self.clients_file.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public]}}]}))

    def tokens(self, audience: str, count: int) -> list[str]:
        from joserfc import jwt

        now = int(time.time())
        header = {"alg": self.alg, "typ": "JWT", "kid": "bench-1"}
        return [jwt.encode(header, {"iss": ISS, "aud": audience, "iat": now, "exp": now + 1800,
                                    "jti": uuid.uuid4().hex}, self.key, algorithms=[self.alg])
                for _ in range(count)]


def patient_bodies(count: int, start: int = 0) -> list[bytes]:
    """``count`` typical requests, each for another patient (ids in every resource and reference)."""
    template = json.dumps(hookbench.patient_request(labs_per_code=21, spacing_days=35)).encode()
    marker = hookbench.PATIENT_ID.encode()
    return [template.replace(marker, b"bench-p%d" % n) for n in range(start, start + count)]


class Server:
    def __init__(self, kind: str, workdir: Path, signer: Signer):
        self.kind, self.port = kind, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LUPUS_CDS_CLIENTS": str(signer.clients_file),
               "XDG_DATA_HOME": str(workdir / f"data-{kind}"), "PYTHONPATH": f"{HERE}:{ROOT}"}
        for name in [n for n in env if n.startswith("LUPUS_CDS_") and n != "LUPUS_CDS_CLIENTS"]:
            env.pop(name)  # the defaults, whatever the caller's environment says
        env.update(json.loads(os.environ.get("BENCH_ENV", "{}")))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if kind == "serve":
            command = [str(Path(sys.executable).parent / "lupus-cds"), "serve", "--port", str(self.port)]
        else:
            command = [sys.executable, "-c", "from cds_hooks.server import build_server; "
                       f"build_server('127.0.0.1', {self.port}, target='bench_http:floor_app').serve()"]
        self.log = open(workdir / f"{kind}.log", "wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.kind} exited; see its log")
            try:
                if http_get(self.port, "/healthz")[0] == 200 and len(self.worker_pids()) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{self.kind} did not answer in {seconds} s")

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid:
                    pids.append(int(entry.name))
        return sorted(pids)

    def worker_rss_mb(self) -> list[float]:
        sizes = []
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


# --- HTTP clients -------------------------------------------------------------------------------------------

def http_request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 timeout: float = 10) -> tuple[int, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer.split(b"\r\n\r\n", 1)[-1]


def http_get(port: int, path: str) -> tuple[int, bytes]:
    return http_request(port, "GET", path, timeout=5)


def raw_hook_request(port: int, body: bytes, token: str) -> bytes:
    return (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _exchange(port: int, payload: bytes, timeout: float, sent: list[float] | None = None) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(payload)
        if sent is not None:
            sent.append(asyncio.get_running_loop().time())
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), timeout)
        return int(status_line.split(b" ", 2)[1])
    finally:
        writer.close()


def open_loop(port: int, rate: float, seconds: float, payload_of, probe: bool = False) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``seconds``, each at its scheduled time whatever the answers
    to earlier ones (open loop), each timed from its scheduled time. With ``probe``, GET /healthz every
    100 ms alongside."""
    count = int(rate * seconds)

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.3
        results: list[tuple[int, float]] = []
        probes: list[float] = []
        lags: list[float] = []

        async def one(index: int) -> None:
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            sent: list[float] = []
            try:
                status = await _exchange(port, payload_of(index), 10, sent)
                lags.append(sent[0] - scheduled)
            except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                status = 0
            results.append((status, loop.time() - scheduled))

        async def probing() -> None:
            for index in range(int(seconds * 10)):
                await asyncio.sleep(max(0.0, start + index / 10 - loop.time()))
                began = loop.time()
                try:
                    await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
, 10)
                except (TimeoutError, OSError):
                    pass
                probes.append(loop.time() - began)

        tasks = [one(index) for index in range(count)] + ([probing()] if probe else [])
        await asyncio.gather(*tasks)
        return {"results": results, "probes": probes, "elapsed": loop.time() - start, "lags": lags}

    try:  # the generator must not be what limits the rate: uvloop when it is installed
        import uvloop

        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def wrk(server: Server, tokens_file: Path, bodies_prefix: Path, seconds: int, connections: int) -> dict[str, Any]:
    script = tokens_file.parent / "pool.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
               "-s", str(script), server.base + PATH, "--", "2", str(tokens_file), str(bodies_prefix),
               str(VARIANTS)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK "))
    result = json.loads(line[4:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


# --- the phases ---------------------------------------------------------------------------------------------

def saturation(servers: dict[str, Server], signer: Signer, workdir: Path, seconds: int,
               rounds: int = 3) -> dict[str, float]:
    """wrk on each server in turn, ``rounds`` times, each run ``seconds`` long: on a shared machine the
    other load drifts, and alternating short runs puts both servers under the same drift. Medians."""
    bodies_prefix = workdir / "body-"
    for n, body in enumerate(patient_bodies(VARIANTS)):
        (workdir / f"body-{n}.json").write_bytes(body)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in servers}
    length = max(3, seconds // rounds * 2)
    for round_number in range(rounds + 1):  # round 0 warms both up (its tokens are never reused)
        for kind, server in servers.items():
            tokens_file = workdir / f"tokens-{kind}.txt"
            tokens_file.write_text("\n".join(signer.tokens(server.base + PATH, length * 800 + 1000)) + "\n")
            result = wrk(server, tokens_file, bodies_prefix, 3 if round_number == 0 else length, 16)
            if round_number:
                runs[kind].append(result)
    rates = {}
    for kind, results in runs.items():
        rates[kind] = statistics.median(result["rps"] for result in results)
        each = ", ".join(f"{result['rps']:.0f}" for result in results)
        print(f"  {kind:6} {rates[kind]:7.1f} req/s  (median of {rounds} runs of {length} s: {each}; non-2xx "
              f"{sum(r['non2xx'] for r in results)}, socket errors {sum(r['errors'] for r in results)})",
              flush=True)
    ratio = rates["serve"] / rates["floor"]
    print(f"  ratio serve/floor {ratio:.2f}x   target >= 0.8x   {'MET' if ratio >= 0.8 else 'NOT MET'}")
    return rates


def fixed_rates(server: Server, signer: Signer, rates: list[float], seconds: int) -> None:
    bodies = patient_bodies(VARIANTS, start=1000)
    for rate in rates:
        tokens = signer.tokens(server.base + PATH, int(rate * seconds))
        outcome = open_loop(server.port, rate, seconds,
                            lambda i, tokens=tokens: raw_hook_request(server.port, bodies[i % len(bodies)],
                                                                      tokens[i]))
        latencies = [latency * 1000 for status, latency in outcome["results"] if status == 200]
        other = sorted({status for status, _ in outcome["results"]} - {200})
        verdict = ""
        if rate == 200:
            verdict = "MET" if percentile(latencies, 0.99) <= 50 else "NOT MET"
            verdict = f"   target p99 <= 50 ms   {verdict}"
        print(f"  {rate:5.0f} req/s: p50 {percentile(latencies, 0.5):6.1f} ms  p99 {percentile(latencies, 0.99):6.1f}"
              f" ms  ({len(latencies)} ok{', other statuses ' + str(other) if other else ''}){verdict}", flush=True)


def overload(server: Server, signer: Signer, capacity: float, seconds: int) -> None:
    rate = 2 * capacity
    bodies = patient_bodies(VARIANTS, start=2000)
    tokens = signer.tokens(server.base + PATH, int(rate * seconds))
    outcome = open_loop(server.port, rate, seconds,
                        lambda i: raw_hook_request(server.port, bodies[i % len(bodies)], tokens[i]), probe=True)
    results = outcome["results"]
    ok = [latency for status, latency in results if status == 200]
    refused = [latency * 1000 for status, latency in results if status == 503]
    other = len(results) - len(ok) - len(refused)
    useful = len(ok) / outcome["elapsed"]
    probes = [probe * 1000 for probe in outcome["probes"]]
    useful_met = "MET" if useful >= 0.9 * capacity else "NOT MET"
    refused_met = "MET" if refused and percentile(refused, 0.99) <= 100 else "NOT MET"
    print(f"  offered {rate:.0f} req/s for {seconds} s: {len(ok)} answered 200 = {useful:.1f} req/s useful = "
          f"{useful / capacity:.0%} of capacity   target >= 90%   {useful_met}")
    print(f"  {len(refused)} answered 503: p50 {percentile(refused, 0.5):.1f} ms  "
          f"p99 {percentile(refused, 0.99):.1f} ms   target within 100 ms   {refused_met}   ({other} other/failed)")
    print(f"  /healthz during the burst: p50 {percentile(probes, 0.5):.1f} ms  max {max(probes):.1f} ms"
          f"   target < 100 ms   {'MET' if max(probes) < 100 else 'NOT MET'}", flush=True)
    lags = [lag * 1000 for lag in outcome["lags"]]
    print(f"  generator: request sent after its scheduled time by p50 {percentile(lags, 0.5):.1f} ms, "
          f"p99 {percentile(lags, 0.99):.1f} ms (the load generator's own delay, included above)")
    ok_ms = [latency * 1000 for latency in ok]
    print(f"  admitted calls: p50 {percentile(ok_ms, 0.5):.1f} ms  p99 {percentile(ok_ms, 0.99):.1f} ms")


def hostile_connections(server: Server, signer: Signer, calls: int = 30) -> None:
    bodies = patient_bodies(4, start=3000)
    tokens = iter(signer.tokens(server.base + PATH, 2 * calls + 4))

    def timed_calls() -> list[float]:
        times = []
        for n in range(calls):
            started = time.perf_counter()
            status, _ = http_request(server.port, "POST", PATH, bodies[n % 4],
                                     {"Authorization": f"Bearer {next(tokens)}"})
            assert status == 200, status
            times.append((time.perf_counter() - started) * 1000)
        return times

    baseline = timed_calls()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    for connection in slow:
        connection.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):  # one header byte every 0.2 s per connection
            for connection in slow:
                try:
                    connection.sendall(b"X")
                except OSError:
                    pass

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        hostile = timed_calls()
    finally:
        stop.set()
        dripper.join()
        for connection in idle + slow:
            connection.close()
    added = statistics.median(hostile) - statistics.median(baseline)
    print(f"  alone: p50 {statistics.median(baseline):.1f} ms  max {max(baseline):.1f} ms;  with 50 idle + 10 "
          f"slow-header connections: p50 {statistics.median(hostile):.1f} ms  max {max(hostile):.1f} ms")
    worst = max(hostile) - statistics.median(baseline)
    print(f"  added: p50 {added:+.1f} ms, worst {worst:+.1f} ms   target <= 100 ms   "
          f"{'MET' if worst <= 100 else 'NOT MET'}", flush=True)


def memory(server: Server, signer: Signer, patients: int) -> None:
    checkpoints = sorted({patients // 4, patients // 2, 3 * patients // 4, patients})
    print(f"  worker RSS at start: {', '.join(f'{mb:.0f}' for mb in server.worker_rss_mb())} MB", flush=True)
    template = json.dumps(hookbench.patient_request(labs_per_code=21, spacing_days=35)).encode()
    marker = hookbench.PATIENT_ID.encode()
    done = 0
    samples = []
    with ThreadPoolExecutor(4) as pool:
        for checkpoint in checkpoints:
            tokens = signer.tokens(server.base + PATH, checkpoint - done)

            def call(n: int, token: str) -> int:
                body = template.replace(marker, b"rss-p%d" % n)
                return http_request(server.port, "POST", PATH, body, {"Authorization": f"Bearer {token}"})[0]

            statuses = list(pool.map(call, range(done, checkpoint), tokens))
            failed = sum(status != 200 for status in statuses)
            done = checkpoint
            rss = server.worker_rss_mb()
            samples.append(max(rss))
            print(f"  after {done:6d} patients: worker RSS {', '.join(f'{mb:.0f}' for mb in rss)} MB"
                  f"{f'  ({failed} not 200)' if failed else ''}", flush=True)
    growth = samples[-1] - samples[len(samples) // 2 - 1] if len(samples) > 1 else 0.0
    print(f"  largest worker {samples[-1]:.0f} MB   target <= 150 MB   {'MET' if samples[-1] <= 150 else 'NOT MET'};"
          f"  second half growth {growth:+.0f} MB (flat: a few MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load phase")
    parser.add_argument("--patients", type=int, default=10_000, help="patients for the memory phase")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only", default="12345", help="phases to run, e.g. 13")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs here")
    parser.add_argument("--alg", choices=("ES384", "RS384"), default="ES384",
                        help="the client's JWT algorithm (ES384 verification is the costlier)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        workdir = Path(directory)
        signer = Signer(workdir, args.alg)
        servers = {kind: Server(kind, workdir, signer) for kind in ("serve", "floor")}
        try:
            for server in servers.values():
                server.wait_ready()
            print(f"CPUs {os.cpu_count()}; workers per server {len(servers['serve'].worker_pids())}; JWTs {args.alg}; "
                  f"load average before: {open('/proc/loadavg').read().split()[:3]}")
            print("1. saturation (wrk, 16 connections, closed loop):", flush=True)
            rates = saturation(servers, signer, workdir, args.seconds)
            if "2" in args.only:
                print("2. latency at fixed rates (open loop), serve:", flush=True)
                fixed_rates(servers["serve"], signer, [100, 200], args.seconds)
            if "3" in args.only:
                print("3. overload at 2x the measured capacity (open loop), serve:", flush=True)
                overload(servers["serve"], signer, rates["serve"], args.seconds)
            if "F" in args.only:
                print("3f. overload at 2x the measured capacity (open loop), floor:", flush=True)
                overload(servers["floor"], signer, rates["floor"], args.seconds)
            if "4" in args.only:
                print("4. idle and slow-header connections, serve:", flush=True)
                hostile_connections(servers["serve"], signer)
            if not args.skip_memory and "5" in args.only:
                print(f"5. memory over {args.patients} different patients, serve:", flush=True)
                memory(servers["serve"], signer, args.patients)
            print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
        finally:
            for server in servers.values():
                server.stop()
            if args.keep_logs:
                for kind in servers:
                    (Path(args.keep_logs) / f"{kind}.log").write_bytes((workdir / f"{kind}.log").read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
