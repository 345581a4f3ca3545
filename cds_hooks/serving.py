"""The adapter between granian and the Flask app for ``lupus-cds serve``: whole requests in, bounded work.

granian (Rust: tokio and hyper) owns every connection. Reading headers and bodies costs no Python thread,
so clients that connect and send nothing, trickle their headers or trickle their body hold no capacity:
granian closes a connection whose headers take longer than the header timeout, and this adapter answers
408 to a body that takes longer than ``LUPUS_CDS_BODY_TIMEOUT``. Only a complete request reaches the app,
on a fixed pool of threads (``LUPUS_CDS_THREADS`` per worker process). It speaks granian's RSGI
interface, which hands the body over as it arrives, rather than WSGI, where a thread would block on it.

Admission control: a worker takes at most ``threads + LUPUS_CDS_QUEUE`` requests at once (running, or
waiting for a thread). Past that it answers ``503`` with ``Retry-After`` at once, before reading the body,
instead of queueing without bound, so the service keeps answering what it admits within its usual time
and the caller (or its load balancer) can go elsewhere. The health endpoints (``/healthz``, ``/readyz``,
``/metrics``) have threads of their own and do not count, so probes stay fast under overload.

Transport errors are 4xx, never 5xx: a ``Content-Length`` that is not a number is 400, a body larger than
``LUPUS_CDS_MAX_BODY_BYTES`` is 413 whether declared up front or sent in chunks (counted as it arrives),
a body whose chunks cannot be decoded is what the client managed to send (the app then says what is
wrong with it, 400). Bodies being received are also bounded together per worker (memory).

Every request is logged once, as JSON, by ``cds_hooks.access``: method, route (never the raw path or
query string, see :func:`cds_hooks.logs.loggable_path`), status, bytes, duration and the service's own
request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import cpu, jsonio
from .logs import UNMATCHED_PATH, loggable_path

log = logging.getLogger("cds_hooks.serving")
access_log = logging.getLogger("cds_hooks.access")

#: answered on threads of their own, outside admission control (GET/HEAD only)
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: probe requests a worker runs or holds at once; more is a broken prober, not load
PROBE_CAPACITY = 16
#: seconds a computing thread keeps the GIL while another waits for it (see ``__rsgi_init__``)
SWITCH_INTERVAL = 0.001
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


@dataclass(frozen=True)
class ServeLimits:
    """What one worker process takes on.

    :ivar threads: threads running requests in the app.
    :ivar queue: admitted requests that may wait for a free thread; past ``threads + queue``, 503.
    :ivar max_body_bytes: largest request body (``LUPUS_CDS_MAX_BODY_BYTES``); larger is 413.
    :ivar body_timeout: seconds a client has to send the whole body; slower is 408.
    :ivar body_memory: bytes of request bodies being received at once; past it, 503.
    :ivar retry_after: seconds a refused caller is told to wait (``Retry-After``).
    """

    threads: int = 8
    queue: int = 8
    max_body_bytes: int = 5 * 1024 * 1024
    body_timeout: float = 30.0
    body_memory: int = 64 * 1024 * 1024
    retry_after: int = 1

    @classmethod
    def from_config(cls, cfg: Any) -> ServeLimits:
        max_body = int(cfg.get("LUPUS_CDS_MAX_BODY_BYTES") or cls.max_body_bytes)
        return cls(threads=max(1, int(cfg.get("LUPUS_CDS_THREADS") or cls.threads)),
                   queue=max(0, int(cfg.get("LUPUS_CDS_QUEUE") if cfg.get("LUPUS_CDS_QUEUE") is not None
                                    else cls.queue)),
                   max_body_bytes=max_body,
                   body_timeout=float(cfg.get("LUPUS_CDS_BODY_TIMEOUT") or cls.body_timeout),
                   # room for 16 bodies of the largest size, and never less than 64 MiB
                   body_memory=max(64 * 1024 * 1024, 16 * max_body))


class _Refused(Exception):
    """A request answered by the adapter itself (never reaches the app)."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None):
        super().__init__(diagnostics)
        self.status, self.code, self.diagnostics, self.headers = status, code, diagnostics, headers or {}


class RSGIApp:
    """A WSGI app served over granian's RSGI interface, with the limits of :class:`ServeLimits`.

    :param app: the WSGI application (the Flask app of :func:`cds_hooks.create_app`).
    :param limits: per-worker limits.
    :param route_of: raw path -> the form the access log shows (default: the Flask app's routes).
    """

    def __init__(self, app: Any, limits: ServeLimits, route_of: Callable[[str], str] | None = None):
        self.app = app
        self.limits = limits
        self.route_of = route_of or _flask_routes(app)
        self.admitted = 0  # requests running or waiting for a thread; touched on the event loop only
        self.probes = 0
        self.receiving = 0  # bytes of bodies being received
        self._pool: ThreadPoolExecutor | None = None
        self._probe_pool: ThreadPoolExecutor | None = None

    # -- RSGI -------------------------------------------------------------------------------------------

    def __rsgi_init__(self, loop: Any) -> None:
        # The event loop (new requests, 503s, probes) must get the GIL soon even while threads compute:
        # a thread that wants it waits at most this long for the one holding it (Python's default: 5 ms).
        sys.setswitchinterval(SWITCH_INTERVAL)
        cpu.configure()
        self._pool = ThreadPoolExecutor(self.limits.threads, thread_name_prefix="cds-app")
        self._probe_pool = ThreadPoolExecutor(2, thread_name_prefix="cds-probe")

    def __rsgi_del__(self, loop: Any) -> None:
        for pool in (self._pool, self._probe_pool):
            if pool is not None:
                pool.shutdown(wait=True)  # graceful stop: what was admitted is answered

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return  # websockets are off
        started = time.perf_counter()
        try:
            status, headers, body = await self.handle(scope, proto)
        except _Refused as refused:
            status, headers, body = _refusal(refused)
        except Exception as exc:  # never let granian log a traceback: its text can hold request data
            log.error("request failed in the server adapter: %s", type(exc).__name__)
            status, headers, body = _refusal(_Refused(500, "exception", "internal error"))
        try:
            proto.response_bytes(status, headers, body)
        except RuntimeError:  # RSGIProtocolClosed: the client left; nobody to answer
            pass
        self._log(scope, status, headers, len(body), started)

    # -- one request -------------------------------------------------------------------------------------

    async def handle(self, scope: Any, proto: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        if self._pool is None:
            self.__rsgi_init__(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        method = scope.method
        if scope.path in PROBE_PATHS and method in ("GET", "HEAD"):
            if self.probes >= PROBE_CAPACITY:
                raise self._busy()
            self.probes += 1
            try:
                return await loop.run_in_executor(self._probe_pool, self._call_app, _environ(scope, b""), False)
            finally:
                self.probes -= 1
        if self.admitted >= self.limits.threads + self.limits.queue:
            raise self._busy()  # at once, before the body is read
        body = b"" if method in _NO_BODY else await self._read_body(scope, proto)
        if self.admitted >= self.limits.threads + self.limits.queue:
            raise self._busy()
        self.admitted += 1
        try:
            return await loop.run_in_executor(self._pool, self._call_app, _environ(scope, body))
        finally:
            self.admitted -= 1

    def _busy(self) -> _Refused:
        return _Refused(503, "transient", f"the service is at capacity; retry after {self.limits.retry_after} s",
                        {"Retry-After": str(self.limits.retry_after)})

    async def _read_body(self, scope: Any, proto: Any) -> bytes:
        limit = self.limits.max_body_bytes
        declared_text = scope.headers.get("content-length")
        declared: int | None = None
        if declared_text is not None:
            if not declared_text.isdigit():  # hyper refuses most of these itself
                raise _Refused(400, "invalid", "Content-Length is not a number")
            declared = int(declared_text)
            if declared > limit:
                raise _Refused(413, "too-costly", "request body is larger than LUPUS_CDS_MAX_BODY_BYTES")
        # Memory of bodies being received, per worker: a declared body is counted up front, a chunked one
        # as its chunks arrive (``held``), so clients holding bodies open cannot exhaust memory.
        held = [declared or 0]
        if self.receiving + held[0] > self.limits.body_memory:
            raise self._busy()
        self.receiving += held[0]
        try:
            return await asyncio.wait_for(self._receive(proto, declared, limit, held), self.limits.body_timeout)
        except TimeoutError:
            raise _Refused(408, "timeout", "the request body did not arrive in time") from None
        except RuntimeError:  # RSGIProtocolClosed/Error: the client closed or broke the connection
            raise _Refused(400, "incomplete", "the request body was cut off") from None
        finally:
            self.receiving -= held[0]

    async def _receive(self, proto: Any, declared: int | None, limit: int, held: list[int]) -> bytes:
        if declared is not None:
            return await proto()  # hyper stops at Content-Length
        chunks: list[bytes] = []
        async for chunk in proto:  # chunked: counted as it arrives, so no body can exceed the limits
            held[0] += len(chunk)
            self.receiving += len(chunk)
            if held[0] > limit:
                raise _Refused(413, "too-costly", "request body is larger than LUPUS_CDS_MAX_BODY_BYTES")
            if self.receiving > self.limits.body_memory:
                raise self._busy()
            chunks.append(chunk)
        return b"".join(chunks)

    def _call_app(self, environ: dict[str, Any],
                  computes: bool = True) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the app on this (pool) thread; ``computes``: take a compute slot (probes do not wait for one)."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return _no_write

        try:
            with cpu.running() if computes else contextlib.nullcontext():  # cpu.RUNNABLE at once
                result = self.app(environ, start_response)
                try:
                    body = b"".join(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            return int(str(started[0]).split(" ", 1)[0]), list(started[1]), body
        except Exception as exc:  # the app answers its own errors; this is a bug in it, logged as a type
            log.error("request failed outside the app's error handling: %s", type(exc).__name__)
            return _refusal(_Refused(500, "exception", "internal error"))

    # -- logging --------------------------------------------------------------------------------------------

    def _log(self, scope: Any, status: int, headers: list[tuple[str, str]], size: int, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        request_id = next((value for name, value in headers if name.lower() == "x-request-id"), None)
        fields = {
            "remote": scope.client.rsplit(":", 1)[0],
            "method": scope.method if scope.method in _METHODS else "<other>",
            "path": self.route_of(scope.path),  # never the raw path or the query string
            "status": status,
            "bytes": size,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if request_id:
            fields["request_id"] = request_id
        access_log.info("request", extra={"fields": fields})


def _no_write(data: bytes) -> None:
    raise RuntimeError("the WSGI write() callable is not supported")


def _refusal(refused: _Refused) -> tuple[int, list[tuple[str, str]], bytes]:
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": refused.code, "diagnostics": refused.diagnostics}]}
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
               ("X-Content-Type-Options", "nosniff"), ("X-Request-Id", uuid.uuid4().hex),
               *refused.headers.items()]
    if refused.status >= 400 and refused.status != 503:
        headers.append(("Connection", "close"))  # the rest of what it sends is not read
    return refused.status, headers, jsonio.dumps(outcome)


def _environ(scope: Any, body: bytes) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of an RSGI request whose body has been read."""
    server_host, _, server_port = scope.server.rpartition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        # PEP 3333: native strings holding the raw bytes as latin-1
        "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": server_host.strip("[]"),
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": scope.client.rsplit(":", 1)[0].strip("[]"),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key in ("CONTENT_LENGTH", "TRANSFER_ENCODING") or "_" in name:
            continue  # the body is complete; and "X_Foo" must not pass for "X-Foo" (header smuggling)
        elif ("HTTP_" + key) in environ:
            environ["HTTP_" + key] += "," + value
        else:
            environ["HTTP_" + key] = value
    if scope.authority and "HTTP_HOST" not in environ:
        environ["HTTP_HOST"] = scope.authority  # HTTP/2 carries the host as :authority
    return environ


def _flask_routes(app: Any) -> Callable[[str], str]:
    state = getattr(app, "extensions", {}).get("cds_hooks")
    if state is None:
        return lambda path: UNMATCHED_PATH
    known = frozenset(state.by_id)
    return lambda path: loggable_path(app, path, known)


def _few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads up to 8 malloc arenas per CPU; freed memory stays spread over them and the
    worker's RSS creeps up with every thread that ever allocated. Two arenas are plenty for threads that
    mostly wait for the GIL (same as ``MALLOC_ARENA_MAX=2``, which a forked worker can no longer set)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def rsgi_app() -> RSGIApp:
    """The factory ``lupus-cds serve`` gives granian: one per worker process, built in the worker."""
    from .app import create_app

    _few_malloc_arenas()
    flask_app = create_app()
    return RSGIApp(flask_app, ServeLimits.from_config(flask_app.config))
