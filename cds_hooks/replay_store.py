"""Where accepted client-JWT ``jti`` values are remembered, shared by every process of the host.

``lupus-cds serve`` runs one worker process per CPU. A token replayed to another process than the one
that accepted it must still be refused, so the replay memory cannot live in one process's memory:

* With ``LUPUS_CDS_REDIS_URL``: Redis (:mod:`cds_hooks.redis_state`), shared by every replica on every host.
* Otherwise: :class:`SQLiteReplayStore`, a SQLite file in the data directory (``LUPUS_CDS_REPLAY_DB``,
  default ``$XDG_DATA_HOME/lupus-cds/replay.sqlite3``, next to the default feedback database), shared by
  every process on this host. WAL journal, so readers never wait for the writer; one atomic statement
  per check; entries expire with their token.
* ``LUPUS_CDS_REPLAY_DB=memory``: :class:`cds_hooks.auth.InMemoryReplayStore`, right for ONE process only
  (``lupus-cds evaluate``, an embedding that runs a single process); ``serve`` refuses it with several
  workers.

The SQLite file must be on a local disk (WAL needs shared memory between the processes: not NFS), and is
private to the host: replicas on several hosts need Redis.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import Unauthorized

log = logging.getLogger("cds_hooks.replay_store")

#: ``LUPUS_CDS_REPLAY_DB`` value for the one-process, in-memory store
MEMORY = "memory"
#: expired entries are deleted at most this often (seconds) by each process
PURGE_INTERVAL = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_jti (
    digest TEXT PRIMARY KEY,          -- SHA-256 of "iss|jti": the file never holds a token id itself
    expires_at REAL NOT NULL          -- epoch seconds after which the token can no longer be accepted
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_jti_expiry ON seen_jti (expires_at);
"""
# Insert-if-absent in one statement (atomic in SQLite): a new key is inserted; a key whose entry has
# expired is taken over (the token it named can no longer be accepted anyway); a live key is left alone
# and changes nothing, which is how a replay shows (rowcount 0).
_ADD = ("INSERT INTO seen_jti (digest, expires_at) VALUES (?, ?) "
        "ON CONFLICT (digest) DO UPDATE SET expires_at = excluded.expires_at WHERE seen_jti.expires_at <= ?")


class SQLiteReplayStore:
    """A :class:`cds_hooks.auth.ReplayStore` in a SQLite file shared by the processes of one host.

    :param path: the database file; its folder is created when missing.
    :param clock: epoch-seconds clock.
    :param busy_timeout: seconds a write waits for another process's write before failing.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time, busy_timeout: float = 2.0):
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._local = threading.local()  # a sqlite3 connection belongs to one thread
        self._purge_lock = threading.Lock()
        self._next_purge = 0.0

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():  # never use a connection across a fork
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a crash of the process; only a power cut may lose the last few.
            connection.execute("PRAGMA synchronous=NORMAL")
            # one connection per request thread: keep each page cache small (default 2 MB each)
            connection.execute("PRAGMA cache_size=-256")
            connection.executescript(_SCHEMA)
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def add_if_new(self, key: str, expires_at: float) -> bool:
        """``True`` the first time ``key`` is seen before ``expires_at``; ``False`` for a replay.

        :raises Unauthorized: the file cannot be written, so a replay cannot be ruled out (fail closed).
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = self._clock()
        try:
            connection = self._connection()
            added = connection.execute(_ADD, (digest, float(expires_at), now)).rowcount == 1
            self._purge(connection, now)
        except (sqlite3.Error, OSError) as exc:
            log.error("JWT replay store unusable (SQLite %s): refusing client JWTs until it works",
                      type(exc).__name__)
            raise Unauthorized("replay-store-unavailable") from None
        return added

    def _purge(self, connection: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._next_purge = now + PURGE_INTERVAL
            connection.execute("DELETE FROM seen_jti WHERE expires_at <= ?", (now,))
        finally:
            self._purge_lock.release()

    def __len__(self) -> int:
        return self._connection().execute("SELECT count(*) FROM seen_jti WHERE expires_at > ?",
                                          (self._clock(),)).fetchone()[0]


def replay_store_from_config(cfg: Mapping[str, Any], shared_state: Any = None) -> Any:
    """The replay store the settings name: Redis when configured, else the host's SQLite file, or
    ``None`` for ``LUPUS_CDS_REPLAY_DB=memory`` (the authenticator then keeps its own, in memory)."""
    if shared_state is not None:
        return shared_state.replay_store()
    where = str(cfg.get("LUPUS_CDS_REPLAY_DB") or "").strip()
    if where.lower() == MEMORY:
        return None
    return SQLiteReplayStore(where or default_replay_db())


def default_replay_db() -> Path:
    from .config import default_data_dir

    return default_data_dir() / "replay.sqlite3"
