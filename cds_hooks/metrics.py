"""Prometheus metrics, served at ``GET /metrics``.

What is counted (all names start with ``cds_``; label values are bounded: unknown service ids become
``unknown``, free text never becomes a label)::

    cds_request_duration_seconds{endpoint,service,hook}      histogram of every request's latency
    cds_requests_total{endpoint,service,hook,status}         requests by HTTP status
    cds_cards_total{service,hook,topic,indicator}            cards returned (topic = card.source.topic.code)
    cds_feedback_total{service,topic,outcome}                feedback items received
    cds_fhir_fetch_duration_seconds{outcome}                 FHIR fetches by the service (observe_fetch)
    cds_fhir_fetch_errors_total{outcome}                     failed FHIR fetches (outcome != "ok")
    cds_jwt_rejections_total{reason}                         client JWTs refused (``Unauthorized.reason``)
    cds_issued_cards_dropped_total{why}                      issued-card records not written (queue full...)

Under ``lupus-cds serve`` every worker is a process with its own counters: ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, each worker writes its values there, and
``/metrics`` merges them all (only counters and histograms: a dead worker's counts rightly stay).
``prometheus_client`` decides at import time whether it runs in that mode, so this module imports it
only when the first metric is touched (in the worker, after the variable is set).
"""

from __future__ import annotations

import os
import re
import threading
import time
from types import SimpleNamespace
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

bp = Blueprint("metrics", __name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")
_lock = threading.Lock()
_metrics: SimpleNamespace | None = None


def _m() -> SimpleNamespace:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                from prometheus_client import Counter, Histogram

                _metrics = SimpleNamespace(
                    request_seconds=Histogram(
                        "cds_request_duration_seconds", "Time to answer, by endpoint, service and hook",
                        ["endpoint", "service", "hook"], buckets=_LATENCY_BUCKETS),
                    requests=Counter("cds_requests_total", "Requests answered, by HTTP status",
                                     ["endpoint", "service", "hook", "status"]),
                    cards=Counter("cds_cards_total", "Cards returned, by source.topic.code and indicator",
                                  ["service", "hook", "topic", "indicator"]),
                    feedback=Counter("cds_feedback_total", "Feedback items received, by card topic, outcome",
                                     ["service", "topic", "outcome"]),
                    fetch_seconds=Histogram("cds_fhir_fetch_duration_seconds",
                                            "Time of FHIR fetches made by the service, by outcome",
                                            ["outcome"], buckets=_LATENCY_BUCKETS),
                    fetch_errors=Counter("cds_fhir_fetch_errors_total", "Failed FHIR fetches, by outcome",
                                         ["outcome"]),
                    jwt_rejections=Counter("cds_jwt_rejections_total", "Client JWTs refused, by reason",
                                           ["reason"]),
                    issued_dropped=Counter("cds_issued_cards_dropped_total",
                                           "Issued-card records not written to the database", ["why"]),
                )
    return _metrics


def label(value: Any, limit: int = 80) -> str:
    """A bounded, printable label value."""
    return _UNSAFE.sub("_", str(value if value is not None else ""))[:limit]


# --- functions other modules call ----------------------------------------------------------------------

def observe_fetch(seconds: float, outcome: str = "ok") -> None:
    """Record one FHIR fetch: ``outcome`` is ``ok`` or a short error kind (``timeout``, ``unauthorized``,
    ``bad-response``, ``error``...). Anything but ``ok`` also counts as an error."""
    metrics = _m()
    outcome = label(outcome, 40) or "ok"
    metrics.fetch_seconds.labels(outcome).observe(seconds)
    if outcome != "ok":
        metrics.fetch_errors.labels(outcome).inc()


def cards_returned(service_id: str, hook: str, cards: list[dict[str, Any]]) -> None:
    metrics = _m()
    for card in cards:
        topic = ((card.get("source") or {}).get("topic") or {}).get("code")
        metrics.cards.labels(label(service_id), label(hook), label(topic) or "none",
                             label(card.get("indicator"), 20)).inc()


def feedback_received(service_id: str, outcome: str, topic: str | None) -> None:
    _m().feedback.labels(label(service_id), label(topic) or "unknown", label(outcome, 20)).inc()


def jwt_rejected(reason: str) -> None:
    # Reasons are fixed phrases chosen by the verifier; cut at ':' in case one appends a detail.
    _m().jwt_rejections.labels(label(str(reason).split(":", 1)[0].strip(), 60) or "unauthorized").inc()


def issued_cards_dropped(count: int, why: str) -> None:
    _m().issued_dropped.labels(label(why, 20)).inc(count)


# --- the Flask side ------------------------------------------------------------------------------------

def init_app(app: Flask, expose: bool = True) -> None:
    """Time every request; serve ``/metrics`` when ``expose``."""
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    if expose:
        app.register_blueprint(bp)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe_request(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is None:
        return response
    endpoint = request.endpoint or "unmatched"
    service = ""
    service_id = (request.view_args or {}).get("service_id")
    if service_id is not None:
        # Only ids the app serves become labels: a scan of random URLs must not grow the label set.
        known = current_app.extensions["cds_hooks"].by_id
        service = service_id if service_id in known else "unknown"
    hook = g.get("cds_hook") or ""
    metrics = _m()
    elapsed = time.perf_counter() - started
    metrics.request_seconds.labels(endpoint, label(service), label(hook)).observe(elapsed)
    metrics.requests.labels(endpoint, label(service), label(hook), str(response.status_code)).inc()
    return response


def registry() -> Any:
    """The registry to expose: every worker's files in multiprocess mode, else this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    return REGISTRY


@bp.get("/metrics")
def expose_metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    _m()  # so that a fresh worker lists every metric, at zero
    return Response(generate_latest(registry()), mimetype=None, content_type=CONTENT_TYPE_LATEST)
