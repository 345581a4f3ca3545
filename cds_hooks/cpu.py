"""Few runnable Python threads per worker process, however many requests wait on FHIR servers.

A worker runs hook calls on ``LUPUS_CDS_THREADS`` threads so that calls waiting on a FHIR server do not
hold up the others. But a thread that computes holds the GIL, and every thread that wants it queues for
it: with eight threads computing, the event loop that takes new requests in (and answers 503 or
``/healthz``) waited tens of milliseconds for each step, and a burst of load made a probe wait seconds.
So at most :data:`RUNNABLE` threads of a worker compute at once; a thread gives its slot up while it waits
for I/O (:func:`waiting`, around the FHIR fetch) and takes one again afterwards.

Outside ``lupus-cds serve`` (tests, ``evaluate``, another server) nothing is limited: :func:`configure`
is never called and both context managers do nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

#: threads of one worker computing at once: one running, one ready to take the GIL when it waits
RUNNABLE = 2

_slots: threading.Semaphore | None = None
_held = threading.local()


def configure(runnable: int = RUNNABLE) -> None:
    """Limit this process to ``runnable`` computing threads (called once per ``serve`` worker)."""
    global _slots
    _slots = threading.Semaphore(runnable)


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Hold a compute slot for the block (a request being served)."""
    slots = _slots
    if slots is None or getattr(_held, "slot", False):
        yield
        return
    slots.acquire()
    _held.slot = True
    try:
        yield
    finally:
        if _held.slot:
            _held.slot = False
            slots.release()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Give this thread's compute slot up while it blocks on I/O; take one again after."""
    slots = _slots
    if slots is None or not getattr(_held, "slot", False):
        yield
        return
    _held.slot = False
    slots.release()
    try:
        yield
    finally:
        slots.acquire()
        _held.slot = True
