"""Records which cards the service issued (for ``lupus-cds feedback-report``) without slowing hook calls.

A hook response only *enqueues* one small row per card (card uuid, service id, hook, topic code,
indicator, UTC day) on a bounded in-process queue; a background thread drains it in batches of up to
:data:`BATCH` rows, one transaction each. The response never waits for the database.

When the queue is full (the database is down or slower than the traffic for a long while), new rows are
**dropped**, not waited for: the hook answer matters more than the statistics. Every dropped row is
counted in ``cds_issued_cards_dropped_total{why="queue-full"}`` and a warning is logged at most once a
minute; a failed batch is dropped the same way (``why="db-error"``). Reports then under-count "shown"
for that period. Rows still queued when the process exits are written by an ``atexit`` flush (up to a
few seconds); a killed process loses them.

Feedback metrics need a card's topic: :meth:`IssuedCardLog.topics_of` answers from a bounded cache of
recently issued cards of this process, then from the table.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import metrics

log = logging.getLogger("cds_hooks.issued_cards")

BATCH = 500
#: how long the writer waits to fill a batch before writing what it has
LINGER_SECONDS = 0.2
#: recently issued cards whose topic feedback can find without the database (the rest: a query)
_RECENT = 4096
_WARN_EVERY = 60.0


class IssuedCardLog:
    """Queue + writer thread for one :class:`~cds_hooks.feedback_store.FeedbackStore`.

    :param maxsize: queue bound in rows; ``0`` disables recording (nothing is stored or queued).
    """

    def __init__(self, store: Any, maxsize: int = 10_000):
        self.store = store
        self.maxsize = maxsize
        self._recent: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._last_warning = 0.0
        self._pid: int | None = None
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max(maxsize, 1))
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # --- producer side (request threads) -----------------------------------------------------------------

    def issued(self, service_id: str, hook: str, cards: Iterable[dict[str, Any]], when: datetime) -> None:
        """Count the cards in the metrics and enqueue their rows. Never blocks, never raises."""
        cards = list(cards)
        metrics.cards_returned(service_id, hook, cards)
        if self.maxsize <= 0 or not cards or self._closed:
            return
        self._ensure_writer()
        day = when.date()
        dropped = 0
        for card in cards:
            uuid = card.get("uuid")
            if not isinstance(uuid, str) or not uuid:
                continue  # without a uuid, feedback can never refer to it
            topic = ((card.get("source") or {}).get("topic") or {}).get("code") or ""
            self._remember(service_id, uuid, str(topic))
            row = {"card_uuid": uuid[:200], "service_id": service_id[:200], "hook": hook[:200],
                   "topic_code": str(topic)[:200], "indicator": str(card.get("indicator", ""))[:20],
                   "issued_on": day}
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                dropped += 1
        if dropped:
            self._dropped(dropped, "queue-full")

    def topics_of(self, service_id: str, card_uuids: Iterable[str]) -> dict[str, str]:
        """card uuid -> topic code, for the cards of ``service_id`` this service is known to have issued."""
        wanted = set(card_uuids)
        found: dict[str, str] = {}
        with self._recent_lock:
            for uuid in wanted:
                topic = self._recent.get((service_id, uuid))
                if topic is not None:
                    found[uuid] = topic
        rest = wanted - found.keys()
        if rest:
            try:
                found.update(self.store.topics_of(service_id, rest))
            except Exception as exc:  # statistics only: never fail the feedback request for it
                log.warning("could not look up card topics (%s)", type(exc).__name__)
        return found

    def _remember(self, service_id: str, uuid: str, topic: str) -> None:
        with self._recent_lock:
            self._recent[(service_id, uuid)] = topic
            self._recent.move_to_end((service_id, uuid))
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)

    def _dropped(self, count: int, why: str) -> None:
        metrics.issued_cards_dropped(count, why)
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning("issued-card records dropped (%s): %d; feedback reports will under-count shown cards",
                        why, count)

    # --- consumer side (writer thread) ------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        pid = os.getpid()
        if self._pid == pid and self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._pid == pid and self._thread is not None and self._thread.is_alive():
                return
            if self._pid is not None and self._pid != pid:
                # Forked after rows were queued: the parent's thread did not come along; start clean.
                self._queue = queue.Queue(maxsize=max(self.maxsize, 1))
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name="issued-cards-writer", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._closed:
                    return
                continue
            batch = [first]
            deadline = time.monotonic() + LINGER_SECONDS
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get(timeout=max(deadline - time.monotonic(), 0)))
                except queue.Empty:
                    break
            try:
                self.store.record_issued(batch)
            except Exception as exc:
                self._dropped(len(batch), "db-error")
                log.error("could not write %d issued-card records (%s)", len(batch), type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued row is written (or ``timeout`` passes). True when drained."""
        if self._thread is None or not self._thread.is_alive():
            return self._queue.unfinished_tasks == 0
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 3.0) -> None:
        self.flush(timeout)
        self._closed = True
