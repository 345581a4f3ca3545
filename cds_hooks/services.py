"""``POST /cds-services/{id}``: authenticate the client, validate the request, settle the prefetch
(classify, fetch what is missing, 412 when required data cannot be had), run the plugin's handler and
answer its cards (checklist sections 3, 4 and 6)."""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from . import collector
from .cards import prune
from .errors import CDSHooksError, InvalidRequest, PayloadTooLarge, PreconditionFailed, UnknownService
from .fetch import FetchRequest
from .logs import set_hook_instance
from .models import HookRequest, PrefetchStatus, PrefetchView, ServiceDefinition
from .prefetch import classify, merge_fetched
from .state import CDSHooks, json_response, state
from .validation import parse_json_object, validate_hook_request

bp = Blueprint("services", __name__)
log = logging.getLogger("cds_hooks.services")

_JSON_TYPES = ("application/json", "application/fhir+json")


def authenticate(cds: CDSHooks, audiences: list[str]) -> Any:
    """The verified client, or ``None`` in unsigned sandbox mode (SEC-3..12)."""
    if cds.config["LUPUS_CDS_ALLOW_UNSIGNED"]:
        return None
    return cds.authenticator.verify(request.headers.get("Authorization"), audiences)


def read_json_body() -> dict[str, Any]:
    content_type = (request.mimetype or "").lower()
    if content_type and content_type not in _JSON_TYPES:
        error = InvalidRequest(f"Content-Type must be application/json, not {content_type}")
        error.status_code = 415
        raise error
    return parse_json_object(read_body())


def read_body() -> bytes:
    """The request body, at most ``LUPUS_CDS_MAX_BODY_BYTES`` (413 past it, with or without a Content-Length);
    400 when the server cannot read it."""
    try:
        raw = request.get_data(cache=False)
        limit = request.max_content_length
        # werkzeug stops a body without Content-Length (chunked) at the limit without a word: if anything is
        # left, the body was too large, and the truncated JSON must not become a misleading 400.
        if limit is not None and request.content_length is None and len(raw) >= limit \
                and request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge("request body is larger than LUPUS_CDS_MAX_BODY_BYTES")
    except (HTTPException, CDSHooksError):
        raise  # 413 over the limit, 400 client disconnected: the one error handler maps them
    except Exception as exc:  # the server's body reader: malformed framing, cut-off input
        log.info("request body could not be read: %s", type(exc).__name__)
        raise InvalidRequest("the request body could not be read (malformed chunked encoding or cut off)") from None
    return raw


def find_service(cds: CDSHooks, service_id: str) -> dict[str, ServiceDefinition]:
    by_hook = cds.by_id.get(service_id)
    if not by_hook:
        raise UnknownService(f"no CDS service with id {service_id!r}")
    return by_hook


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    cds = state()
    by_hook = find_service(cds, service_id)
    client = authenticate(cds, [cds.audience(f"/cds-services/{service_id}")])
    body = read_json_body()
    with collector.body_held():  # a parsed body has no cycles: keep the collector from walking it
        return answer(cds, by_hook, service_id, body, client)


def answer(cds: CDSHooks, by_hook: dict[str, ServiceDefinition], service_id: str, body: dict[str, Any],
           client: Any) -> Response:
    hook = body.get("hook")
    service = by_hook.get(hook) if isinstance(hook, str) else None
    if service is None:
        # Validate against the (first) hook this id serves, which reports the mismatch clearly (DISC-8).
        validate_hook_request(body, next(iter(by_hook)))
        raise InvalidRequest(f"service {service_id!r} does not handle hook {hook!r}", expression=["hook"])
    validate_hook_request(body, service.hook)
    g.cds_hook = service.hook  # metrics label
    set_hook_instance(body["hookInstance"])  # log context
    response = run_service(cds, service, body, client)
    cds.issued_cards.issued(service.id, service.hook, response["cards"], cds.clock())  # queued, no I/O
    return json_response(response)


def run_service(cds: CDSHooks, service: ServiceDefinition, body: dict[str, Any], client: Any) -> dict[str, Any]:
    """Settle the prefetch of a validated request and evaluate the service: the CDS response body."""
    context = body["context"]
    plan = classify(service.prefetch, context, body.get("prefetch"))
    entries = plan.entries
    if plan.queries or plan.next_pages:
        fetched = cds.fetcher.fetch(FetchRequest(
            fhir_server=body.get("fhirServer"), fhir_authorization=body.get("fhirAuthorization"),
            patient_id=context.get("patientId"), queries=plan.queries, next_pages=plan.next_pages,
            client=client))
        entries = merge_fetched(plan, fetched)
    missing = sorted(key for key, entry in entries.items()
                     if entry.status is PrefetchStatus.MISSING and service.is_required(key))
    if missing:
        # PF-12: the service cannot get the data it needs. Say which keys and why (the notes name no ids
        # and hold no content).
        raise PreconditionFailed(
            "required prefetch data is missing and could not be fetched from the FHIR server: "
            + "; ".join(entries[key].note or key for key in missing),
            expression=[f"prefetch.{key}" for key in missing])
    hook_request = HookRequest(
        service_id=service.id, hook=service.hook, hook_instance=body["hookInstance"],
        context=MappingProxyType(context), prefetch=PrefetchView(entries), now=cds.clock(),
        fhir_server=body.get("fhirServer"), client=getattr(client, "iss", None),
        tenant=getattr(client, "tenant", None), config=cds.config, smart_apps=cds.smart_app_urls())
    cards = service.handler(hook_request)
    return {"cards": [prune(card) for card in cards]}
