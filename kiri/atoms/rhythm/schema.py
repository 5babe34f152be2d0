"""Rhythm: work patterns — idle time, activity, hour, weekday, focus block, git commits.

One observation is `H7 W2 I0 A4 F1 G0`: hour of day (2-hour buckets), weekday
(0 = Monday), minutes since the last keyboard/mouse input, share of the interval with
input, minutes of the
current focus block (no break of 5 minutes or more), and commits in the configured git
repositories during the interval. Read after the observation before it, activity at
3 a.m. on a Sunday is surprising for someone whose history is weekday daytime.
"""

import calendar
import time

from ..atom import AtomSpec
from ..sources import PLATFORM
from . import sources

SPEC = AtomSpec(
    name="rhythm",
    # When comes first, then what happened: the model predicts the activity given the time.
    schema={"H": (0, 24, 12), "W": (0, 7, 7), "I": (0, 60, 6), "A": (0, 100, 5), "F": (0, 180, 6), "G": (0, 10, 5)},
    labels={"H": ("hour", ""), "W": ("weekday", "", dict(enumerate(calendar.day_name))), "I": ("idle", " min"), "A": ("activity", "%"),
            "F": ("focus block", " min"), "G": ("commits", "")},
    n_embd=32, n_layer=2, n_head=4, block_size=16,
    context=1, interval=300.0, steps=2000, clock=True,
)


def read(spec, settings, store):
    """One reading; the focus block continues from the previous reading if it is recent.
    Activity and commits are counted over the atom's own interval, so each commit once."""
    now = time.time()
    latest = store.latest_observation("rhythm", real_only=True)
    previous = latest["values"] if latest and now - latest["ts"] <= spec.max_gap else None
    values = sources.read(previous=previous, interval_s=spec.interval, repos=settings.paths("rhythm_repos"),
                          now=lambda: now)
    return values, PLATFORM


def synthetic(rng, ts):
    """A plausible reading at time ts for someone who works weekdays 9:00–18:00."""
    t = time.localtime(ts)
    hour = t.tm_hour + t.tm_min / 60
    working = t.tm_wday < 5 and 9 <= hour < 18
    if working:
        idle = min(60.0, rng.expovariate(1 / 1.5))
        focus = rng.uniform(0, 150) if idle < 5 else 0.0
        commits = 1 if rng.random() < 0.15 else 0
    else:
        idle, focus, commits = 60.0, 0.0, 0
    return {"I": idle, "A": sources.activity_percent(idle * 60, SPEC.interval), "H": hour, "W": t.tm_wday,
            "F": focus, "G": commits}
