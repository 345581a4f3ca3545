"""Issued-card recording (off the request path, bounded) and ``lupus-cds feedback-report`` (text and
HTML with an inline chart), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from conftest import NOW, patient_view_request
from prometheus_client import REGISTRY

from cds_hooks.cli import cli
from cds_hooks.feedback_store import FeedbackStore
from cds_hooks.issued_cards import IssuedCardLog
from cds_hooks.report import NOT_RECORDED, collect, render_html

pytest_plugins = ["servers"]

SERVICE = "/cds-services/patient-greeter"
DAY1, DAY2 = date(2026, 11, 24), date(2026, 11, 25)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'report.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def issued(uuid: str, topic: str, day: date, service: str = "svc", indicator: str = "warning") -> dict:
    return {"card_uuid": uuid, "service_id": service, "hook": "patient-view", "topic_code": topic,
            "indicator": indicator, "issued_on": day}


def feedback(uuid: str, outcome: str, reason: tuple[str, str] | None = None, at: str = "12:00:00") -> dict:
    item = {"card": uuid, "outcome": outcome, "outcomeTimestamp": f"2026-11-25T{at}Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s1"}]
    if reason:
        coding = {"system": "urn:reasons", "code": reason[0], "display": reason[1]}
        item["overrideReason"] = {"reason": coding}
    return item


def seed(store: FeedbackStore) -> None:
    store.record_issued([issued("a1", "topic-a", DAY1), issued("a2", "topic-a", DAY1),
                         issued("a3", "topic-a", DAY2), issued("a3", "topic-a", DAY2),  # shown twice
                         issued("b1", "topic-b", DAY2, indicator="critical"), issued("n1", "", DAY2)])
    store.record("svc", [feedback("a1", "accepted"), feedback("a3", "accepted"),
                         feedback("a3", "accepted", at="12:05:00"),  # a second accept of one card counts once
                         feedback("a2", "overridden", ("not-relevant", "Not relevant")),
                         feedback("b1", "overridden"), feedback("zz", "overridden")])


def test_collect_counts_shown_accepted_overridden_and_reasons(database_url):
    store = FeedbackStore(database_url)
    seed(store)
    stats = collect(store)
    a = stats["topic-a"]
    assert (a.shown, a.accepted, a.overridden) == (4, 2, 1)
    assert a.acceptance == 0.5
    assert a.reasons == {("not-relevant", "Not relevant"): 1}
    assert a.daily == {DAY1: [2, 1], DAY2: [2, 1]}
    b = stats["topic-b"]
    assert (b.shown, b.accepted, b.overridden, dict(b.reasons)) == (1, 0, 1, {(None, None): 1})
    assert stats["(no topic)"].shown == 1
    assert (stats[NOT_RECORDED].shown, stats[NOT_RECORDED].overridden) == (0, 1)


def test_feedback_report_command_prints_text_and_writes_html_with_an_inline_chart(database_url, tmp_path):
    seed(FeedbackStore(database_url))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["feedback-report", "--database-url", database_url, "--html", str(out)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("topic-a"))
    assert line.split() == ["topic-a", "4", "2", "1", "50.0%"]
    assert "not-relevant (Not relevant) x1" in result.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "topic-a" in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page  # no CDN, offline
    assert "Acceptance over time" in page


def test_html_escapes_topic_codes():
    from cds_hooks.report import TopicStats

    page = render_html({"<b>x</b>": TopicStats("<b>x</b>", shown=1)}, datetime(2026, 1, 1, tzinfo=UTC))
    assert "<b>x</b>" not in page.split("<figure>")[0] and "&lt;b&gt;x&lt;/b&gt;" in page


@pytest.mark.requirement("cds-hooks_2.0@82")
def test_hook_calls_record_issued_cards_and_feedback_joins_them(make_app):
    app = make_app()
    client = app.test_client()
    card = client.post(SERVICE, json=patient_view_request()).get_json()["cards"][0]
    state = app.extensions["cds_hooks"]
    assert state.issued_cards.flush()
    (row,) = [r for r in _issued_rows(state.feedback_store)]
    assert (row["card_uuid"], row["service_id"], row["hook"], row["topic_code"], row["indicator"],
            row["issued_on"]) == (card["uuid"], "patient-greeter", "patient-view", "greeting", "info",
                                  NOW.date())
    body = {"feedback": [feedback(card["uuid"], "accepted")]}
    assert client.post(SERVICE + "/feedback", json=body).status_code == 200
    stats = collect(state.feedback_store)
    assert (stats["greeting"].shown, stats["greeting"].accepted) == (1, 1)


def _issued_rows(store: FeedbackStore) -> list[dict]:
    import sqlalchemy as sa

    from cds_hooks.feedback_store import issued_cards_table

    with store.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(issued_cards_table))]


class SlowStore:
    """A database that takes its time (or is stuck until released)."""

    def __init__(self, release: threading.Event):
        self.release = release
        self.rows: list[dict] = []

    def record_issued(self, rows):
        self.release.wait(10)
        self.rows.extend(rows)

    def topics_of(self, service_id, uuids):
        return {}


def _cards(n: int) -> list[dict]:
    return [{"uuid": f"c{i}", "summary": "s", "indicator": "info", "source": {"label": "x"}}
            for i in range(n)]


def test_a_slow_database_never_slows_the_caller_and_a_full_queue_drops_and_counts():
    release = threading.Event()
    log = IssuedCardLog(SlowStore(release), maxsize=5)
    dropped_before = REGISTRY.get_sample_value("cds_issued_cards_dropped_total", {"why": "queue-full"}) or 0.0
    started = time.perf_counter()
    for _ in range(10):
        log.issued("svc", "patient-view", _cards(3), NOW)
    # The database is stuck for 10 s: returning well before that proves nobody waited for it (the margin
    # is for a loaded machine).
    assert time.perf_counter() - started < 5, "enqueueing must not wait for the database"
    dropped = REGISTRY.get_sample_value("cds_issued_cards_dropped_total", {"why": "queue-full"})
    dropped -= dropped_before
    assert dropped > 0
    release.set()
    assert log.flush(5)
    assert len(log.store.rows) + dropped == 30, "every row is either written or counted as dropped"


def test_a_failing_database_drops_the_batch_and_the_writer_keeps_going():
    class Flaky(SlowStore):
        calls = 0

        def record_issued(self, rows):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("database is down")
            self.rows.extend(rows)

    store = Flaky(threading.Event())
    log = IssuedCardLog(store, maxsize=100)
    log.issued("svc", "patient-view", _cards(2), NOW)
    assert log.flush(5)
    log.issued("svc", "patient-view", _cards(2), NOW)
    assert log.flush(5)
    assert len(store.rows) == 2


def test_queue_size_zero_records_nothing(make_app):
    app = make_app(LUPUS_CDS_ISSUED_CARDS_QUEUE="0")
    app.test_client().post(SERVICE, json=patient_view_request())
    assert _issued_rows(app.extensions["cds_hooks"].feedback_store) == []


def _axis_dates(svg: str) -> set[date]:
    import re

    return {date.fromisoformat(day) for day in re.findall(r">\s*(\d{4}-\d{2}-\d{2})\s*<", svg)}


@pytest.mark.parametrize("days", [[date(2026, 11, 25)], [date(2026, 11, 2), date(2026, 11, 25)],
                                  [date(2026, 1, 10), date(2026, 11, 25)]], ids=["one day", "weeks", "months"])
def test_the_chart_time_axis_spans_the_data(days):
    """One day of data used to be drawn on an axis from 2025 to 2029."""
    from cds_hooks.report import TopicStats, acceptance_chart_svg, chart_days

    entry = TopicStats("ck-testing", shown=2 * len(days))
    for day in days:
        entry.daily[day] = [2, 1]
    stats = {"ck-testing": entry}
    assert chart_days(stats) == (days[0], days[-1])
    labels = _axis_dates(acceptance_chart_svg(stats))
    assert len(labels) >= 2, "the axis is labelled with dates"
    margin = timedelta(days=1)
    assert days[0] - margin <= min(labels) and max(labels) <= days[-1] + margin  # nothing beyond the data
    quarter = (days[-1] - days[0]) / 4
    assert min(labels) <= days[0] + quarter and max(labels) >= days[-1] - quarter  # and the data is all there
