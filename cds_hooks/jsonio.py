"""JSON in and out of the service, with orjson.

A hook call's request body is the biggest thing the service handles (a heavy patient's prefetch is
megabytes), and parsing it is the largest single cost of a call: orjson parses it in about half the
time the standard library takes and serialises responses several times faster.

orjson is also stricter, as RFC 8259 asks: ``NaN``/``Infinity``, numbers that overflow a double and
unpaired surrogates are errors rather than values that would break a FHIR model or a downstream
client. A UTF-8 byte order mark is tolerated (RFC 8259 section 8.1 lets a parser ignore it); other
encodings are not JSON for exchange and are rejected.

The cyclic garbage collector is paused while a body is parsed. Parsing a 4 MB prefetch creates about a
million containers, and every few hundred of them the collector would walk the young ones looking for
reference cycles a JSON document cannot have: on the heavy benchmark patient that walking is two thirds
of the parse time. The pause is per call and undone in ``finally``; it never re-enables a collector
somebody else had disabled.
"""

from __future__ import annotations

import gc
from typing import Any

import orjson

_BOM = b"\xef\xbb\xbf"


def loads(raw: bytes | str) -> Any:
    """Parse one JSON text. Raises :class:`ValueError` (``orjson.JSONDecodeError``) if it is not one."""
    if isinstance(raw, (bytes, bytearray, memoryview)) and bytes(raw[:3]) == _BOM:
        raw = raw[3:]
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return orjson.loads(raw)
    finally:
        if collecting:
            gc.enable()


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. Raises :class:`TypeError` for values JSON cannot hold."""
    return orjson.dumps(value)
