"""Settings: documented defaults (no secrets), overridden by ``LUPUS_CDS_*`` environment variables, then
by the mapping given to ``create_app(config=...)``.

Every setting keeps its environment-variable name as its config key, so the README's configuration
table, the environment and ``app.config`` all use one vocabulary. Plugins read their own
``LUPUS_CDS_*`` keys from the same mapping (``HookRequest.config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PREFIX = "LUPUS_CDS_"


def default_data_dir() -> Path:
    """Where the service keeps its files by default: ``$XDG_DATA_HOME/lupus-cds`` (``~/.local/share/...``)."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "lupus-cds"


def default_database_url() -> str:
    return f"sqlite:///{default_data_dir() / 'feedback.sqlite3'}"


#: name -> (default, description). The README's configuration table is generated from the same text.
SETTINGS: dict[str, tuple[Any, str]] = {
    "LUPUS_CDS_PUBLIC_URL": (
        None, "Base URL clients use to reach the service, e.g. `https://cds.example.org`. The JWT `aud` "
        "must equal `{PUBLIC_URL}/cds-services/{id}`. Default: `http://HOST:PORT` of `lupus-cds serve`, "
        "or the request's own host when unset."),
    "LUPUS_CDS_ALLOW_UNSIGNED": (
        False, "`1` accepts calls without a client JWT. Sandbox only: logs a warning at start."),
    "LUPUS_CDS_CLIENTS": (
        None, "Path of the trusted-clients JSON file (`iss`, `jwks` and/or `jwks_url`/`jwks_urls`, optional "
        "`sub`, `tenant`, `fhir_servers`; deploy/REGISTRATION.md)."),
    "LUPUS_CDS_JWT_MAX_LIFETIME": (3600, "Longest accepted client-JWT lifetime, `exp - iat`, in seconds."),
    "LUPUS_CDS_JWT_LEEWAY": (60, "Clock skew tolerated on `exp`/`iat`, in seconds."),
    "LUPUS_CDS_DATABASE_URL": (
        None, "SQLAlchemy URL of the feedback store. Default: SQLite at "
        "`$XDG_DATA_HOME/lupus-cds/feedback.sqlite3` (`~/.local/share/...`)."),
    "LUPUS_CDS_MAX_BODY_BYTES": (5 * 1024 * 1024, "Largest accepted request body; larger gets 413."),
    "LUPUS_CDS_CORS_ORIGINS": (
        "", "Comma-separated browser origins allowed to call the service (e.g. "
        "`https://sandbox.cds-hooks.org`); `*` allows any origin (no credentials). Empty: no CORS."),
    "LUPUS_CDS_DISCOVERY_REQUIRES_AUTH": (
        False, "`1` requires a client JWT on `GET /cds-services` too (it lists no patient data, so it is "
        "open by default)."),
    "LUPUS_CDS_LOG_LEVEL": ("INFO", "Python logging level."),
    "LUPUS_CDS_LOG_FORMAT": (
        "json", "`json`: one JSON object per log line with `request_id` and `hook_instance`; `text`: the "
        "same as plain lines; `none`: leave logging set-up to the host application. Logs never hold tokens, "
        "patient ids or resource content."),
    "LUPUS_CDS_REDIS_URL": (
        None, "Redis URL (`redis://` or `rediss://`, with password) for state shared by replicas: the "
        "client-JWT replay store (`jti`) and the backend-services token cache. Unset: the replay store is "
        "`LUPUS_CDS_REPLAY_DB` (shared by the processes of one host) and tokens are cached per process. When "
        "set and Redis is unreachable, client JWTs are refused (fail closed)."),
    "LUPUS_CDS_REPLAY_DB": (
        None, "Without `LUPUS_CDS_REDIS_URL`: the SQLite file where every process of this host records the "
        "client-JWT `jti` values it accepted, so a token replayed to another worker is refused. Default: "
        "`$XDG_DATA_HOME/lupus-cds/replay.sqlite3`, next to the default feedback database; it must be on a "
        "local disk. `memory`: in-process only, for ONE process (`serve` then refuses several workers)."),
    "LUPUS_CDS_REDIS_PREFIX": (
        "cds-hooks:", "Prefix of every Redis key (to share one Redis between services)."),
    "LUPUS_CDS_REDIS_TIMEOUT": (0.5, "Redis connect and read timeout, in seconds."),
    "LUPUS_CDS_METRICS": (True, "`0` turns off the Prometheus endpoint `GET /metrics`."),
    "LUPUS_CDS_ISSUED_CARDS_QUEUE": (
        10000, "Bound of the in-process queue of issued-card records (for `feedback-report`); when full, "
        "records are dropped and counted in `cds_issued_cards_dropped_total`. `0` records nothing."),
    "LUPUS_CDS_FHIR_BUDGET": (
        3.0, "Seconds for ALL FHIR fetching of one hook call (token requests included). Keys not obtained "
        "by then count as missing: 412 when required, else cards stating the gap."),
    "LUPUS_CDS_FHIR_TIMEOUT": (
        2.0, "Connect and per-read timeout of one FHIR or token request, in seconds (also capped by the "
        "time left of `LUPUS_CDS_FHIR_BUDGET`)."),
    "LUPUS_CDS_FHIR_MAX_PAGES": (
        10, "Pages read per prefetch key when following `next` links (the first page included); beyond "
        "that the key is used as incomplete, with the gap stated."),
    "LUPUS_CDS_FHIR_MAX_RESPONSE_BYTES": (
        10 * 1024 * 1024, "Largest FHIR response body accepted, in bytes; a larger one counts as a failure."),
    "LUPUS_CDS_FHIR_CONCURRENCY": (
        8, "FHIR requests in flight at once per FHIR server (base URL), per process (the queries of one hook "
        "call run concurrently). Each server has its own threads: one that is slow or never answers cannot "
        "take the fetch capacity of another."),
    "LUPUS_CDS_SANDBOX_FHIR_SERVERS": (
        "", "Comma-separated open FHIR base URLs (sandboxes). In unsigned sandbox mode "
        "(`LUPUS_CDS_ALLOW_UNSIGNED`) the service may call them, with the request's `fhirAuthorization`, the "
        "service's own SMART token or anonymously. With client JWTs only the calling client's `fhir_servers` "
        "are called, and those listed here are read anonymously when the EHR sends no token."),
    "LUPUS_CDS_SMART_CLIENTS": (
        None, "Path of the SMART Backend Services JSON file (`servers`: `fhir_server`, `client_id`, "
        "`private_key` PEM path, `kid`, `alg`, `scope`, optional `token_endpoint`): the service's own "
        "registrations, used when the EHR sends no `fhirAuthorization`, for servers the caller may make the "
        "service call (a registration alone lets no caller reach a server). Public keys are served at "
        "`/.well-known/jwks.json`. See deploy/SMART.md."),
    "LUPUS_CDS_SMART_TOKEN_REFRESH_MARGIN": (
        60, "A cached backend-services access token is replaced this many seconds (at most half its "
        "lifetime) before it expires."),
    "LUPUS_CDS_SMART_APP": (
        False, "`1` serves the plugins' SMART on FHIR apps under `/smart-apps/{id}/` (launch URL "
        "`/smart-apps/{id}/launch`) and lets cards carry `smart` links to them."),
    "LUPUS_CDS_SMART_APP_ISS": (
        "", "Comma-separated FHIR base URLs (`iss`) the SMART apps may be launched from. A launch from any "
        "other `iss` is refused before any request is made (no server-side request forgery). Empty: every "
        "launch is refused."),
    "LUPUS_CDS_SMART_APP_CLIENT_ID": (
        "lupus-cds", "The apps' OAuth `client_id` at the EHR's authorization server (a public client with "
        "PKCE)."),
    "LUPUS_CDS_SMART_APP_FRAME_ANCESTORS": (
        "'self'", "CSP `frame-ancestors` of the app pages: the EHR origins that may show them in an iframe, "
        "space-separated (e.g. `https://ehr.example.org`)."),
    "LUPUS_CDS_SMART_APP_SESSION_SECONDS": (
        3600, "Longest life of an app session, in seconds; it also ends when the EHR's access token expires."),
    "LUPUS_CDS_WORKERS": (
        None, "Worker processes of `serve` (default: one per CPU, or 1 when the SMART app is on without Redis, "
        "since its sessions live in one process; `--workers` wins). Every process shares the replay store, so all "
        "cores serve safely without Redis."),
    "LUPUS_CDS_THREADS": (
        8, "Threads per `serve` worker that run requests (hook calls wait on FHIR servers in them; at most 2 "
        "of them compute at once, so new requests and probes never wait long for the interpreter)."),
    "LUPUS_CDS_QUEUE": (
        8, "Requests per `serve` worker admitted to wait for a free thread. Past threads + queue, a request "
        "is answered `503` with `Retry-After` at once, before its body is read. `/healthz`, `/readyz` and "
        "`/metrics` do not count."),
    "LUPUS_CDS_BODY_TIMEOUT": (
        30.0, "Seconds a client has to send a request body once its headers arrived; slower is `408`. "
        "(Headers must arrive within 10 s, and idle connections close after 10 s.) A client waiting on the "
        "network holds no thread."),
}


#: the one list of boolean spellings every ``LUPUS_CDS_*`` switch accepts (any case; the README quotes it)
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

_BOOLEANS = ("LUPUS_CDS_ALLOW_UNSIGNED", "LUPUS_CDS_DISCOVERY_REQUIRES_AUTH", "LUPUS_CDS_METRICS",
             "LUPUS_CDS_SMART_APP")
_INTEGERS = ("LUPUS_CDS_JWT_MAX_LIFETIME", "LUPUS_CDS_JWT_LEEWAY", "LUPUS_CDS_MAX_BODY_BYTES",
             "LUPUS_CDS_ISSUED_CARDS_QUEUE", "LUPUS_CDS_FHIR_MAX_PAGES", "LUPUS_CDS_FHIR_MAX_RESPONSE_BYTES",
             "LUPUS_CDS_FHIR_CONCURRENCY", "LUPUS_CDS_THREADS", "LUPUS_CDS_QUEUE",
             "LUPUS_CDS_SMART_APP_SESSION_SECONDS")
_NUMBERS = ("LUPUS_CDS_REDIS_TIMEOUT", "LUPUS_CDS_FHIR_BUDGET", "LUPUS_CDS_FHIR_TIMEOUT",
            "LUPUS_CDS_SMART_TOKEN_REFRESH_MARGIN")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("json", "text", "none")


class ConfigError(ValueError):
    """A setting that cannot be used. The message is one line: the setting, what is wrong, how to fix it;
    never a password (database URLs are shown with theirs masked)."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


def parse_bool(value: Any, name: str = "setting") -> bool:
    """``value`` as a boolean: one of :data:`TRUE_WORDS` or :data:`FALSE_WORDS` (any case), else
    :class:`ConfigError` (a mistyped switch must not silently mean "off")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(name, f"{str(value)[:40]!r} is not a boolean: use one of {', '.join(TRUE_WORDS)} "
                            f"or {', '.join(FALSE_WORDS)}")


def parse_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{str(value)[:40]!r} is not a whole number") from None


def parse_number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{str(value)[:40]!r} is not a number (seconds, e.g. 2.5)") from None
    if not 0 <= number < float("inf"):
        raise ConfigError(name, f"{str(value)[:40]!r} must be a finite number, 0 or more")
    return number


def check_database_url(url: str) -> None:
    """:class:`ConfigError` unless ``url`` is an SQLAlchemy URL whose dialect and driver are installed.
    Connects to nothing: an unreachable database is not a configuration error (the service starts and
    reports it on ``/readyz``)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = "LUPUS_CDS_DATABASE_URL"
    hint = "e.g. sqlite:////var/lib/lupus-cds/feedback.sqlite3 or postgresql+psycopg://user:password@host/db"
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise ConfigError(name, f"not a database URL ({hint})") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except (sa.exc.NoSuchModuleError, ImportError):
        raise ConfigError(name, f"{shown}: unknown database type {parsed.get_backend_name()!r} ({hint})") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        extra = " (pip install 'lupus-cds[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
        suggestion = "postgresql+psycopg://..." if parsed.get_backend_name() == "postgresql" else hint
        raise ConfigError(name, f"{shown}: the database driver {parsed.get_driver_name()!r} is not installed; "
                                f"use {suggestion}{extra}") from None


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults, then every ``LUPUS_CDS_*`` environment variable, then ``overrides``.

    An empty environment variable counts as unset (its default applies).

    :raises ConfigError: a setting that is not of its kind (a boolean that is not one of the accepted
        spellings, a number that is not a number) or a database URL that cannot be used.
    """
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {name: default for name, (default, _) in SETTINGS.items()}
    config.update({k: v for k, v in environ.items() if k.startswith(PREFIX) and not (k in SETTINGS and v == "")})
    if overrides:
        config.update(overrides)
    for name in _BOOLEANS:
        config[name] = parse_bool(config[name], name)
    allowed_iss = config.get("LUPUS_CDS_SMART_APP_ISS") or ""
    if isinstance(allowed_iss, str):
        allowed_iss = [url.strip() for url in allowed_iss.split(",") if url.strip()]
    config["LUPUS_CDS_SMART_APP_ISS"] = list(allowed_iss)
    for name in _INTEGERS:
        config[name] = parse_int(config[name], name)
    for name in _NUMBERS:
        config[name] = parse_number(config[name], name)
    level = str(config["LUPUS_CDS_LOG_LEVEL"]).strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigError("LUPUS_CDS_LOG_LEVEL", f"{level[:40]!r} is not a level: use one of {', '.join(_LOG_LEVELS)}")
    config["LUPUS_CDS_LOG_LEVEL"] = level
    log_format = str(config["LUPUS_CDS_LOG_FORMAT"]).strip().lower()
    if log_format not in _LOG_FORMATS:
        raise ConfigError("LUPUS_CDS_LOG_FORMAT", f"{log_format[:40]!r} is not a format: use one of "
                                                  f"{', '.join(_LOG_FORMATS)}")
    config["LUPUS_CDS_LOG_FORMAT"] = log_format
    if not config.get("LUPUS_CDS_DATABASE_URL"):
        config["LUPUS_CDS_DATABASE_URL"] = default_database_url()
    else:
        check_database_url(str(config["LUPUS_CDS_DATABASE_URL"]))
    origins = config.get("LUPUS_CDS_CORS_ORIGINS") or ""
    if isinstance(origins, str):
        origins = [o.strip().rstrip("/") for o in origins.split(",") if o.strip()]
    config["LUPUS_CDS_CORS_ORIGINS"] = list(origins)
    if config.get("LUPUS_CDS_PUBLIC_URL"):
        config["LUPUS_CDS_PUBLIC_URL"] = str(config["LUPUS_CDS_PUBLIC_URL"]).rstrip("/")
    return config
