"""Protocol types shared by the protocol layer and the plugins: a service's declaration, the parsed hook
request a plugin evaluates, and the read-only view of the prefetched FHIR data.

Plugins import from here (and from :mod:`cds_hooks.hookspecs`); they never see Flask objects.
Cards are plain JSON-ready ``dict`` objects shaped as in CDS Hooks 2.0.1 section "Card attributes";
:func:`cds_hooks.cards.card_problems` checks them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

JSON = dict[str, Any]


class PrefetchStatus(enum.Enum):
    """What a prefetch key holds once the request (and any fetching) is done (checklist 4.2)."""

    #: data is present (a resource, or a searchset Bundle, possibly with zero entries)
    SATISFIED = "satisfied"
    #: the client said there is no such data (the key was ``null``, PF-9)
    NO_DATA = "no-data"
    #: neither the client nor the service could obtain it (absent, OperationOutcome, fetch failed)
    MISSING = "missing"


@dataclass(frozen=True)
class PrefetchEntry:
    """One prefetch key after classification.

    :ivar resources: the FHIR resources (raw JSON dicts): the entries of a searchset Bundle (minus
        ``OperationOutcome`` entries) or the single resource of a read.
    :ivar complete: ``False`` when more pages existed that could not be followed.
    :ivar source: ``"prefetch"`` (sent by the client) or ``"fhir"`` (fetched by the service).
    :ivar note: why the key is missing or incomplete, in words safe to show a clinician.
    """

    key: str
    status: PrefetchStatus
    resources: tuple[JSON, ...] = ()
    complete: bool = True
    source: str = "prefetch"
    note: str | None = None


class PrefetchView(Mapping[str, PrefetchEntry]):
    """Read-only access to every declared prefetch key of one hook call.

    Resources are the parsed request JSON, handed over without copying for speed: plugins must treat
    them as immutable (the container types here are tuples and mapping proxies).
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, PrefetchEntry]):
        self._entries = MappingProxyType(dict(entries))

    def __getitem__(self, key: str) -> PrefetchEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def resources(self, key: str) -> tuple[JSON, ...]:
        """The resources under ``key``; empty when the key is unknown, missing or has no data."""
        entry = self._entries.get(key)
        return entry.resources if entry is not None else ()

    def status(self, key: str) -> PrefetchStatus:
        entry = self._entries.get(key)
        return entry.status if entry is not None else PrefetchStatus.MISSING

    def gaps(self) -> list[str]:
        """Human-readable notes about keys that are missing or incomplete (for card details)."""
        return [e.note for e in self._entries.values() if e.note and (not e.complete or
                e.status is PrefetchStatus.MISSING)]


@dataclass(frozen=True)
class HookRequest:
    """A validated CDS Hooks request as a plugin sees it.

    :ivar context: the hook context (read-only mapping; nested values are the request JSON).
    :ivar prefetch: every prefetch key the service declared, classified, after any fetching.
    :ivar now: the evaluation instant (UTC, timezone-aware). Tests and fixtures pin it.
    :ivar client: the verified client's ``iss``, or ``None`` in unsigned sandbox mode.
    :ivar config: the application's settings (read-only), where plugins find their switches.
    :ivar smart_apps: app id -> launch URL of each SMART app the service serves (empty when
        ``LUPUS_CDS_SMART_APP`` is off): what a card's ``smart`` link points at.
    """

    service_id: str
    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    prefetch: PrefetchView
    now: datetime
    fhir_server: str | None = None
    client: str | None = None
    tenant: str | None = None
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    smart_apps: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def patient_id(self) -> str | None:
        value = self.context.get("patientId")
        return value if isinstance(value, str) else None


#: what a service handler does: turn one request into a list of cards (JSON-ready dicts)
Handler = Callable[[HookRequest], Sequence[JSON]]


@dataclass(frozen=True)
class ServiceDefinition:
    """One entry of the discovery document plus the code that answers it (DISC-4..6).

    :ivar prefetch: prefetch key -> template (PF-1..6); validated when the app starts.
    :ivar required_prefetch: keys without which the service cannot answer; when one is missing and
        cannot be fetched the call gets 412 (PF-12). ``None`` means every key is required.
    """

    id: str
    hook: str
    description: str
    handler: Handler
    title: str | None = None
    prefetch: Mapping[str, str] = field(default_factory=dict)
    required_prefetch: frozenset[str] | None = None
    usage_requirements: str | None = None
    extension: Mapping[str, Any] | None = None

    def is_required(self, key: str) -> bool:
        return self.required_prefetch is None or key in self.required_prefetch

    def discovery_entry(self) -> JSON:
        """This service as a discovery ``services[]`` member, omitting empty optional members (GEN-4)."""
        entry: JSON = {"hook": self.hook, "id": self.id, "description": self.description}
        if self.title:
            entry["title"] = self.title
        if self.prefetch:
            entry["prefetch"] = dict(self.prefetch)
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        if self.extension:
            entry["extension"] = dict(self.extension)
        return entry
