"""``GET /cds-services``: the discovery document, built from the registered services (DISC-1..8)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .state import json_response, state

bp = Blueprint("discovery", __name__)


@bp.get("/cds-services")
@bp.get("/cds-services/")  # the same document: clients and people add the slash, and a 404 helps nobody
def discover() -> Response:
    cds = state()
    if cds.config["LUPUS_CDS_DISCOVERY_REQUIRES_AUTH"] and not cds.config["LUPUS_CDS_ALLOW_UNSIGNED"]:
        cds.authenticator.verify(request.headers.get("Authorization"), [cds.audience("/cds-services")])
    services = [service.discovery_entry() for service in cds.services.values()]
    return json_response({"services": services})
