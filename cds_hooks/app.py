"""The Flask application factory: settings, plugins, blueprints, CORS and the one error handler."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import config as settings
from . import cors, logs, metrics
from .errors import (
    CDSHooksError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnknownService,
)
from .feedback_store import FeedbackStore
from .fetch import Fetcher, NoFetcher
from .issued_cards import IssuedCardLog
from .plugins import collect_services, plugin_manager
from .redis_state import RedisState
from .replay_store import replay_store_from_config
from .state import CDSHooks, json_response, state  # noqa: F401  (state, json_response: public here too)

log = logging.getLogger("cds_hooks")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(config: Mapping[str, Any] | None = None, *, plugins: Iterable[Any] | None = None,
               fetcher: Fetcher | None = None, authenticator: Any = None,
               clock: Callable[[], datetime] | None = None) -> Flask:
    """Build the CDS Hooks application.

    :param config: settings overriding the defaults and ``LUPUS_CDS_*`` environment variables.
    :param plugins: plugin modules/objects to register instead of the installed entry points.
    :param fetcher: how missing prefetch is obtained (default: SMART on FHIR client when available).
    :param authenticator: client-JWT verifier (default: built from ``LUPUS_CDS_CLIENTS``).
    :param clock: returns the evaluation instant; tests pin it.
    """
    app = Flask("cds_hooks")
    cfg = settings.load(config)
    app.config.update(cfg)
    app.config["MAX_CONTENT_LENGTH"] = cfg["LUPUS_CDS_MAX_BODY_BYTES"]
    logging.getLogger("cds_hooks").setLevel(cfg["LUPUS_CDS_LOG_LEVEL"])
    logs.configure(cfg["LUPUS_CDS_LOG_FORMAT"], cfg["LUPUS_CDS_LOG_LEVEL"])

    pm = plugin_manager(plugins)
    read_only = MappingProxyType(cfg)
    services = collect_services(pm, read_only)
    shared_state = RedisState.from_config(cfg)
    if authenticator is None:
        from .auth import ClientAuthenticator

        # Redis for replicas on many hosts, else a SQLite file every process of this host shares.
        replay_store = replay_store_from_config(cfg, shared_state)
        shared = {"replay_store": replay_store} if replay_store is not None else {}
        with _setting("LUPUS_CDS_CLIENTS"):
            authenticator = ClientAuthenticator.from_config(cfg, **shared)
    if fetcher is None:
        with _setting("LUPUS_CDS_SMART_CLIENTS"):
            fetcher = _default_fetcher(cfg)
    store = FeedbackStore(cfg["LUPUS_CDS_DATABASE_URL"])
    app.extensions["cds_hooks"] = CDSHooks(
        config=read_only, services=services, fetcher=fetcher, authenticator=authenticator,
        feedback_store=store, clock=clock or _utc_now, plugin_manager=pm, shared_state=shared_state,
        issued_cards=IssuedCardLog(store, cfg["LUPUS_CDS_ISSUED_CARDS_QUEUE"]))

    if cfg["LUPUS_CDS_ALLOW_UNSIGNED"]:
        log.warning("LUPUS_CDS_ALLOW_UNSIGNED is on: hook calls are accepted WITHOUT a client JWT. "
                    "Use this only in a sandbox with synthetic data.")

    from . import discovery, feedback, health, wellknown
    from . import services as service_endpoints

    logs.init_app(app)
    metrics.init_app(app, expose=cfg["LUPUS_CDS_METRICS"])
    app.register_blueprint(health.bp)
    app.register_blueprint(discovery.bp)
    app.register_blueprint(service_endpoints.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(wellknown.bp)
    if cfg["LUPUS_CDS_SMART_APP"]:
        from . import smart_launch

        app.extensions["cds_hooks"].smart_apps = smart_launch.init_app(app, pm, read_only, shared_state)
    cors.init_app(app)
    app.after_request(_protective_headers)
    app.register_error_handler(Exception, handle_error)
    return app


def _protective_headers(response: Response) -> Response:
    """Answers hold patient-specific advice: no cache (browser, proxy) may keep them, and no browser may
    read a JSON answer as anything else. A view that set its own caching (the public JWKS) keeps it."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@contextlib.contextmanager
def _setting(name: str) -> Iterator[None]:
    """A file named by setting ``name`` that cannot be used becomes a :class:`~cds_hooks.config.ConfigError`
    naming the setting (the message already names the file and the problem)."""
    try:
        yield
    except settings.ConfigError:
        raise
    except ValueError as exc:
        raise settings.ConfigError(name, str(exc)) from None


def check_configuration(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything :func:`create_app` checks in the settings, without starting anything (no database or
    Redis connection, no threads): each setting parsed, each file it names read, the plugins' settings
    validated. ``lupus-cds serve`` runs it before it starts the server, so a mistake is one line at the
    prompt rather than workers failing to boot.

    :raises ConfigError: naming the setting and the fix.
    """
    cfg = settings.load(config)
    with _setting("LUPUS_CDS_CLIENTS"):
        from .auth import load_clients

        if cfg.get("LUPUS_CDS_CLIENTS"):
            load_clients(cfg["LUPUS_CDS_CLIENTS"])
    with _setting("LUPUS_CDS_SMART_CLIENTS"):
        from .smart import load_smart_clients

        if cfg.get("LUPUS_CDS_SMART_CLIENTS"):
            load_smart_clients(cfg["LUPUS_CDS_SMART_CLIENTS"])
    collect_services(plugin_manager(), MappingProxyType(cfg))
    return cfg


def _default_fetcher(cfg: Mapping[str, Any]) -> Fetcher:
    try:
        from .fhir_client import FHIRFetcher
    except ImportError:
        return NoFetcher()
    return FHIRFetcher.from_config(cfg)


def handle_error(error: Exception) -> Response:
    """The one error handler: every failure becomes a status code and an ``OperationOutcome``."""
    if isinstance(error, HTTPException):
        mapped: CDSHooksError
        if error.code == 404:
            mapped = UnknownService("no such endpoint")
        elif error.code == 405:
            mapped = MethodNotAllowed(f"{request.method} is not allowed here")
            response = json_response(mapped.operation_outcome(), 405)
            if error.valid_methods:
                response.headers["Allow"] = ", ".join(error.valid_methods)
            return response
        elif error.code == 413:
            mapped = PayloadTooLarge("request body is larger than LUPUS_CDS_MAX_BODY_BYTES")
        elif error.code is not None and 400 <= error.code < 500:
            mapped = InvalidRequest(error.description)
            mapped.status_code = error.code
        else:
            return _internal_error(error)
        error = mapped
    if isinstance(error, CDSHooksError):
        if error.status_code == 401:
            detail = getattr(error, "detail", None)
            log.info("rejected client JWT: %s%s", getattr(error, "reason", "unauthorized"),
                     f" ({detail})" if detail else "")
            metrics.jwt_rejected(getattr(error, "reason", "unauthorized"))
        return json_response(error.operation_outcome(), error.status_code, error.headers())
    return _internal_error(error)


def _internal_error(error: Exception) -> Response:
    # Log where, not what: exception messages can carry request data (patient ids, tokens).
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    log.error("internal error %s at %s", type(error).__name__, where)
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "fatal", "code": "exception", "diagnostics": "internal error"}]}
    return json_response(outcome, 500)
