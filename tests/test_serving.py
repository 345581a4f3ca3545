"""The server adapter of ``lupus-cds serve`` (:mod:`cds_hooks.serving`), driven in-process through granian's
RSGI interface: admission control (503 + Retry-After at once), probes outside it, transport errors as
4xx, and the access log (routes only, the service's own request id)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest
from conftest import patient_view_request

from cds_hooks import logs
from cds_hooks.serving import RSGIApp, ServeLimits


class Headers(dict):
    def items(self):  # granian's RSGIHeaders: lower-case names
        return list(super().items())


class Scope:
    proto = "http"
    http_version = "1.1"
    scheme = "http"
    client = "127.0.0.1:50000"
    server = "127.0.0.1:8080"
    authority = None

    def __init__(self, method: str, path: str, headers: dict[str, str] | None = None, query_string: str = ""):
        self.method, self.path, self.query_string = method, path, query_string
        self.headers = Headers({"host": "127.0.0.1:8080", **(headers or {})})


class Proto:
    """One request's body (as chunks, possibly never complete) and where its answer goes."""

    def __init__(self, chunks: list[bytes] = (), complete: bool = True):
        self.chunks, self.complete = list(chunks), complete
        self.body_read = False
        self.answer: tuple[int, dict[str, str], bytes] | None = None

    async def __call__(self) -> bytes:
        self.body_read = True
        if not self.complete:
            await asyncio.Event().wait()  # a client that never finishes its body
        return b"".join(self.chunks)

    def __aiter__(self):
        async def chunks():
            self.body_read = True
            for chunk in self.chunks:
                yield chunk
            if not self.complete:
                await asyncio.Event().wait()
        return chunks()

    def response_bytes(self, status, headers, body):
        self.answer = (status, {name.lower(): value for name, value in headers}, body)


def post(path: str, body: bytes, chunked: bool = False, **headers: str) -> tuple[Scope, Proto]:
    framing = {"transfer-encoding": "chunked"} if chunked else {"content-length": str(len(body))}
    scope = Scope("POST", path, {"content-type": "application/json", **framing, **headers})
    return scope, Proto([body[i:i + 1000] for i in range(0, len(body), 1000)] if chunked else [body])


def run(adapter: RSGIApp, *requests: tuple[Scope, Proto]) -> list[Proto]:
    async def all_of_them():
        await asyncio.gather(*(adapter.__rsgi__(scope, proto) for scope, proto in requests))
    asyncio.run(all_of_them())
    return [proto for _, proto in requests]


@pytest.fixture(autouse=True)
def worker_settings_restored():
    """The adapter sets process-wide worker settings (GIL switch interval, compute slots): undo them."""
    import sys

    from cds_hooks import cpu

    interval, slots = sys.getswitchinterval(), cpu._slots
    yield
    sys.setswitchinterval(interval)
    cpu._slots = slots


@pytest.fixture
def adapter(app):
    return RSGIApp(app, ServeLimits(threads=2, queue=0, max_body_bytes=20_000, body_timeout=0.2))


def test_a_hook_call_goes_through_with_the_apps_headers(adapter):
    [proto] = run(adapter, post("/cds-services/patient-greeter", json.dumps(patient_view_request()).encode()))
    status, headers, body = proto.answer
    assert status == 200 and json.loads(body)["cards"]
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"


def test_a_chunked_body_over_the_limit_is_413_and_a_declared_one_is_not_read(adapter):
    big = b"{" + b" " * 30_000 + b"}"
    [chunked, declared] = run(adapter, post("/cds-services/patient-greeter", big, chunked=True),
                              post("/cds-services/patient-greeter", big))
    assert chunked.answer[0] == 413 and json.loads(chunked.answer[2])["issue"][0]["code"] == "too-costly"
    assert declared.answer[0] == 413 and not declared.body_read


def test_a_chunked_body_within_the_limit_is_served(adapter):
    [proto] = run(adapter, post("/cds-services/patient-greeter", json.dumps(patient_view_request()).encode(),
                                chunked=True))
    assert proto.answer[0] == 200


def test_a_content_length_that_is_not_a_number_is_400(adapter):
    scope, proto = post("/cds-services/patient-greeter", b"{}")
    scope.headers["content-length"] = "12x"
    run(adapter, (scope, proto))
    assert proto.answer[0] == 400


def test_a_body_that_does_not_arrive_in_time_is_408(adapter):
    scope, _ = post("/cds-services/patient-greeter", b"{}")
    proto = Proto([b'{"ho'], complete=False)
    run(adapter, (scope, proto))
    assert proto.answer[0] == 408


def test_a_body_cut_off_by_the_client_is_400(adapter):
    class Closed(Proto):
        async def __call__(self):
            raise RuntimeError("RSGI transport is closed")  # what granian raises (RSGIProtocolClosed)

    scope, _ = post("/cds-services/patient-greeter", b"{}")
    proto = Closed()
    run(adapter, (scope, proto))
    assert proto.answer[0] == 400


def blocking_app(release: threading.Event, entered: threading.Semaphore):
    """A WSGI app whose hook endpoint holds its thread until ``release``; probes answer at once."""
    def wsgi(environ, start_response):
        if environ["PATH_INFO"] == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        environ["wsgi.input"].read()
        entered.release()
        release.wait(timeout=30)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"cards":[]}']
    return wsgi


def test_past_capacity_a_request_is_503_with_retry_after_at_once_and_probes_still_answer():
    """Capacity 1 (one thread, no queue) and a handler that blocks: the next call is refused at once,
    without its body being read, while /healthz is answered; the blocked call then completes."""
    release, entered = threading.Event(), threading.Semaphore(0)
    adapter = RSGIApp(blocking_app(release, entered), ServeLimits(threads=1, queue=0), route_of=lambda p: p)

    async def scenario():
        first = post("/cds-services/x", b"{}")
        running = asyncio.ensure_future(adapter.__rsgi__(*first))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, entered.acquire)  # the first call holds the only thread
        refused = post("/cds-services/x", b"{}")
        await asyncio.wait_for(adapter.__rsgi__(*refused), 5)
        probe = (Scope("GET", "/healthz"), Proto())
        await asyncio.wait_for(adapter.__rsgi__(*probe), 5)
        assert first[1].answer is None, "still blocked"
        release.set()
        await asyncio.wait_for(running, 10)
        return first[1], refused[1], probe[1]

    try:
        first, refused, probe = asyncio.run(scenario())
    finally:
        release.set()
    status, headers, body = refused.answer
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body)["resourceType"] == "OperationOutcome"
    assert not refused.body_read, "refused before its body was read"
    assert probe.answer[0] == 200
    assert first.answer[0] == 200 and adapter.admitted == 0


def test_the_access_log_shows_routes_and_the_services_request_id_only(app):
    # three requests at once: room for all of them (with the 2-thread, no-queue adapter the third is a 503)
    adapter = RSGIApp(app, ServeLimits(threads=2, queue=4, max_body_bytes=20_000, body_timeout=0.2))
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    access = logging.getLogger("cds_hooks.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        run(adapter,
            post("/cds-services/patient-greeter", json.dumps(patient_view_request()).encode(),
                 **{"x-request-id": "PID-5c1e93-chosen"}),
            (Scope("GET", "/patients/PID-5c1e93", query_string="patient=PID-5c1e93"), Proto()),
            (Scope("GET", "/cds-services", query_string="patient=PID-5c1e93"), Proto()))
    finally:
        access.removeHandler(handler)
    text = stream.getvalue()
    assert "PID-5c1e93" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert sorted((line["path"], line["status"]) for line in lines) == [
        ("/cds-services", 200), ("/cds-services/patient-greeter", 200), (logs.UNMATCHED_PATH, 404)]
    assert all(len(line["request_id"]) == 32 for line in lines)


def test_bodies_being_received_are_bounded_together_in_memory(app):
    """A worker refuses (503) a body that would take the bodies it is receiving past its memory budget,
    declared or chunked, and gives the memory back when a body is done."""
    adapter = RSGIApp(app, ServeLimits(threads=2, queue=0, max_body_bytes=20_000, body_memory=25_000))
    body = json.dumps(patient_view_request()).encode()
    adapter.receiving = 25_000 - 10  # other clients' bodies on their way
    [declared, chunked] = run(adapter, post("/cds-services/patient-greeter", body),
                              post("/cds-services/patient-greeter", body, chunked=True))
    assert declared.answer[0] == 503 and not declared.body_read
    assert chunked.answer[0] == 503
    adapter.receiving = 0
    [fine] = run(adapter, post("/cds-services/patient-greeter", body, chunked=True))
    assert fine.answer[0] == 200 and adapter.receiving == 0
