"""The one exception tree of the protocol layer, and how each error becomes an HTTP response.

Every failure the service reports to a CDS client is a :class:`CDSHooksError`. One Flask error
handler (see :mod:`cds_hooks.app`) turns it into a FHIR ``OperationOutcome`` body, as the CDS Hooks
3.0 ballot recommends for every non-2xx answer (checklist section 12)::

    CDSHooksError                 status_code, issue_code, diagnostics
    ├── InvalidRequest            400  malformed JSON, missing or wrong fields (checklist 12)
    ├── Unauthorized              401  any client-JWT failure; the body never says which (SEC-3..12)
    ├── Forbidden                 403  a verified client asked for something it may not have
    ├── UnknownService            404  no service with that id (and hook)
    ├── MethodNotAllowed          405
    ├── PayloadTooLarge           413
    ├── PreconditionFailed        412  required prefetch missing and not fetchable (PF-12)
    ├── ServiceUnavailable        503  the feedback database is down (hook calls still answer)
    └── FHIRError                 a FHIR server call failed (data access; never sent as 5xx)
        ├── FHIRUnauthorized      the FHIR server said 401/403
        ├── FHIRTimeout           the fetch budget or a per-request timeout ran out
        └── FHIRBadResponse       5xx, invalid JSON, or a resource of the wrong shape

``Unauthorized`` carries the real reason in :attr:`Unauthorized.reason` for metrics and tests; it is
never written to the response body.
"""

from __future__ import annotations

from typing import Any


class CDSHooksError(Exception):
    """Base of every error the service answers with a 4xx (or a 503 when a dependency is down).

    :param diagnostics: human-readable text placed in ``OperationOutcome.issue[0].diagnostics``.
        It must never contain tokens or patient data.
    """

    status_code = 400
    #: FHIR ``IssueType`` code (http://hl7.org/fhir/valueset-issue-type.html)
    issue_code = "processing"

    def __init__(self, diagnostics: str | None = None, *, expression: list[str] | None = None):
        super().__init__(diagnostics or self.__class__.__name__)
        self.diagnostics = diagnostics
        self.expression = expression

    def operation_outcome(self) -> dict[str, Any]:
        """The FHIR R4 ``OperationOutcome`` describing this error (no null or empty members)."""
        issue: dict[str, Any] = {"severity": "error", "code": self.issue_code}
        if self.diagnostics:
            issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = self.expression
        return {"resourceType": "OperationOutcome", "issue": [issue]}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(CDSHooksError):
    status_code = 400
    issue_code = "invalid"


class Unauthorized(CDSHooksError):
    """Any JWT failure. The response says only "unauthorized"; :attr:`reason` stays server-side."""

    status_code = 401
    issue_code = "login"

    def __init__(self, reason: str = "unauthorized", detail: str | None = None):
        super().__init__(None)
        self.reason = reason
        #: for the log only (e.g. which ``aud`` was expected); never a token or patient data
        self.detail = detail

    def operation_outcome(self) -> dict[str, Any]:
        return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="cds-services"'}

    def __str__(self) -> str:  # the reason is safe to log: it never holds the token itself
        return f"unauthorized ({self.reason})"


class ServiceUnavailable(CDSHooksError):
    """Something the request needs is down for now (the feedback database): 503, try again later."""

    status_code = 503
    issue_code = "transient"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "30"}


class Forbidden(CDSHooksError):
    status_code = 403
    issue_code = "forbidden"


class UnknownService(CDSHooksError):
    status_code = 404
    issue_code = "not-found"


class MethodNotAllowed(CDSHooksError):
    status_code = 405
    issue_code = "not-supported"


class PayloadTooLarge(CDSHooksError):
    status_code = 413
    issue_code = "too-costly"


class PreconditionFailed(CDSHooksError):
    """Required prefetch data is missing and could not be fetched (PF-12)."""

    status_code = 412
    issue_code = "incomplete"


class FHIRError(CDSHooksError):
    """A call to the EHR's FHIR server failed. Never answered as 5xx: the fetch layer turns it into
    a gap (cards from what was obtained) or a 412 when required data is missing."""

    status_code = 412
    issue_code = "incomplete"

    def __init__(self, diagnostics: str | None = None, *, response: Any = None):
        super().__init__(diagnostics)
        self.response = response


class FHIRUnauthorized(FHIRError):
    pass


class FHIRTimeout(FHIRError):
    pass


class FHIRBadResponse(FHIRError):
    pass
