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
        None, "Path of the trusted-clients JSON file (`iss`, `jwks` or `jwks_url`, optional `tenant`, "
        "`fhir_servers`)."),
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
        "", "Comma-separated FHIR base URLs the service may call in unsigned sandbox mode "
        "(`LUPUS_CDS_ALLOW_UNSIGNED`), with the request's `fhirAuthorization`, the service's own SMART token "
        "or anonymously. Ignored otherwise: then only the calling client's `fhir_servers` are called."),
    "LUPUS_CDS_SMART_CLIENTS": (
        None, "Path of the SMART Backend Services JSON file (`servers`: `fhir_server`, `client_id`, "
        "`private_key` PEM path, `kid`, `alg`, `scope`, optional `token_endpoint`): the service's own "
        "registrations, used when the EHR sends no `fhirAuthorization`, for servers the caller may make the "
        "service call (a registration alone lets no caller reach a server). Public keys are served at "
        "`/.well-known/jwks.json`. See deploy/SMART.md."),
    "LUPUS_CDS_SMART_TOKEN_REFRESH_MARGIN": (
        60, "A cached backend-services access token is replaced this many seconds (at most half its "
        "lifetime) before it expires."),
    "LUPUS_CDS_WORKERS": (
        None, "Worker processes of `serve` (default: one per CPU; `--workers` wins). Every process shares the "
        "replay store, so all cores serve safely without Redis."),
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


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def parse_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def load(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Defaults, then every ``LUPUS_CDS_*`` environment variable, then ``overrides``."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {name: default for name, (default, _) in SETTINGS.items()}
    config.update({k: v for k, v in environ.items() if k.startswith(PREFIX)})
    if overrides:
        config.update(overrides)
    config["LUPUS_CDS_ALLOW_UNSIGNED"] = parse_bool(config["LUPUS_CDS_ALLOW_UNSIGNED"])
    config["LUPUS_CDS_DISCOVERY_REQUIRES_AUTH"] = parse_bool(config["LUPUS_CDS_DISCOVERY_REQUIRES_AUTH"])
    config["LUPUS_CDS_METRICS"] = parse_bool(config["LUPUS_CDS_METRICS"])
    config["LUPUS_CDS_ISSUED_CARDS_QUEUE"] = parse_int(config["LUPUS_CDS_ISSUED_CARDS_QUEUE"],
                                                       "LUPUS_CDS_ISSUED_CARDS_QUEUE")
    for name in ("LUPUS_CDS_JWT_MAX_LIFETIME", "LUPUS_CDS_JWT_LEEWAY", "LUPUS_CDS_MAX_BODY_BYTES",
                 "LUPUS_CDS_THREADS", "LUPUS_CDS_QUEUE"):
        config[name] = parse_int(config[name], name)
    if not config.get("LUPUS_CDS_DATABASE_URL"):
        config["LUPUS_CDS_DATABASE_URL"] = default_database_url()
    origins = config.get("LUPUS_CDS_CORS_ORIGINS") or ""
    if isinstance(origins, str):
        origins = [o.strip().rstrip("/") for o in origins.split(",") if o.strip()]
    config["LUPUS_CDS_CORS_ORIGINS"] = list(origins)
    if config.get("LUPUS_CDS_PUBLIC_URL"):
        config["LUPUS_CDS_PUBLIC_URL"] = str(config["LUPUS_CDS_PUBLIC_URL"]).rstrip("/")
    return config
