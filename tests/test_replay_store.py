"""The client-JWT replay store every process of one host shares without Redis (SQLite, WAL)."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest
from conftest import patient_view_request

from cds_hooks.auth import InMemoryReplayStore
from cds_hooks.errors import Unauthorized
from cds_hooks.replay_store import SQLiteReplayStore, replay_store_from_config


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_first_use_is_new_a_replay_is_not_and_an_expired_entry_is_forgotten(tmp_path):
    clock = Clock(1000.0)
    store = SQLiteReplayStore(tmp_path / "replay.sqlite3", clock=clock)
    assert store.add_if_new("iss|a", 1060.0) is True
    assert store.add_if_new("iss|a", 1060.0) is False
    assert store.add_if_new("iss|b", 1060.0) is True
    assert len(store) == 2
    clock.now = 1061.0  # both tokens can no longer be accepted
    assert len(store) == 0
    assert store.add_if_new("iss|a", 1200.0) is True
    assert store.add_if_new("iss|a", 1200.0) is False


def test_the_file_holds_digests_not_issuers_or_token_ids(tmp_path):
    path = tmp_path / "replay.sqlite3"
    SQLiteReplayStore(path).add_if_new("https://ehr.example.org|jti-PID-5c1e93", 4e9)
    rows = sqlite3.connect(path).execute("SELECT digest FROM seen_jti").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 64
    assert b"PID-5c1e93" not in path.read_bytes() + (tmp_path / "replay.sqlite3-wal").read_bytes()


def test_expired_entries_are_deleted(tmp_path, monkeypatch):
    from cds_hooks import replay_store

    monkeypatch.setattr(replay_store, "PURGE_INTERVAL", 0.0)
    clock = Clock(0.0)
    store = SQLiteReplayStore(tmp_path / "replay.sqlite3", clock=clock)
    for n in range(50):
        store.add_if_new(f"iss|{n}", 10.0)
    clock.now = 11.0
    store.add_if_new("iss|later", 100.0)
    count = sqlite3.connect(tmp_path / "replay.sqlite3").execute("SELECT count(*) FROM seen_jti").fetchone()[0]
    assert count == 1


def test_an_unusable_file_fails_closed(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    store = SQLiteReplayStore(blocker / "replay.sqlite3")
    with pytest.raises(Unauthorized) as raised:
        store.add_if_new("iss|a", 4e9)
    assert raised.value.reason == "replay-store-unavailable"


def _claim(path: str, keys: list[str], start, results) -> None:
    store = SQLiteReplayStore(path)
    start.wait()
    results.put([key for key in keys if store.add_if_new(key, 4e9)])


def test_two_processes_racing_on_the_same_tokens_accept_each_exactly_once(tmp_path):
    """What `serve` relies on for its workers: whichever process sees a token first takes it; the other
    process refuses it. Both try all 300 tokens at the same moment."""
    keys = [f"iss|token-{n}" for n in range(300)]
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_claim, args=(str(tmp_path / "replay.sqlite3"), keys, start, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    accepted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sorted(accepted[0] + accepted[1]) == sorted(keys)  # every token once, none twice


def test_config_picks_redis_then_sqlite_then_memory(tmp_path):
    class Shared:
        def replay_store(self):
            return "redis-store"

    assert replay_store_from_config({}, Shared()) == "redis-store"
    store = replay_store_from_config({"LUPUS_CDS_REPLAY_DB": str(tmp_path / "r.sqlite3")})
    assert isinstance(store, SQLiteReplayStore) and store.path == tmp_path / "r.sqlite3"
    assert replay_store_from_config({"LUPUS_CDS_REPLAY_DB": "memory"}) is None


def test_two_apps_on_one_replay_file_refuse_each_others_tokens(make_app, client_keys, tmp_path):
    """Two app instances stand for two worker processes: a token used at one is refused at the other."""
    config = {"LUPUS_CDS_ALLOW_UNSIGNED": False, "LUPUS_CDS_CLIENTS": str(client_keys.clients_file)}
    first, second = make_app(**config), make_app(**config)
    assert not isinstance(first.extensions["cds_hooks"].authenticator.replay_store, InMemoryReplayStore)
    url = "https://cds.example.org/cds-services/patient-greeter"
    headers = client_keys.header(url)
    assert first.test_client().post("/cds-services/patient-greeter", json=patient_view_request(),
                                    headers=headers).status_code == 200
    assert second.test_client().post("/cds-services/patient-greeter", json=patient_view_request(),
                                     headers=headers).status_code == 401
