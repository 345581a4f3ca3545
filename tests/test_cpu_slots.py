"""At most ``cds_hooks.cpu.RUNNABLE`` threads of a ``serve`` worker compute at once; a thread waiting on a
FHIR server gives its slot up (so a few computing threads cannot starve the event loop of the GIL)."""

from __future__ import annotations

import threading

import pytest

from cds_hooks import cpu


@pytest.fixture
def two_slots(monkeypatch):
    monkeypatch.setattr(cpu, "_slots", threading.Semaphore(2))
    yield


def test_two_computing_threads_take_both_slots_and_one_waiting_on_io_frees_one(two_slots):
    holding, in_io, leave_io, leave = (threading.Barrier(3), threading.Event(), threading.Event(),
                                       threading.Event())

    def computing(then_wait_for_io):
        with cpu.running():
            holding.wait(timeout=10)
            if then_wait_for_io:
                with cpu.waiting():
                    in_io.set()
                    leave_io.wait(timeout=10)
            leave.wait(timeout=10)

    threads = [threading.Thread(target=computing, args=(io,)) for io in (True, False)]
    for thread in threads:
        thread.start()
    holding.wait(timeout=10)
    try:
        assert in_io.wait(timeout=10)
        assert cpu._slots.acquire(blocking=False), "the thread waiting on I/O gave its slot up"
        assert not cpu._slots.acquire(blocking=False), "the other still computes: no third slot"
        cpu._slots.release()
    finally:
        leave_io.set()
        leave.set()
        for thread in threads:
            thread.join(timeout=10)
    assert cpu._slots.acquire(blocking=False) and cpu._slots.acquire(blocking=False)  # all given back


def test_outside_serve_nothing_is_limited(monkeypatch):
    monkeypatch.setattr(cpu, "_slots", None)
    with cpu.running(), cpu.waiting(), cpu.running():
        pass  # no slot taken, none released, nothing blocks


def test_waiting_without_a_slot_takes_none(two_slots):
    with cpu.waiting():  # a fetch pool thread, or a test calling the fetcher directly
        pass
    assert cpu._slots.acquire(blocking=False) and cpu._slots.acquire(blocking=False)  # both still free
