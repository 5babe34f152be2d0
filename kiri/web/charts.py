"""Time-series charts as inline SVG, computed on the server: no script, no library.

A chart is a stack of panels over one time axis; each panel draws one series as a path,
a reference line (the threshold at 1), highlighted readings as dots, and every alert as a
vertical mark. Points beyond a panel's top are drawn on its edge as a triangle: a reading
at 70x the threshold must not flatten the rest of the week into the axis.

    svg = chart([Panel("score ÷ threshold", points, 0, 2, line=1.0)], start, end, marks)

Lines, dots and labels carry CSS classes; the page's stylesheet colours them.
"""

import math
import time
from dataclasses import dataclass, field
from html import escape

WIDTH = 760
LEFT, RIGHT, BOTTOM = 52, 14, 24   # room for the y labels, the last x label, the time axis
PANEL_GAP = 24                      # between panels, and above the first: each panel's label sits there
MAX_POINTS = 600   # per series: more than the chart has pixels for is weight without information
HOUR, DAY = 3600, 86400


@dataclass
class Panel:
    label: str                      # what the series is, written in the panel's corner
    points: list                    # [(ts, value)], oldest first
    low: float
    high: float
    line: float = None              # a reference level (the threshold), drawn dashed
    line_label: str = ""
    dots: list = field(default_factory=list)   # [Dot]: readings to point at
    max_gap: float = math.inf       # points further apart than this are not joined
    kind: str = "ratio"             # the CSS class of the series
    height: int = 96
    tick_labels: dict = field(default_factory=dict)   # value -> its words on the y axis (network: down / up)


@dataclass
class Dot:
    ts: float
    value: float
    title: str
    href: str = None


@dataclass
class Mark:
    """An alert on the time axis."""
    ts: float
    title: str
    href: str = None


def downsample(points, most=MAX_POINTS):
    """At most `most` points, oldest first: the lowest and the highest of each of most/2
    equal slices of time, so a spike survives where an average would hide it."""
    if len(points) <= most:
        return list(points)
    slices = most // 2
    start, end = points[0][0], points[-1][0]
    width = (end - start) / slices or 1.0
    buckets = {}
    for point in points:
        buckets.setdefault(min(int((point[0] - start) / width), slices - 1), []).append(point)
    kept = []
    for i in sorted(buckets):
        bucket = buckets[i]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        kept += sorted({low, high}, key=lambda p: p[0])
    return kept


def time_ticks(start, end):
    """[(ts, label)] at round local times within [start, end]: every hour or three over a
    day ('15:00'), every midnight over longer ('Tue 14')."""
    span = end - start
    if span > 2 * DAY:
        step_hours, label = 24, "%a %d"
    else:
        step_hours, label = (1 if span <= 6 * HOUR else 3), "%H:%M"
    first = time.localtime(start)
    ticks, hour = [], 0
    while True:
        # mktime of the wall clock carries hour 27 into the next day, and a DST change with it
        ts = time.mktime((first.tm_year, first.tm_mon, first.tm_mday, hour, 0, 0, 0, 0, -1))
        if ts > end:
            return ticks
        if ts >= start:
            ticks.append((ts, time.strftime(label, time.localtime(ts))))
        hour += step_hours


def number(value):
    """A value for an axis or a tooltip: '0.25', '1.5', '40', '12k'."""
    if abs(value) >= 10000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 10 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


class Frame:
    """Where a panel lies in the SVG, and how time and value map onto it."""

    def __init__(self, panel, top, start, end):
        self.panel, self.top, self.start, self.end = panel, top, start, end
        self.bottom = top + panel.height

    def x(self, ts):
        return LEFT + (WIDTH - LEFT - RIGHT) * (ts - self.start) / ((self.end - self.start) or 1.0)

    def y(self, value):
        low, high = self.panel.low, self.panel.high
        share = (min(max(value, low), high) - low) / ((high - low) or 1.0)
        return self.bottom - share * self.panel.height


def chart(panels, start, end, marks=(), title=""):
    """An SVG of `panels` stacked over the time axis from `start` to `end`, with `marks`
    (alerts) across all of them."""
    frames, top = [], PANEL_GAP
    for panel in panels:
        frames.append(Frame(panel, top, start, end))
        top += panel.height + PANEL_GAP
    height = top - PANEL_GAP + BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    parts += [grid_and_ticks(frame, start, end, last=frame is frames[-1]) for frame in frames]
    parts += [series(frame, start, end) for frame in frames]
    if frames:
        parts.append(alert_marks(frames[0].top, frames[-1].bottom, frames[0], marks))
    parts += [dots(frame) for frame in frames]
    parts.append("</svg>")
    return "".join(parts)


def grid_and_ticks(frame, start, end, last):
    """The panel's frame, its y labels (low, the reference line, high), and the time grid;
    the time labels under the last panel only."""
    p = frame.panel
    out = [f'<rect class="plot" x="{LEFT}" y="{frame.top}" width="{WIDTH - LEFT - RIGHT}" height="{p.height}"/>',
           f'<text class="panel-label" x="{LEFT}" y="{frame.top - 7}">{escape(p.label)}</text>']
    for value in sorted({p.low, p.high} | ({p.line} if p.line is not None else set())):
        y = frame.y(value)
        words = p.tick_labels.get(value, number(value))
        out.append(f'<text class="y-label" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(words)}</text>')
    if p.line is not None and p.low < p.line < p.high:
        y = frame.y(p.line)
        out.append(f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}">'
                   f'<title>{escape(p.line_label)}</title></line>')
    for ts, label in time_ticks(start, end):
        x = frame.x(ts)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{frame.bottom}"/>')
        if last:
            out.append(f'<text class="x-label" x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">'
                       f'{escape(label)}</text>')
    return "".join(out)


def series(frame, start, end):
    """The panel's points as one path (broken where readings are missing), and a triangle on
    the top edge for each point beyond the panel's top."""
    p = frame.panel
    points = downsample([pt for pt in p.points if start <= pt[0] <= end])
    if not points:
        return (f'<text class="empty" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{(frame.top + frame.bottom) / 2 + 4}" '
                'text-anchor="middle">no readings in this window</text>')
    # Downsampled points stand for a slice of time each: join across a slice, not across a gap.
    gap = max(p.max_gap, 2.5 * (end - start) / (MAX_POINTS // 2))
    commands, previous = [], None
    for ts, value in points:
        move = previous is None or ts - previous > gap
        commands.append(f"{'M' if move else 'L'}{frame.x(ts):.1f} {frame.y(value):.1f}")
        previous = ts
    out = [f'<path class="line {escape(p.kind)}" d="{" ".join(commands)}"/>']
    for ts, value in points:
        if value > p.high:
            x, y = frame.x(ts), frame.top
            out.append(f'<path class="over" d="M{x - 4:.1f} {y + 7} L{x + 4:.1f} {y + 7} L{x:.1f} {y + 1} Z">'
                       f'<title>{escape(number(value))}</title></path>')
    return "".join(out)


def alert_marks(top, bottom, frame, marks):
    out = []
    for mark in marks:
        if not frame.start <= mark.ts <= frame.end:
            continue
        x = frame.x(mark.ts)
        shape = (f'<g class="alert-mark"><title>{escape(mark.title)}</title>'
                 f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'
                 f'<path d="M{x - 5:.1f} {bottom + 8} L{x + 5:.1f} {bottom + 8} L{x:.1f} {bottom} Z"/></g>')
        out.append(link(mark.href, shape))
    return "".join(out)


def dots(frame):
    out = []
    for dot in frame.panel.dots:
        if not frame.start <= dot.ts <= frame.end:
            continue
        shape = (f'<circle class="dot" cx="{frame.x(dot.ts):.1f}" cy="{frame.y(dot.value):.1f}" r="3.5">'
                 f'<title>{escape(dot.title)}</title></circle>')
        out.append(link(dot.href, shape))
    return "".join(out)


def link(href, shape):
    return shape if not href else f'<a href="{escape(href)}">{shape}</a>'
