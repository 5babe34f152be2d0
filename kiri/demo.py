"""`make demo`: the monitor end to end on this machine, in about a minute.

1. collect ~20 s of real pulse readings from this machine (one a second);
2. add a week of synthetic working-hours history (marked synthetic);
3. train the Pulse atom with the fast engine and calibrate its threshold;
4. score the latest real reading and the seed's two showcase observations, and
   explain each token: what came, what the model expected, how surprised it was;
5. run one daemon cycle (each atom reads now; Nerve decides), then one on an injected
   anomaly, printing the alert it would send (to the log: no Telegram in the demo).
"""

import tempfile
from pathlib import Path

from . import daemon
from .atoms import verbs
from .config import load_settings
from .errors import KiriError
from .store import open_store

# The seed's two showcase readings, at the hours that make them what they are: a working
# afternoon (H7: 14–16 h, W1: Tuesday) and the same Tuesday's 2–4 a.m.
SHOWCASE = ("H7 W1 C5 M5 D4 S1 L1 N1", "H1 W1 C9 M9 D4 S4 L4 N1")
INJECTED = "C=95 M=90 D=40 S=80 L=18 N=1"
WEEK_OF_READINGS = 7 * 24 * 12  # one every 5 minutes


def run(home=None, seconds=20, steps=400, synthetic=WEEK_OF_READINGS, report=print, progress=None):
    """Run the demo in `home` (a new or empty folder; a new temporary one by default);
    returns the three scores."""
    home = fresh_home(home) if home else Path(tempfile.mkdtemp(prefix="kiri-demo-"))
    settings = load_settings(home=str(home), engine="fast")
    pulse = verbs.atom_module("pulse")
    report(f"demo home: {home}")
    with open_store(home) as store:
        report(f"1. collecting {seconds} s of real readings from this machine …")
        verbs.collect(pulse, settings, store, interval=1.0, duration=seconds, report=report)
        report(f"2. adding {synthetic} synthetic readings (a week of weekday working hours, every 5 min) …")
        verbs.add_synthetic(pulse, store, synthetic, seed=0)
        report(f"3. training Pulse for {steps} steps (fast engine) …")
        trained = verbs.train(pulse, settings, store, steps=steps, warm_start=True, progress=progress)
        report(f"   loss {trained.first_loss:.3f} -> {trained.last_loss:.3f} in {trained.seconds:.1f}s; "
               f"threshold {trained.threshold:.3f}")
        report("4. scoring")
        scores = [verbs.score(pulse, settings, store)]
        scores += [verbs.score(pulse, settings, store, obs=text) for text in SHOWCASE]
    for title, s in zip(("latest real reading of this machine", *SHOWCASE), scores):
        report(f"\n{title}:")
        report(s.explain())
    normal, anomalous = scores[1].score, scores[2].score
    report(f"\n'{SHOWCASE[1]}' is {anomalous / normal:.1f}x as surprising as '{SHOWCASE[0]}'.")
    with open_store(home) as store:
        d = daemon.Daemon(settings, store)
        report("\n5. one daemon cycle: every atom reads now, Nerve decides")
        report(daemon.describe_cycle(d.cycle(collect_all=True)))
        report(f"\n6. one daemon cycle on an injected anomaly ({INJECTED}): the alert it would send")
        report(daemon.describe_cycle(d.cycle(inject={"pulse": verbs.parse_observation(pulse.SPEC, INJECTED)})))
    report(f"\nlook around: KIRI_HOME={home} kiri status (delete {home} when done)")
    return scores


def fresh_home(home):
    """`home` if it is a new or empty folder. The demo adds a synthetic week and trains
    Pulse, so it must never run in a home that holds someone's real history."""
    home = Path(home).expanduser()
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise KiriError(f"demo: --home must be a new or empty folder (the demo writes a synthetic week and "
                        f"trains Pulse there), and {home} is not")
    return home
