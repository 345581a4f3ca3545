"""Protocol types for the SMART on FHIR apps a plugin serves through the service (CDS Hooks ``smart`` card
links open them): what an app declares, and what its page renderer receives.

The protocol layer (:mod:`cds_hooks.smart_launch`) runs the SMART App Launch (EHR launch, authorization
code with PKCE), keeps the tokens, reads the FHIR data the app asks for with the user's token and shows
readable error pages. The plugin only turns FHIR resources into HTML: it never sees a token, a cookie,
a request or Flask. Like :mod:`cds_hooks.models`, nothing here imports Flask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

JSON = dict[str, Any]

#: an app id is one URL path segment: ``/smart-apps/{id}/launch``
APP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
#: what every app asks for besides its resource scopes (SMART App Launch 2: EHR launch, OpenID user)
LAUNCH_SCOPES = ("launch", "openid", "fhirUser")


@dataclass(frozen=True)
class AppPage:
    """Everything an app's renderer may use for one page: FHIR resources in, HTML out.

    :ivar patient_id: the patient of the launch (the token response's ``patient``, never a URL parameter).
    :ivar resources: query key (see :attr:`SmartAppDefinition.queries`) -> the resources read, in
        server order; ``"patient"`` holds the Patient (read by the host for the banner).
    :ivar notes: query key -> why its data is incomplete (more pages than read), in words for a clinician.
    :ivar view: the view to open first (from the card's ``appContext`` or the page's own links).
    :ivar view_urls: view id -> the URL showing this page with that view first (for the page's navigation).
    :ivar now: the evaluation instant (UTC).
    :ivar config: the application's settings (read-only), where the plugin finds its thresholds.
    """

    patient_id: str
    resources: Mapping[str, tuple[JSON, ...]]
    now: datetime
    view: str | None = None
    view_urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


#: builds the FHIR searches of one page: (patient id, now) -> key -> relative URL (``Observation?...``)
Queries = Callable[[str, datetime], Mapping[str, str]]
#: renders the page's main content: an HTML fragment whose every piece of data the plugin escaped
Renderer = Callable[[AppPage], str]


@dataclass(frozen=True)
class SmartAppDefinition:
    """A SMART app served at ``/smart-apps/{id}/`` (launch URL ``/smart-apps/{id}/launch``).

    :ivar scopes: the resource scopes the app needs (``patient/Observation.rs`` ...); the host adds
        :data:`LAUNCH_SCOPES`.
    :ivar queries: the FHIR searches of a page, each run with the user's token; every ``next`` page is
        followed (up to a bound). Keys are the renderer's names; ``"patient"`` is reserved.
    :ivar views: ``(view id, label)``: what a card's ``appContext`` (``view=<id>``) may open first.
    :ivar stylesheet: CSS served at ``/smart-apps/{id}/app.css`` (pages allow no inline style or script).
    """

    id: str
    title: str
    scopes: tuple[str, ...]
    queries: Queries
    render: Renderer
    views: tuple[tuple[str, str], ...] = ()
    stylesheet: str = ""

    def __post_init__(self) -> None:
        if not APP_ID.match(self.id):
            raise ValueError(f"SMART app id {self.id!r} must be lower-case letters, digits and dashes")
        if not self.scopes:
            raise ValueError(f"SMART app {self.id!r} declares no scopes")

    @property
    def scope(self) -> str:
        """The ``scope`` parameter of the authorization request."""
        return " ".join(dict.fromkeys((*LAUNCH_SCOPES, *self.scopes)))

    def view_of(self, app_context: Any) -> str | None:
        """The view named by a card's ``appContext`` (``view=<id>``, or just ``<id>``), if the app has it."""
        if not isinstance(app_context, str):
            return None
        known = {view for view, _ in self.views}
        text = app_context.strip()
        for part in text.split("&"):
            name, sep, value = part.partition("=")
            candidate = value if sep and name.strip() == "view" else (name if not sep else "")
            if candidate.strip() in known:
                return candidate.strip()
        return None
