"""Prefetch templates: check them when a service is registered, render them for a request, and decide
for each key what the client actually sent (checklist sections 4.1 and 4.2).

Decision table (checklist 4.2), per declared key:

=====================================  ====================================================
``prefetch[key]`` in the request        what the service does
=====================================  ====================================================
absent (or no ``prefetch`` at all)      MISSING: fetch it, else 412 if required (PF-12)
``null``                                NO_DATA: never re-queried, never 412 (PF-9)
Bundle with no entries                  SATISFIED with no resources
Bundle with a ``next`` link             SATISFIED from the first page; fetch the rest (PF-11)
OperationOutcome, or a Bundle holding   MISSING: fetch it, else 412 if required (PF-10)
an error OperationOutcome
resource of the wrong type              MISSING (the client answered another question)
resource / Bundle                       SATISFIED
=====================================  ====================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .errors import InvalidRequest
from .hooks import USER_TOKENS, hook_definition
from .models import JSON, PrefetchEntry, PrefetchStatus

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")


class TemplateError(ValueError):
    """A service declared a prefetch template outside CDS Hooks 2.0 rules (PF-3, PF-4)."""


def template_tokens(template: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(template)]


def check_template(hook: str, key: str, template: str) -> None:
    """Raise :class:`TemplateError` unless ``template`` uses only tokens 2.0 allows (PF-1..4).

    Only ``{{context.<field>}}`` for the hook's token-eligible root fields and the four user tokens
    are allowed; FHIRPath (3.0 ballot) is not.
    """
    path = template.split("?", 1)[0]
    resource_type = path.split("/", 1)[0]
    if not _RESOURCE_TYPE.match(resource_type):
        raise TemplateError(f"prefetch {key!r}: must start with a FHIR resource type, got {template!r}")
    definition = hook_definition(hook)
    for token in template_tokens(template):
        if token in USER_TOKENS:
            continue
        if not token.startswith("context."):
            raise TemplateError(f"prefetch {key!r}: token {{{{{token}}}}} is not allowed (PF-3)")
        field_name = token[len("context."):]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", field_name):
            raise TemplateError(f"prefetch {key!r}: token {{{{{token}}}}} is not a root context field (PF-4)")
        if definition is not None and field_name not in definition.token_fields:
            raise TemplateError(
                f"prefetch {key!r}: context.{field_name} is not a prefetch token of {hook} (PF-4)")


def render_template(template: str, context: Mapping[str, Any]) -> str | None:
    """Fill in the tokens of ``template`` from ``context``, URL-encoding each value.

    :return: the relative FHIR URL, or ``None`` when a token has no value (an optional context field
        is absent, or a user token names another user type: PF-5).
    """
    missing = False

    def value_of(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(1)
        if token in USER_TOKENS:
            user = context.get("userId")
            if isinstance(user, str) and "/" in user:
                user_type, _, user_id = user.partition("/")
                if user_type == USER_TOKENS[token] and user_id:
                    return quote(user_id, safe="")
            missing = True
            return ""
        value = context.get(token[len("context."):])
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            missing = True
            return ""
        text = str(value)
        # userId-style values are "Type/id" and form a relative read; keep their slash.
        return quote(text, safe="/")

    rendered = _TOKEN.sub(value_of, template)
    return None if missing else rendered


def _is_error_outcome(resource: JSON) -> bool:
    issues = resource.get("issue")
    if not isinstance(issues, list):
        return True  # an OperationOutcome with no issues says nothing useful; treat as a failure
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues) or not issues


def next_link(bundle: JSON) -> str | None:
    links = bundle.get("link")
    if isinstance(links, list):
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                return link["url"]
    return None


def bundle_resources(bundle: JSON) -> tuple[tuple[JSON, ...], bool]:
    """The resources of a searchset Bundle and whether it carried an error OperationOutcome.

    Entries with ``search.mode`` ``outcome`` (or informational OperationOutcomes) are not data.
    """
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return (), False
    resources: list[JSON] = []
    failed = False
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if resource.get("resourceType") == "OperationOutcome":
            failed = failed or _is_error_outcome(resource)
            continue
        resources.append(resource)
    return tuple(resources), failed


@dataclass
class PrefetchPlan:
    """The outcome of classifying one request's prefetch against a service's templates."""

    entries: dict[str, PrefetchEntry] = field(default_factory=dict)
    #: key -> rendered relative URL, for MISSING keys that can be fetched
    queries: dict[str, str] = field(default_factory=dict)
    #: key -> absolute ``next`` URL, for paginated Bundles
    next_pages: dict[str, str] = field(default_factory=dict)


def classify(templates: Mapping[str, str], context: Mapping[str, Any], sent: Mapping[str, Any] | None
             ) -> PrefetchPlan:
    """Decide, for every declared key, what the client sent (see the module's decision table)."""
    plan = PrefetchPlan()
    sent = sent or {}
    for key, template in templates.items():
        is_search = "?" in template
        expected_type = template.split("?", 1)[0].split("/", 1)[0]
        if key not in sent:
            plan.entries[key] = PrefetchEntry(key, PrefetchStatus.MISSING, note=f"{key}: not prefetched")
            query = render_template(template, context)  # rendered only for keys that must be fetched
            if query is not None:
                plan.queries[key] = query
            continue
        value = sent[key]
        if value is None:
            plan.entries[key] = PrefetchEntry(key, PrefetchStatus.NO_DATA)
            continue
        if not isinstance(value, dict):
            raise InvalidRequest(f"prefetch.{key} must be a FHIR resource, a Bundle or null",
                                 expression=[f"prefetch.{key}"])
        resource_type = value.get("resourceType")
        failed_note = f"{key}: the client reported an error instead of data"
        if resource_type == "OperationOutcome":
            plan.entries[key] = PrefetchEntry(key, PrefetchStatus.MISSING, note=failed_note)
        elif is_search or resource_type == "Bundle":
            if resource_type != "Bundle":
                plan.entries[key] = PrefetchEntry(
                    key, PrefetchStatus.MISSING, note=f"{key}: expected a Bundle, got {resource_type}")
            else:
                resources, failed = bundle_resources(value)
                if failed and not resources:
                    plan.entries[key] = PrefetchEntry(key, PrefetchStatus.MISSING, note=failed_note)
                else:
                    more = next_link(value)
                    plan.entries[key] = PrefetchEntry(
                        key, PrefetchStatus.SATISFIED, resources, complete=more is None and not failed,
                        note=(f"{key}: only the first page was available" if more else
                              failed_note if failed else None))
                    if more:
                        plan.next_pages[key] = more
                    continue
        elif resource_type != expected_type:
            plan.entries[key] = PrefetchEntry(
                key, PrefetchStatus.MISSING, note=f"{key}: expected {expected_type}, got {resource_type}")
        else:
            plan.entries[key] = PrefetchEntry(key, PrefetchStatus.SATISFIED, (value,))
            continue
        # Only MISSING entries reach this point: offer them to the fetcher.
        query = render_template(template, context)
        if query is not None:
            plan.queries[key] = query
    return plan


def merge_fetched(plan: PrefetchPlan, fetched: Mapping[str, PrefetchEntry]) -> dict[str, PrefetchEntry]:
    """Combine what the client sent with what the fetcher obtained.

    For a paginated key the fetcher returns only the resources of the later pages; they are appended.
    """
    merged = dict(plan.entries)
    for key, entry in fetched.items():
        if key not in merged:
            continue
        if key in plan.next_pages and merged[key].status is PrefetchStatus.SATISFIED:
            first = merged[key]
            merged[key] = PrefetchEntry(key, PrefetchStatus.SATISFIED, first.resources + entry.resources,
                                        complete=entry.complete, source="prefetch+fhir", note=entry.note)
        else:
            merged[key] = entry
    return merged
