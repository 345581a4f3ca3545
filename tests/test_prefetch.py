"""Prefetch templates and the per-key decision table (checklist 4.1, 4.2)."""

from __future__ import annotations

import pytest

from cds_hooks.errors import InvalidRequest
from cds_hooks.models import PrefetchEntry, PrefetchStatus
from cds_hooks.prefetch import TemplateError, check_template, classify, merge_fetched, render_template

CONTEXT = {"userId": "PractitionerRole/123", "patientId": "p 1", "encounterId": "e1"}
TEMPLATES = {"patient": "Patient/{{context.patientId}}",
             "obs": "Observation?patient={{context.patientId}}&code=http://loinc.org|4548-4"}


@pytest.mark.parametrize("template", [
    "Patient/{{context.patientId}}",
    "Observation?patient={{context.patientId}}&encounter={{context.encounterId}}",
    "PractitionerRole?_id={{userPractitionerRoleId}}",
    "{{context.userId}}".replace("{{context.userId}}", "Practitioner/{{userPractitionerId}}"),
])
@pytest.mark.requirement("cds-hooks_2.0@35", "cds-hooks_2.0@56")
def test_pf_3_allowed_tokens(template):
    check_template("patient-view", "k", template)


@pytest.mark.parametrize("template, why", [
    ("MedicationRequest?_id={{context.draftOrders.entry.resource.id}}", "PF-4 nested"),
    ("MedicationRequest?_id={{context.selections}}", "PF-4 not a token field"),
    ("Observation?date=ge{{today() - 90 days}}", "PF-3 FHIRPath is 3.0 only"),
    ("Patient/{{patientId}}", "PF-3 unqualified"),
    ("patient/{{context.patientId}}", "PF-1 resource type"),
])
@pytest.mark.requirement("cds-hooks_2.0@56", "cds-hooks_2.0@57", "cds-hooks_2.0@59")
def test_pf_3_4_rejected_tokens(template, why):
    with pytest.raises(TemplateError):
        check_template("order-select", "k", template)


@pytest.mark.requirement("cds-hooks_2.0@35")
def test_render_url_encodes_values_and_user_tokens():
    assert render_template("Observation?patient={{context.patientId}}", CONTEXT) == "Observation?patient=p%201"
    assert render_template("PractitionerRole/{{userPractitionerRoleId}}", CONTEXT) == "PractitionerRole/123"
    # PF-5: a token for another user type has no value, so the template cannot be rendered
    assert render_template("Practitioner/{{userPractitionerId}}", CONTEXT) is None
    assert render_template("Encounter/{{context.encounterId}}", {"patientId": "1"}) is None


def test_pf_9_absent_key_is_missing_and_queued_for_fetch():
    plan = classify(TEMPLATES, CONTEXT, {"patient": {"resourceType": "Patient", "id": "p 1"}})
    assert plan.entries["obs"].status is PrefetchStatus.MISSING
    assert plan.queries == {"obs": "Observation?patient=p%201&code=http://loinc.org|4548-4"}


def test_pf_9_null_is_no_data_and_never_refetched():
    plan = classify(TEMPLATES, CONTEXT, {"patient": None, "obs": None})
    assert {k: e.status for k, e in plan.entries.items()} == {"patient": PrefetchStatus.NO_DATA,
                                                               "obs": PrefetchStatus.NO_DATA}
    assert plan.queries == {}


def test_empty_bundle_is_satisfied_with_no_resources():
    plan = classify(TEMPLATES, CONTEXT, {"obs": {"resourceType": "Bundle", "type": "searchset", "total": 0}})
    assert plan.entries["obs"].status is PrefetchStatus.SATISFIED
    assert plan.entries["obs"].resources == ()
    assert "obs" not in plan.queries


@pytest.mark.requirement("cds-hooks_2.0@52")
def test_pf_10_operation_outcome_is_missing():
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    plan = classify(TEMPLATES, CONTEXT, {"patient": outcome})
    assert plan.entries["patient"].status is PrefetchStatus.MISSING
    assert plan.queries["patient"] == "Patient/p%201"


@pytest.mark.requirement("cds-hooks_2.0@52")
def test_pf_10_bundle_holding_only_an_error_outcome_is_missing():
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "OperationOutcome",
                                                                "issue": [{"severity": "fatal"}]}}]}
    assert classify(TEMPLATES, CONTEXT, {"obs": bundle}).entries["obs"].status is PrefetchStatus.MISSING


def test_informational_outcome_entry_is_not_data():
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Observation", "id": "o1"}},
        {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information"}]},
         "search": {"mode": "outcome"}}]}
    entry = classify(TEMPLATES, CONTEXT, {"obs": bundle}).entries["obs"]
    assert entry.status is PrefetchStatus.SATISFIED and [r["id"] for r in entry.resources] == ["o1"]
    assert entry.complete


def test_pf_11_paginated_bundle_uses_first_page_and_queues_next():
    bundle = {"resourceType": "Bundle", "link": [{"relation": "next", "url": "https://ehr/fhir?page=2"}],
              "entry": [{"resource": {"resourceType": "Observation", "id": "o1"}}]}
    plan = classify(TEMPLATES, CONTEXT, {"obs": bundle})
    assert plan.entries["obs"].status is PrefetchStatus.SATISFIED
    assert plan.entries["obs"].complete is False
    assert plan.next_pages == {"obs": "https://ehr/fhir?page=2"}
    fetched = {"obs": PrefetchEntry("obs", PrefetchStatus.SATISFIED,
                                    ({"resourceType": "Observation", "id": "o2"},), source="fhir")}
    merged = merge_fetched(plan, fetched)
    assert [r["id"] for r in merged["obs"].resources] == ["o1", "o2"] and merged["obs"].complete


def test_wrong_resource_type_for_a_read_is_missing():
    plan = classify(TEMPLATES, CONTEXT, {"patient": {"resourceType": "Practitioner", "id": "x"}})
    assert plan.entries["patient"].status is PrefetchStatus.MISSING


def test_spec_example_bare_string_prefetch_value_is_rejected():
    """The 2.0.1 prefetch example sends ``"user": "123"``: not a resource (spec-examples README)."""
    with pytest.raises(InvalidRequest):
        classify({"user": "Practitioner/{{userPractitionerId}}"}, CONTEXT, {"user": "123"})
