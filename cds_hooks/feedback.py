"""``POST /cds-services/{id}/feedback``: validate card feedback (FB-3, FB-4) and store every item
durably and idempotently (FB-5) before answering ``200 {}`` (FB-7).

One post holds at most :data:`MAX_FEEDBACK_ITEMS` items (413 past it): feedback is sent per card shown, and
the bound keeps one request's validation and write short."""

from __future__ import annotations

import logging

from flask import Blueprint, Response

from . import metrics
from .errors import PayloadTooLarge, ServiceUnavailable
from .feedback_store import DatabaseUnavailable
from .services import authenticate, find_service, read_json_body
from .state import json_response, state
from .validation import validate_feedback

bp = Blueprint("feedback", __name__)
log = logging.getLogger("cds_hooks.feedback")

#: the most feedback items one post may carry
MAX_FEEDBACK_ITEMS = 100


@bp.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str) -> Response:
    cds = state()
    find_service(cds, service_id)
    # SEC-8 leaves the feedback aud open: accept the feedback URL and the service URL (checklist 12).
    client = authenticate(cds, [cds.audience(f"/cds-services/{service_id}/feedback"),
                                cds.audience(f"/cds-services/{service_id}")])
    body = read_json_body()
    if isinstance(body.get("feedback"), list) and len(body["feedback"]) > MAX_FEEDBACK_ITEMS:
        raise PayloadTooLarge(f"at most {MAX_FEEDBACK_ITEMS} feedback items per request", expression=["feedback"])
    items = validate_feedback(body)
    try:
        cds.feedback_store.record(service_id, items, client_iss=getattr(client, "iss", None),
                                  tenant=getattr(client, "tenant", None))
    except DatabaseUnavailable as exc:
        # FB-7 answers 200 only once the feedback is stored: the client may send it again later.
        log.warning("feedback not stored: the feedback database is unavailable (%s)", exc)
        raise ServiceUnavailable("the feedback store is unavailable; send the feedback again later") from None
    # After the durable write: metrics need the card's topic, known from the issued-cards record.
    topics = cds.issued_cards.topics_of(service_id, [item["card"] for item in items])
    for item in items:
        metrics.feedback_received(service_id, item["outcome"], topics.get(item["card"]))
    return json_response({})
