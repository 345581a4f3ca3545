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


def default_database_url() -> str:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{data_home / 'lupus-cds' / 'feedback.sqlite3'}"


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
    for name in ("LUPUS_CDS_JWT_MAX_LIFETIME", "LUPUS_CDS_JWT_LEEWAY", "LUPUS_CDS_MAX_BODY_BYTES"):
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
