"""Drift: task flow — tasks added, tasks completed and project switches per period.

One observation is `A3 C1 S2`: 3 tasks added, 1 completed, 2 switches between projects
in one period (an hour by default), read at its hour and weekday (`H5 W1 A3 C1 S2`,
the clock of atoms/atom.py: an idle evening is no anomaly, a burst of work at night is). Counts come from `kiri drift collect --added …`
or from single events (`kiri task add|done|switch <project>`) summed per period. Each
period is read after the three before it, so a burst of new work that nothing
completes stands out against the usual ebb and flow.
"""

import calendar
import time

from ..atom import AtomSpec

SPEC = AtomSpec(
    name="drift",
    schema={"H": (0, 24, 12), "W": (0, 7, 7), "A": (0, 10, 10), "C": (0, 10, 10), "S": (0, 10, 10)},
    labels={"H": ("hour", ""), "W": ("weekday", "", dict(enumerate(calendar.day_name))), "A": ("tasks added", ""), "C": ("tasks completed", ""), "S": ("project switches", "")},
    n_embd=32, n_layer=2, n_head=4, block_size=24,   # four periods of 1 + 5 tokens
    context=3, interval=3600.0, steps=2000, clock=True,
)


# Which single event (`kiri task add|done|switch`) counts under which field of a period.
EVENTS = {"add": "A", "done": "C", "switch": "S"}


def counts_to_values(counts):
    """A period's values from its events counted per kind; kinds not in EVENTS are ignored."""
    return {key: counts.get(kind, 0) for kind, key in EVENTS.items()}


def log_event(store, kind, project="", ts=None):
    """Store one task event for the next period; returns its id. ValueError for an unknown kind."""
    # isinstance first: an unhashable kind (a list) would make `in` raise TypeError.
    if not isinstance(kind, str) or kind not in EVENTS:
        raise ValueError("kind: must be one of %s, got %r" % (", ".join(repr(k) for k in EVENTS), kind))
    return store.add_event("drift", kind, project, ts=ts)


def collect_once(spec, settings, store, now):
    """Close the current period: its single events counted per kind (zeros if there were none)."""
    obs_id = store.fold_events("drift", counts_to_values, until=now, ts=now)
    if obs_id is None:
        obs_id = store.add_observation("drift", counts_to_values({}), ts=now, source="events")
    return obs_id


def synthetic(rng, ts):
    """A plausible period at time ts: a steady worker on weekdays 9:00–18:00, quiet otherwise."""
    t = time.localtime(ts)
    if not (t.tm_wday < 5 and 9 <= t.tm_hour < 18):
        return {"A": 1 if rng.random() < 0.05 else 0, "C": 0, "S": 0}
    return {"A": rng.choice((1, 2, 2, 2, 3)), "C": rng.choice((1, 2, 2, 2, 3)), "S": rng.choice((0, 1, 1, 1, 2))}
