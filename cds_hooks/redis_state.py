"""State shared between replicas, in Redis (``LUPUS_CDS_REDIS_URL``): the client-JWT replay store and
the SMART backend-services access-token cache.

Without Redis the replay store is a SQLite file the worker processes of one host share
(:mod:`cds_hooks.replay_store`) and tokens are cached per process: right for one host, wrong for many,
where a ``jti`` seen by one replica would be accepted again by another. With Redis:

* :class:`RedisReplayStore` keeps one key per seen ``jti`` with ``SET NX EX``: atomic across every
  replica, and the key expires with the token (no clean-up job). Keys are SHA-256 digests, so Redis
  never holds the issuer or the ``jti`` itself.
* :class:`RedisTokenCache` keeps access tokens the service obtained from EHR authorization servers,
  with Redis expiring each one before the token does, so replicas share one token per
  (server, client, scope) instead of each asking for its own.

**Fail closed.** If Redis cannot be reached, a replay check cannot be made, so the JWT is refused:
:meth:`RedisReplayStore.add_if_new` raises :class:`~cds_hooks.errors.Unauthorized` (401, reason
``replay-store-unavailable``, logged at ERROR). The token cache instead *fails open to a miss*: the
service just asks the authorization server again. ``/readyz`` reports Redis down, so a load balancer
stops sending traffic to a replica that cannot reach it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from .errors import Unauthorized

log = logging.getLogger("cds_hooks.redis_state")

DEFAULT_PREFIX = "cds-hooks:"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RedisState:
    """One Redis connection pool for the app, and the stores built on it."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout: float = 0.5):
        import redis

        self.prefix = prefix
        # Short timeouts: a hook call has a few seconds in all; a hung Redis must fail fast (closed).
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RedisState | None:
        """The shared state named by ``LUPUS_CDS_REDIS_URL``, or ``None`` (in-memory, one process)."""
        url = cfg.get("LUPUS_CDS_REDIS_URL")
        if not url:
            return None
        return cls(url, prefix=cfg.get("LUPUS_CDS_REDIS_PREFIX") or DEFAULT_PREFIX,
                   timeout=float(cfg.get("LUPUS_CDS_REDIS_TIMEOUT") or 0.5))

    def replay_store(self) -> RedisReplayStore:
        return RedisReplayStore(self.client, self.prefix + "jti:")

    def token_cache(self) -> RedisTokenCache:
        return RedisTokenCache(self.client, self.prefix + "token:")

    def ping(self) -> None:
        """Raises when Redis does not answer (readiness check)."""
        self.client.ping()

    def close(self) -> None:
        self.client.close()


class RedisReplayStore:
    """``cds_hooks.auth.ReplayStore`` on Redis: ``add_if_new`` is one atomic ``SET key 1 NX EX ttl``."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix

    def add_if_new(self, key: str, expires_at: float) -> bool:
        """True the first time ``key`` is seen before ``expires_at`` (epoch seconds), False after that.

        :raises Unauthorized: Redis is unreachable, so replay cannot be ruled out (fail closed).
        """
        import redis

        ttl = max(1, math.ceil(expires_at - time.time()))
        try:
            return bool(self.client.set(self.prefix + _digest(key), b"1", nx=True, ex=ttl))
        except redis.RedisError as exc:
            log.error("JWT replay store unreachable (Redis %s): refusing client JWTs until it answers",
                      type(exc).__name__)
            raise Unauthorized("replay-store-unavailable") from None


class RedisTokenCache:
    """Access tokens shared by every replica, each expiring from Redis before the token itself does.

    Values are JSON objects (the token response the service keeps); ``get`` returns ``None`` for a
    miss *and* when Redis is unreachable (the caller then fetches a new token).
    """

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> Any:
        import redis

        try:
            raw = self.client.get(self.prefix + _digest(key))
        except redis.RedisError as exc:
            log.warning("token cache unreachable (Redis %s): fetching a new token", type(exc).__name__)
            return None
        return json.loads(raw) if raw is not None else None

    def set(self, key: str, value: Any, expires_at: float) -> None:
        import redis

        ttl = math.floor(expires_at - time.time())
        if ttl < 1:
            return
        try:
            self.client.set(self.prefix + _digest(key), json.dumps(value), ex=ttl)
        except redis.RedisError as exc:
            log.warning("token cache unreachable (Redis %s): token kept for this request only",
                        type(exc).__name__)

    def delete(self, key: str) -> None:
        import redis

        try:
            self.client.delete(self.prefix + _digest(key))
        except redis.RedisError:
            pass
