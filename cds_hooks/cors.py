"""Cross-origin access for browser-based CDS clients such as the CDS Hooks Sandbox (SEC-13).

Origins come from an allowlist (``LUPUS_CDS_CORS_ORIGINS``); ``*`` is honoured but never together with
credentials. Preflight (``OPTIONS``) works on the discovery, service and feedback URLs.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def init_app(app: Flask) -> None:
    origins = list(app.config.get("LUPUS_CDS_CORS_ORIGINS") or [])

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or not origins:
            return response
        if "*" in origins:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin.rstrip("/") in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.vary.add("Origin")
        else:
            return response
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response
