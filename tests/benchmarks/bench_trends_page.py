"""Benchmark of the lab and steroid timeline page (the SMART app behind the cards) for a patient with two
years of daily labs: 5,110 lab Observations (potassium twice a day; CK, magnesium in mg/dL and in mmol/L,
total and ionized calcium once a day), plus the steroid courses, pulse and symptoms of the test patient.

Not a pytest test (run it as a script)::

    .venv/bin/python tests/benchmarks/bench_trends_page.py [--runs 15]

Numbers, each a median (and the slowest run) over ``--runs`` requests:

- **page request, server time**: ``GET /smart-apps/trends/?s=...`` through the Flask app as a WSGI server
  calls it, with an open session: the FHIR reads (every page of every query, the labs in 6 pages of
  1,000) answered from memory, as the bytes a FHIR server would send, so their JSON parsing is counted
  but not the FHIR server's own time; then building the series, the SVG charts and the tables. This is
  the target: under 300 ms.
- **render only**: ``plugin.trends.render`` on the parsed resources (FHIR resources in, HTML out).
- **baseline**: the standard library's ``json.loads`` of the same FHIR responses, measured in the same run,
  so that a machine shared with other work can be told from a slow page (the page's time is also given as
  a multiple of it), and the page's CPU time in this process.

Exit status 1 when the page request's median misses the target.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import trends_data  # noqa: E402

from cds_hooks import create_app, jsonio, smart_launch  # noqa: E402
from cds_hooks.app_sessions import digest  # noqa: E402
from cds_hooks.apps import AppPage  # noqa: E402
from plugin import hooks, trends  # noqa: E402

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FHIR = "https://fhir.bench.example/fhir"
TARGET_MS = 300.0
PAGE_SIZE = 1000


def searchset(resources: list[dict], next_url: str | None) -> bytes:
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
              "entry": [{"fullUrl": f"{FHIR}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                        for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return json.dumps(bundle).encode()


class MemoryFHIR:
    """The FHIR server's answers as bytes, by resource type (labs paged by 1,000 with ``next`` links)."""

    def __init__(self, bundle: dict):
        by_type: dict[str, list[dict]] = {}
        for entry in bundle["entry"]:
            by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
        self.patient = json.dumps(by_type["Patient"][0]).encode()
        labs = by_type.get("Observation", [])
        pages = [labs[i:i + PAGE_SIZE] for i in range(0, len(labs), PAGE_SIZE)] or [[]]
        self.lab_pages = [searchset(page, f"{FHIR}/Observation?_page={n + 1}" if n + 1 < len(pages) else None)
                          for n, page in enumerate(pages)]
        self.others = {kind: searchset(by_type.get(kind, []), None) for kind in
                       ("Condition", "MedicationRequest", "MedicationStatement", "MedicationAdministration")}
        self.empty = searchset([], None)
        self.observations = len(labs)

    def get(self, http, url: str, token: str, deadline: float):
        parts = urlsplit(url)
        kind = parts.path.rsplit("/fhir/", 1)[-1].split("/")[0]
        query = parse_qs(parts.query)
        if kind == "Patient":
            body = self.patient
        elif kind == "Observation" and "_page" in query:
            body = self.lab_pages[int(query["_page"][0])]
        elif kind == "Observation":
            body = self.lab_pages[0] if "2157-6" in parts.query else self.empty
        else:
            body = self.others[kind]
        return 200, jsonio.loads(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.INFO)

    bundle = trends_data.daily_patient(NOW)
    fhir = MemoryFHIR(bundle)
    app = create_app({"LUPUS_CDS_SMART_APP": True, "LUPUS_CDS_SMART_APP_ISS": FHIR, "LUPUS_CDS_LOG_FORMAT": "none",
                      "LUPUS_CDS_PUBLIC_URL": "https://cds.bench.example", "LUPUS_CDS_METRICS": False,
                      "LUPUS_CDS_DATABASE_URL": "sqlite://"}, plugins=[hooks], clock=lambda: NOW)
    smart_launch._get = fhir.get  # the FHIR server answers from memory
    browser, handle = "b" * 43, "h" * 22
    app.extensions["smart_apps"].store.put("session:" + digest(browser, handle), {
        "app": "trends", "iss": FHIR, "access_token": "bench", "patient": trends_data.PATIENT_ID,
        "need_patient_banner": True, "app_context": "view=ck", "expires": NOW.timestamp() + 10 ** 6}, 10 ** 6)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/smart-apps/trends/", "QUERY_STRING": f"s={handle}",
               "SERVER_NAME": "cds.bench.example", "SERVER_PORT": "443", "wsgi.url_scheme": "https",
               "HTTP_COOKIE": f"{smart_launch.COOKIE}={browser}", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1"}

    def request() -> tuple[float, int, int, float]:
        status: list[str] = []
        started, cpu = time.perf_counter(), time.process_time()
        body = b"".join(app.wsgi_app(dict(environ), lambda s, h, e=None: status.append(s)))
        return ((time.perf_counter() - started) * 1000, int(status[0].split()[0]), len(body),
                (time.process_time() - cpu) * 1000)

    responses = [fhir.patient, *fhir.lab_pages, *fhir.others.values()]

    def baseline() -> float:
        started = time.perf_counter()
        for body in responses:
            json.loads(body)
        return (time.perf_counter() - started) * 1000

    elapsed, status, size, _ = request()  # warm-up: imports, value sets, first-use caches
    assert status == 200, status
    page_ms, cpu_ms, json_ms = [], [], []
    for _ in range(args.runs):  # in turn, so both see the same load
        wall, _, _, cpu = request()
        page_ms.append(wall)
        cpu_ms.append(cpu)
        json_ms.append(baseline())

    resources = {"patient": (json.loads(fhir.patient),),
                 "labs": tuple(r for p in fhir.lab_pages for r in (e["resource"] for e in json.loads(p)["entry"])),
                 "symptoms": ()}
    for key, kind in (("conditions", "Condition"), ("medicationRequests", "MedicationRequest"),
                      ("medicationStatements", "MedicationStatement"),
                      ("medicationAdministrations", "MedicationAdministration")):
        resources[key] = tuple(e["resource"] for e in json.loads(fhir.others[kind]).get("entry", []))
    page = AppPage(trends_data.PATIENT_ID, resources, NOW, view="ck", config=MappingProxyType({}))
    render_ms = []
    for _ in range(args.runs):
        started = time.perf_counter()
        trends.render(page)
        render_ms.append((time.perf_counter() - started) * 1000)

    median = statistics.median(page_ms)
    print(f"patient: {fhir.observations:,} lab Observations over two years (labs read in {len(fhir.lab_pages)} "
          f"pages of {PAGE_SIZE:,}); page {size / 1e6:.1f} MB of HTML")
    print(f"page request, server time: median {median:.0f} ms, slowest {max(page_ms):.0f} ms "
          f"(first request {elapsed:.0f} ms)   target < {TARGET_MS:.0f} ms: "
          f"{'met' if median < TARGET_MS else 'MISSED'}")
    print(f"render only (resources in, HTML out): median {statistics.median(render_ms):.0f} ms, "
          f"slowest {max(render_ms):.0f} ms")
    loads = statistics.median(json_ms)
    print(f"baseline: json.loads of the same FHIR responses ({sum(map(len, responses)) / 1e6:.1f} MB) median "
          f"{loads:.0f} ms; page = {median / loads:.1f} x json.loads; page CPU time in this process: median "
          f"{statistics.median(cpu_ms):.0f} ms")
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
