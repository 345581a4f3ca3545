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

If something else in the process has frozen objects (a pre-fork server doing ``gc.freeze()`` for
copy-on-write), unfreezing would undo its work, so then nothing is frozen here at all.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_calls_holding = 0
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
    global _calls_holding, _foreign_freeze
    with _lock:
        if _calls_holding == 0 and not _foreign_freeze:
            _foreign_freeze = gc.get_freeze_count() > 0  # we always leave it empty: cheap to count
        _calls_holding += 1
        if not _foreign_freeze:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _calls_holding -= 1
            if _calls_holding == 0 and not _foreign_freeze:
                gc.unfreeze()
