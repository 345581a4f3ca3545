"""A second, non-clinical plugin: it proves that a new plugin needs no change in ``cds_hooks/``.

Its card detail reports how each prefetch key was classified, so tests can observe the decision table
of checklist 4.2 end to end.
"""

from __future__ import annotations

from cds_hooks import HookRequest, ServiceDefinition, hookimpl

TEMPLATES = {
    "patientToGreet": "Patient/{{context.patientId}}",
    "hemoglobin": "Observation?patient={{context.patientId}}&code=http://loinc.org|4548-4&_sort=-date",
}


def describe_prefetch(request: HookRequest) -> str:
    parts = []
    for key, entry in sorted(request.prefetch.items()):
        parts.append(f"{key}={entry.status.value}:{len(entry.resources)}:{'complete' if entry.complete else 'partial'}"
                     f":{entry.source}")
    return " ".join(parts)


def greet(request: HookRequest) -> list[dict]:
    patients = request.prefetch.resources("patientToGreet")
    if not patients:
        return []
    names = patients[0].get("name") or [{}]
    given = " ".join(names[0].get("given") or ["there"])
    return [{
        "uuid": f"greeting-{request.patient_id}",
        "summary": f"Hello {given}",
        "indicator": "info",
        "detail": describe_prefetch(request),
        "source": {"label": "Tiny test plugin", "topic": {"system": "urn:test", "code": "greeting"}},
        "suggestions": [],  # an empty member the protocol layer must prune (GEN-4)
        "links": None,
    }]


def sign_check(request: HookRequest) -> list[dict]:
    entries = (request.context.get("draftOrders") or {}).get("entry") or []
    return [{"summary": f"{len(entries)} draft orders seen at {request.hook}", "indicator": "warning",
             "source": {"label": "Tiny test plugin"}}]


@hookimpl
def cds_services(config):
    return [
        ServiceDefinition(id="patient-greeter", hook="patient-view", title="Patient greeting",
                          description="Greets the patient in context.", handler=greet, prefetch=TEMPLATES,
                          required_prefetch=frozenset({"patientToGreet"})),
        # The same id for a second hook (DISC-8): dispatch must follow request.hook.
        ServiceDefinition(id="patient-greeter", hook="order-sign", description="Counts draft orders.",
                          handler=sign_check),
    ]
