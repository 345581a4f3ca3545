"""``GET /.well-known/jwks.json``: the public keys the service signs its SMART Backend Services client
assertions with, so an EHR's authorization server can register the service by URL (``jwks_uri``)
instead of by a copied key (see :mod:`cds_hooks.smart`).

The keys come from the app's fetcher when it has backend-services registrations, else from
``LUPUS_CDS_SMART_CLIENTS`` directly (an app built with another fetcher still publishes its keys).
Without registrations the set is empty. Only public parts are ever served.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from .state import json_response, state

bp = Blueprint("wellknown", __name__)

_CACHE_KEY = "cds_hooks_jwks"


def public_jwks() -> dict[str, Any]:
    cached = current_app.extensions.get(_CACHE_KEY)
    if cached is None:
        cds = state()
        from_fetcher = getattr(cds.fetcher, "public_jwks", None)
        if callable(from_fetcher):
            cached = from_fetcher()
        elif cds.config.get("LUPUS_CDS_SMART_CLIENTS"):
            from .smart import BackendServices

            cached = BackendServices.from_file(cds.config["LUPUS_CDS_SMART_CLIENTS"]).public_jwks()
        else:
            cached = {"keys": []}
        current_app.extensions[_CACHE_KEY] = cached
    return cached


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    # Short public caching: authorization servers poll this, and a rotated key must show up soon.
    return json_response(public_jwks(), headers={"Cache-Control": "public, max-age=300"})
