"""The SMART on FHIR fetcher: obtains the prefetch keys a CDS client did not send, from the client's
``fhirServer`` (checklist PF-11, PF-12, FHIR-1..4).

Per hook call, :meth:`FHIRFetcher.fetch`

* decides whether ``fhirServer`` may be called at all (:meth:`FHIRFetcher.allowed_base`): only servers
  listed for the verified client (``fhir_servers`` in the trusted-clients file), servers the service
  has a SMART Backend Services registration for (``LUPUS_CDS_SMART_CLIENTS``) and, in unsigned sandbox
  mode only, ``LUPUS_CDS_SANDBOX_FHIR_SERVERS``. Any other URL is refused without a request, so a
  request body cannot turn the service into a proxy (server-side request forgery);
* picks the credentials: the request's ``fhirAuthorization`` bearer token when present (FHIR-2),
  otherwise a backend-services token (:mod:`cds_hooks.smart`), otherwise none (open sandbox servers only:
  ``LUPUS_CDS_SANDBOX_FHIR_SERVERS``);
* runs every rendered template, and every ``next`` link of a paginated prefetch, concurrently on the
  thread pool of that FHIR server (one pool per base URL, ``LUPUS_CDS_FHIR_CONCURRENCY`` threads each:
  a server that is slow or never answers fills only its own pool, so it cannot take the fetch capacity
  of another tenant's server), following ``next`` links as opaque URLs while they stay under the same
  base (origin and base path), up to ``LUPUS_CDS_FHIR_MAX_PAGES`` pages per key;
* stops at one total deadline (``LUPUS_CDS_FHIR_BUDGET``): each request's timeouts are capped by the
  time left, bodies are read in chunks with the deadline checked between chunks (a server dripping
  bytes cannot hold the call) and capped in size (``LUPUS_CDS_FHIR_MAX_RESPONSE_BYTES``).

Failures never raise out of :meth:`~FHIRFetcher.fetch`: a key that could not be had comes back
``MISSING`` with a ``note`` a clinician can read (the endpoint then answers 412 if the key is
required), and a key that was only partly read comes back with ``complete=False`` and a note. Tokens
are held only for the duration of the call and are never logged; logs name keys and outcomes, never
URLs (they hold patient ids).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import cpu, jsonio, metrics
from .errors import FHIRBadResponse, FHIRError, FHIRTimeout, FHIRUnauthorized
from .fetch import FetchRequest
from .models import PrefetchEntry, PrefetchStatus
from .prefetch import bundle_resources, next_link
from .smart import BackendServices, backend_from_config, canonical_base

log = logging.getLogger("cds_hooks.fhir_client")
# urllib3 logs every request URL at DEBUG, and FHIR search URLs carry patient ids: with the service's
# log level at DEBUG they would reach the logs. Its connection-pool logger stays at INFO or above.
_urllib3_log = logging.getLogger("urllib3.connectionpool")
if _urllib3_log.level < logging.INFO:
    _urllib3_log.setLevel(logging.INFO)

_CHUNK = 64 * 1024
_HEADER_SAFE = frozenset(map(chr, range(0x21, 0x7F)))


@dataclass(frozen=True)
class FetchLimits:
    """How much one hook call may spend on FHIR fetching.

    :ivar budget: seconds for all fetching of one hook call, token requests included.
    :ivar request_timeout: connect and per-read timeout of one HTTP request (also capped by the budget).
    :ivar max_pages: pages read per prefetch key, the first included.
    :ivar max_response_bytes: largest response body accepted (after decompression).
    """

    budget: float = 3.0
    request_timeout: float = 2.0
    max_pages: int = 10
    max_response_bytes: int = 10 * 1024 * 1024


#: urllib3 connection pools kept (one per FHIR host); beyond this many hosts the oldest pool is dropped
_HOST_POOLS = 64


def build_session(pool_size: int = 8) -> requests.Session:
    """A ``requests.Session`` for calls to FHIR and authorization servers.

    Retries cover only connection set-up failures of idempotent requests (the request never reached the
    server); a 5xx is not retried, since a retry would spend the budget of a server already failing.
    Cookies are refused, so nothing one hook call received can ride along on another call's request.
    """
    session = requests.Session()
    retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0,
                  allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False,
                  respect_retry_after_header=False, backoff_factor=0)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=_HOST_POOLS, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def encode_query(query: str) -> str:
    """Percent-encode a rendered relative FHIR URL so each value reaches the server as written.

    Templates hold values like ``code=http://example.org|123``; some servers and proxies mangle a raw
    ``//`` or ``|`` in a query string, so every name and value is decoded once and encoded again
    (already-encoded values stay the same). Commas stay literal: they separate OR-ed values in FHIR
    search. A ``+`` is kept as a plus sign (encoded), never read as a space.
    """
    path, _, search = query.partition("?")
    # "$" (operations), ":" and "@" are legal in a path segment and some servers match them literally.
    encoded_path = "/".join(quote(unquote(segment), safe="$:@!*'(),;=") for segment in path.split("/"))
    if not search:
        return encoded_path
    params = []
    for part in search.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        params.append(quote(unquote(name), safe=":") + sep + quote(unquote(value), safe=","))
    return encoded_path + "?" + "&".join(params)


def within_base(base: str, url: str) -> bool:
    """True when ``url`` is on the server of canonical ``base`` (same origin) and under its path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    location = canonical_base(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
    return location is not None and (location == base or location.startswith(base + "/"))


def valid_bearer_token(token: Any) -> bool:
    return isinstance(token, str) and 0 < len(token) <= 16 * 1024 and set(token) <= _HEADER_SAFE


class _Credentials:
    """The credentials of one hook call: an EHR token, a backend token, or none. Transient."""

    def __init__(self, base: str, fhir_server: str, access_token: str | None = None,
                 backend: BackendServices | None = None, renewable: bool = False):
        self.base = base
        self.fhir_server = fhir_server
        self.access_token = access_token
        self._backend = backend
        #: only a token taken from the cache may be renewed (a fresh one refused is a real refusal)
        self._renewable = renewable
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the token
        return f"_Credentials(base={self.base!r})"

    def renew(self, refused: str | None, deadline: float) -> str | None:
        """After a 401 to ``refused``, a cached backend token: the token to retry with, or None.

        Concurrent keys share one renewal: whoever comes second retries with the token already renewed.
        """
        with self._lock:
            if self._backend is None or refused is None:
                return None
            if self.access_token != refused:
                return self.access_token
            if not self._renewable:
                return None
            self._renewable = False
            token = self._backend.access_token(self.fhir_server, deadline, stale=refused)
            self.access_token = token.access_token
            return self.access_token


@dataclass
class _KeyJob:
    key: str
    url: str
    #: "read" (one resource), "search" (searchset Bundle) or "next" (later pages of a client's Bundle)
    kind: str
    resource_type: str


class FHIRFetcher:
    """:class:`cds_hooks.fetch.Fetcher` backed by the client's FHIR server (see the module docstring).

    :param backend: SMART Backend Services registrations (``LUPUS_CDS_SMART_CLIENTS``), or ``None``.
    :param sandbox_servers: open FHIR bases: callable in unsigned sandbox mode (``allow_unsigned``), and read
        without a token when the EHR sends none (for signed calls, only those the client may call).
    :param max_workers: FHIR requests in flight at once to one FHIR server (base URL) from this process.
        Each server has a pool of its own; the servers a process can call are the ones configured
        (clients' ``fhir_servers``, the sandbox list), so the pools are bounded in number too.
    """

    def __init__(self, *, limits: FetchLimits | None = None, backend: BackendServices | None = None,
                 sandbox_servers: Iterable[str] = (), allow_unsigned: bool = False, max_workers: int = 8,
                 session: requests.Session | None = None, monotonic: Callable[[], float] = time.monotonic):
        self.limits = limits or FetchLimits()
        self.backend = backend
        self.allow_unsigned = allow_unsigned
        self.sandbox_servers = frozenset(filter(None, (canonical_base(s.strip().rstrip("/"))
                                                       for s in sandbox_servers)))
        self.session = session or build_session(max_workers)
        self._monotonic = monotonic
        self.max_workers = max_workers
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()

    def _pool_for(self, base: str) -> ThreadPoolExecutor:
        """The thread pool of one FHIR server (canonical base URL), created on its first use."""
        with self._pools_lock:
            pool = self._pools.get(base)
            if pool is None:
                pool = self._pools[base] = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix=f"fhir-fetch-{len(self._pools)}")
            return pool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> FHIRFetcher:
        """The fetcher the settings describe (``LUPUS_CDS_FHIR_*``, ``LUPUS_CDS_SMART_*``,
        ``LUPUS_CDS_SANDBOX_FHIR_SERVERS``). With ``LUPUS_CDS_REDIS_URL`` the backend-services token
        cache is shared by every replica."""
        limits = FetchLimits(
            budget=float(cfg.get("LUPUS_CDS_FHIR_BUDGET") or 3.0),
            request_timeout=float(cfg.get("LUPUS_CDS_FHIR_TIMEOUT") or 2.0),
            max_pages=int(cfg.get("LUPUS_CDS_FHIR_MAX_PAGES") or 10),
            max_response_bytes=int(cfg.get("LUPUS_CDS_FHIR_MAX_RESPONSE_BYTES") or 10 * 1024 * 1024))
        workers = int(cfg.get("LUPUS_CDS_FHIR_CONCURRENCY") or 8)
        cache = None
        if cfg.get("LUPUS_CDS_REDIS_URL") and cfg.get("LUPUS_CDS_SMART_CLIENTS"):
            from .redis_state import RedisState

            state = RedisState.from_config(cfg)
            cache = state.token_cache() if state else None
        backend = backend_from_config(cfg, cache=cache, request_timeout=limits.request_timeout,
                                      session_factory=lambda: build_session(workers))
        sandbox = cfg.get("LUPUS_CDS_SANDBOX_FHIR_SERVERS") or ()
        if isinstance(sandbox, str):
            sandbox = [s for s in sandbox.split(",") if s.strip()]
        return cls(limits=limits, backend=backend, sandbox_servers=sandbox,
                   allow_unsigned=bool(cfg.get("LUPUS_CDS_ALLOW_UNSIGNED")), max_workers=workers)

    def public_jwks(self) -> dict[str, Any]:
        """The public keys of the backend-services registrations (for ``/.well-known/jwks.json``)."""
        return self.backend.public_jwks() if self.backend else {"keys": []}

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()

    # -- policy --

    def allowed_base(self, fhir_server: Any, client: Any) -> str | None:
        """The canonical base of ``fhir_server`` if the service may call it for ``client``, else None.

        Who may make the service call a server is the caller's own list: a signed client's
        ``fhir_servers``, or the sandbox allowlist for unsigned calls. The service's SMART registrations
        only say how to authenticate there; they grant no caller any reach. Otherwise any trusted client
        could name another tenant's server and have the service read it with the service's own
        credentials (a confused deputy), and learn that tenant's patient data from the cards."""
        if not isinstance(fhir_server, str):
            return None
        base = canonical_base(fhir_server.rstrip("/"))
        if base is None:
            return None
        allowed: set[str] = set()
        if client is not None:
            allowed.update(filter(None, (canonical_base(str(s).rstrip("/"))
                                         for s in getattr(client, "fhir_servers", ()) or ())))
        elif self.allow_unsigned:
            allowed.update(self.sandbox_servers)
        return base if base in allowed else None

    # -- the Fetcher interface --

    def fetch(self, request: FetchRequest) -> dict[str, PrefetchEntry]:
        started = self._monotonic()
        deadline = started + self.limits.budget
        keys = list(request.queries) + [k for k in request.next_pages if k not in request.queries]
        if not keys:
            return {}
        try:
            credentials = self._credentials(request, deadline)
        except FHIRError as error:
            log.info("FHIR fetch of %d key(s) not attempted: %s", len(keys), type(error).__name__)
            return {key: self._failed(key, key in request.next_pages and key not in request.queries,
                                      error.diagnostics or "the FHIR server cannot be used")
                    for key in keys}
        jobs = [self._job(key, query, credentials.fhir_server) for key, query in request.queries.items()]
        jobs += [_KeyJob(key, url, "next", "Bundle") for key, url in request.next_pages.items()
                 if key not in request.queries]
        pool = self._pool_for(credentials.base)  # this server's own threads only
        futures = {pool.submit(self._run, job, credentials, deadline): job for job in jobs}
        with cpu.waiting():  # the thread computes nothing meanwhile: another may (cds_hooks.cpu)
            done, not_done = wait(futures, timeout=max(0.0, deadline - self._monotonic()))
        results: dict[str, PrefetchEntry] = {}
        for future, job in futures.items():
            if future in done:
                results[job.key] = future.result()
            else:
                future.cancel()  # not started yet: it never will; running: it stops at the deadline
                results[job.key] = self._failed(job.key, job.kind == "next",
                                                "the FHIR server did not answer in time")
        log.info("FHIR fetch of %d key(s) in %.0f ms: %s", len(jobs), (self._monotonic() - started) * 1000,
                 ", ".join(f"{k}={e.status.value}{'' if e.complete else '(partial)'}"
                           for k, e in sorted(results.items())))
        return results

    def _credentials(self, request: FetchRequest, deadline: float) -> _Credentials:
        if not request.fhir_server:
            raise FHIRUnauthorized("the EHR named no FHIR server to fetch it from")
        base = self.allowed_base(request.fhir_server, request.client)
        if base is None:
            log.warning("refused to call a FHIR server that is not allowed for this client")
            raise FHIRUnauthorized("the EHR's FHIR server is not one this service may call")
        fhir_server = request.fhir_server.rstrip("/")
        authorization = request.fhir_authorization
        if authorization is not None:
            if not isinstance(authorization, Mapping):
                raise FHIRUnauthorized("the EHR sent an unusable FHIR authorization")
            patient = authorization.get("patient")
            # The token may reach one patient only; never use it for another (checked by the validator too).
            if patient is not None and patient != request.patient_id:
                raise FHIRUnauthorized("the EHR's access token is for another patient")
            token_type = authorization.get("token_type", "Bearer")
            token = authorization.get("access_token")
            if not isinstance(token_type, str) or token_type.lower() != "bearer" \
                    or not valid_bearer_token(token):
                raise FHIRUnauthorized("the EHR sent no usable bearer access token")
            return _Credentials(base, fhir_server, token)
        if self.backend is not None and base in self.backend.servers():
            with cpu.waiting():  # mostly a wait on the authorization server
                token = self.backend.access_token(fhir_server, deadline)
            return _Credentials(base, fhir_server, token.access_token, self.backend,
                                renewable=not token.fresh)
        if base in self.sandbox_servers and (request.client is not None or self.allow_unsigned):
            # An open sandbox server: anonymous reads (FHIR-3). For a signed call only because the client
            # may call this server anyway (allowed_base); the sandbox list itself sends no one anywhere.
            return _Credentials(base, fhir_server)
        raise FHIRUnauthorized("the EHR sent no access token for its FHIR server")

    @staticmethod
    def _job(key: str, query: str, fhir_server: str) -> _KeyJob:
        path = query.partition("?")[0]
        resource_type = path.split("/", 1)[0]
        kind = "search" if "?" in query or "/" not in path else "read"
        return _KeyJob(key, fhir_server + "/" + encode_query(query), kind, resource_type)

    @staticmethod
    def _failed(key: str, next_page: bool, why: str) -> PrefetchEntry:
        note = f"{key}: {why}"
        if next_page:
            # A paginated prefetch keeps its first page; the fetcher adds nothing and says so.
            return PrefetchEntry(key, PrefetchStatus.SATISFIED, (), complete=False, source="fhir",
                                 note=f"{note}; only the first page was available")
        return PrefetchEntry(key, PrefetchStatus.MISSING, source="fhir", note=note)

    # -- one key (runs on the pool) --

    def _run(self, job: _KeyJob, credentials: _Credentials, deadline: float) -> PrefetchEntry:
        try:
            return self._run_key(job, credentials, deadline)
        except Exception as exc:  # a bug here must cost one key, never the hook call
            log.error("FHIR fetch of key %s failed unexpectedly (%s)", job.key, type(exc).__name__)
            return self._failed(job.key, job.kind == "next", "the FHIR data could not be read")

    def _run_key(self, job: _KeyJob, credentials: _Credentials, deadline: float) -> PrefetchEntry:
        resources: list[dict[str, Any]] = []
        seen: set[str] = set()
        url: str | None = job.url
        pages = 0
        max_pages = self.limits.max_pages - (1 if job.kind == "next" else 0)
        gap: str | None = None
        while url is not None:
            if not within_base(credentials.base, url):
                log.warning("key %s: refused a next link outside the FHIR server's base", job.key)
                gap = "the FHIR server's next link points elsewhere and was not followed"
                break
            if url in seen:
                gap = "the FHIR server's next links go round in a loop"
                break
            if pages >= max_pages:
                gap = f"more pages than the {self.limits.max_pages} read"
                break
            seen.add(url)
            try:
                status, body = self._get(url, credentials, deadline)
            except FHIRError as error:
                if pages == 0:
                    return self._failed(job.key, job.kind == "next", error.diagnostics or "FHIR error")
                gap = f"{error.diagnostics}; later pages are missing"
                break
            pages += 1
            if job.kind == "read":
                return self._read_entry(job, status, body)
            if status != 200 or not isinstance(body, dict) or body.get("resourceType") != "Bundle" \
                    or body.get("type") != "searchset":
                why = "the FHIR server answered with something other than a search result"
                if pages == 1:
                    return self._failed(job.key, job.kind == "next", why)
                gap = f"{why}; later pages are missing"
                break
            page_resources, reported_error = bundle_resources(body)
            resources.extend(page_resources)
            if reported_error:
                gap = "the FHIR server reported an error for part of the search"
            following = next_link(body)
            url = urljoin(url, following) if following else None
        return PrefetchEntry(job.key, PrefetchStatus.SATISFIED, tuple(resources), complete=gap is None,
                             source="fhir", note=f"{job.key}: {gap}" if gap else None)

    def _read_entry(self, job: _KeyJob, status: int, body: Any) -> PrefetchEntry:
        if status in (404, 410):
            # A read names a resource of the request's context (Patient/{{context.patientId}}): the EHR
            # asked about something its own FHIR server does not have. That is missing data (412 when the
            # key is required), not "no data": cards for an empty record would look like a clean bill.
            return self._failed(job.key, False, f"the FHIR server has no {job.resource_type} with the id "
                                                f"given in the request's context (HTTP {status})")
        if not isinstance(body, dict) or body.get("resourceType") != job.resource_type:
            return self._failed(job.key, False, f"the FHIR server did not return a {job.resource_type}")
        return PrefetchEntry(job.key, PrefetchStatus.SATISFIED, (body,), source="fhir")

    def _get(self, url: str, credentials: _Credentials, deadline: float) -> tuple[int, Any]:
        """GET ``url``; the status and parsed JSON body. Raises :class:`FHIRError` subclasses.
        Each request's latency and outcome go to the ``cds_fhir_fetch_*`` metrics."""
        started = self._monotonic()
        outcome = "error"
        try:
            result = self._get_checked(url, credentials, deadline)
            outcome = "ok"
            return result
        except FHIRTimeout:
            outcome = "timeout"
            raise
        except FHIRUnauthorized:
            outcome = "unauthorized"
            raise
        except FHIRBadResponse:
            outcome = "bad-response"
            raise
        finally:
            metrics.observe_fetch(self._monotonic() - started, outcome)

    def _get_checked(self, url: str, credentials: _Credentials, deadline: float) -> tuple[int, Any]:
        token = credentials.access_token
        status, body = self._get_once(url, token, deadline)
        if status == 401:
            # A cached backend token the server no longer accepts (revoked, server restarted): renew once.
            retry_token = credentials.renew(token, deadline)
            if retry_token is not None:
                status, body = self._get_once(url, retry_token, deadline)
        if status in (401, 403):
            raise FHIRUnauthorized(f"the FHIR server refused access (HTTP {status})")
        if status in (404, 410):
            return status, None
        if status != 200:
            raise FHIRBadResponse(f"the FHIR server answered HTTP {status}")
        return status, body

    def _get_once(self, url: str, token: str | None, deadline: float) -> tuple[int, Any]:
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            raise FHIRTimeout("the FHIR server did not answer in time")
        timeout = min(self.limits.request_timeout, remaining)
        headers = {"Accept": "application/fhir+json, application/json;q=0.9"}
        if token:
            headers["Authorization"] = "Bearer " + token
        try:
            response = self.session.get(url, headers=headers, timeout=(timeout, timeout),
                                        stream=True, allow_redirects=False)
        except requests.Timeout:
            raise FHIRTimeout("the FHIR server did not answer in time") from None
        except requests.RequestException as exc:
            raise FHIRBadResponse(f"the FHIR server could not be reached ({type(exc).__name__})") from None
        with response:
            if response.status_code != 200:
                return response.status_code, None
            raw = self._read_body(response, deadline)
        try:
            return 200, jsonio.loads(raw)
        except ValueError:
            raise FHIRBadResponse("the FHIR server's answer is not valid JSON") from None

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        cap = self.limits.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise FHIRBadResponse("the FHIR server's answer is larger than allowed")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                # read1 returns what has arrived instead of waiting for a full chunk, so a server
                # dripping bytes is noticed at the deadline rather than after the whole body.
                chunk = response.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise FHIRBadResponse("the FHIR server's answer is larger than allowed")
                chunks.append(chunk)
                if self._monotonic() > deadline:
                    raise FHIRTimeout("the FHIR server did not answer in time")
        except FHIRError:
            raise
        except Exception as exc:  # urllib3 read timeouts, protocol and decoding errors
            name = type(exc).__name__
            if "Timeout" in name:
                raise FHIRTimeout("the FHIR server did not answer in time") from None
            raise FHIRBadResponse(f"the FHIR server's answer was cut off ({name})") from None
        return b"".join(chunks)
