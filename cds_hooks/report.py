"""``lupus-cds feedback-report``: how clinicians answered the cards, per card topic.

For each topic (``card.source.topic.code``): how often its cards were **shown** (rows of
``issued_cards``), **accepted** and **overridden** (distinct cards with such feedback), the override
reasons given, and the acceptance rate (accepted / shown). Feedback finds its topic by joining
``card_feedback`` to ``issued_cards`` on (service id, card uuid); feedback for a card that was never
recorded as shown (issued before recording existed, or dropped from a full queue) is reported under
``(not recorded)``.

``--html FILE`` writes a self-contained page: the tables and a chart of the daily acceptance rate per
topic (cards accepted / cards shown, by the UTC day the card was first shown), drawn by matplotlib as
inline SVG — no script, no CDN, so it opens anywhere, offline. matplotlib is an optional dependency
(the ``report`` extra); the text report needs nothing more than the service itself.
"""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from . import config as settings
from .feedback_store import DatabaseUnavailable, FeedbackStore, feedback_table, issued_cards_table

NOT_RECORDED = "(not recorded)"
NO_TOPIC = "(no topic)"


@dataclass
class TopicStats:
    topic: str
    shown: int = 0
    accepted: int = 0
    overridden: int = 0
    #: (reason code or None, display or None) -> number of overridden cards giving it
    reasons: Counter = field(default_factory=Counter)
    #: UTC day -> [shown, accepted]
    daily: dict[date, list[int]] = field(default_factory=dict)

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.shown if self.shown else None

    def day(self, when: date) -> list[int]:
        return self.daily.setdefault(when, [0, 0])


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def collect(store: FeedbackStore) -> dict[str, TopicStats]:
    """Every topic's numbers, computed in the database (GROUP BY), so it scales with topics × days."""
    stats: dict[str, TopicStats] = {}

    def topic(name: str | None) -> TopicStats:
        key = NOT_RECORDED if name is None else (name or NO_TOPIC)
        return stats.setdefault(key, TopicStats(key))

    issued, fb = issued_cards_table, feedback_table
    cards = (sa.select(issued.c.service_id, issued.c.card_uuid,
                       sa.func.min(issued.c.topic_code).label("topic"),
                       sa.func.min(issued.c.issued_on).label("first_day"))
             .group_by(issued.c.service_id, issued.c.card_uuid).subquery())
    outcomes = (sa.select(cards.c.topic, cards.c.first_day, fb.c.outcome, fb.c.override_reason_code,
                          fb.c.override_reason_display, sa.func.count(sa.distinct(fb.c.card_uuid)).label("n"))
                .select_from(fb.outerjoin(cards, sa.and_(cards.c.service_id == fb.c.service_id,
                                                         cards.c.card_uuid == fb.c.card_uuid)))
                .group_by(cards.c.topic, cards.c.first_day, fb.c.outcome, fb.c.override_reason_code,
                          fb.c.override_reason_display))
    shown = (sa.select(issued.c.topic_code, issued.c.issued_on, sa.func.count().label("n"))
             .group_by(issued.c.topic_code, issued.c.issued_on))
    with store.connection() as connection:
        for row in connection.execute(shown):
            entry = topic(row.topic_code)
            entry.shown += row.n
            entry.day(_day(row.issued_on))[0] += row.n
        for row in connection.execute(outcomes):
            entry = topic(row.topic)
            if row.outcome == "accepted":
                entry.accepted += row.n
                if row.first_day is not None:
                    entry.day(_day(row.first_day))[1] += row.n
            else:
                entry.overridden += row.n
                entry.reasons[(row.override_reason_code, row.override_reason_display)] += row.n
    return dict(sorted(stats.items()))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _reason(code: str | None, display: str | None) -> str:
    if code is None and display is None:
        return "no reason given"
    return f"{code}" + (f" ({display})" if display else "")


def render_text(stats: Mapping[str, TopicStats]) -> str:
    if not stats:
        return "No cards shown and no feedback recorded yet."
    width = max(12, *(len(name) for name in stats))
    lines = [f"{'topic':<{width}}  {'shown':>7}  {'accepted':>8}  {'overridden':>10}  {'acceptance':>10}"]
    for entry in stats.values():
        lines.append(f"{entry.topic:<{width}}  {entry.shown:>7}  {entry.accepted:>8}  "
                     f"{entry.overridden:>10}  {_percent(entry.acceptance):>10}")
        for (code, display), count in entry.reasons.most_common():
            lines.append(f"{'':<{width}}    overridden: {_reason(code, display)} x{count}")
    return "\n".join(lines)


def acceptance_chart_svg(stats: Mapping[str, TopicStats]) -> str:
    """The daily acceptance rate of each topic as an inline ``<svg>`` element (matplotlib, no JS)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file-like object only
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    # Text as <text> elements, not glyph outlines: smaller, searchable, and readable by screen readers.
    with plt.rc_context({"svg.fonttype": "none"}):
        return _draw_acceptance_chart(stats, plt, mdates)


def chart_days(stats: Mapping[str, TopicStats]) -> tuple[date, date] | None:
    """The first and last UTC day on which a card was shown (the chart's time axis spans them), or None."""
    days = [day for entry in stats.values() for day, (shown, _) in entry.daily.items() if shown]
    return (min(days), max(days)) if days else None


def _draw_acceptance_chart(stats: Mapping[str, TopicStats], plt: Any, mdates: Any) -> str:
    figure, axes = plt.subplots(figsize=(9, 4))
    try:
        drawn = 0
        for entry in stats.values():
            days = sorted(day for day, (shown, _) in entry.daily.items() if shown)
            if not days:
                continue
            axes.plot(days, [entry.daily[day][1] / entry.daily[day][0] * 100 for day in days],
                      marker="o", label=entry.topic)
            drawn += 1
        axes.set_ylim(0, 100)
        axes.set_ylabel("accepted / shown (%)")
        axes.set_title("Acceptance rate per day, by card topic")
        span = chart_days(stats)
        if span is not None:
            # The axis spans the data plus a day each side: left to matplotlib, one day of data is drawn
            # in the middle of several years.
            first, last = span[0] - timedelta(days=1), span[1] + timedelta(days=1)
            axes.set_xlim(first, last)
            days = (last - first).days
            locator = (mdates.DayLocator(interval=max(1, days // 8)) if days <= 62
                       else mdates.AutoDateLocator(minticks=3, maxticks=9))
            axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        figure.autofmt_xdate()
        if drawn:
            axes.legend(loc="upper left", fontsize="small")
        else:
            axes.text(0.5, 0.5, "no cards shown yet", ha="center", va="center", transform=axes.transAxes)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    finally:
        plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE: the element is embedded in HTML


def render_html(stats: Mapping[str, TopicStats], generated: datetime) -> str:
    esc = html.escape
    rows = []
    for entry in stats.values():
        reasons = "<br>".join(f"{esc(_reason(code, display))} &times;{count}"
                              for (code, display), count in entry.reasons.most_common()) or "&ndash;"
        rows.append(f"<tr><td>{esc(entry.topic)}</td><td>{entry.shown}</td><td>{entry.accepted}</td>"
                    f"<td>{entry.overridden}</td><td>{_percent(entry.acceptance)}</td><td>{reasons}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Card feedback report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:.3em .6em;text-align:right;vertical-align:top}}
td:first-child,td:last-child,th{{text-align:left}}</style></head><body>
<h1>Card feedback report</h1>
<p>Generated {esc(generated.isoformat(timespec="seconds"))}. Shown: cards returned by the service;
accepted / overridden: distinct cards with such feedback; acceptance: accepted / shown.</p>
<table><thead><tr><th>Topic</th><th>Shown</th><th>Accepted</th><th>Overridden</th><th>Acceptance</th>
<th>Override reasons</th></tr></thead><tbody>
{"".join(rows) or '<tr><td colspan="6">No cards shown and no feedback recorded yet.</td></tr>'}
</tbody></table>
<h2>Acceptance over time</h2>
<figure>{acceptance_chart_svg(stats)}</figure>
</body></html>
"""


@click.command("feedback-report")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Also write a self-contained HTML report with a chart to this file.")
@click.option("--database-url", default=None,
              help="Database to read (default: LUPUS_CDS_DATABASE_URL, else the embedded SQLite file).")
def feedback_report(html_path: Path | None, database_url: str | None) -> None:
    """Per card topic: how often cards were shown, accepted and overridden (with reasons)."""
    try:
        cfg = settings.load({"LUPUS_CDS_DATABASE_URL": database_url} if database_url else None)
    except settings.ConfigError as exc:
        if database_url and exc.setting == "LUPUS_CDS_DATABASE_URL":
            raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint="'--database-url'") from None
        raise
    which = "--database-url" if database_url else "LUPUS_CDS_DATABASE_URL"
    try:
        store = FeedbackStore(cfg["LUPUS_CDS_DATABASE_URL"], require_database=True)
        try:
            stats = collect(store)
        finally:
            store.dispose()
    except DatabaseUnavailable as exc:
        shown = sa.engine.make_url(cfg["LUPUS_CDS_DATABASE_URL"]).render_as_string(hide_password=True)
        raise click.ClickException(f"the feedback database {shown} does not answer ({exc}): check {which} "
                                   "and that the database is running") from None
    click.echo(render_text(stats))
    if html_path is not None:
        try:
            page = render_html(stats, datetime.now(UTC))
        except ImportError:
            raise click.ClickException("the HTML report needs matplotlib: pip install 'lupus-cds[report]'") \
                from None
        try:
            html_path.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {html_path}: {exc.strerror or type(exc).__name__}") from None
        click.echo(f"HTML report written to {html_path}")
