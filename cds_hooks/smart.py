"""SMART Backend Services: how the service gets its own access token for an EHR's FHIR server when the
CDS client sent none (SMART App Launch 2.x, "Backend Services").

For each FHIR server listed in the file named by ``LUPUS_CDS_SMART_CLIENTS``::

    {"servers": [{"fhir_server": "https://ehr.example.org/fhir", "client_id": "cds-service",
                  "private_key": "keys/ehr.pem", "kid": "2026-01", "alg": "RS384",
                  "scope": "system/Observation.rs system/Patient.rs"}]}

the service

1. discovers the token endpoint from ``{fhir_server}/.well-known/smart-configuration`` (unless the entry
   names ``token_endpoint`` itself),
2. asks it for a token with ``grant_type=client_credentials``, authenticating with a ``private_key_jwt``
   client assertion (RFC 7523) signed by ``private_key``: ``iss`` = ``sub`` = ``client_id``, ``aud`` =
   the token endpoint, a fresh ``jti`` and ``exp`` at most :data:`ASSERTION_LIFETIME` seconds ahead,
3. keeps the token in a :class:`TokenCache` keyed by server, client and scope until shortly before it
   expires, so consecutive hook calls share one token. Concurrent callers in one process wait for a
   single token request rather than each sending their own.

The public half of every configured key is published as a JWK Set (:meth:`BackendServices.public_jwks`,
served at ``/.well-known/jwks.json`` by :mod:`cds_hooks.wellknown`) so an authorization server can
register the service by URL. ``private_key`` paths are relative to the clients file.

Access tokens never reach a log line; errors name the server's OAuth error code only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import ECKey, RSAKey

from .errors import FHIRBadResponse, FHIRError, FHIRTimeout, FHIRUnauthorized

log = logging.getLogger("cds_hooks.smart")

#: SMART Backend Services: the assertion's ``exp`` must be no more than five minutes ahead. Four leaves
#: room for clock skew between us and the authorization server.
ASSERTION_LIFETIME = 240
#: Signing algorithms SMART Backend Services names (RS384, ES384 required of servers) plus their 256 kin.
SIGNING_ALGORITHMS = {"RS384": RSAKey, "RS256": RSAKey, "ES384": ECKey, "ES256": ECKey}
#: When the token response has no ``expires_in``, assume the SMART-recommended maximum.
DEFAULT_TOKEN_LIFETIME = 300
#: How long a discovered token endpoint is trusted before it is looked up again.
DISCOVERY_TTL = 3600.0
#: Discovery documents and token responses are small; anything bigger is not one.
MAX_AUTH_RESPONSE_BYTES = 256 * 1024

_ENTRY_FIELDS = frozenset({"fhir_server", "client_id", "private_key", "kid", "alg", "scope",
                           "token_endpoint"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- FHIR base URLs ------------------------------------------------------------------------------------

def canonical_base(url: Any) -> str | None:
    """``scheme://host:port/path`` of a FHIR base URL (lower-case host, explicit port, no trailing
    slash), or ``None`` when ``url`` cannot be a FHIR base we would call.

    Two spellings of one server compare equal in this form, which is what the allowlists compare.
    Refused: other schemes, user info (``https://trusted@evil``), query or fragment, and ``.``/``..``
    path segments (also percent-encoded), which could step out of an allowed base path.
    """
    if not isinstance(url, str) or not url or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment or "\\" in url:
        return None
    path = parts.path.rstrip("/")
    if has_dot_segment(path):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port or _DEFAULT_PORTS[parts.scheme]}{path}"


def has_dot_segment(path: str) -> bool:
    return any(unquote(segment) in (".", "..") for segment in path.split("/"))


# --- configuration -------------------------------------------------------------------------------------

class SmartConfigError(ValueError):
    """The ``LUPUS_CDS_SMART_CLIENTS`` file is malformed (raised when the app starts)."""


@dataclass(frozen=True)
class SmartClient:
    """The service's registration at one EHR's authorization server."""

    fhir_server: str
    client_id: str
    key: Any  # joserfc RSAKey / ECKey holding the private key
    kid: str
    alg: str
    scope: str
    token_endpoint: str | None = None

    @property
    def base(self) -> str:
        return canonical_base(self.fhir_server) or ""

    @property
    def cache_key(self) -> str:
        return f"{self.base}\n{self.client_id}\n{self.scope}"

    def public_jwk(self) -> dict[str, Any]:
        jwk = self.key.as_dict(private=False)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk


def load_private_key(path: Path, alg: str, kid: str) -> Any:
    """The private key in PEM file ``path`` as a joserfc key of the type ``alg`` needs."""
    key_type = SIGNING_ALGORITHMS.get(alg)
    if key_type is None:
        raise SmartConfigError(f"alg {alg!r} is not one of {', '.join(sorted(SIGNING_ALGORITHMS))}")
    try:
        key = key_type.import_key(path.read_bytes(), parameters={"kid": kid})
    except OSError as exc:
        raise SmartConfigError(f"cannot read private key {path}: {exc.strerror}") from None
    except Exception as exc:  # joserfc raises several types for a wrong or public-only key
        raise SmartConfigError(f"{path} is not a {alg} private key in PEM ({type(exc).__name__})") from None
    if not key.is_private:
        raise SmartConfigError(f"{path} holds a public key; the private key is needed to sign assertions")
    if alg.startswith("ES") and key.curve_name != {"ES256": "P-256", "ES384": "P-384"}[alg]:
        raise SmartConfigError(f"{path}: {alg} needs curve {'P-256' if alg == 'ES256' else 'P-384'}")
    return key


def load_smart_clients(path: str | Path) -> list[SmartClient]:
    """Parse the ``LUPUS_CDS_SMART_CLIENTS`` file (see the module docstring)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise SmartConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SmartConfigError(f"{path} is not JSON: {exc}") from None
    servers = document.get("servers") if isinstance(document, dict) else None
    if not isinstance(servers, list):
        raise SmartConfigError(f'{path}: expected {{"servers": [...]}}')
    clients: list[SmartClient] = []
    seen: set[str] = set()
    for index, entry in enumerate(servers):
        where = f"{path}: servers[{index}]"
        if not isinstance(entry, dict):
            raise SmartConfigError(f"{where} must be an object")
        unknown = set(entry) - _ENTRY_FIELDS
        if unknown:
            raise SmartConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for name in ("fhir_server", "client_id", "private_key", "kid", "scope"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise SmartConfigError(f"{where}: {name} must be a non-empty string")
        base = canonical_base(entry["fhir_server"].rstrip("/"))
        if base is None:
            raise SmartConfigError(f"{where}: fhir_server is not an http(s) FHIR base URL")
        if base in seen:
            raise SmartConfigError(f"{where}: fhir_server is listed twice")
        seen.add(base)
        token_endpoint = entry.get("token_endpoint")
        if token_endpoint is not None and canonical_base(token_endpoint) is None:
            raise SmartConfigError(f"{where}: token_endpoint is not an http(s) URL")
        alg = entry.get("alg", "RS384")
        key_path = Path(entry["private_key"])
        if not key_path.is_absolute():
            key_path = path.parent / key_path
        clients.append(SmartClient(
            fhir_server=entry["fhir_server"].rstrip("/"), client_id=entry["client_id"],
            key=load_private_key(key_path, alg, entry["kid"]), kid=entry["kid"], alg=alg,
            scope=" ".join(entry["scope"].split()), token_endpoint=token_endpoint))
    return clients


# --- token cache ---------------------------------------------------------------------------------------

class TokenCache(Protocol):
    """Where obtained access tokens wait for the next hook call.

    :class:`MemoryTokenCache` serves one process; ``cds_hooks.redis_state.RedisTokenCache`` (same three
    methods) lets every replica share one token per server, client and scope.
    """

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, expires_at: float) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryTokenCache:
    """A :class:`TokenCache` in this process's memory (expiry on epoch seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._items[key]
                return None
            return item[1]

    def set(self, key: str, value: Any, expires_at: float) -> None:
        with self._lock:
            self._items[key] = (expires_at, value)

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


# --- client assertion ----------------------------------------------------------------------------------

class SmartPrivateKeyJWT(PrivateKeyJWT):
    """authlib's ``private_key_jwt`` with SMART's limits.

    authlib's default assertion lives 3600 s (SMART allows 300), and a ``claims`` dict given to it is
    shared by every call, so its generated ``jti`` would be reused. Here every signature gets its own
    claims (fresh ``jti``) and ``exp = now + ASSERTION_LIFETIME``.
    """

    def __init__(self, token_endpoint: str, kid: str, alg: str):
        super().__init__(token_endpoint, alg=alg)
        self.kid = kid

    def sign(self, auth: Any, token_endpoint: str) -> str:
        return private_key_jwt_sign(
            auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
            alg=self.alg, claims=None, header={"kid": self.kid, "typ": "JWT"},
            expires_in=ASSERTION_LIFETIME)


# --- the backend-services client -----------------------------------------------------------------------

@dataclass(frozen=True)
class BackendToken:
    """An access token for one FHIR server. ``fresh`` is False when it came from the cache."""

    access_token: str
    fresh: bool

    def __repr__(self) -> str:  # keep the token out of reprs, tracebacks and logs
        return f"BackendToken(fresh={self.fresh})"


class BackendServices:
    """Access tokens for the FHIR servers the service is registered with (see the module docstring).

    :param session_factory: returns the ``requests.Session`` used for discovery (tests count requests
        through it); token requests use authlib's ``OAuth2Session``, which gets the same adapters.
    :param refresh_margin: a cached token is replaced this many seconds before it expires (at most
        half its lifetime), so it never expires during a hook call.
    """

    def __init__(self, clients: Iterable[SmartClient], *, cache: TokenCache | None = None,
                 request_timeout: float = 2.0, refresh_margin: float = 60.0,
                 session_factory: Callable[[], requests.Session] | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.clients = {client.base: client for client in clients}
        self.cache: TokenCache = cache if cache is not None else MemoryTokenCache(clock)
        self.request_timeout = request_timeout
        self.refresh_margin = refresh_margin
        self._session_factory = session_factory or requests.Session
        self._discovery_session = self._session_factory()
        self._clock = clock
        self._monotonic = monotonic
        self._discovered: dict[str, tuple[float, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        #: token requests sent since start (tests and the benchmark read it)
        self.token_requests = 0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> BackendServices:
        return cls(load_smart_clients(path), **kwargs)

    def servers(self) -> frozenset[str]:
        """The canonical bases (:func:`canonical_base`) the service holds a registration for."""
        return frozenset(self.clients)

    def client_for(self, fhir_server: str) -> SmartClient | None:
        base = canonical_base(fhir_server.rstrip("/")) if isinstance(fhir_server, str) else None
        return self.clients.get(base) if base else None

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set of every configured signing key, public parts only (duplicates once)."""
        keys: list[dict[str, Any]] = []
        for client in self.clients.values():
            jwk = client.public_jwk()
            if jwk not in keys:
                keys.append(jwk)
        return {"keys": keys}

    # -- tokens --

    def access_token(self, fhir_server: str, deadline: float, *, stale: str | None = None) -> BackendToken:
        """A valid access token for ``fhir_server``, from the cache or a new token request.

        :param deadline: ``time.monotonic()`` value by which the answer is needed.
        :param stale: a token the FHIR server just refused (401): it is dropped from the cache, unless
            another thread has already replaced it.
        :raises FHIRError: no registration, discovery or token request failed, or time ran out.
        """
        client = self.client_for(fhir_server)
        if client is None:
            raise FHIRUnauthorized("the service holds no SMART registration for this FHIR server")
        key = client.cache_key
        if stale is None:
            cached = self._cached(key)
            if cached is not None:
                return BackendToken(cached, fresh=False)
        lock = self._lock_for(key)
        # Waiting for another thread's token request counts against this call's budget too.
        if not lock.acquire(timeout=max(0.0, deadline - self._monotonic())):
            raise FHIRTimeout("timed out waiting for an access token")
        try:
            cached = self._cached(key)
            if cached is not None and cached != stale:
                return BackendToken(cached, fresh=False)
            if cached is not None:
                self.cache.delete(key)
            return BackendToken(self._request_token(client, deadline), fresh=True)
        finally:
            lock.release()

    def forget(self, fhir_server: str) -> None:
        """Drop the cached token of ``fhir_server`` (e.g. after the key was rotated)."""
        client = self.client_for(fhir_server)
        if client is not None:
            self.cache.delete(client.cache_key)

    def _cached(self, key: str) -> str | None:
        value = self.cache.get(key)
        if isinstance(value, dict) and isinstance(value.get("access_token"), str) \
                and float(value.get("expires_at", 0)) > self._clock():
            return value["access_token"]
        return None

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _timeout(self, deadline: float) -> float:
        remaining = deadline - self._monotonic()
        if remaining <= 0:
            raise FHIRTimeout("the time allowed for fetching ran out before an access token was obtained")
        return min(self.request_timeout, remaining)

    def token_endpoint(self, client: SmartClient, deadline: float) -> str:
        """The token endpoint of ``client``'s server: configured, or from its SMART configuration."""
        if client.token_endpoint:
            return client.token_endpoint
        now = self._monotonic()
        known = self._discovered.get(client.base)
        if known is not None and known[0] > now:
            return known[1]
        url = client.fhir_server + "/.well-known/smart-configuration"
        document = self._get_small_json(url, deadline)
        endpoint = document.get("token_endpoint") if isinstance(document, dict) else None
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or canonical_base(endpoint) is None:
            raise FHIRBadResponse("the FHIR server's SMART configuration names no usable token endpoint")
        # An https FHIR server must not send our credentials to a plain-http token endpoint.
        if parts.scheme != "https" and client.fhir_server.startswith("https:"):
            raise FHIRBadResponse("the SMART configuration names a token endpoint without https")
        self._discovered[client.base] = (now + DISCOVERY_TTL, endpoint)
        return endpoint

    def _get_small_json(self, url: str, deadline: float) -> Any:
        try:
            with self._discovery_session.get(url, headers={"Accept": "application/json"}, stream=True,
                                             timeout=self._timeout(deadline), allow_redirects=False) as resp:
                if resp.status_code != 200:
                    raise FHIRBadResponse(f"SMART configuration answered HTTP {resp.status_code}")
                body = b""
                # Read what arrives, checking the deadline, so a slow server cannot hold the hook call.
                while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                    body += chunk
                    if len(body) > MAX_AUTH_RESPONSE_BYTES:
                        break
                    if self._monotonic() > deadline:
                        raise FHIRTimeout("the SMART configuration did not answer in time")
        except FHIRError:
            raise
        except requests.Timeout:
            raise FHIRTimeout("the SMART configuration did not answer in time") from None
        except Exception as exc:  # requests' and urllib3's connection, timeout and protocol errors
            if "Timeout" in type(exc).__name__:
                raise FHIRTimeout("the SMART configuration did not answer in time") from None
            raise FHIRBadResponse(f"SMART configuration unreachable ({type(exc).__name__})") from None
        if len(body) > MAX_AUTH_RESPONSE_BYTES:
            raise FHIRBadResponse("the SMART configuration is too large")
        try:
            return json.loads(body)
        except ValueError:
            raise FHIRBadResponse("the SMART configuration is not JSON") from None

    def _request_token(self, client: SmartClient, deadline: float) -> str:
        endpoint = self.token_endpoint(client, deadline)
        assertion = SmartPrivateKeyJWT(endpoint, client.kid, client.alg)
        session = OAuth2Session(client.client_id, client.key, token_endpoint_auth_method=assertion,
                                scope=client.scope)
        # Same transport settings (adapters, retries, proxies) as the rest of the service's HTTP.
        template = self._session_factory()
        session.adapters = template.adapters
        session.trust_env = template.trust_env
        self.token_requests += 1
        started = self._clock()
        try:
            token = session.fetch_token(endpoint, grant_type="client_credentials", scope=client.scope,
                                        timeout=self._timeout(deadline), allow_redirects=False)
        except requests.Timeout:
            raise FHIRTimeout("the authorization server did not answer in time") from None
        except requests.RequestException as exc:
            raise FHIRBadResponse(f"authorization server unreachable or failing ({type(exc).__name__})") \
                from None
        except FHIRError:
            raise
        except Exception as exc:  # authlib's OAuthError, or ValueError for a non-JSON answer
            error = getattr(exc, "error", None) or type(exc).__name__
            log.warning("token request for client %s refused: %s", client.client_id, error)
            raise FHIRUnauthorized(
                f"the authorization server refused the service's token request ({error})") from None
        finally:
            session.close()
        access_token = token.get("access_token")
        token_type = str(token.get("token_type", ""))
        if not isinstance(access_token, str) or not access_token or token_type.lower() != "bearer":
            raise FHIRBadResponse("the authorization server answered without a bearer access token")
        try:
            lifetime = float(token.get("expires_in", DEFAULT_TOKEN_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        margin = min(self.refresh_margin, lifetime / 2)
        expires_at = started + lifetime - margin
        if expires_at > self._clock():
            self.cache.set(client.cache_key, {"access_token": access_token, "expires_at": expires_at},
                           expires_at)
        log.info("obtained a backend-services access token for client %s (expires in %.0f s)",
                 client.client_id, lifetime)
        return access_token


def backend_from_config(cfg: Mapping[str, Any], *, cache: TokenCache | None = None,
                        request_timeout: float = 2.0,
                        session_factory: Callable[[], requests.Session] | None = None,
                        ) -> BackendServices | None:
    """The :class:`BackendServices` of ``LUPUS_CDS_SMART_CLIENTS``, or ``None`` when it is unset."""
    path = cfg.get("LUPUS_CDS_SMART_CLIENTS")
    if not path:
        return None
    return BackendServices.from_file(
        path, cache=cache, request_timeout=request_timeout, session_factory=session_factory,
        refresh_margin=float(cfg.get("LUPUS_CDS_SMART_TOKEN_REFRESH_MARGIN") or 60))
