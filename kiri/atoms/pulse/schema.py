"""Pulse: infrastructure health — CPU, memory, disk, swap, load, network.

One observation is `C5 M5 D4 S1 L1 N1`: CPU %, memory used %, disk used %, swap used %,
1-minute load average and network up (1) or down (0) — the seed's schema, 43 tokens.
KIRI reads it at its hour and weekday (`H7 W1 C5 M5 D4 S1 L1 N1`, taken from the
reading's time, never judged): the nightly backup's CPU is normal at 1 a.m. and the
same CPU at 3 p.m. on a Sunday is not. 62 tokens; the default model has 29,120 parameters.
"""

import calendar
import time

from ...errors import KiriError
from ..atom import AtomSpec

SPEC = AtomSpec(
    name="pulse",
    schema={"H": (0, 24, 12), "W": (0, 7, 7), "C": (0, 100, 10), "M": (0, 100, 10), "D": (0, 100, 10),
            "S": (0, 100, 5), "L": (0, 20, 5), "N": (0, 1, 2)},
    labels={"H": ("hour", ""), "W": ("weekday", "", dict(enumerate(calendar.day_name))), "C": ("CPU", "%"), "M": ("memory", "%"), "D": ("disk", "%"),
            "S": ("swap", "%"), "L": ("load", ""), "N": ("network", "", {0: "down", 1: "up"})},
    n_embd=32, n_layer=2, n_head=4, block_size=18,   # two readings of 1 + 8 tokens
    context=1, interval=300.0, steps=2000, clock=True,
)


def read(spec, settings, store):
    """One reading from the configured source: this machine (default), a MikroTik router or a node_exporter."""
    source = settings.get("pulse_source")
    if source == "mikrotik":
        from . import mikrotik
        if not settings.get("mikrotik_url"):
            raise KiriError("pulse: pulse_source is mikrotik but mikrotik_url is not set")
        values = mikrotik.collect(settings.get("mikrotik_url"), settings.get("mikrotik_user"),
                                  settings.get("mikrotik_password"), cafile=settings.get("mikrotik_cafile") or None,
                                  verify=settings.flag("mikrotik_verify"))
        return values, "mikrotik"
    if source == "node_exporter":
        from . import node_exporter
        url = settings.http_url("node_exporter_url")
        if not url:
            raise KiriError("pulse: pulse_source is node_exporter but node_exporter_url is not set")
        return node_exporter.collect(url, disk_path=settings.get("pulse_disk") or None), "node_exporter"
    if source == "system":
        from . import system
        return system.collect(disk_path=settings.get("pulse_disk") or None), system.PLATFORM
    raise KiriError(f"pulse: pulse_source must be system, mikrotik or node_exporter, got {source!r}")


def synthetic(rng, ts):
    """A plausible reading at time ts for a machine used on weekdays, 9:00–18:00."""
    t = time.localtime(ts)
    hour = t.tm_hour + t.tm_min / 60
    working = t.tm_wday < 5 and 9 <= hour < 18
    cpu = rng.gauss(52, 5) if working else rng.gauss(12, 4)
    load = cpu / 100 * 10 + rng.gauss(0, 0.4)
    return {
        "C": clip(cpu, 0, 100),
        "M": clip(rng.gauss(55, 2.5) if working else rng.gauss(47, 2.5), 0, 100),
        "D": clip(rng.gauss(44, 1.5), 0, 100),
        "S": clip(rng.gauss(30, 4) if working else rng.gauss(24, 4), 0, 100),
        "L": clip(load, 0, None),
        "N": 0 if rng.random() < 0.002 else 1,
    }


def clip(value, lo, hi):
    value = max(lo, value)
    return value if hi is None else min(hi, value)
