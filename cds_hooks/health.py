"""Probes for orchestrators and load balancers.

* ``GET /healthz`` — liveness: the process answers HTTP. It checks nothing else, so a database outage
  never makes Kubernetes restart every replica at once.
* ``GET /readyz`` — readiness: the database answers, and Redis does when ``LUPUS_CDS_REDIS_URL`` is set.
  503 otherwise, so the replica is taken out of the load balancer until its dependencies are back.

Bodies name each check and ``ok``/``unavailable`` only: error text could carry a URL with a password.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from .state import json_response, state

bp = Blueprint("health", __name__)
log = logging.getLogger("cds_hooks.health")


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


@bp.get("/readyz")
def readyz() -> Response:
    cds = state()
    checks = {"database": _check("database", cds.feedback_store.ping)}
    shared = getattr(cds, "shared_state", None)
    if shared is not None:
        checks["redis"] = _check("redis", shared.ping)
    ready = all(result == "ok" for result in checks.values())
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                         200 if ready else 503, headers={"Cache-Control": "no-store"})


def _check(name: str, ping) -> str:
    try:
        ping()
    except Exception as exc:
        log.warning("readiness: %s unreachable (%s)", name, type(exc).__name__)
        return "unavailable"
    return "ok"
