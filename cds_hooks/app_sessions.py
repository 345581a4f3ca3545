"""Server-side state of SMART app launches: pending launches (PKCE verifier, ``state``) and sessions
(the access token, the patient). Nothing of it ever reaches the browser, a URL or a log; the browser holds
only a random cookie, and the store keys are SHA-256 digests, so the store never holds the cookie itself.

Two stores with one interface:

* :class:`MemoryStore`, the default: right for one process (``lupus-cds serve`` runs one worker unless
  ``LUPUS_CDS_REDIS_URL`` is set; the sandbox runs one process).
* :class:`RedisStore` when ``LUPUS_CDS_REDIS_URL`` is set, so that a launch started on one replica can be
  finished on another. Redis expires each key with the record.

Every record carries its own expiry on the application's clock (``expires`` in epoch seconds), checked by
the caller; the store's time-to-live only bounds how long it is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from typing import Any

log = logging.getLogger("cds_hooks.app_sessions")


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class StoreUnavailable(RuntimeError):
    """The shared store could not be reached (the launch cannot be checked: refuse it)."""


class MemoryStore:
    """Records in this process's memory, dropped after their time-to-live (real seconds)."""

    def __init__(self, max_records: int = 10000):
        self._records: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._max = max_records

    def put(self, key: str, record: dict[str, Any], ttl: float) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._records) >= self._max:
                self._evict(now)
            self._records[key] = (now + ttl, dict(record))

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._records.get(key)
            if found is None or found[0] < time.monotonic():
                self._records.pop(key, None)
                return None
            return dict(found[1])

    def pop(self, key: str) -> dict[str, Any] | None:
        """The record, removed in the same step: a second ``pop`` of one key gets ``None`` (single use)."""
        with self._lock:
            found = self._records.pop(key, None)
        if found is None or found[0] < time.monotonic():
            return None
        return dict(found[1])

    def delete(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def _evict(self, now: float) -> None:
        for key in [k for k, (until, _) in self._records.items() if until < now]:
            del self._records[key]
        while len(self._records) >= self._max:  # still full: drop the oldest-expiring
            del self._records[min(self._records, key=lambda k: self._records[k][0])]


class RedisStore:
    """Records as JSON in Redis under ``{prefix}smart-app:{key}``; ``pop`` is one atomic ``GETDEL``."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix + "smart-app:"

    def put(self, key: str, record: dict[str, Any], ttl: float) -> None:
        import redis

        try:
            self.client.set(self.prefix + key, json.dumps(record), ex=max(1, math.ceil(ttl)))
        except redis.RedisError as exc:
            log.error("SMART app session store unreachable (Redis %s)", type(exc).__name__)
            raise StoreUnavailable() from None

    def _read(self, key: str, remove: bool) -> dict[str, Any] | None:
        import redis

        try:
            raw = self.client.getdel(self.prefix + key) if remove else self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            log.error("SMART app session store unreachable (Redis %s)", type(exc).__name__)
            raise StoreUnavailable() from None
        return json.loads(raw) if raw is not None else None

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read(key, remove=False)

    def pop(self, key: str) -> dict[str, Any] | None:
        return self._read(key, remove=True)

    def delete(self, key: str) -> None:
        import redis

        try:
            self.client.delete(self.prefix + key)
        except redis.RedisError:
            pass


def store_for(shared_state: Any) -> MemoryStore | RedisStore:
    """Redis when the app has shared state (``LUPUS_CDS_REDIS_URL``), else this process's memory."""
    if shared_state is not None:
        return RedisStore(shared_state.client, shared_state.prefix)
    return MemoryStore()
