"""State shared between replicas: the feedback database (SQLite and real PostgreSQL, migrated by
alembic, hammered by concurrent processes) and the Redis-backed JWT replay store and token cache
(real Redis; a replay against a second app refused; Redis down fails closed)."""

from __future__ import annotations

import logging
import multiprocessing
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import patient_view_request, spec_example

from cds_hooks import migrations
from cds_hooks.errors import Unauthorized
from cds_hooks.feedback_store import FeedbackStore, feedback_table, metadata
from cds_hooks.redis_state import RedisState, _digest

pytest_plugins = ["servers"]

BASE = "https://cds.example.org"
SERVICE = "/cds-services/patient-greeter"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    return request.getfixturevalue("postgres_url")


# --- migrations ----------------------------------------------------------------------------------------

def test_migrations_reach_head_and_match_the_tables_the_code_uses(database_url):
    store = FeedbackStore(database_url)
    assert migrations.current(store.engine) == migrations.head() == "0002"
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
    assert diff == [], "feedback_store.metadata and cds_hooks/migrations disagree: write a revision"
    store.dispose()


def test_a_database_from_before_migrations_is_adopted(tmp_path):
    url = f"sqlite:///{tmp_path / 'legacy.sqlite3'}"
    engine = sa.create_engine(url)
    legacy = sa.MetaData()
    feedback_table.to_metadata(legacy).create(engine)  # what metadata.create_all used to make
    with engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_card_feedback_card_uuid"))  # added by revision 0002
        connection.execute(sa.text(
            "INSERT INTO card_feedback (service_id, card_uuid, outcome, outcome_timestamp, client_iss, "
            "received_at) VALUES ('s', 'c', 'accepted', '2026-01-01T00:00:00Z', '', '2026-01-01')"))
    store = FeedbackStore(url)
    assert migrations.current(store.engine) == migrations.head()
    assert len(store.all()) == 1
    assert "issued_cards" in sa.inspect(store.engine).get_table_names()


# --- feedback on PostgreSQL ----------------------------------------------------------------------------

@pytest.mark.integration
def test_feedback_round_trip_on_postgresql(make_app, postgres_url):
    app = make_app(LUPUS_CDS_DATABASE_URL=postgres_url)
    client = app.test_client()
    for example in ("feedback-accepted.json", "feedback-overridden-with-reason.json"):
        for _ in range(2):  # the second post of each is a duplicate
            response = client.post(SERVICE + "/feedback", json=spec_example(example))
            assert response.status_code == 200 and response.get_json() == {}
    # a second replica on the same database sees it all
    rows = make_app(LUPUS_CDS_DATABASE_URL=postgres_url).extensions["cds_hooks"].feedback_store.all()
    assert sorted(row["outcome"] for row in rows) == ["accepted", "overridden"]
    assert next(r for r in rows if r["outcome"] == "overridden")["override_reason_code"] == "d7ecf885"


def _item(n: int) -> dict:
    return {"card": f"card-{n}", "outcome": "accepted", "outcomeTimestamp": "2026-11-25T12:00:00Z"}


def _writer(url: str, worker: int, start, results) -> None:
    # A replica of its own: its own engine, and it runs the migrations too (all at the same moment).
    start.wait()
    store = FeedbackStore(url)
    new = 0
    shared = list(range(60))
    shared = shared[worker * 15:] + shared[:worker * 15]  # every writer walks the same items, offset
    for n in shared:
        new += store.record("svc", [_item(n)], client_iss="https://ehr.example.org")
    for n in range(20):
        new += store.record("svc", [_item(1000 + worker * 100 + n)])
    store.dispose()
    results.put(new)


@pytest.mark.integration
def test_concurrent_writers_in_several_processes_lose_nothing_and_store_duplicates_once(database_url):
    context = multiprocessing.get_context("spawn")  # each writer a fresh interpreter, like a replica
    start, results = context.Event(), context.Queue()
    writers = [context.Process(target=_writer, args=(database_url, w, start, results)) for w in range(4)]
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(120)
        assert process.exitcode == 0
    reported_new = sum(results.get(timeout=5) for _ in writers)
    rows = FeedbackStore(database_url).all()
    assert len(rows) == 60 + 4 * 20
    assert reported_new == len(rows), "each item counted as new exactly once across all writers"
    assert len({row["card_uuid"] for row in rows}) == len(rows)


# --- Redis: replay store and token cache ---------------------------------------------------------------

@pytest.mark.integration
def test_redis_replay_store_is_atomic_and_expires(redis_url):
    shared = RedisState(redis_url)
    store = shared.replay_store()
    assert store.add_if_new("https://ehr.example.org|jti-1", time.time() + 60) is True
    assert store.add_if_new("https://ehr.example.org|jti-1", time.time() + 60) is False
    other_replica = RedisState(redis_url).replay_store()
    assert other_replica.add_if_new("https://ehr.example.org|jti-1", time.time() + 60) is False
    (key,) = shared.client.keys("*")
    assert b"jti-1" not in key and b"ehr.example.org" not in key  # only a digest is stored
    assert 0 < shared.client.ttl(key) <= 60
    # Expiry is Redis's own clock, which a test cannot move: check the expiry Redis was given instead of
    # sleeping past it. A token valid for one more second is forgotten within that second.
    shared.client.flushall()
    assert store.add_if_new("short-lived", time.time() + 1) is True
    (key,) = shared.client.keys("*")
    assert 0 < shared.client.pttl(key) <= 1000


@pytest.mark.integration
def test_redis_token_cache_is_shared_and_expires(redis_url):
    first, second = RedisState(redis_url).token_cache(), RedisState(redis_url).token_cache()
    token = {"access_token": "abc", "token_type": "bearer", "scope": "system/Observation.rs"}
    first.set("https://ehr.example.org/token|client|scope", token, time.time() + 60)
    assert second.get("https://ehr.example.org/token|client|scope") == token
    # Expiry is Redis's clock (see above): a token is kept no longer than it stays valid, in whole seconds...
    first.set("soon", token, time.time() + 1.5)
    assert 0 < first.client.pttl(first.prefix + _digest("soon")) <= 1000
    # ...and one with less than a second left is not stored at all.
    first.set("too-late", token, time.time() + 0.5)
    assert second.get("too-late") is None
    first.delete("https://ehr.example.org/token|client|scope")
    assert second.get("https://ehr.example.org/token|client|scope") is None


@pytest.mark.integration
def test_a_jwt_replayed_against_another_replica_is_refused(make_app, client_keys, redis_url):
    replicas = [make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file),
                         LUPUS_CDS_REDIS_URL=redis_url).test_client() for _ in range(2)]
    headers = client_keys.header(BASE + SERVICE)
    assert replicas[0].post(SERVICE, json=patient_view_request(), headers=headers).status_code == 200
    assert replicas[1].post(SERVICE, json=patient_view_request(), headers=headers).status_code == 401
    assert replicas[1].post(SERVICE, json=patient_view_request(),
                            headers=client_keys.header(BASE + SERVICE)).status_code == 200


def test_in_memory_replay_stores_do_not_see_each_other(make_app, client_keys):
    """Why processes need a shared store (the host's SQLite file, or Redis across hosts): with
    LUPUS_CDS_REPLAY_DB=memory each process remembers only its own tokens."""
    replicas = [make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_REPLAY_DB="memory",
                         LUPUS_CDS_CLIENTS=str(client_keys.clients_file)).test_client() for _ in range(2)]
    headers = client_keys.header(BASE + SERVICE)
    assert replicas[0].post(SERVICE, json=patient_view_request(), headers=headers).status_code == 200
    assert replicas[0].post(SERVICE, json=patient_view_request(), headers=headers).status_code == 401
    assert replicas[1].post(SERVICE, json=patient_view_request(), headers=headers).status_code == 200


@pytest.mark.integration
def test_redis_down_fails_closed_with_a_clear_log_line(make_app, client_keys, own_redis, caplog):
    app = make_app(LUPUS_CDS_ALLOW_UNSIGNED=False, LUPUS_CDS_CLIENTS=str(client_keys.clients_file),
                   LUPUS_CDS_REDIS_URL=own_redis.url, LUPUS_CDS_REDIS_TIMEOUT="0.3")
    client = app.test_client()
    assert client.post(SERVICE, json=patient_view_request(),
                       headers=client_keys.header(BASE + SERVICE)).status_code == 200
    assert client.get("/readyz").status_code == 200
    own_redis.stop()
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    response = client.post(SERVICE, json=patient_view_request(), headers=client_keys.header(BASE + SERVICE))
    assert response.status_code == 401
    assert time.monotonic() - started < 5, "a dead Redis must fail fast"
    assert any(record.levelno == logging.ERROR and "replay store unreachable" in record.getMessage()
               for record in caplog.records), caplog.text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["redis"] == "unavailable"
    # feedback needs the replay check too: also refused, nothing stored
    assert client.post(SERVICE + "/feedback", json=spec_example("feedback-accepted.json"),
                       headers=client_keys.header(BASE + SERVICE + "/feedback")).status_code == 401


@pytest.mark.integration
def test_replay_store_raises_unauthorized_when_redis_is_unreachable(own_redis):
    store = RedisState(own_redis.url, timeout=0.3).replay_store()
    own_redis.stop()
    with pytest.raises(Unauthorized) as caught:
        store.add_if_new("k", time.time() + 60)
    assert caught.value.reason == "replay-store-unavailable"


@pytest.mark.integration
def test_readyz_checks_postgresql_and_redis(make_app, postgres_url, redis_url):
    app = make_app(LUPUS_CDS_DATABASE_URL=postgres_url, LUPUS_CDS_REDIS_URL=redis_url)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
