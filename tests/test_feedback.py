"""Feedback endpoint (checklist section 7): validation, durable storage, idempotence."""

from __future__ import annotations

import copy
import threading

import pytest
from conftest import spec_example

from cds_hooks.feedback_store import FeedbackStore

URL = "/cds-services/patient-greeter/feedback"
EXAMPLES = ["feedback-accepted.json", "feedback-overridden-no-reason.json", "feedback-overridden-with-reason.json"]


def store_of(app) -> FeedbackStore:
    return app.extensions["cds_hooks"].feedback_store


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.requirement("cds-hooks_2.0@82", "cds-hooks_2.0@148")
def test_fb_7_each_spec_example_is_accepted_and_stored(app, example):
    body = spec_example(example)
    response = app.test_client().post(URL, json=body)
    assert response.status_code == 200 and response.get_json() == {}
    (row,) = store_of(app).all()
    item = body["feedback"][0]
    assert (row["card_uuid"], row["outcome"], row["outcome_timestamp"]) == (
        item["card"], item["outcome"], item["outcomeTimestamp"])
    assert row["service_id"] == "patient-greeter"


def test_fb_4_fields_are_kept(app):
    app.test_client().post(URL, json=spec_example("feedback-overridden-with-reason.json"))
    app.test_client().post(URL, json=spec_example("feedback-accepted.json"))
    rows = store_of(app).all()
    assert rows[0]["override_reason_code"] == "d7ecf885"
    assert rows[0]["user_comment"] == "A comment entered by the clinician."
    assert rows[1]["accepted_suggestions"] == '["e56e1945-20b3-4393-8503-a1a20fd73152"]'


@pytest.mark.requirement("cds-hooks_2.0@148")
def test_fb_5_duplicates_are_idempotent(app):
    client = app.test_client()
    body = spec_example("feedback-accepted.json")
    for _ in range(3):
        assert client.post(URL, json=body).status_code == 200
    assert len(store_of(app).all()) == 1


def test_fb_5_one_post_with_several_cards(app):
    body = {"feedback": [spec_example(e)["feedback"][0] for e in EXAMPLES]}
    assert app.test_client().post(URL, json=body).status_code == 200
    assert len(store_of(app).all()) == 3


def test_feedback_survives_a_new_app_on_the_same_database(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'durable.sqlite3'}"
    make_app(LUPUS_CDS_DATABASE_URL=url).test_client().post(URL, json=spec_example("feedback-accepted.json"))
    assert len(store_of(make_app(LUPUS_CDS_DATABASE_URL=url)).all()) == 1


def test_concurrent_writers_lose_nothing(app):
    client_count, per_client = 8, 10

    def writer(n):
        client = app.test_client()
        for i in range(per_client):
            item = copy.deepcopy(spec_example("feedback-overridden-no-reason.json"))
            item["feedback"][0]["card"] = f"card-{n}-{i}"
            assert client.post(URL, json=item).status_code == 200

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(client_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store_of(app).all()) == client_count * per_client


@pytest.mark.parametrize("body", [
    {},
    {"feedback": []},
    {"feedback": {}},
    {"feedback": ["x"]},
    {"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2021-12-11T10:05:31Z",
                   "acceptedSuggestions": [{"id": "s"}]}]},
    {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2021-12-11T10:05:31Z"}]},
    {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2021-12-11T10:05:31Z"}]},
    {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
    {"feedback": [{"card": "c", "outcome": "overridden"}]},
    {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31Z",
                   "overrideReason": {}}]},
    {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31Z",
                   "overrideReason": {"reason": {"display": "no code"}}}]},
])
def test_fb_3_fb_4_malformed_feedback_is_400_and_nothing_stored(app, body):
    response = app.test_client().post(URL, json=body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert store_of(app).all() == []


def test_feedback_for_unknown_service_is_404(app):
    assert app.test_client().post("/cds-services/nope/feedback",
                                  json=spec_example("feedback-accepted.json")).status_code == 404


def test_sqlite_runs_in_wal_mode(app):
    with store_of(app).engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
