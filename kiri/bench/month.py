"""`kiri bench month`: the real Daemon, a simulated month, from an empty home.

The daemon runs with an injected clock at the real intervals (a reading every 5 minutes,
Drift every hour) and a user's default settings; no synthetic warm start. A seeded
generator with daily and weekly patterns (and a nightly backup the monitor must learn
is normal) feeds Pulse, Rhythm and Drift; after the first week, incidents of different
shapes are planted, and faults: a 6-hour Telegram outage and 429 bursts (a loopback fake
Bot API), the clock stepping back and forward an hour, a corrupt weights file. The fake
owner presses Approve under alerts that overlap an incident and Dismiss under the rest.

Printed: each incident's first-alert delay and how many alerts it made, false alerts
week by week, what was lost, left unscored or undecided, sent twice or stuck, CPU seconds
per simulated day, peak RSS, and as the last line
`month incidents A/P per_incident N false_w1 N false_w4 N lost N duplicated N stuck N`.
"""

import contextlib
import dataclasses
import logging
import math
import random
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from .. import daemon as daemon_module
from ..atoms import nerve, verbs
from ..config import load_settings
from ..notify.telegram import TelegramBot
from ..outbox import LogSink
from ..store import open_store
from .fake_telegram import FakeTelegram
from .speed import peak_rss_mb

DAY, HOUR, STEP = 86400.0, 3600.0, 300.0
TOKEN, CHAT = "4242:bench", 4242
ANSWER_AFTER = 15 * 60.0           # the owner answers a quarter of an hour after a message arrives
AFTERMATH = HOUR                   # the likelihood's window (12 readings): it may still flag an incident this long after
CATCH_UP = 12                      # steps (an hour) after the last day: the outbox and the owner catch up


@dataclasses.dataclass
class Incident:
    name: str
    atom: str
    start: float                   # seconds from the start of the month
    end: float
    change: object                 # (values, progress 0..1) -> values


def incidents():
    """Ten incidents of different shapes, after the first week (day, hour, hours long)."""
    def at(day, hour, hours, name, atom, change):
        return Incident(name, atom, day * DAY + hour * HOUR, day * DAY + (hour + hours) * HOUR, change)
    return [
        at(8, 2, 2, "CPU runaway at night", "pulse", lambda v, p: dict(v, C=97.0, L=9.0)),
        at(10, 8, 6, "memory leak over hours", "pulse", lambda v, p: dict(v, M=min(99.0, v["M"] + 45 * p))),
        at(12, 0, 24, "disk filling over a day", "pulse", lambda v, p: dict(v, D=min(99.0, v["D"] + 55 * p))),
        at(14, 15, 1, "swap storm", "pulse", lambda v, p: dict(v, S=92.0, M=97.0, L=14.0)),
        at(16, 11, 1, "network down", "pulse", lambda v, p: dict(v, N=0)),
        at(18, 3, 1.5, "3 a.m. activity", "rhythm", lambda v, p: dict(v, I=0.0, A=100.0, F=60 * p)),
        at(20, 9, 8, "scope creep", "drift", lambda v, p: dict(v, A=9, C=0, S=6)),
        at(22, 13, 1, "CPU spike on a Saturday", "pulse", lambda v, p: dict(v, C=96.0, L=12.0)),
        at(24, 10, 2, "load storm (I/O wait)", "pulse", lambda v, p: dict(v, L=19.0)),
        at(27, 10, 6, "working on a Saturday", "rhythm", lambda v, p: dict(v, I=0.5, A=90.0, F=min(180.0, 240 * p))),
    ]


class Machine:
    """The simulated owner's machine and habits: readings at a time, incidents applied.

    A reading is a function of (seed, atom, time) alone, with no memory in the process: the
    daemon killed and restarted (`bench month --kill`) reads again exactly what it would have."""

    def __init__(self, start, planted, seed):
        self.start, self.planted, self.seed = start, planted, seed

    def rng(self, what, ts):
        return random.Random(f"{self.seed}:{what}:{ts}")

    def local(self, ts):
        t = time.localtime(ts)
        return t.tm_hour + t.tm_min / 60, t.tm_wday

    def working(self, ts):
        hour, weekday = self.local(ts)
        return weekday < 5 and 9 <= hour < 18 and not 12.5 <= hour < 13.25   # a lunch break

    def pulse(self, ts):
        r, hour = self.rng("pulse", ts), self.local(ts)[0]
        backup = 1.0 <= hour < 1.5                      # every night: heavy, and normal
        cpu = r.gauss(48, 9) if self.working(ts) else r.gauss(75, 6) if backup else r.gauss(9, 3)
        return {"C": clip(cpu), "M": clip(r.gauss(58 if self.working(ts) else 46, 3)),
                "D": clip(43 + (ts - self.start) / DAY * 0.05 + r.gauss(0, 0.2)),
                "S": clip(r.gauss(22, 3)), "L": max(0.0, cpu / 12 + r.gauss(0, 0.5)), "N": 1}

    def idle(self, ts):
        """Idle minutes at ts while working."""
        return min(60.0, self.rng("idle", ts).expovariate(1 / 2.0))

    def focus(self, ts):
        """Minutes of the focus block at ts: 5 for each reading in a row, up to this one, worked
        with under 5 idle minutes; counted back from the time (Rhythm's field stops at 180)."""
        minutes = 0.0
        while minutes < 180 and self.working(ts) and self.idle(ts) < 5:
            minutes, ts = minutes + 5, ts - STEP
        return minutes

    def rhythm(self, ts):
        hour, weekday = self.local(ts)
        if self.working(ts):
            idle, commits = self.idle(ts), 1 if self.rng("commits", ts).random() < 0.12 else 0
        else:
            idle, commits = 60.0, 0
        return {"H": hour, "W": weekday, "I": idle, "A": max(0.0, 100 - idle / 5 * 100),
                "F": self.focus(ts), "G": commits}

    def drift(self, ts):
        r = self.rng("drift", ts)
        if not self.working(ts):
            return {"A": 0, "C": 0, "S": 0}
        return {"A": r.choice((0, 1, 1, 2, 3)), "C": r.choice((0, 1, 1, 2, 2)), "S": r.choice((0, 0, 1, 1, 2))}

    def read(self, atom, ts):
        values = getattr(self, atom)(ts)
        for incident in self.planted:
            if incident.atom == atom and self.start + incident.start <= ts < self.start + incident.end:
                progress = (ts - self.start - incident.start) / (incident.end - incident.start)
                values = incident.change(values, progress)
        return values


def clip(x):
    return min(100.0, max(0.0, x))


def simulated(machine, clock, module, steps=None):
    """An atom whose reading comes from the simulated machine at the simulated time."""
    name = module.SPEC.name
    spec = module.SPEC if steps is None else dataclasses.replace(module.SPEC, steps=steps)
    return SimpleNamespace(SPEC=spec, synthetic=module.synthetic,
                           read=lambda spec, settings, store: (machine.read(name, clock[0]), "sim"))


class Owner:
    """Answers every message a quarter of an hour after it arrives: Approve when the alert
    overlaps a planted incident on one of its atoms, else Dismiss."""

    def __init__(self, fake, store, start, planted):
        self.fake, self.store, self.start, self.planted = fake, store, start, planted
        self.seen = {}   # message_id -> sim time it was first seen
        self.answered = set()

    def answer(self, now):
        for message_id, message in list(self.fake.messages.items()):
            self.seen.setdefault(message_id, now)
            if message_id in self.answered or now - self.seen[message_id] < ANSWER_AFTER:
                continue
            buttons = [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
            if not buttons:
                continue
            alert_id = int(buttons[0]["callback_data"].split(":")[1])
            alert = self.store.alert(alert_id)
            verdict = "approve" if alert and incident_of(alert, self.start, self.planted) else "dismiss"
            self.fake.press(f"fb:{alert_id}:{verdict}", message_id=message_id)
            self.answered.add(message_id)


def incident_of(alert, start, planted):
    """The planted incident an alert belongs to, or None (a false alert): raised on the
    incident's atom while it lasted, or just after it by the likelihood alone (no token)."""
    flagged = dict(part.partition(":")[::2] for part in alert["situation"].split(","))
    for incident in planted:
        if incident.atom not in flagged:
            continue
        begin, end = start + incident.start, start + incident.end
        if begin <= alert["ts"] <= end or (end < alert["ts"] <= end + AFTERMATH and not flagged[incident.atom]):
            return incident
    return None


# Faults: each a function of (the fake Bot API, the clock, the home) and when it happens.

def telegram_down(fake, clock, home):
    fake.down = True


def telegram_back(fake, clock, home):
    fake.down = False


def too_many_requests(fake, clock, home):
    fake.fail_next("sendMessage", 3, status=429, retry_after=120)


# A clock steps by an hour and a few seconds: the readings' times after it never repeat
# earlier ones to the second (a real clock's never do), which would merge identical
# night-time readings and count them as lost.
def clock_back(fake, clock, home):
    clock[0] -= HOUR + 7


def clock_forward(fake, clock, home):
    clock[0] += HOUR + 7


def corrupt_weights(fake, clock, home):
    path = Path(home) / "weights" / "pulse.json"
    if path.exists():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAULTS = [(9 * DAY + 12 * HOUR, "Telegram down for 6 hours", telegram_down),
          (9 * DAY + 18 * HOUR, "Telegram back", telegram_back),
          (13 * DAY + 12 * HOUR, "the clock steps back an hour", clock_back),
          (15 * DAY + 10 * HOUR, "Telegram answers 429 three times", too_many_requests),
          (17 * DAY + 0.5 * HOUR, "pulse.json cut in half", corrupt_weights),
          (19 * DAY + 12 * HOUR, "the clock steps forward an hour", clock_forward)]


def run(days=30, seed=1, planted=None, faults=FAULTS, settings_env=None, report=print, home=None, steps=None):
    """Simulate `days` days in `home` (a new temporary folder by default, removed after);
    returns the figures as a dict (and reports them line by line). `steps` shortens every
    atom's training (tests only: the benchmark trains as a user's daemon does)."""
    planted = incidents() if planted is None else planted
    start = month_start()
    clock = [start]
    cpu_start = time.process_time()
    with (contextlib.nullcontext(home) if home else tempfile.TemporaryDirectory(prefix="kiri-month-")) as home, \
            FakeTelegram(TOKEN, CHAT) as fake:
        settings = load_settings(home=home, env=dict(settings_env or {}, KIRI_HOST_NAME="sim"))
        log_handler = daemon_module.setup_logging(settings)
        store = open_store(home)
        machine = Machine(start, planted, seed)
        d = daemon_module.Daemon(settings, store, clock=lambda: clock[0],
                                 sinks=[LogSink(), TelegramBot(TOKEN, CHAT, api=fake.url, timeout=5)])
        d.modules = {name: simulated(machine, clock, module, steps) for name, module in d.modules.items()}
        owner = Owner(fake, store, start, planted)
        pending = sorted(faults, key=lambda f: f[0])
        cycles = lost = stuck = 0
        end = start + days * DAY
        while clock[0] < end:
            for act in faults_due(pending, clock[0], start, report):
                act(fake, clock, home)
            cycle_lost, cycle_stuck = counted_cycle(d, store)
            cycles, lost, stuck = cycles + 1, lost + cycle_lost, stuck + cycle_stuck
            owner.answer(clock[0])
            clock[0] += STEP
        # Let the outbox and the owner catch up (an hour later, nothing new collected).
        for _ in range(CATCH_UP):
            d.deliver_and_poll(clock[0], SimpleNamespace(errors=[]))
            owner.answer(clock[0])
            clock[0] += STEP
        figures = summarize(store, fake, start, planted, days)
        store.close()
        logging.getLogger("kiri").removeHandler(log_handler)
        log_handler.close()
    return report_figures(figures, planted, report, days, cpu_s=time.process_time() - cpu_start,
                          cycles=cycles, lost=lost, stuck=stuck, rss_mb=peak_rss_mb())


def month_start():
    return time.mktime((2025, 3, 3, 0, 0, 0, 0, 0, -1))   # a Monday, midnight


def faults_due(pending, now, start, report):
    """Take the faults whose time has come off `pending` (sorted by time); reports each."""
    due = []
    while pending and now - start >= pending[0][0]:
        at, what, act = pending.pop(0)
        report(f"day {at / DAY:5.2f}: {what}")
        due.append(act)
    return due


def counted_cycle(d, store):
    """One daemon cycle; returns (readings lost, stuck): a reading due that is not in the store
    at the cycle's time after it is lost, and the cycle is stuck when something was due and
    nothing came of it. A reading stored before a kill and taken again is stored once: taken,
    not lost (after the clock stepped back, the daemon cannot tell it has it already)."""
    result = d.cycle()
    taken = [n for n in d.modules if store.observations(n, since=result.ts, until=result.ts + 1e-6, real_only=True)]
    due = [n for n in d.modules if n not in result.waiting]
    return len(set(due) - set(taken)), int(bool(due) and not taken)


def left_undone(store):
    """What a stop in the middle of a cycle can leave undone for good, unless the daemon takes
    it up when it starts again: `unscored`, real readings without a score taken after their
    atom's first score (while it had a model); `undecided`, the times of scored readings that
    Nerve never decided on (the restarted daemon finds them taken: nothing new to decide on)."""
    unscored, scored_at = 0, set()
    for atom in store.atoms():
        scores = store.latest_scores(atom, limit=None)
        if scores:
            scored, since = {s["observation_id"] for s in scores}, min(s["ts"] for s in scores)
            unscored += sum(o["id"] not in scored
                            for o in store.observations(atom, since=since, real_only=True, injected=False))
            scored_at.update(s["ts"] for s in scores)
    decided_at = {d["ts"] for d in store.decisions() if d["action"] in nerve.DECIDING_ACTIONS}
    return {"unscored": unscored, "undecided": len(scored_at - decided_at)}


def summarize(store, fake, start, planted, days):
    alerts = store.alerts(limit=None)[::-1]
    per_incident = {i.name: [] for i in planted}
    false_by_week = [0] * max(1, math.ceil(days / 7))
    for a in alerts:
        incident = incident_of(a, start, planted)
        if incident is not None:
            per_incident[incident.name].append(a)
        elif a["situation"] != "test":
            false_by_week[min(len(false_by_week) - 1, int((a["ts"] - start) // (7 * DAY)))] += 1
    delivered = [int(b["callback_data"].split(":")[1]) for m in fake.sent()
                 for row in m.get("reply_markup", {}).get("inline_keyboard", []) for b in row[:1]]
    return {"alerts": len(alerts), "per_incident": per_incident, "false_by_week": false_by_week,
            "lost_alerts": len({a["id"] for a in alerts} - set(delivered)),
            "duplicated": len(delivered) - len(set(delivered)), **left_undone(store),
            "first_delays": {name: (found[0]["ts"] - start - next(i.start for i in planted if i.name == name))
                             for name, found in per_incident.items() if found}}


def report_figures(figures, planted, report, days, cpu_s, **counts):
    """summarize()'s figures with the run's own counts, reported line by line; returns them all."""
    figures.update(counts, cpu_s_per_day=cpu_s / days)
    for line in format_figures(figures, planted).splitlines():
        report(line)
    return figures


def format_figures(f, planted):
    lines = ["incident                        first alert after   alerts"]
    for incident in planted:
        found = f["per_incident"][incident.name]
        delay = f["first_delays"].get(incident.name)
        lines.append(f"{incident.name:<32}{'-' if delay is None else f'{delay / 60:.0f} min':>17}   {len(found)}")
    lines.append("false alerts by week: " + " ".join(str(n) for n in f["false_by_week"]))
    lines.append(f"readings lost {f['lost']}, unscored {f['unscored']}, undecided {f['undecided']}, "
                 f"alerts lost {f['lost_alerts']}, alerts sent twice {f['duplicated']}, "
                 f"stuck cycles {f['stuck']} (of {f['cycles']})")
    lines.append(f"CPU {f['cpu_s_per_day']:.1f} s per simulated day, peak RSS {f['rss_mb']:.0f} MB")
    alerted = sum(1 for found in f["per_incident"].values() if found)
    most = max((len(found) for found in f["per_incident"].values()), default=0)
    weeks = f["false_by_week"]
    lines.append(f"month incidents {alerted}/{len(planted)} per_incident {most} false_w1 {weeks[0]} "
                 f"false_w4 {weeks[min(3, len(weeks) - 1)]} lost {f['lost'] + f['lost_alerts']} "
                 f"duplicated {f['duplicated']} stuck {f['stuck']}")
    return "\n".join(lines)
