"""Who is calling? Verification of the CDS client's JWT (checklist 8.2, SEC-3..SEC-12).

Every call from a CDS client carries ``Authorization: Bearer <JWT>``, signed with the client's private
key. :class:`ClientAuthenticator` checks that token and answers with a :class:`VerifiedClient` or
raises :class:`~cds_hooks.errors.Unauthorized` whose ``reason`` is a short code for logs and metrics
(the HTTP answer never says which check failed).

Trusted clients come from a JSON file (``LUPUS_CDS_CLIENTS``)::

    {"clients": [
        {"iss": "https://ehr.example.org", "jwks": {"keys": [...]}, "tenant": "t1",
         "fhir_servers": ["https://ehr.example.org/fhir"]},
        {"iss": "https://other.example.org", "jwks_url": "https://other.example.org/jwks.json"}
    ]}

Each client has ``jwks`` (keys exchanged out of band), ``jwks_url`` (keys fetched from the client,
cached, refreshed only when a token names an unknown ``kid``), or both: then the keys are pinned to
``jwks`` and never fetched (offline use), and ``jwks_url`` only names the ``jku`` its tokens may carry
(the CDS Hooks Sandbox puts one in every token).

EHR profiles (deploy/REGISTRATION.md): an EHR that signs with keys at several URLs (Oracle Health publishes
a list of allowed ``jku`` values) is registered with ``"jwks_urls": [...]``, alone or next to
``jwks_url``; a token's ``jku`` must be one of them, and its keys are fetched from that URL only. A
fetched JWK Set is cached for the lifetime its response gives (``Cache-Control: max-age`` or ``Expires``,
bounded by :data:`JWKS_MIN_CACHE` and :data:`JWKS_MAX_CACHE`, :data:`JWKS_DEFAULT_CACHE` without either)
and, as before, refreshed early when a token names an unknown ``kid``. ``"sub"`` (Epic sends the client
id the health system configured) makes the token's ``sub`` claim required and equal to it.

Decisions beyond the spec (our policy, see checklist sections 8.2 and 12):

* Only asymmetric algorithms are accepted (RS*, PS*, ES*); ``none`` and every ``HS*`` are refused
  before any key is looked up (SEC-10), so a public key can never be misused as an HMAC secret.
* ``typ`` must be ``JWT`` (case-insensitive) and ``kid`` must be present (SEC-6).
* A ``jku`` header is accepted only if it equals that client's configured ``jwks_url`` exactly; the
  service never fetches a URL chosen by the token (SSRF and key injection, SEC-12).
* ``aud`` must be one accepted audience as a string or a one-element array. A multi-element array is
  refused even if it contains our URL: the spec describes ``aud`` as *the* endpoint being invoked, and
  a token addressed to several services could be replayed against each of them.
* ``exp``, ``iat`` and ``jti`` are required, ``exp - iat`` is capped (``LUPUS_CDS_JWT_MAX_LIFETIME``)
  and clocks may differ by ``LUPUS_CDS_JWT_LEEWAY`` seconds.
* A ``jti`` is remembered (per issuer) until ``exp + leeway``, and only once every other check passed,
  so a forged or wrong-audience token cannot burn a legitimate client's ``jti``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError, MissingAlgorithmError
from joserfc.jwk import JWKRegistry, Key, KeySet

from .errors import Unauthorized

log = logging.getLogger(__name__)

#: Asymmetric JWS algorithms we trust (SEC-10, SEC-11). Anything else is refused before key lookup.
ALLOWED_ALGORITHMS = frozenset({
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
})
#: A client JWT is a few hundred bytes; refusing huge headers early bounds parsing work.
MAX_TOKEN_LENGTH = 16 * 1024
#: ``jti`` values are stored; a cap keeps one signed token from holding a lot of memory.
MAX_JTI_LENGTH = 512
#: Minimum seconds between two fetches of one client's ``jwks_url``, so tokens naming random ``kid``
#: values cannot make us fetch on every request.
JWKS_REFRESH_INTERVAL = 60.0
#: Timeout for fetching a ``jwks_url``: a request thread waits at most this long.
JWKS_FETCH_TIMEOUT = 3.0
#: Bounds on how long a fetched JWK Set is used before it is fetched again, whatever its HTTP cache
#: headers say: ``no-store`` cannot make us fetch per request, a year-long ``max-age`` cannot keep a
#: revoked key trusted for a year.
JWKS_MIN_CACHE = JWKS_REFRESH_INTERVAL
JWKS_MAX_CACHE = 24 * 3600.0
#: Lifetime of a fetched JWK Set whose response has neither ``Cache-Control: max-age`` nor ``Expires``.
JWKS_DEFAULT_CACHE = 3600.0

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_CLIENT_FIELDS = frozenset({"iss", "jwks", "jwks_url", "jwks_urls", "sub", "tenant", "fhir_servers"})
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ReplayStore(Protocol):
    """Remembers accepted ``jti`` values. A shared (Redis) implementation lives in ``redis_state``."""

    def add_if_new(self, key: str, expires_at: float) -> bool:
        """Remember ``key`` until ``expires_at`` (epoch seconds).

        :param key: ``f"{iss}|{jti}"``.
        :param expires_at: when the key may be forgotten (the token can no longer be accepted).
        :return: ``True`` if the key was new, ``False`` if it was already stored (a replay).
        """
        ...


class InMemoryReplayStore:
    """A thread-safe :class:`ReplayStore` for one process. Expired entries are evicted on each add.

    :param clock: epoch-seconds clock; the authenticator passes its own so tests stay deterministic.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        # (expires_at, key) min-heap: eviction pops only what has expired instead of scanning the dict.
        self._heap: list[tuple[float, str]] = []

    def add_if_new(self, key: str, expires_at: float) -> bool:
        """:param key: ``f"{iss}|{jti}"``.
        :param expires_at: epoch seconds after which the key is forgotten.
        :return: ``True`` if ``key`` was not stored (or had expired), ``False`` for a replay.
        """
        with self._lock:
            now = self._clock()
            self._evict(now)
            known = self._expiry.get(key)
            if known is not None and known > now:
                return False
            self._expiry[key] = expires_at
            heappush(self._heap, (expires_at, key))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _evict(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires_at, key = heappop(self._heap)
            # The heap may hold a stale entry for a key that was re-added with a later expiry.
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]


@dataclass(frozen=True)
class TrustedClient:
    """One entry of the trusted-clients file.

    :ivar iss: the issuer the client puts in ``iss``, compared exactly.
    :ivar jwks: the client's public keys, exchanged out of band (or ``None``).
    :ivar jwks_url: where the client publishes its JWK Set (or ``None``); a ``jku`` it may name.
    :ivar tenant: if set, the token's ``tenant`` claim must equal it.
    :ivar fhir_servers: FHIR base URLs this client may make us call (enforced by the caller).
    :ivar jwks_urls: further JWK Set URLs the client may name in ``jku`` (an allow-list, e.g. Oracle Health's).
    :ivar sub: if set, the token's ``sub`` claim must equal it (e.g. the client id Epic is configured with).
    """

    iss: str
    jwks: KeySet | None = None
    jwks_url: str | None = None
    tenant: str | None = None
    fhir_servers: tuple[str, ...] = ()
    jwks_urls: tuple[str, ...] = ()
    sub: str | None = None

    def __post_init__(self) -> None:
        if self.jwks is None and not self.key_urls:
            raise ValueError(f"trusted client {self.iss!r}: give 'jwks', 'jwks_url'/'jwks_urls' or both")

    @property
    def key_urls(self) -> tuple[str, ...]:
        """Every JWK Set URL of this client (``jwks_url`` first, then ``jwks_urls``), each once."""
        return tuple(dict.fromkeys(((self.jwks_url,) if self.jwks_url else ()) + self.jwks_urls))


@dataclass(frozen=True)
class VerifiedClient:
    """The caller, once its JWT passed every check.

    :ivar iss: the verified issuer.
    :ivar tenant: the configured tenant, else the token's ``tenant`` claim, else ``None``.
    :ivar jti: the token id (safe to log; the token itself never is).
    :ivar fhir_servers: FHIR base URLs this client may make us call.
    """

    iss: str
    tenant: str | None
    jti: str
    fhir_servers: tuple[str, ...]


def load_clients(path: str | Path) -> list[TrustedClient]:
    """Read and check the trusted-clients file.

    :param path: the JSON file named by ``LUPUS_CDS_CLIENTS``.
    :raises ValueError: the file is missing or malformed; the message names the file and the problem
        but never contains key material.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the trusted-clients file {path} ({exc.strerror or type(exc).__name__}): "
                         "name a readable JSON file, or unset it to trust no client") from None
    except ValueError as exc:  # JSONDecodeError or UnicodeDecodeError; neither message quotes content
        raise ValueError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
        raise ValueError(f'{path}: expected a JSON object {{"clients": [...]}}')
    clients: list[TrustedClient] = []
    seen: set[str] = set()
    for index, entry in enumerate(data["clients"]):
        client = _parse_client(entry, f"{path}: clients[{index}]")
        if client.iss in seen:
            raise ValueError(f"{path}: clients[{index}]: duplicate iss {client.iss!r}")
        seen.add(client.iss)
        clients.append(client)
    return clients


def _parse_client(entry: Any, where: str) -> TrustedClient:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(entry) - _CLIENT_FIELDS)
    if unknown:
        # Catches typos such as "jwks_uri", which would otherwise silently leave a client keyless.
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} "
                         f"(allowed: {', '.join(sorted(_CLIENT_FIELDS))})")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss:
        raise ValueError(f"{where}: 'iss' must be a non-empty string")
    where = f"{where} (iss {iss!r})"
    if "jwks" not in entry and "jwks_url" not in entry and "jwks_urls" not in entry:
        raise ValueError(f"{where}: give 'jwks' (the client's public keys), 'jwks_url'/'jwks_urls' (where it "
                         "publishes them) or both (keys pinned; the URLs are the jku its tokens may name)")
    tenant = entry.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise ValueError(f"{where}: 'tenant' must be a non-empty string")
    servers = entry.get("fhir_servers", [])
    if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
        raise ValueError(f"{where}: 'fhir_servers' must be a list of URLs")
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None:
        _check_jwks_url(jwks_url, where)
    keys = _parse_static_jwks(entry["jwks"], where) if "jwks" in entry else None
    return TrustedClient(iss=iss, jwks=keys, jwks_url=jwks_url, tenant=tenant, fhir_servers=tuple(servers),
                         jwks_urls=_parse_jwks_urls(entry, where), sub=_parse_sub(entry, where))


def _parse_jwks_urls(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    """``jwks_urls``: the list of JWK Set URLs a client may name in ``jku`` (besides ``jwks_url``)."""
    urls = entry.get("jwks_urls", [])
    if not isinstance(urls, list) or ("jwks_urls" in entry and not urls):
        raise ValueError(f"{where}: 'jwks_urls' must be a non-empty list of URLs")
    for url in urls:
        _check_jwks_url(url, where, "jwks_urls")
    return tuple(dict.fromkeys(urls))


def _parse_sub(entry: dict[str, Any], where: str) -> str | None:
    sub = entry.get("sub")
    if sub is not None and (not isinstance(sub, str) or not sub):
        raise ValueError(f"{where}: 'sub' must be a non-empty string")
    return sub


def _check_jwks_url(url: Any, where: str, field: str = "jwks_url") -> None:
    if not isinstance(url, str):
        raise ValueError(f"{where}: '{field}' must be a URL string")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{where}: '{field}' must be an absolute https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        # Keys over plain HTTP can be swapped in transit (SEC-1); allowed only so test set-ups work.
        log.warning("trusted client %s: %s is plain http; use https outside a sandbox", where, field)


def _parse_static_jwks(value: Any, where: str) -> KeySet:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ValueError(f"{where}: 'jwks' must be a JWK Set {{\"keys\": [...]}} with at least one key")
    keys: list[Key] = []
    kids: set[str] = set()
    for number, data in enumerate(value["keys"]):
        here = f"{where}: jwks.keys[{number}]"
        if not isinstance(data, dict):
            raise ValueError(f"{here}: expected a JWK object")
        if data.get("kty") not in ("RSA", "EC"):
            raise ValueError(f"{here}: kty must be RSA or EC (symmetric and other keys are not accepted)")
        if "d" in data or "p" in data:
            # A private key here means it was copied from the wrong file: refuse rather than keep it.
            raise ValueError(f"{here}: contains private key material; give the public key only")
        kid = data.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ValueError(f"{here}: 'kid' is required (tokens name their key by kid, SEC-6)")
        if kid in kids:
            raise ValueError(f"{here}: duplicate kid {kid!r}")
        kids.add(kid)
        try:
            keys.append(JWKRegistry.import_key(data))
        except (JoseError, ValueError, TypeError) as exc:
            raise ValueError(f"{here}: not a valid public JWK ({type(exc).__name__})") from None
    return KeySet(keys)


class _RemoteKeys:
    """The cached JWK Set at one URL of one client; fetched lazily, refreshed when rate allows."""

    def __init__(self, url: str):
        self.url = url
        self.keys: list[Key] = []
        self.last_attempt: float | None = None
        #: when the keys must be fetched again (their HTTP cache lifetime); ``None`` before the first fetch
        self.expires_at: float | None = None
        self.lock = threading.Lock()

    def fresh(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at


def cache_lifetime(headers: Any, now: float, *, default: float = JWKS_DEFAULT_CACHE,
                   minimum: float = JWKS_MIN_CACHE, maximum: float = JWKS_MAX_CACHE) -> float:
    """Seconds a fetched JWK Set may be used, from its response headers (RFC 9111 freshness), bounded.

    ``Cache-Control: no-store``/``no-cache``/``max-age=0`` give ``minimum``; ``max-age`` wins over
    ``Expires`` (measured from the response's ``Date``, else ``now``); ``Age`` is subtracted. A malformed
    ``Expires`` means "already expired" (RFC 9111 section 5.3). Neither header gives ``default``.
    """
    lifetime: float | None = None
    cache_control = _header(headers, "Cache-Control")
    if cache_control:
        directives = {}
        for part in cache_control.split(","):
            name, _, value = part.strip().partition("=")
            directives[name.strip().lower()] = value.strip().strip('"')
        if "no-store" in directives or "no-cache" in directives:
            lifetime = 0.0
        elif directives.get("max-age", "").isdigit():
            lifetime = float(directives["max-age"])
    expires = _header(headers, "Expires")
    if lifetime is None and expires:
        expires_at = _http_date(expires)
        date = _http_date(_header(headers, "Date") or "")
        lifetime = 0.0 if expires_at is None else expires_at - (date if date is not None else now)
    if lifetime is None:
        return default
    age = _header(headers, "Age")
    if age and age.isdigit():
        lifetime -= float(age)
    return min(max(lifetime, minimum), maximum)


def _header(headers: Any, name: str) -> str | None:
    """A header value from a ``requests`` (case-insensitive) or plain mapping; ``None`` when absent."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name.lower()), None)
    return value.strip() if isinstance(value, str) else None


def _http_date(text: str) -> float | None:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class ClientAuthenticator:
    """Verifies CDS client JWTs against a list of trusted clients.

    :param clients: the trusted clients (see :func:`load_clients`).
    :param max_lifetime: longest accepted ``exp - iat``, in seconds.
    :param leeway: tolerated clock skew on ``exp`` and ``iat``, in seconds.
    :param replay_store: where accepted ``jti`` values are remembered; default: in memory (one process).
    :param http_get: ``requests.get``-like callable used to fetch ``jwks_url`` (called as
        ``http_get(url, timeout=...)``, must return an object with ``status_code`` and ``json()``).
    :param clock: epoch-seconds clock.
    :param jwks_refresh_interval: minimum seconds between two fetches of one client's ``jwks_url``.
    :param fetch_timeout: timeout in seconds for a ``jwks_url`` fetch.
    """

    def __init__(self, clients: list[TrustedClient], *, max_lifetime: int = 3600, leeway: int = 60,
                 replay_store: ReplayStore | None = None, http_get: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 jwks_refresh_interval: float = JWKS_REFRESH_INTERVAL,
                 fetch_timeout: float = JWKS_FETCH_TIMEOUT):
        if max_lifetime <= 0:
            raise ValueError("LUPUS_CDS_JWT_MAX_LIFETIME must be a positive number of seconds")
        if leeway < 0:
            raise ValueError("LUPUS_CDS_JWT_LEEWAY must not be negative")
        self.clients: dict[str, TrustedClient] = {}
        for client in clients:
            if client.iss in self.clients:
                raise ValueError(f"duplicate trusted client iss {client.iss!r}")
            self.clients[client.iss] = client
        self.max_lifetime = max_lifetime
        self.leeway = leeway
        self.clock = clock
        self.replay_store: ReplayStore = (
            replay_store if replay_store is not None else InMemoryReplayStore(clock))
        if http_get is None:
            import requests

            http_get = requests.get
        self.http_get = http_get
        self.jwks_refresh_interval = jwks_refresh_interval
        self.fetch_timeout = fetch_timeout
        # Inline keys are pinned: a client that has them is never fetched for, even with key URLs.
        self._remote = {(c.iss, url): _RemoteKeys(url) for c in clients if c.jwks is None for url in c.key_urls}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> ClientAuthenticator:
        """Build from ``LUPUS_CDS_CLIENTS`` (path, or unset for no trusted clients),
        ``LUPUS_CDS_JWT_MAX_LIFETIME`` and ``LUPUS_CDS_JWT_LEEWAY``.

        :param config: the service configuration.
        :param kwargs: passed on to the constructor (``replay_store``, ``http_get``, ``clock``, ...).
        :raises ValueError: the clients file is malformed, or a setting is out of range.
        """
        path = config.get("LUPUS_CDS_CLIENTS")
        clients = load_clients(path) if path else []
        return cls(clients, max_lifetime=int(config.get("LUPUS_CDS_JWT_MAX_LIFETIME", 3600)),
                   leeway=int(config.get("LUPUS_CDS_JWT_LEEWAY", 60)), **kwargs)

    def verify(self, authorization_header: str | None, audiences: Sequence[str]) -> VerifiedClient:
        """Check the client JWT of one request.

        :param authorization_header: the raw ``Authorization`` header value, ``Bearer <jwt>``.
        :param audiences: the ``aud`` values accepted by the endpoint being called (SEC-8).
        :return: the verified client.
        :raises Unauthorized: on any failure; ``reason`` is a short code, never the token.
        """
        token = _bearer_token(authorization_header)
        header, claims = _peek(token)
        alg = _check_header(header)

        iss = claims.get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise Unauthorized("iss")
        # SEC-12: the token may only point at a key URL we already trust for this client.
        if "jku" in header and header["jku"] not in client.key_urls:
            raise Unauthorized("jku")

        key = self._find_key(client, header["kid"], header.get("jku"))
        if key.get("use") not in (None, "sig") or key.get("alg") not in (None, alg):
            raise Unauthorized("alg")
        try:
            verified = jwt.decode(token, key, algorithms=[alg])
        except (JoseError, ValueError, TypeError):
            raise Unauthorized("signature") from None
        claims = verified.claims

        now = self.clock()
        jti = self._check_claims(claims, client, audiences, now)
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise Unauthorized("tenant")
        if client.tenant is not None and tenant != client.tenant:
            raise Unauthorized("tenant")

        # Last: only a token that passed everything else may occupy its jti (SEC-12, BP step 6).
        if not self.replay_store.add_if_new(f"{client.iss}|{jti}", float(claims["exp"]) + self.leeway):
            raise Unauthorized("replay")
        return VerifiedClient(iss=client.iss, tenant=client.tenant or tenant, jti=jti,
                              fhir_servers=client.fhir_servers)

    def _check_claims(self, claims: dict[str, Any], client: TrustedClient, audiences: Sequence[str],
                      now: float) -> str:
        # Presence first, in a fixed order, so the reason does not depend on claim order in the token.
        for name in ("aud", "exp", "iat", "jti"):
            if claims.get(name) is None:
                raise Unauthorized(name)
        aud = claims["aud"]
        # The log says which audience was expected (our own URLs), and how the token's differs without
        # quoting it (it could hold anything): a wrong LUPUS_CDS_PUBLIC_URL is the usual cause.
        expected = "expected " + " or ".join(repr(a) for a in audiences)
        if isinstance(aud, list):
            if len(aud) != 1:  # see the module docstring: one audience only
                raise Unauthorized("aud", f"{expected}; the token names {len(aud)} audiences")
            aud = aud[0]
        if not isinstance(aud, str) or aud not in audiences:
            raise Unauthorized("aud", f"{expected}; {_how_aud_differs(aud, audiences)}")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise Unauthorized("jti")

        # A registered ``sub`` (Epic: the client id the health system configured) must be in the token.
        sub = {"sub": {"essential": True, "value": client.sub}} if client.sub is not None else {}
        registry = jwt.JWTClaimsRegistry(
            now=math.floor(now), leeway=self.leeway,
            iss={"essential": True, "value": client.iss},
            aud={"essential": True, "values": list(audiences)},
            exp={"essential": True}, iat={"essential": True}, jti={"essential": True}, **sub,
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthorized("exp") from None
        except ClaimError as exc:
            raise Unauthorized(exc.claim if exc.claim in ("iss", "aud", "exp", "iat", "nbf", "jti", "sub")
                               else "claims") from None
        # Our policy (checklist 12): a token valid for hours would need a replay memory as long.
        if not 0 <= claims["exp"] - claims["iat"] <= self.max_lifetime:
            raise Unauthorized("lifetime")
        return jti

    def _find_key(self, client: TrustedClient, kid: str, jku: str | None = None) -> Key:
        if client.jwks is not None:
            key = _by_kid(client.jwks, kid)
            if key is None:
                raise Unauthorized("kid")
            return key
        # A token naming its jku is checked against that URL's keys only; without one, any of the client's.
        for url in (jku,) if jku is not None else client.key_urls:
            key = self._remote_key(client.iss, self._remote[(client.iss, url)], kid)
            if key is not None:
                return key
        raise Unauthorized("kid")

    def _remote_key(self, iss: str, remote: _RemoteKeys, kid: str) -> Key | None:
        """The key ``kid`` at one URL: from the cache while it is fresh, else fetched again (rate-limited)."""
        if remote.fresh(self.clock()):
            key = _by_kid(remote.keys, kid)
            if key is not None:
                return key
        # Expired, or an unknown kid (the client may have rotated its keys): fetch again, but at most once
        # per interval per URL, whatever the outcome, so forged kids cannot turn into one fetch per request.
        with remote.lock:
            if remote.fresh(self.clock()):
                key = _by_kid(remote.keys, kid)  # another thread may have refreshed while we waited
                if key is not None:
                    return key
            if self._may_fetch(remote):
                now = self.clock()
                remote.last_attempt = now
                fetched = self._fetch(iss, remote.url)
                if fetched is not None:
                    remote.keys, lifetime = fetched
                    remote.expires_at = now + lifetime
            # A failed or rate-limited fetch keeps the cached keys: an outage at the client's key URL
            # does not lock it out; a successful fetch without the kid (a revoked key) does.
            return _by_kid(remote.keys, kid)

    def _may_fetch(self, remote: _RemoteKeys) -> bool:
        return remote.last_attempt is None or self.clock() - remote.last_attempt >= self.jwks_refresh_interval

    def _fetch(self, iss: str, url: str) -> tuple[list[Key], float] | None:
        """The public keys at ``url`` and how long they may be cached, or ``None`` if the fetch failed
        (the cached keys stay)."""
        try:
            response = self.http_get(url, timeout=self.fetch_timeout)
            if response.status_code != 200:
                log.warning("JWKS fetch for client %s failed: HTTP %s", iss, response.status_code)
                return None
            document = response.json()
            lifetime = cache_lifetime(getattr(response, "headers", None), self.clock(),
                                      minimum=self.jwks_refresh_interval)
        except Exception as exc:  # network errors, invalid JSON: the cache stays, the token fails
            log.warning("JWKS fetch for client %s failed: %s", iss, type(exc).__name__)
            return None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            log.warning("JWKS fetch for client %s: response is not a JWK Set", iss)
            return None
        keys: list[Key] = []
        for data in document["keys"]:
            # Only public RSA/EC keys can check our algorithms; anything else is skipped, not fatal,
            # so one odd key in a client's set does not lock it out.
            if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC"):
                continue
            public = {k: v for k, v in data.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
            try:
                keys.append(JWKRegistry.import_key(public))
            except (JoseError, ValueError, TypeError):
                continue
        log.info("JWKS for client %s fetched: %d usable key(s), cached %.0f s", iss, len(keys), lifetime)
        return keys, lifetime


def _how_aud_differs(aud: Any, audiences: Sequence[str]) -> str:
    if not isinstance(aud, str):
        return f"the token's aud is a {type(aud).__name__}, not a URL"
    for expected in audiences:
        path = urlsplit(expected).path
        if aud.rstrip("/") == expected.rstrip("/"):
            return "the token's aud differs only by a trailing slash"
        if path and urlsplit(aud).path == path:
            return "the token's aud has the same path on another base URL: check LUPUS_CDS_PUBLIC_URL"
    return "the token's aud names another URL"


def _by_kid(keys: KeySet | list[Key], kid: str) -> Key | None:
    for key in keys:
        if key.kid == kid:
            return key
    return None


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header or not authorization_header.strip():
        raise Unauthorized("missing")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("scheme")
    token = token.strip()
    if not token:
        raise Unauthorized("missing")
    if len(token) > MAX_TOKEN_LENGTH or not _COMPACT_JWS.fullmatch(token):
        raise Unauthorized("malformed")
    return token


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims *before* verification: used only to pick the client and key."""
    try:
        obj = jws.extract_compact(token.encode("ascii"))
        header = obj.headers()
        claims = json.loads(obj.payload)
    except MissingAlgorithmError:
        raise Unauthorized("alg") from None
    except (JoseError, ValueError, TypeError):
        raise Unauthorized("malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthorized("malformed")
    return header, claims


def _check_header(header: dict[str, Any]) -> str:
    """SEC-6 and SEC-10 on the header; returns the algorithm. Runs before any key lookup."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise Unauthorized("alg")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise Unauthorized("typ")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("kid")
    return alg
