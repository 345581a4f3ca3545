"""The request body is kept out of the cyclic garbage collector's way (``cds_hooks.collector``): frozen
while a hook call runs, back to normal after it, nothing held, nothing leaked, and a freeze somebody
else made is left alone."""

from __future__ import annotations

import gc
import json
import threading
import weakref

import pytest
from conftest import patient_view_request

from cds_hooks import ServiceDefinition, collector, hookimpl


@pytest.fixture(autouse=True)
def clean_collector(monkeypatch):
    gc.unfreeze()
    monkeypatch.setattr(collector, "_foreign_freeze", False)
    monkeypatch.setattr(collector, "_calls_holding", 0)
    yield
    gc.unfreeze()


class Peek:
    """A plugin whose handler records what the collector looked like during the call."""

    def __init__(self):
        self.seen = {}

    @hookimpl
    def cds_services(self, config):
        def handler(request):
            patient = request.prefetch.resources("patientToGreet")[0]
            self.seen.update(frozen=gc.get_freeze_count(), collecting=gc.isenabled(),
                             body_tracked=gc.is_tracked(patient))
            return []

        return [ServiceDefinition(id="peek", hook="patient-view", description="Records the collector.", handler=handler,
                                  prefetch={"patientToGreet": "Patient/{{context.patientId}}"})]


def test_body_is_frozen_during_the_call_and_released_after(make_app):
    peek = Peek()
    client = make_app(plugins=[peek]).test_client()
    response = client.post("/cds-services/peek", data=json.dumps(patient_view_request()),
                           content_type="application/json")
    assert response.status_code == 200
    assert peek.seen["frozen"] > 0 and peek.seen["body_tracked"]  # in the permanent generation
    assert peek.seen["collecting"]  # the collector itself is on while the plugin runs
    assert gc.get_freeze_count() == 0  # and every object is back in its generation afterwards


def test_frozen_objects_are_still_freed_and_cycles_still_collected():
    class Node:
        pass

    node = Node()
    node.self = node  # a reference cycle, young when the call freezes everything
    ref = weakref.ref(node)
    with collector.body_held():
        assert gc.get_freeze_count() > 0
        del node
    gc.collect()
    assert ref() is None


def test_overlapping_calls_release_when_the_last_one_leaves():
    first, second = collector.body_held(), collector.body_held()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_freeze_count() > 0  # the second call still holds its body
    second.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0


def test_a_freeze_is_never_held_past_its_limit_by_calls_that_keep_coming(monkeypatch):
    """Frozen cycles cannot be collected: a busy server must still unfreeze every couple of seconds."""
    clock = [100.0]
    monkeypatch.setattr(collector, "_monotonic", lambda: clock[0])
    first = collector.body_held()
    first.__enter__()
    clock[0] += collector.MAX_FREEZE_SECONDS - 0.5
    second = collector.body_held()
    second.__enter__()  # still within the limit: joins
    clock[0] += 1.0
    late = collector.body_held()
    late.__enter__()  # past the limit: runs without joining the freeze
    assert collector._calls_holding == 2
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0  # released although the late call is still running
    late.__exit__(None, None, None)
    assert collector._calls_holding == 0 and gc.get_freeze_count() == 0
    with collector.body_held():  # and the next call starts a fresh freeze
        assert gc.get_freeze_count() > 0


def test_released_when_the_call_fails():
    with pytest.raises(RuntimeError), collector.body_held():
        raise RuntimeError("plugin bug")
    assert gc.get_freeze_count() == 0


def _frozen(obj) -> bool:
    """Whether ``obj`` is in the permanent generation: ``gc.get_objects()`` lists every tracked object
    except those. (Not ``gc.get_freeze_count()``: frozen objects are still freed by reference counting, by
    any thread, so that count moves on its own while a test runs.)"""
    return not any(tracked is obj for tracked in gc.get_objects())


def test_a_freeze_made_by_somebody_else_is_left_alone():
    """A pre-fork server may freeze its heap for copy-on-write; unfreezing would undo that."""
    theirs = [[] for _ in range(3)]  # tracked objects their freeze covers
    gc.freeze()
    ours = [[] for _ in range(3)]  # tracked objects created after their freeze
    assert _frozen(theirs) and not _frozen(ours)
    with collector.body_held():
        assert not _frozen(ours)  # not ours to add to
        assert _frozen(theirs)
    assert _frozen(theirs)  # nor to empty
    assert not _frozen(ours)


def test_concurrent_calls_from_threads_leave_nothing_frozen():
    errors = []

    def call():
        try:
            for _ in range(200):
                with collector.body_held():
                    [{"a": [i]} for i in range(50)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and collector._calls_holding == 0 and gc.get_freeze_count() == 0


def test_paused_turns_the_collector_off_and_restores_it():
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()  # somebody else's choice stays
    finally:
        gc.enable()
