"""The SMART on FHIR apps plugins serve (:mod:`cds_hooks.apps`), at ``/smart-apps/{id}/``: SMART App
Launch 2 EHR launch, sessions, FHIR reads with the user's token, and readable error pages.

A launch, as the EHR runs it when a clinician clicks a card's ``smart`` link:

1. ``GET /smart-apps/{id}/launch?iss=...&launch=...``. ``iss`` must be one of the FHIR bases the operator
   allows (``LUPUS_CDS_SMART_APP_ISS``), or the launch stops before any request is made: nobody can make
   the service fetch a URL of their choosing (server-side request forgery). Then discovery
   (``{iss}/.well-known/smart-configuration``, no redirects followed) and a redirect to the authorization
   endpoint: authorization code with PKCE S256 (authlib's ``OAuth2Session``), a random ``state``, ``aud``
   = ``iss`` and the EHR's ``launch``. The PKCE verifier and the state stay on the server.
2. ``GET /smart-apps/{id}/callback?code=...&state=...``. The pending launch is taken out of the store by
   its ``state`` (so a second use of one callback finds nothing), and must have been started by this same
   browser (its cookie) less than ten minutes ago. The code is exchanged for a token. Only the token
   response's ``patient`` says whose data is read; ``need_patient_banner`` says whether to show the banner;
   ``appContext`` (from the card link) names the view to open first.
3. ``GET /smart-apps/{id}/?s=<handle>``: the page. The session is found by the browser's cookie AND the
   handle in the URL, so two launches in two tabs (two patients) never see each other's session, and
   neither the URL nor the cookie alone reaches any data. The host reads the app's FHIR queries with the
   token (every ``next`` page, bounded), then the plugin renders the page from the resources.

Tokens stay on the server (:mod:`cds_hooks.app_sessions`) for the session only: never in a URL, a page,
a cookie or a log. The cookie is a random browser id: HttpOnly; ``SameSite=None; Secure`` so the app
works in an EHR's iframe, except on ``http://localhost`` where browsers refuse ``Secure`` cookies and
``Lax`` is used. Every page sends ``Content-Security-Policy`` with no script at all and
``frame-ancestors`` from ``LUPUS_CDS_SMART_APP_FRAME_ANCESTORS``, ``Cache-Control: no-store`` and
``Referrer-Policy: no-referrer`` (the callback URL holds the code).

Whatever goes wrong (unknown or reused launch, refused authorization, scope not granted, token expired,
FHIR server down) the user gets a page saying what happened and what to do, with a 4xx/5xx status,
never a stack trace.
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Blueprint, Flask, Response, current_app, redirect, request

from . import collector, jsonio
from .app_sessions import StoreUnavailable, digest, store_for
from .apps import AppPage, SmartAppDefinition
from .fhir_client import build_session, encode_query, within_base
from .prefetch import bundle_resources, next_link
from .smart import canonical_base

log = logging.getLogger("cds_hooks.smart_launch")

bp = Blueprint("smart_apps", __name__, url_prefix="/smart-apps")

COOKIE = "lupus_cds_smart"
COOKIE_PATH = "/smart-apps/"
#: seconds between the launch and the callback (the clinician signs in and consents in between)
LAUNCH_SECONDS = 600
#: FHIR reads of one page: per request (connect, read) and for the whole page, bounded so that a slow FHIR
#: server gets the user a page saying so rather than a request that hangs
FHIR_TIMEOUT = (3.05, 10.0)
PAGE_BUDGET = 15.0
MAX_PAGES = 50
MAX_BODY = 32 * 1024 * 1024
FHIR_JSON = "application/fhir+json"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_FHIR_ID = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")

BASE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;margin:0;color:#1b1b1b;
background:#fff;font-size:15px;line-height:1.4}
main{padding:12px 20px 40px;max-width:1100px}
.banner{background:#1f3a5f;color:#fff;padding:8px 20px;display:flex;gap:24px;flex-wrap:wrap;align-items:baseline}
.banner .name{font-size:1.15em;font-weight:600}
.error{max-width:720px;margin:40px auto;padding:20px 24px;border:1px solid #b3261e;border-left-width:6px;
border-radius:4px;background:#fff8f7}
.error h1{font-size:1.3em;margin-top:0;color:#8c1d18}
.error .what{color:#444;font-size:.9em}
"""


class AppError(Exception):
    """Ends a request with a readable page: ``status``, a title and what the user can do."""

    def __init__(self, status: int, title: str, message: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.title = title
        self.message = message
        self.reason = reason  # for the log: a fixed word, never request data


@dataclass
class SmartApps:
    """The apps, their settings and the session store, kept in ``app.extensions["smart_apps"]``."""

    apps: Mapping[str, SmartAppDefinition]
    allowed_iss: frozenset[str]
    client_id: str
    frame_ancestors: str
    session_seconds: int
    store: Any
    http: requests.Session
    pool: ThreadPoolExecutor


# ------------------------------------------------------------------------------------------ set-up


def collect_apps(pm: Any, config: Mapping[str, Any]) -> dict[str, SmartAppDefinition]:
    apps: dict[str, SmartAppDefinition] = {}
    for batch in pm.hook.cds_smart_apps(config=config):
        for app_def in batch or ():
            if app_def.id in apps:
                raise ValueError(f"two plugins declare the SMART app {app_def.id!r}")
            apps[app_def.id] = app_def
    return apps


def init_app(app: Flask, pm: Any, config: Mapping[str, Any], shared_state: Any) -> dict[str, SmartAppDefinition]:
    """Serve the plugins' SMART apps; returns them (the host's cards link to their launch URLs)."""
    apps = collect_apps(pm, config)
    allowed = frozenset(base for base in (canonical_base(url) for url in config["LUPUS_CDS_SMART_APP_ISS"])
                        if base)
    if not allowed:
        log.warning("LUPUS_CDS_SMART_APP is on but LUPUS_CDS_SMART_APP_ISS lists no FHIR server: "
                    "every launch will be refused")
    app.extensions["smart_apps"] = SmartApps(
        apps=MappingProxyType(apps), allowed_iss=allowed, client_id=str(config["LUPUS_CDS_SMART_APP_CLIENT_ID"]),
        frame_ancestors=str(config["LUPUS_CDS_SMART_APP_FRAME_ANCESTORS"]).strip() or "'none'",
        session_seconds=int(config["LUPUS_CDS_SMART_APP_SESSION_SECONDS"]), store=store_for(shared_state),
        http=build_session(pool_size=8), pool=ThreadPoolExecutor(max_workers=6, thread_name_prefix="smart-app"))
    app.register_blueprint(bp)
    _quiet_query_strings()
    return apps


class _NoQueryString(logging.Filter):
    """werkzeug's development server logs each request line with its query string, which here holds the
    authorization code and the launch id: keep the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args and isinstance(record.args[0], str) \
                and COOKIE_PATH in record.args[0] and "?" in record.args[0]:
            line = record.args[0]
            start = line.index("?")
            end = line.find(" ", start)
            record.args = (line[:start] + (line[end:] if end >= 0 else ""), *record.args[1:])
        return True


def _quiet_query_strings() -> None:
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, _NoQueryString) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(_NoQueryString())


def apps_state() -> SmartApps:
    return current_app.extensions["smart_apps"]


def _now() -> float:
    """The application's clock (tests pin it), as epoch seconds."""
    clock = current_app.extensions["cds_hooks"].clock
    return clock().timestamp()


def _app(app_id: str) -> SmartAppDefinition:
    found = apps_state().apps.get(app_id)
    if found is None:
        raise AppError(404, "No such app", "This address does not name an app of this service.", "unknown-app")
    return found


def _base_url() -> str:
    configured = current_app.config.get("LUPUS_CDS_PUBLIC_URL")
    return (configured or request.url_root).rstrip("/")


def app_url(app_id: str, path: str = "") -> str:
    return f"{_base_url()}{COOKIE_PATH}{app_id}/{path}"


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in _LOCAL_HOSTS


# ----------------------------------------------------------------------------------------- launch


@dataclass(frozen=True)
class SmartConfiguration:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None


def allowed_iss(iss: Any) -> str | None:
    """``iss`` when it names a FHIR base the operator allows, else ``None`` (nothing is fetched then)."""
    base = canonical_base(iss)
    return iss if base is not None and base in apps_state().allowed_iss else None


def discover(iss: str) -> SmartConfiguration:
    """``{iss}/.well-known/smart-configuration``: where to authorize and get tokens."""
    url = iss.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = apps_state().http.get(url, headers={"Accept": "application/json"}, timeout=FHIR_TIMEOUT,
                                         allow_redirects=False)
        body = jsonio.loads(response.content) if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        raise AppError(502, "The EHR's FHIR server cannot be reached",
                       "The service could not read the FHIR server's SMART configuration. Try again in a "
                       "moment; if it keeps failing, tell your EHR support team.", "discovery-failed") from None
    if not isinstance(body, dict):
        raise AppError(502, "The EHR's FHIR server has no SMART configuration",
                       "The FHIR server did not answer its SMART configuration, so the app cannot be "
                       "launched from it. Tell your EHR support team.", "discovery-failed")
    endpoints = [body.get("authorization_endpoint"), body.get("token_endpoint")]
    if not all(isinstance(u, str) and urlsplit(u).scheme in ("http", "https") and urlsplit(u).hostname
               for u in endpoints):
        raise AppError(502, "The EHR's FHIR server does not support app launch",
                       "Its SMART configuration names no authorization or token endpoint.", "discovery-incomplete")
    capabilities, grants = body.get("capabilities"), body.get("grant_types_supported")
    if (isinstance(capabilities, list) and "launch-ehr" not in capabilities) \
            or (isinstance(grants, list) and "authorization_code" not in grants):
        raise AppError(502, "The EHR's FHIR server does not support app launch",
                       "Its SMART configuration offers no EHR launch (capability launch-ehr, authorization code "
                       "grant): it serves other services, not apps a clinician opens.", "no-ehr-launch")
    methods = body.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise AppError(502, "The EHR's FHIR server does not support app launch",
                       "Its authorization server does not offer PKCE with S256, which this app requires.",
                       "no-pkce-s256")
    issuer = body.get("issuer")
    return SmartConfiguration(endpoints[0], endpoints[1], issuer if isinstance(issuer, str) else None)


def _oauth(app_def: SmartAppDefinition) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    return OAuth2Session(client_id=apps_state().client_id, scope=app_def.scope,
                         redirect_uri=app_url(app_def.id, "callback"), code_challenge_method="S256",
                         token_endpoint_auth_method="none")


@bp.get("/<app_id>/launch")
def launch(app_id: str) -> Response:
    app_def = _app(app_id)
    iss, launch_id = request.args.get("iss"), request.args.get("launch")
    if not iss or not launch_id:
        raise AppError(400, "Open this app from the EHR",
                       f"{app_def.title} opens from a card in your EHR, which starts it for one patient.",
                       "no-launch-parameters")
    if allowed_iss(iss) is None:
        raise AppError(403, "This EHR is not allowed to launch the app",
                       "The FHIR server that launched the app is not one this service is set up to read "
                       "(LUPUS_CDS_SMART_APP_ISS). Nothing was requested from it. Tell your EHR support team.",
                       "iss-not-allowed")
    smart = discover(iss)
    state = apps_state()
    browser = request.cookies.get(COOKIE)
    new_browser = not (isinstance(browser, str) and 20 <= len(browser) <= 100)
    if new_browser:
        browser = secrets.token_urlsafe(32)
    state_value = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43-128
    pending = {"app": app_id, "browser": digest(browser), "iss": iss, "verifier": verifier,
               "token_endpoint": smart.token_endpoint, "issuer": smart.issuer, "expires": _now() + LAUNCH_SECONDS}
    _put(state.store, "pending:" + digest(state_value), pending, LAUNCH_SECONDS)
    url, _ = _oauth(app_def).create_authorization_url(smart.authorization_endpoint, state=state_value,
                                                      code_verifier=verifier, aud=iss, launch=launch_id)
    log.info("SMART app launch: redirecting to the authorization server")
    response = redirect(url, 302)
    if new_browser:
        _set_cookie(response, browser)
    return response


def _set_cookie(response: Response, browser: str) -> None:
    # In an EHR's iframe the app is a third party: only SameSite=None cookies reach it, and those must be
    # Secure. Browsers drop Secure cookies on plain http, which is fine only on localhost: use Lax there.
    if _local(_base_url()):
        response.set_cookie(COOKIE, browser, path=COOKIE_PATH, httponly=True, samesite="Lax")
    else:
        response.set_cookie(COOKIE, browser, path=COOKIE_PATH, httponly=True, secure=True, samesite="None")


def _put(store: Any, key: str, record: dict[str, Any], ttl: float) -> None:
    try:
        store.put(key, record, ttl)
    except StoreUnavailable:
        raise AppError(503, "The app is unavailable", "Its session store cannot be reached. Try again in a "
                       "moment.", "store-unavailable") from None


def _take(store: Any, key: str, remove: bool) -> dict[str, Any] | None:
    try:
        return store.pop(key) if remove else store.get(key)
    except StoreUnavailable:
        raise AppError(503, "The app is unavailable", "Its session store cannot be reached. Try again in a "
                       "moment.", "store-unavailable") from None


# --------------------------------------------------------------------------------------- callback


_RELAUNCH = "Open the app again from the card in your EHR."


@bp.get("/<app_id>/callback")
def callback(app_id: str) -> Response:
    app_def = _app(app_id)
    state = apps_state()
    state_value = request.args.get("state")
    pending = _take(state.store, "pending:" + digest(state_value), remove=True) if state_value else None
    if pending is None or pending.get("app") != app_id:
        raise AppError(400, "This launch is not known", "It was already used (a page reloaded or opened twice), "
                       "or it was never started here. " + _RELAUNCH, "unknown-or-used-state")
    browser = request.cookies.get(COOKIE)
    if not browser or not secrets.compare_digest(digest(browser), str(pending.get("browser"))):
        raise AppError(400, "This launch belongs to another browser",
                       "The sign-in finished in a different browser (or cookies are blocked). " + _RELAUNCH,
                       "state-of-another-browser")
    if _now() > float(pending.get("expires", 0)):
        raise AppError(400, "This launch has expired", "Signing in took longer than ten minutes. " + _RELAUNCH,
                       "launch-expired")
    answered_by = request.args.get("iss")
    if answered_by and pending.get("issuer") and answered_by != pending["issuer"]:
        # RFC 9207: the answer came from another authorization server than the one this launch went to
        raise AppError(400, "The sign-in came from the wrong server", "The answer to this launch did not come "
                       "from the EHR's authorization server. " + _RELAUNCH, "issuer-mismatch")
    error = request.args.get("error")
    if error:
        denied = error == "access_denied"
        detail = request.args.get("error_description") or ""
        log.info("SMART app launch refused by the authorization server: %s", error if error.isidentifier()
                 else "other")
        raise AppError(403 if denied else 400,
                       "Access was not granted" if denied else "The EHR refused the launch",
                       ("The EHR's authorization server did not grant the app access to this patient's "
                        "record." if denied else "The EHR's authorization server refused to start the app "
                        f"({error}{': ' + detail if detail else ''}). The launch may have expired or been "
                        "used already. ") + " " + _RELAUNCH, "authorization-refused")
    code = request.args.get("code")
    if not code:
        raise AppError(400, "The EHR sent no authorization", "The sign-in returned no code. " + _RELAUNCH,
                       "no-code")
    token = _exchange(app_def, pending, code)
    patient = token.get("patient")
    if not (isinstance(patient, str) and 0 < len(patient) <= 64 and set(patient) <= _FHIR_ID):
        raise AppError(400, "The EHR named no patient",
                       "The app shows one patient's record, and the EHR's token response named none. "
                       + _RELAUNCH, "no-patient")
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise AppError(502, "The EHR sent no access token", "The token response held no access token. "
                       + _RELAUNCH, "no-access-token")
    lifetime = float(state.session_seconds)
    expires_in = token.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = min(lifetime, float(expires_in))
    handle = secrets.token_urlsafe(16)
    session = {"app": app_id, "iss": pending["iss"], "access_token": access_token, "patient": patient,
               "need_patient_banner": token.get("need_patient_banner") is not False,
               "app_context": token.get("appContext") if isinstance(token.get("appContext"), str) else None,
               "expires": _now() + lifetime}
    _put(state.store, "session:" + digest(browser, handle), session, lifetime + 60)
    log.info("SMART app session started")
    query = {"s": handle}
    view = app_def.view_of(session["app_context"])
    if view:
        query["view"] = view
    return redirect(app_url(app_id) + "?" + urlencode(query), 303)


def _exchange(app_def: SmartAppDefinition, pending: Mapping[str, Any], code: str) -> Mapping[str, Any]:
    from authlib.integrations.base_client.errors import OAuthError

    oauth = _oauth(app_def)
    try:
        return oauth.fetch_token(str(pending["token_endpoint"]), grant_type="authorization_code", code=code,
                                 code_verifier=str(pending["verifier"]), timeout=FHIR_TIMEOUT,
                                 allow_redirects=False)
    except OAuthError as exc:
        reason = exc.error if isinstance(exc.error, str) and exc.error.isidentifier() else "error"
        log.info("SMART app token request refused: %s", reason)
        raise AppError(400, "The EHR refused to issue a token",
                       f"The authorization server answered {reason}. The sign-in may have been used already "
                       "or have expired. " + _RELAUNCH, "token-refused") from None
    except (requests.RequestException, ValueError):
        raise AppError(502, "The EHR's authorization server cannot be reached",
                       "The token request failed. Try again in a moment. " + _RELAUNCH, "token-failed") from None
    finally:
        oauth.close()


# ------------------------------------------------------------------------------------------- page


@bp.get("/<app_id>/")
def page(app_id: str) -> Response:
    app_def = _app(app_id)
    state = apps_state()
    handle, browser = request.args.get("s"), request.cookies.get(COOKIE)
    key = "session:" + digest(browser, handle) if handle and browser else None
    session = _take(state.store, key, remove=False) if key else None
    if session is None or session.get("app") != app_id:
        raise AppError(401, "No open session", "This page is shown only inside a launch from the EHR, and this "
                       "one has ended or was never started in this browser. " + _RELAUNCH, "no-session")
    if _now() >= float(session.get("expires", 0)):
        state.store.delete(key)
        raise AppError(401, "The session has expired", "The EHR's permission to read this record has run out. "
                       + _RELAUNCH, "session-expired")
    views = {view for view, _ in app_def.views}
    view = request.args.get("view")
    view = view if view in views else app_def.view_of(session.get("app_context"))
    now = datetime.fromtimestamp(_now(), UTC)
    try:
        resources, notes = read_fhir(session, app_def.queries(session["patient"], now))
    except TokenRejected:
        state.store.delete(key)
        raise
    page_input = AppPage(
        patient_id=session["patient"], resources=resources, now=now, view=view,
        view_urls=MappingProxyType({v: app_url(app_id) + "?" + urlencode({"s": handle, "view": v})
                                    for v in views}),
        notes=notes, config=current_app.extensions["cds_hooks"].config)
    with collector.body_held():  # the resources read have no cycles: keep the collector from walking them
        body = app_def.render(page_input)
    banner = patient_banner(resources.get("patient", ())) if session.get("need_patient_banner") else ""
    return _html(app_def.title, banner + f"<main>{body}</main>", 200)


def patient_banner(patients: Iterable[Mapping[str, Any]]) -> str:
    """Name, birth date and sex of the launch's patient (shown when the EHR asks: ``need_patient_banner``)."""
    patient = next(iter(patients), None) or {}
    names = patient.get("name") if isinstance(patient.get("name"), list) else []
    chosen = next((n for n in names if isinstance(n, dict) and n.get("use") == "official"), None) \
        or next((n for n in names if isinstance(n, dict)), {})
    given = [g for g in chosen.get("given", []) if isinstance(g, str)] if isinstance(chosen.get("given"), list) \
        else []
    family = chosen.get("family") if isinstance(chosen.get("family"), str) else ""
    text = chosen.get("text") if isinstance(chosen.get("text"), str) else ""
    name = " ".join([*given, family]).strip() or text or "Name not recorded"
    birth = patient.get("birthDate") if isinstance(patient.get("birthDate"), str) else "not recorded"
    sex = patient.get("gender") if isinstance(patient.get("gender"), str) else "not recorded"
    return (f'<header class="banner" aria-label="Patient"><span class="name">{html.escape(name)}</span>'
            f"<span>Born {html.escape(birth[:10])}</span><span>Sex {html.escape(sex)}</span></header>")


# ---------------------------------------------------------------------------------- FHIR reading


class TokenRejected(AppError):
    def __init__(self) -> None:
        super().__init__(401, "The session has expired",
                         "The EHR's FHIR server no longer accepts this session's access (it expired or was "
                         "revoked). " + _RELAUNCH, "token-rejected")


def read_fhir(session: Mapping[str, Any], queries: Mapping[str, str]
              ) -> tuple[dict[str, tuple[dict[str, Any], ...]], dict[str, str]]:
    """Every query of the page, concurrently, with the session's token: key -> resources, key -> note.

    The Patient is read as ``"patient"``. Raises :class:`AppError` when any read fails: a page built on
    part of the record could mislead (a series that could not be read looks like no results).
    """
    state = apps_state()
    base = str(session["iss"]).rstrip("/")
    canonical = canonical_base(base)
    deadline = time.monotonic() + PAGE_BUDGET
    jobs = {"patient": f"Patient/{session['patient']}", **dict(queries)}
    futures = {key: state.pool.submit(_read_key, state.http, base, canonical, str(session["access_token"]), key,
                                      query, deadline) for key, query in jobs.items()}
    resources: dict[str, tuple[dict[str, Any], ...]] = {}
    notes: dict[str, str] = {}
    failure: AppError | None = None
    for key, future in futures.items():
        try:
            found, note = future.result()
        except AppError as exc:
            # the most telling failure wins: token rejected > scope denied > server down > anything else
            if failure is None or _rank(exc) < _rank(failure):
                failure = exc
            continue
        resources[key] = found
        if note:
            notes[key] = note
    if failure is not None:
        log.info("SMART app FHIR read failed: %s", failure.reason)
        raise failure
    return resources, notes


def _rank(error: AppError) -> int:
    return {"token-rejected": 0, "scope-denied": 1, "patient-not-found": 2}.get(error.reason, 3)


def _read_key(http: requests.Session, base: str, canonical: str | None, token: str, key: str, query: str,
              deadline: float) -> tuple[tuple[dict[str, Any], ...], str | None]:
    url: str | None = f"{base}/{encode_query(query)}"
    found: list[dict[str, Any]] = []
    pages = 0
    while url:
        status, body = _get(http, url, token, deadline)
        if status == 401:
            raise TokenRejected()
        if status == 403:
            kind = query.split("?", 1)[0].split("/", 1)[0]
            raise AppError(403, "The EHR did not grant access to all the data",
                           f"The FHIR server refused to let this session read {kind} resources (403): the "
                           "permission (scope) was not granted at launch. Ask your EHR support team to grant the "
                           "app's scopes, then open it again from the EHR.", "scope-denied")
        if status == 404 and key == "patient":
            raise AppError(404, "The patient was not found", "The FHIR server has no record of the patient this "
                           "launch named. " + _RELAUNCH, "patient-not-found")
        if status != 200 or not isinstance(body, dict):
            raise AppError(502, "The EHR's FHIR server did not answer", f"Reading the record failed (HTTP "
                           f"{status}). Try again in a moment; if it keeps failing, tell your EHR support team.",
                           "fhir-error")
        if "?" not in query:  # a read
            return (body,), None
        entries, _failed = bundle_resources(body)
        found.extend(entries)
        pages += 1
        url = next_link(body)
        if url and (canonical is None or not within_base(canonical, url)):
            return tuple(found), "the server's next page was on another server and was not read"
        if url and pages >= MAX_PAGES:
            return tuple(found), f"only the first {pages} pages of results were read"
    return tuple(found), None


def _get(http: requests.Session, url: str, token: str, deadline: float) -> tuple[int, Any]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise AppError(504, "The EHR's FHIR server is too slow", "Reading the record took too long. Try again "
                       "in a moment.", "fhir-timeout")
    timeout = (min(FHIR_TIMEOUT[0], left), min(FHIR_TIMEOUT[1], left))
    try:
        with http.get(url, headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON},
                      timeout=timeout, allow_redirects=False, stream=True) as response:
            raw = response.raw.read(MAX_BODY + 1, decode_content=True)
            if len(raw) > MAX_BODY:
                raise AppError(502, "The EHR's FHIR server sent too much", "A response was larger than the app "
                               "accepts.", "fhir-too-large")
            status = response.status_code
    except requests.Timeout:
        raise AppError(504, "The EHR's FHIR server is too slow", "Reading the record took too long. Try again "
                       "in a moment.", "fhir-timeout") from None
    except requests.RequestException:
        raise AppError(502, "The EHR's FHIR server cannot be reached", "The service could not connect to the "
                       "FHIR server to read the record. Try again in a moment; if it keeps failing, tell your "
                       "EHR support team.", "fhir-unreachable") from None
    if status != 200:
        return status, None
    try:
        return status, jsonio.loads(raw)
    except ValueError:
        return 502, None


# ----------------------------------------------------------------------------------- responses


@bp.get("/<app_id>/app.css")
def stylesheet(app_id: str) -> Response:
    app_def = _app(app_id)
    response = Response(BASE_CSS + app_def.stylesheet, mimetype="text/css")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _html(title: str, body: str, status: int) -> Response:
    # app.css is next to the page: an absolute path works whether or not the service sits behind a prefix
    css = html.escape(request.path.rsplit("/", 1)[0] + "/app.css") if "/" in request.path else "app.css"
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{html.escape(title)}</title>"
                f'<link rel="stylesheet" href="{css}"></head><body>{body}</body></html>')
    return Response(document, status=status, mimetype="text/html")


@bp.errorhandler(AppError)
def _app_error(error: AppError) -> Response:
    log.info("SMART app page refused: %s (%d)", error.reason, error.status)
    body = (f'<div class="error" role="alert"><h1>{html.escape(error.title)}</h1>'
            f"<p>{html.escape(error.message)}</p>"
            f'<p class="what">HTTP {error.status}</p></div>')
    return _html(error.title, body, error.status)


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    from werkzeug.exceptions import HTTPException

    if isinstance(error, HTTPException) and error.code and error.code < 500:
        return _app_error(AppError(error.code, "Page not available", error.description or "", "http-error"))
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    log.error("SMART app internal error %s at %s", type(error).__name__, where)
    return _app_error(AppError(500, "The app failed", "Something went wrong while building this page. Try "
                               "again; if it keeps failing, tell your EHR support team.", "internal-error"))


@bp.after_request
def _headers(response: Response) -> Response:
    state = apps_state()
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'; "
        f"frame-ancestors {state.frame_ancestors}")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
