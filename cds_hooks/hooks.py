"""The CDS hooks this layer knows: which context fields each requires and which may be prefetch tokens.

Source: CDS Hooks Hook Library 1.0.1 (checklist section 9). A service may declare a hook that is not
listed here; its requests are then checked only for the fields every hook request carries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HookDefinition:
    name: str
    #: context fields that must be present (checklist section 9)
    required: frozenset[str]
    #: context fields that may appear in ``{{context.<field>}}`` prefetch tokens (PF-4)
    token_fields: frozenset[str]
    #: context fields whose value must be a ``Type/id`` reference string
    reference_fields: frozenset[str] = frozenset({"userId"})
    #: context fields that must be a JSON object (a FHIR Bundle)
    bundle_fields: frozenset[str] = frozenset()
    #: context fields that must be a JSON array of ``Type/id`` strings
    reference_list_fields: frozenset[str] = frozenset()


_ID_FIELDS = frozenset({"userId", "patientId", "encounterId"})

KNOWN_HOOKS: dict[str, HookDefinition] = {
    "patient-view": HookDefinition("patient-view", frozenset({"userId", "patientId"}), _ID_FIELDS),
    "order-select": HookDefinition(
        "order-select",
        frozenset({"userId", "patientId", "selections", "draftOrders"}),
        _ID_FIELDS,
        bundle_fields=frozenset({"draftOrders"}),
        reference_list_fields=frozenset({"selections"}),
    ),
    "order-sign": HookDefinition(
        "order-sign",
        frozenset({"userId", "patientId", "draftOrders"}),
        _ID_FIELDS,
        bundle_fields=frozenset({"draftOrders"}),
    ),
    "encounter-start": HookDefinition(
        "encounter-start", frozenset({"userId", "patientId", "encounterId"}), _ID_FIELDS
    ),
}

#: user tokens (PF-3, PF-5): token name -> the resource type of ``context.userId`` it takes the id of
USER_TOKENS: dict[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def hook_definition(name: str) -> HookDefinition | None:
    """The definition of hook ``name``, or ``None`` for a hook this layer does not know."""
    return KNOWN_HOOKS.get(name)
