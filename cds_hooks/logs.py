"""Structured logging: one JSON object per line, tagged with the request id and the ``hookInstance``.

What a log line may hold is decided here and by discipline at every ``log.*`` call: event names, ids
the service itself makes (request id), the client's ``hookInstance`` (a random UUID), service ids,
status codes and exception *types*. Never tokens, JWTs, patient ids or FHIR resource content:

* :class:`JSONFormatter` writes no traceback (frames can show request data) — only the exception type
  and where it was raised — and masks anything shaped like a JWT or a bearer token, as a last line of
  defence should a message ever carry one.
* :class:`RequestContextFilter` adds ``request_id`` (a new UUID per request, echoed in the response's
  ``X-Request-Id``) and ``hook_instance`` to every record logged while a request is being served,
  whichever logger emitted it. A caller's own ``X-Request-Id`` is ignored: it is whatever the caller
  chose to write, a patient id included, and would reach every log line of the request.
* :func:`loggable_path` is the only form of a request path the access log writes: one of the service's
  routes, with a service id only when the service has it. Query strings and unknown paths, which a
  caller chooses freely, never reach the log.

``LUPUS_CDS_LOG_FORMAT``: ``json`` (default) or ``text`` installs one handler on the root logger, on
stderr; ``none`` leaves logging configuration to the host application.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context
from werkzeug.exceptions import HTTPException, MethodNotAllowed

_HOOK_INSTANCE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_SECRETS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[jwt]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)(access_token|refresh_token|id_token|client_assertion|password)([\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"'&,}]+"), r"\1\2[redacted]"),
]
_MARK = "_cds_hooks_handler"


def scrub(text: str) -> str:
    """``text`` with JWTs, bearer credentials and token-like ``key=value`` pairs masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``hook_instance`` of the request being served (if any) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = g.get("request_id")
            record.hook_instance = g.get("hook_instance")
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message`` and context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key in ("request_id", "hook_instance"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        fields = getattr(record, "fields", None)  # logger.info(..., extra={"fields": {...}}): numbers, codes
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in entry})
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = _where(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the same content (and the same omissions) as the JSON form."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{key}={getattr(record, key)}" for key in ("request_id", "hook_instance")
                           if getattr(record, key, None))
        text = f"{self.formatTime(record)} {record.levelname} {record.name}: {scrub(record.getMessage())}"
        if record.exc_info and record.exc_info[0] is not None:
            text += f" [{_where(record.exc_info)}]"
        return f"{text} {context}".rstrip()


def _where(exc_info: Any) -> str:
    kind, _, tb = exc_info
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    place = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    return f"{kind.__name__}{place}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners and servers swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def make_handler(fmt: str = "json", stream: Any = None) -> logging.Handler:
    """A handler with the service's formatter and request-context filter (``stream``: default stderr)."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(TextFormatter() if fmt == "text" else JSONFormatter())
    handler.addFilter(RequestContextFilter())
    return handler


def configure(fmt: str, level: str) -> None:
    """Install (or replace) the service's handler on the root logger. Idempotent: apps built many
    times in one process (tests) keep exactly one."""
    fmt = (fmt or "json").strip().lower()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    if fmt == "none":
        return
    if fmt not in ("json", "text"):
        raise ValueError(f"LUPUS_CDS_LOG_FORMAT must be json, text or none, not {fmt!r}")
    handler = make_handler(fmt)
    handler.setLevel(level.upper())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    if root.level > handler.level:
        root.setLevel(handler.level)


def init_app(app: Flask) -> None:
    """Give every request an id (``g.request_id``), echoed as ``X-Request-Id``."""
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)


def _assign_request_id() -> None:
    g.request_id = uuid.uuid4().hex  # never the caller's X-Request-Id: see the module docstring


def _echo_request_id(response: Response) -> Response:
    if g.get("request_id"):
        response.headers["X-Request-Id"] = g.request_id
    return response


def set_hook_instance(value: Any) -> None:
    """Tag the rest of this request's log lines with the client's ``hookInstance`` (if it looks like one)."""
    if isinstance(value, str) and _HOOK_INSTANCE.match(value):
        g.hook_instance = value


#: what the access log shows for a path that is none of the service's routes
UNMATCHED_PATH = "<unmatched>"


def loggable_path(app: Flask, path: str, known_ids: Any = ()) -> str:
    """``path`` as the access log may show it: the route it matches (``/cds-services/<service_id>``)
    with each ``service_id`` filled in only when it is one of ``known_ids``; :data:`UNMATCHED_PATH`
    for anything else. Never the raw path, which the caller chooses (it may hold a patient id)."""
    adapter = app.url_map.bind("localhost")
    for method in ("GET", "POST"):
        try:
            rule, args = adapter.match(path, method=method, return_rule=True)
        except MethodNotAllowed:
            continue
        except (HTTPException, ValueError):  # NotFound, RequestRedirect; a malformed path
            return UNMATCHED_PATH
        service_id = args.get("service_id")
        if service_id is not None and service_id in known_ids:
            return rule.rule.replace("<service_id>", service_id)
        return rule.rule  # other arguments stay as their placeholder
    return UNMATCHED_PATH
