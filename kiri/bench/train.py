"""`kiri bench train`: what training Pulse costs as its stored history grows.

One home is filled with N stored Pulse readings, one a minute (five months is about
200,000), and Pulse is trained on it in a fresh process that reports its own time and
peak memory; then older readings are added for the next size and it trains again. The
readings follow Pulse's synthetic weekday pattern but are stored as real ones (source
"bench"), because training learns from real readings, as on a home that has run for
months. Each size adds history *before* the last one, so the newest readings — the only
ones training reads (atom.TRAIN_WINDOW) — are the same in every run, and time and memory
should not grow beyond the window.
"""

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..atoms import verbs
from ..atoms.atom import CALIBRATION_SAMPLE, TRAIN_WINDOW
from ..atoms.pulse.schema import synthetic
from ..config import load_settings
from ..errors import KiriError
from ..paths import REPO
from ..store import open_store
from .speed import peak_rss_mb

INTERVAL = 60.0            # seconds between stored readings: one a minute, as in the report that found the cost
END = 1_790_000_000.0      # the newest reading's time, fixed so every run stores the same readings
INSERT_CHUNK = 10_000      # readings per insert transaction: building a home stays small in memory


def grow(store, have, want, rng):
    """Store readings number have..want-1, counted back from END (reading 0 is the newest)."""
    for first in range(have, want, INSERT_CHUNK):
        rows = []
        for i in range(first, min(want, first + INSERT_CHUNK)):
            ts = END - i * INTERVAL
            rows.append({"atom": "pulse", "ts": ts, "values": synthetic(rng, ts), "source": "bench"})
        store.add_observations(rows)


def train_here(home, steps):
    """What the measured process does: train Pulse on the home's readings, as `kiri pulse
    train` would; returns its own wall time for it and its peak resident memory."""
    settings = load_settings(home=home, env={})   # env={}: no KIRI_* setting of the caller leaks in
    start = time.perf_counter()
    with open_store(home) as store:
        report = verbs.train(verbs.atom_module("pulse", settings), settings, store, steps=steps)
    return {"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb(),
            "trained_on": report.real + report.synthetic, "scored": report.calibration.get("scored")}


def measure(home, steps):
    """train_here in a fresh Python, so its peak memory is training's alone."""
    code = ("import json\n"
            "from kiri.bench.train import train_here\n"
            f"print(json.dumps(train_here({str(home)!r}, {steps})))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise KiriError(f"bench train: the training process failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes, steps, report=None):
    """Figures for each size, smallest first: {"rows", "seconds", "rss_mb", "trained_on", "scored"}.
    `report(line)` hears about progress."""
    report = report or (lambda line: None)
    figures = []
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        have = 0
        for size in sorted(set(sizes)):
            start = time.perf_counter()
            with open_store(home) as store:
                grow(store, have, size, rng)
            have = size
            report(f"stored {size} readings in {time.perf_counter() - start:.1f} s; training {steps} steps …")
            f = dict(measure(home, steps), rows=size)
            report(f"  learned from the newest {f['trained_on']}, scored {f['scored']} held-out readings")
            figures.append(f)
    return figures


def format_line(f):
    return f"train rows {f['rows']} seconds {f['seconds']:.2f} rss_mb {f['rss_mb']:.1f}"


def main(sizes, steps):
    """Progress on stderr; on stdout one line per size, the largest last."""
    print(f"pulse, {steps} steps, one reading a minute; training reads the newest {TRAIN_WINDOW} "
          f"and scores at most {CALIBRATION_SAMPLE} held-out ones", flush=True)
    figures = run(sizes, steps, report=lambda line: print(line, file=sys.stderr, flush=True))
    for f in figures:
        print(format_line(f))
    return figures
