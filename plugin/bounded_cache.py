"""A least-recently-used cache bounded by the memory its entries take (approximately), not by their count.

``functools.lru_cache(maxsize=N)`` bounds how many entries it keeps, whatever each one holds: a cache of
validated FHIR resources keyed by their JSON holds as much memory as the resources the service happened
to see are big, and a key can be as long as a request makes it. A worker that served ten thousand
patients grew from 81 to 266 MB that way. Here each entry is charged an estimate of its size (the
caller's ``size_of``), entries are evicted oldest first past ``max_bytes``, and an entry estimated at more
than an eighth of the budget is returned without being kept (one entry must not flush the others).

The wrapper keeps ``functools``' names (``cache_clear``, ``cache_info``, ``cache_parameters``) so code that
empties or inspects caches treats both kinds alike.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from typing import Any

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize", "bytes", "max_bytes"])
_MISSING = object()


def byte_bounded_cache(max_bytes: int, size_of: Callable[[tuple[Any, ...], Any], int]) -> Callable[..., Any]:
    """Decorate a function of hashable positional arguments with an LRU cache of at most ``max_bytes``.

    :param max_bytes: the budget, in (estimated) bytes.
    :param size_of: ``(args, result) -> estimated bytes`` the entry keeps alive (key and result).
    """
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        entries: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        lock = threading.Lock()
        counters = {"hits": 0, "misses": 0, "bytes": 0}
        largest = max_bytes // 8

        @functools.wraps(function)
        def cached(*args: Any) -> Any:
            with lock:
                found = entries.get(args, _MISSING)
                if found is not _MISSING:
                    entries.move_to_end(args)
                    counters["hits"] += 1
                    return found[0]
                counters["misses"] += 1
            result = function(*args)  # outside the lock: a slow miss must not hold up hits
            size = max(1, int(size_of(args, result)))
            if size > largest:
                return result
            with lock:
                if args not in entries:
                    entries[args] = (result, size)
                    counters["bytes"] += size
                    while counters["bytes"] > max_bytes:
                        _, (_, evicted) = entries.popitem(last=False)
                        counters["bytes"] -= evicted
            return result

        def cache_clear() -> None:
            with lock:
                entries.clear()
                counters.update(hits=0, misses=0, bytes=0)

        def cache_info() -> CacheInfo:
            with lock:
                return CacheInfo(counters["hits"], counters["misses"], None, len(entries), counters["bytes"],
                                 max_bytes)

        cached.cache_clear = cache_clear  # type: ignore[attr-defined]
        cached.cache_info = cache_info  # type: ignore[attr-defined]
        # maxsize names the entry bound functools would have; this cache is bounded (in bytes) all the same
        cached.cache_parameters = lambda: {"maxsize": max_bytes, "typed": False, "max_bytes": max_bytes}  # type: ignore[attr-defined]
        return cached

    return decorate
