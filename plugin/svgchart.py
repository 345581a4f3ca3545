"""A small SVG writer for the timeline's server-drawn charts: a time axis shared by every chart (so they
line up on a page), a linear or logarithmic value axis, shaded bands, labelled horizontal lines, point
series, a step series (a dose over time) and vertical event markers.

Each data mark carries ``data-*`` attributes (``data-source``: the FHIR ``Type/id`` it came from) and a
``<title>`` a browser shows on hover, so every point can be traced to its resource. All text is escaped
here. No styles are inlined (the app's Content-Security-Policy allows only its stylesheet): marks carry
class names that ``plugin/trends.py``'s stylesheet colours.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

#: escaping, cached: a long series repeats its units, statuses, dates and values thousands of times
escape = functools.lru_cache(maxsize=1 << 16)(html.escape)

LEFT, RIGHT, TOP, BOTTOM = 64, 150, 14, 30


@dataclass(frozen=True)
class Band:
    """A shaded value range (``None``: open at that end)."""

    low: float | None
    high: float | None
    label: str
    css: str


@dataclass(frozen=True)
class Rule:
    """A labelled horizontal line (a limit, a threshold)."""

    value: float
    label: str
    css: str


@dataclass(slots=True)  # many per chart: a plain slotted class builds fastest
class Dot:
    """One plotted value. ``attrs`` become ``data-*`` attributes (``source`` always among them): a mapping,
    or (for a long series, built in one step) the attributes already written as escaped HTML. ``title`` is
    HTML, escaped by the caller, who builds it from parts it escaped once."""

    when: datetime
    value: float
    title: str
    attrs: Mapping[str, str] | str
    css: str = "dot"


@dataclass(slots=True)  # many per chart: a plain slotted class builds fastest
class Step:
    """A value holding from ``start`` to ``end`` (``None``: not known; drawn as a gap)."""

    start: datetime
    end: datetime
    value: float | None
    title: str
    attrs: Mapping[str, str]


@dataclass(slots=True)  # many per chart: a plain slotted class builds fastest
class Event:
    """A dated marker across the chart (a symptom, a medicine started)."""

    when: datetime
    glyph: str
    title: str
    attrs: Mapping[str, str]
    css: str = "event"


@dataclass
class Chart:
    """One chart; :meth:`svg` writes it."""

    chart_id: str
    label: str
    start: datetime
    end: datetime
    y_min: float
    y_max: float
    unit: str
    log: bool = False
    width: int = 980
    height: int = 230
    bands: Sequence[Band] = ()
    rules: Sequence[Rule] = ()
    series: Sequence[Sequence[Dot]] = ()
    steps: Sequence[Step] = ()
    events: Sequence[Event] = ()
    described_by: str | None = None
    notes: list[str] = field(default_factory=list)

    # -- geometry --

    @property
    def plot_width(self) -> float:
        return self.width - LEFT - RIGHT

    @property
    def plot_height(self) -> float:
        return self.height - TOP - BOTTOM

    def x(self, when: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        share = (when - self.start).total_seconds() / span
        return LEFT + min(1.0, max(0.0, share)) * self.plot_width

    def _scaled(self, value: float) -> float:
        if self.log:
            return math.log10(max(value, self.y_min))
        return value

    def y(self, value: float) -> float:
        low, high = self._scaled(self.y_min), self._scaled(self.y_max)
        share = (self._scaled(min(max(value, self.y_min), self.y_max)) - low) / ((high - low) or 1.0)
        return TOP + (1.0 - share) * self.plot_height

    # -- drawing --

    def svg(self) -> str:
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(self.chart_id)}" '
                 f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" '
                 f'role="img" aria-label="{escape(self.label)}"'
                 + (f' aria-describedby="{escape(self.described_by)}"' if self.described_by else "") + ">",
                 f"<title>{escape(self.label)}</title>"]
        parts += self._bands()
        parts += self._axes()
        parts += self._rules()
        parts += self._events()
        parts += self._steps()
        for dots in self.series:
            parts += self._dots(dots)
        parts.append("</svg>")
        return "".join(parts)

    def _bands(self) -> list[str]:
        out = []
        for band in self.bands:
            top = self.y(band.high if band.high is not None else self.y_max)
            bottom = self.y(band.low if band.low is not None else self.y_min)
            if bottom - top < 0.5:
                continue
            out.append(f'<rect class="band {escape(band.css)}" x="{LEFT}" y="{top:.1f}" '
                       f'width="{self.plot_width:.1f}" height="{bottom - top:.1f}">'
                       f"<title>{escape(band.label)}</title></rect>")
        return out

    def _axes(self) -> list[str]:
        bottom = TOP + self.plot_height
        out = [f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{LEFT + self.plot_width}" y2="{bottom}"/>',
               f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>']
        for value in self.y_ticks():
            y = self.y(value)
            out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + self.plot_width}" y2="{y:.1f}"/>')
            out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                       f"{escape(number(value))}</text>")
        out.append(f'<text class="unit" x="{LEFT - 6}" y="{TOP - 2}" text-anchor="end">{escape(self.unit)}</text>')
        for when in month_ticks(self.start, self.end):
            x = self.x(when)
            out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}"/>')
            out.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">'
                       f"{when.strftime('%b %Y')}</text>")
        return out

    def _rules(self) -> list[str]:
        out = []
        for rule in self.rules:
            if not self.y_min <= rule.value <= self.y_max:
                continue
            y = self.y(rule.value)
            out.append(f'<g class="rule {escape(rule.css)}" data-value="{rule.value:g}">'
                       f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + self.plot_width}" y2="{y:.1f}"/>'
                       f'<text x="{LEFT + self.plot_width + 6}" y="{y + 4:.1f}">{escape(rule.label)}</text>'
                       f"<title>{escape(rule.label)}</title></g>")
        return out

    def _events(self) -> list[str]:
        out = []
        bottom = TOP + self.plot_height
        for event in self.events:
            x = self.x(event.when)
            out.append(f'<g class="{escape(event.css)}"{attributes(event.attrs)}>'
                       f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}"/>'
                       f'<text x="{x + 3:.1f}" y="{TOP + 11}">{escape(event.glyph)}</text>'
                       f"<title>{escape(event.title)}</title></g>")
        return out

    def _steps(self) -> list[str]:
        out = []
        previous: Step | None = None
        for step in self.steps:
            # a clipped step continuing one of the same value (another record of the same pulse) is not labelled
            # again: the labels would overprint
            continued = (previous is not None and previous.value == step.value and previous.end == step.start)
            previous = step
            if step.value is None:
                x1, x2 = self.x(step.start), self.x(step.end)
                out.append(f'<rect class="unknown" x="{x1:.1f}" y="{TOP}" width="{max(x2 - x1, 1):.1f}" '
                           f'height="{self.plot_height:.1f}"{attributes(step.attrs)}>'
                           f"<title>{escape(step.title)}</title></rect>")
                continue
            x1, x2, y = self.x(step.start), self.x(step.end), self.y(step.value)
            clipped = step.value > self.y_max
            out.append(f'<g class="step{" clipped" if clipped else ""}"{attributes(step.attrs)}>'
                       f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{max(x2, x1 + 2):.1f}" y2="{y:.1f}"/>'
                       + (f'<text x="{x1:.1f}" y="{y + 12:.1f}">▲ {escape(number(step.value))}</text>'
                          if clipped and not continued else "")
                       + f"<title>{escape(step.title)}</title></g>")
        return out

    def _dots(self, dots: Iterable[Dot]) -> list[str]:
        # A two-year daily series is thousands of dots: the scale is worked out once, not per dot.
        dots = sorted(dots, key=lambda d: d.when)
        if not dots:
            return []
        start, span = self.start.timestamp(), (self.end - self.start).total_seconds() or 1.0
        width, height = self.plot_width, self.plot_height
        low, high = self._scaled(self.y_min), self._scaled(self.y_max)
        y_span = (high - low) or 1.0
        y_min, y_max, log = self.y_min, self.y_max, self.log
        coordinates = []
        for dot in dots:
            share = (dot.when.timestamp() - start) / span
            x = LEFT + (0.0 if share < 0 else 1.0 if share > 1 else share) * width
            value = y_min if dot.value < y_min else y_max if dot.value > y_max else dot.value
            y = TOP + (1.0 - ((math.log10(value) if log else value) - low) / y_span) * height
            coordinates.append((x, y))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        out = [f'<polyline class="trend" points="{path}"/>']
        for dot, (x, y) in zip(dots, coordinates, strict=True):
            clipped = " clipped" if dot.value > y_max else ""
            out.append(f'<circle class="{escape(dot.css)}{clipped}" cx="{x:.1f}" cy="{y:.1f}" r="3.2"'
                       f"{attributes(dot.attrs)}><title>{dot.title}</title></circle>")
        return out

    def y_ticks(self) -> list[float]:
        if self.log:
            ticks = []
            exponent = math.floor(math.log10(max(self.y_min, 1e-9)))
            while 10 ** exponent <= self.y_max:
                for factor in (1, 2, 5):
                    value = factor * 10 ** exponent
                    if self.y_min <= value <= self.y_max:
                        ticks.append(float(value))
                exponent += 1
            return ticks
        return nice_ticks(self.y_min, self.y_max)


def attributes(attrs: Mapping[str, str] | str) -> str:
    """``data-*`` attributes of a mark; a ``str`` is taken as already written (and escaped) HTML."""
    if isinstance(attrs, str):
        return attrs
    return "".join([f' data-{escape(name)}="{html.escape(value)}"' for name, value in attrs.items()])


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) between ``low`` and ``high``."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(f * power for f in (1, 2, 2.5, 5, 10) if f * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def month_ticks(start: datetime, end: datetime) -> list[datetime]:
    """The first day of every third month (Jan, Apr, Jul, Oct) between ``start`` and ``end``."""
    ticks = []
    year, month = start.year, start.month
    month = ((month - 1) // 3) * 3 + 1
    while True:
        when = start.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
        if when > end:
            return ticks
        if when >= start:
            ticks.append(when)
        month += 3
        if month > 12:
            month -= 12
            year += 1


def number(value: float) -> str:
    """A value as a clinician reads it: no needless decimals, thousands separated."""
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")
