"""The seam between the hook endpoint and FHIR data access.

When a prefetch key is missing (absent, or an OperationOutcome) or paginated, the endpoint asks the
app's :class:`Fetcher` to obtain it from the client's FHIR server. The default :class:`NoFetcher`
obtains nothing, so missing required keys end in 412 (PF-12). :mod:`cds_hooks.fhir_client` provides
the real one (SMART on FHIR); tests may install their own through ``create_app(fetcher=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .models import PrefetchEntry


@dataclass(frozen=True)
class FetchRequest:
    """Everything a fetcher may use for one hook call.

    :ivar queries: prefetch key -> rendered relative FHIR URL (``Observation?patient=123&code=...``),
        for keys that must be fetched from scratch.
    :ivar next_pages: prefetch key -> absolute ``next`` link of a paginated Bundle the client sent;
        the fetcher follows it (PF-11) and returns only the *additional* resources.
    :ivar fhir_authorization: the request's ``fhirAuthorization`` object, or ``None``. Transient:
        never stored or logged (AUTHZ-3).
    :ivar client: the verified CDS client (``cds_hooks.auth.VerifiedClient``) or ``None`` in unsigned
        sandbox mode; used to decide which FHIR servers may be called.
    """

    fhir_server: str | None
    fhir_authorization: Mapping[str, Any] | None
    patient_id: str | None
    queries: Mapping[str, str] = field(default_factory=dict)
    next_pages: Mapping[str, str] = field(default_factory=dict)
    client: Any = None


class Fetcher(Protocol):
    def fetch(self, request: FetchRequest) -> dict[str, PrefetchEntry]:
        """Obtain the keys of ``request.queries`` and ``request.next_pages``.

        :return: a :class:`PrefetchEntry` (``source="fhir"``) for each key it dealt with. A key left
            out stays as it was. Never raises for FHIR-side failures: a failed key comes back with
            status ``MISSING`` (or ``complete=False``) and a ``note`` saying why.
        """
        ...


class NoFetcher:
    """The fetcher of a service with no FHIR access: it obtains nothing."""

    def fetch(self, request: FetchRequest) -> dict[str, PrefetchEntry]:
        return {}
