"""Validation of a CDS Hooks service-call body (checklist 3.1, 3.2, 9): the fields every request needs,
the context fields each known hook requires, and REQ-INV-1 (``fhirAuthorization`` implies
``fhirServer``). Everything wrong is an :class:`~cds_hooks.errors.InvalidRequest` (400)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from . import jsonio
from .errors import InvalidRequest
from .hooks import hook_definition

_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
#: a FHIR R4 ``id`` (http://hl7.org/fhir/R4/datatypes.html#id). Context ids go into FHIR request paths
#: (``Patient/{{context.patientId}}``): anything else (``../``, ``?``, ``/``) could point a query elsewhere.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: context fields holding a bare FHIR id (the id of the resource in context, not a reference)
_ID_FIELDS = ("patientId", "encounterId")


def parse_json_object(raw: bytes, what: str = "request body") -> dict[str, Any]:
    """Parse ``raw`` once; anything but a JSON object is a 400."""
    if not raw:
        raise InvalidRequest(f"{what} is empty; expected a JSON object")
    try:
        value = jsonio.loads(raw)
    except ValueError:
        raise InvalidRequest(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _require_string(body: Mapping[str, Any], name: str, where: str = "") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{where}{name} is required and must be a non-empty string",
                             expression=[f"{where}{name}"])
    return value


def validate_hook_request(body: Mapping[str, Any], service_hook: str) -> None:
    """Check a parsed request body against CDS Hooks 2.0.1 for the hook the service handles."""
    hook = _require_string(body, "hook")
    if hook != service_hook:
        raise InvalidRequest(f"this service handles {service_hook!r}, not {hook!r}", expression=["hook"])
    instance = _require_string(body, "hookInstance")
    if len(instance) > 128:
        raise InvalidRequest("hookInstance is longer than 128 characters", expression=["hookInstance"])
    context = body.get("context")
    if not isinstance(context, dict):
        raise InvalidRequest("context is required and must be a JSON object", expression=["context"])
    _validate_context(hook, context)

    server = body.get("fhirServer")
    if server is not None:
        if not isinstance(server, str) or urlsplit(server).scheme not in ("http", "https") \
                or not urlsplit(server).netloc:
            raise InvalidRequest("fhirServer must be an absolute http(s) URL", expression=["fhirServer"])
    authorization = body.get("fhirAuthorization")
    if authorization is not None:
        if server is None:
            raise InvalidRequest("fhirAuthorization requires fhirServer (REQ-INV-1)", expression=["fhirServer"])
        if not isinstance(authorization, dict):
            raise InvalidRequest("fhirAuthorization must be a JSON object", expression=["fhirAuthorization"])
        _require_string(authorization, "access_token", "fhirAuthorization.")
        token_type = _require_string(authorization, "token_type", "fhirAuthorization.")
        if token_type.lower() != "bearer":
            raise InvalidRequest("fhirAuthorization.token_type must be Bearer",
                                 expression=["fhirAuthorization.token_type"])
        patient = authorization.get("patient")
        if patient is not None and patient != context.get("patientId"):
            # The token is limited to another patient: never read beyond the patient in context.
            raise InvalidRequest("fhirAuthorization.patient does not match context.patientId",
                                 expression=["fhirAuthorization.patient"])
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise InvalidRequest("prefetch must be a JSON object", expression=["prefetch"])
    extension = body.get("extension")
    if extension is not None and not isinstance(extension, dict):
        raise InvalidRequest("extension must be a JSON object", expression=["extension"])


def _validate_context(hook: str, context: Mapping[str, Any]) -> None:
    for name in _ID_FIELDS:  # any hook, known or not: these ids are rendered into FHIR URLs
        value = context.get(name)
        if value is not None and not (isinstance(value, str) and FHIR_ID.match(value)):
            raise InvalidRequest(f"context.{name} must be a FHIR id (1-64 of A-Z a-z 0-9 - .)",
                                 expression=[f"context.{name}"])
    definition = hook_definition(hook)
    if definition is None:
        return
    for name in sorted(definition.required):
        if name not in context or context[name] is None:
            raise InvalidRequest(f"context.{name} is required for {hook}", expression=[f"context.{name}"])
    for name in ("userId", "patientId", "encounterId"):
        if name in context and (not isinstance(context[name], str) or not context[name].strip()):
            raise InvalidRequest(f"context.{name} must be a non-empty string", expression=[f"context.{name}"])
    for name in definition.reference_fields:
        if name in context and not _REFERENCE.match(context[name]):
            raise InvalidRequest(f"context.{name} must be a reference of the form Type/id",
                                 expression=[f"context.{name}"])
    for name in definition.bundle_fields:
        if not isinstance(context.get(name), dict):
            raise InvalidRequest(f"context.{name} must be a FHIR Bundle (JSON object)",
                                 expression=[f"context.{name}"])
    for name in definition.reference_list_fields:
        value = context.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) and _REFERENCE.match(v) for v in value):
            raise InvalidRequest(f"context.{name} must be an array of Type/id strings",
                                 expression=[f"context.{name}"])


def validate_feedback(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check a feedback body (FB-3, FB-4, 3.0 cds-fb-1..3) and return its feedback items."""
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("feedback must be a non-empty array (FB-3)", expression=["feedback"])
    for index, item in enumerate(items):
        where = f"feedback[{index}]."
        if not isinstance(item, dict):
            raise InvalidRequest(f"feedback[{index}] must be an object", expression=[f"feedback[{index}]"])
        _require_string(item, "card", where)
        outcome = _require_string(item, "outcome", where)
        if outcome not in ("accepted", "overridden"):
            raise InvalidRequest(f"{where}outcome must be accepted or overridden (FB-4)",
                                 expression=[f"{where}outcome"])
        timestamp = _require_string(item, "outcomeTimestamp", where)
        if not _is_instant(timestamp):
            raise InvalidRequest(f"{where}outcomeTimestamp must be an RFC 3339 date-time (FB-4)",
                                 expression=[f"{where}outcomeTimestamp"])
        accepted = item.get("acceptedSuggestions")
        ids = isinstance(accepted, list) and all(
            isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] for s in accepted)
        if (outcome == "accepted" and not (ids and accepted)) or (accepted is not None and not ids):
            raise InvalidRequest(f"{where}acceptedSuggestions must list the accepted suggestion ids "
                                 "(FB-4)", expression=[f"{where}acceptedSuggestions"])
        reason = item.get("overrideReason")
        if reason is not None:
            if not isinstance(reason, dict) or not (reason.get("reason") or reason.get("userComment")):
                raise InvalidRequest(f"{where}overrideReason needs reason or userComment (cds-fb-3)",
                                     expression=[f"{where}overrideReason"])
            coding = reason.get("reason")
            if coding is not None and not (isinstance(coding, dict) and isinstance(coding.get("code"), str)
                                           and isinstance(coding.get("system"), str)
                                           and isinstance(coding.get("display", ""), str)):
                raise InvalidRequest(f"{where}overrideReason.reason must be a Coding with system and code "
                                     "(GEN-9), its display a string", expression=[f"{where}overrideReason.reason"])
            comment = reason.get("userComment")
            if comment is not None and not isinstance(comment, str):
                raise InvalidRequest(f"{where}overrideReason.userComment must be a string",
                                     expression=[f"{where}overrideReason.userComment"])
    return items


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _is_instant(text: str) -> bool:
    """An RFC 3339 date-time that names a real instant: the shape, and a month, day, hour, minute, second and
    offset that exist (``2026-13-45T99:99:99Z`` has the shape only). A leap second (``:60``) is accepted."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return False
    seconds = match.start(1)
    if match[1] == "60":
        text = text[:seconds] + "59" + text[seconds + 2:]
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
