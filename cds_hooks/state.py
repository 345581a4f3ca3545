"""What the request-path modules share: the per-app :class:`CDSHooks` state and the JSON response helper.

It lives apart from :mod:`cds_hooks.app` so that the blueprints (discovery, services, feedback, health,
wellknown) import nothing from the app factory, which imports them: no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from flask import Response, current_app, request

from . import jsonio
from .feedback_store import FeedbackStore
from .fetch import Fetcher
from .models import ServiceDefinition


@dataclass
class CDSHooks:
    """Everything the blueprints need, kept in ``app.extensions["cds_hooks"]``."""

    config: Mapping[str, Any]
    services: dict[tuple[str, str], ServiceDefinition]
    fetcher: Fetcher
    authenticator: Any
    feedback_store: FeedbackStore
    clock: Callable[[], datetime]
    plugin_manager: Any = None
    by_id: dict[str, dict[str, ServiceDefinition]] = field(default_factory=dict)
    #: Redis-backed state shared by replicas (:mod:`cds_hooks.redis_state`), or None
    shared_state: Any = None
    #: records issued cards for feedback reports (:mod:`cds_hooks.issued_cards`)
    issued_cards: Any = None
    #: app id -> the plugins' SMART apps, when ``LUPUS_CDS_SMART_APP`` is on (:mod:`cds_hooks.smart_launch`)
    smart_apps: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for (service_id, hook), service in self.services.items():
            self.by_id.setdefault(service_id, {})[hook] = service

    def audience(self, path: str) -> str:
        """The exact URL a client JWT's ``aud`` must name for ``path`` (SEC-8)."""
        base = self.config.get("LUPUS_CDS_PUBLIC_URL") or request.url_root.rstrip("/")
        return base + path

    def smart_app_urls(self) -> Mapping[str, str]:
        """App id -> launch URL of each SMART app served (what cards' ``smart`` links point at)."""
        if not self.smart_apps:
            return _NO_APPS
        return MappingProxyType({app_id: self.audience(f"/smart-apps/{app_id}/launch") for app_id in self.smart_apps})


_NO_APPS: Mapping[str, str] = MappingProxyType({})


def state() -> CDSHooks:
    return current_app.extensions["cds_hooks"]


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(jsonio.dumps(body), status=status,
                    mimetype="application/json", headers=dict(headers or {}))
