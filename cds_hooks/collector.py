"""Keeping a hook call's request body out of the cyclic garbage collector's way.

A heavy patient's prefetch parses into about a million dicts and lists. CPython's collector tracks each
one, and while the call runs, its routine young-generation collections walk them, promote them, and
once enough have been promoted set off a full collection of the whole heap: about 90 ms on the heavy
benchmark patient, more than the rest of the call. None of it finds anything, because a parsed JSON
document has no reference cycles, and the body is freed by reference counting when the call ends.

So, for the duration of a hook call:

- :func:`paused` switches the collector off while the body is parsed (the parse itself would otherwise
  set off collections);
- :func:`body_held` then moves every tracked object into the permanent generation (``gc.freeze``),
  where the collector never looks, and moves them back (``gc.unfreeze``) when the last overlapping call
  ends. Objects are still freed by reference counting meanwhile; a reference cycle that happened to be
  young at that moment is merely collected later, with the oldest generation.

While frozen, a reference cycle that becomes garbage cannot be collected. Calls that overlap keep the
freeze, so a freeze is never held longer than :data:`MAX_FREEZE_SECONDS`: a call arriving later than
that does not join it (it runs with the collector as usual), the calls inside finish, and the last one
out unfreezes. A busy server therefore still collects at least every couple of seconds.

If something else in the process has frozen objects (a pre-fork server doing ``gc.freeze()`` for
copy-on-write), unfreezing would undo its work, so then nothing is frozen here at all.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

#: the longest a freeze is held while calls keep overlapping (seconds)
MAX_FREEZE_SECONDS = 2.0

_lock = threading.Lock()
_monotonic = time.monotonic
_calls_holding = 0
_frozen_at = 0.0
#: somebody else froze objects: leave the permanent generation alone for good. (Decided once, because
#: ``gc.get_freeze_count()`` walks the whole permanent generation.)
_foreign_freeze = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block (never re-enabling one somebody else had switched off)."""
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def body_held() -> Iterator[None]:
    """Enter after the body is parsed: everything alive now (the body included) is frozen until the
    last overlapping call leaves."""
    global _calls_holding, _foreign_freeze, _frozen_at
    joined = False
    with _lock:
        if _calls_holding == 0 and not _foreign_freeze:
            _foreign_freeze = gc.get_freeze_count() > 0  # we always leave it empty: cheap to count
            _frozen_at = _monotonic()
        if not _foreign_freeze and (_calls_holding == 0 or _monotonic() - _frozen_at < MAX_FREEZE_SECONDS):
            _calls_holding += 1
            joined = True
            gc.freeze()
    try:
        yield
    finally:
        if joined:
            with _lock:
                _calls_holding -= 1
                if _calls_holding == 0:
                    gc.unfreeze()
