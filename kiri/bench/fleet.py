"""`kiri bench fleet`: one KIRI watching a fleet of machines it is not installed on.

N fake node_exporters (fleet_servers.py), each a different living machine, run in a child
process on 127.0.0.1, so the CPU they spend answering is not counted as KIRI's. The real
Daemon watches them as [host:hNNN] sections at a 60 s interval, with real HTTP, threads
and SQLite, on an injected clock: a cycle per simulated minute, run back to back.

1. Steady: every host has the history a week of watching leaves (its last readings, each
   scored, so the likelihood reads a full history) and a model: one trained for the bench
   on host 0's readings and copied to all (a fleet of like machines). In each of `cycles`
   cycles every host is read, scored and decided on: CPU seconds per cycle (every thread
   of this process), that as a share of one core at the interval, and peak RSS. Then
   the CPU seconds of a scrape of /metrics: the first, and the next ones, which read a
   host's model only when its file has changed.
2. A new host joins, cold: cycles until it watches — `learn_after` readings, then its
   training in the daemon's Trainer thread while the cycles go on. The slowest cycle
   meanwhile, beside the steady ones, says whether the others stalled.

Last line: `fleet hosts <n> cpu_per_cycle_s <x> rss_mb <y>`.
"""

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import daemon as daemon_module, metrics
from ..atoms import hosts as host_atoms, verbs
from ..atoms.pulse import schema as pulse
from ..config import load_settings
from ..outbox import LogSink
from ..store import open_store
from .speed import peak_rss_mb, resident_mb

INTERVAL = 60.0
HISTORY = 2011        # readings per host already watched: likelihood_window + likelihood_history - 1
LEARN_AFTER = 30      # the new host's readings before it learns (a user's default is a day's worth)
RATIO = 0.3           # the stored history's score / threshold: a quiet fleet
SCRAPES = 6           # scrapes of /metrics timed after the steady cycles: the first, then five


def run(hosts=100, cycles=10, steps=300, seed=1, report=print, learn_after=LEARN_AFTER):
    """Run both parts on `hosts` watched hosts; returns the figures as a dict."""
    start = time.time() // 86400 * 86400 + 8 * 3600   # a morning, so runs compare
    with tempfile.TemporaryDirectory(prefix="kiri-fleet-") as home, fleet_servers(hosts + 1, seed) as urls:
        home = Path(home)
        write_config(home, urls, steps)
        settings = load_settings(home=home, env={"KIRI_HOST_NAME": "bench", "KIRI_LEARN_AFTER": str(learn_after),
                                                 "KIRI_TICK": str(INTERVAL)})
        names = [host_atoms.atom_name(f"h{i:03d}") for i in range(hosts)]
        newcomer = host_atoms.atom_name(f"h{hosts:03d}")
        with open_store(home) as store:
            report(f"fleet: {hosts} hosts at a {INTERVAL:g} s interval; preparing a week of history each ...")
            prepared = time.monotonic()
            fill_history(settings, store, names, start, steps, seed)
            report(f"  prepared in {time.monotonic() - prepared:.0f} s")
            clock = [start]
            daemon = daemon_module.Daemon(settings, store, clock=lambda: clock[0], sinks=[LogSink()], mode="forever")
            daemon.trainer = daemon_module.Trainer(settings, daemon.modules, clock=lambda: clock[0])
            try:
                steady = steady_cycles(daemon, clock, cycles, names, report)
                steady.update(scrapes(settings, store, clock[0], report))
                joining = join(daemon, clock, newcomer, names, report, learn_after, done=cycles + 1)
            finally:
                daemon.trainer.stop(wait=0)
    figures = dict(steady, **joining, hosts=hosts, rss_mb=peak_rss_mb())
    report(f"  peak RSS {figures['rss_mb']:.0f} MB")
    report(f"fleet hosts {hosts} cpu_per_cycle_s {figures['cpu_per_cycle_s']:.3f} rss_mb {figures['rss_mb']:.0f}")
    return figures


class fleet_servers:
    """The fake node_exporters in a child process; entering gives their URLs."""

    def __init__(self, hosts, seed):
        self.argv = [sys.executable, "-m", "kiri.bench.fleet_servers", str(hosts), str(seed)]

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"the fake fleet did not start (exit {self.proc.returncode})")
        return json.loads(line)

    def __exit__(self, *exc):
        self.proc.stdin.close()   # its cue to stop
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def write_config(home, urls, steps):
    """One [host:hNNN] per fake node_exporter (the last one joins later: it starts cold)."""
    home.mkdir(parents=True, exist_ok=True)
    sections = [f"[host:h{i:03d}]\nsource = node_exporter\nurl = {url}\ninterval = {INTERVAL:g}\nsteps = {steps}\n"
                for i, url in enumerate(urls)]
    (home / "config.ini").write_text("\n".join(sections), encoding="utf-8")


def fill_history(settings, store, names, start, steps, seed):
    """HISTORY readings before `start` for each host, each scored at RATIO of the threshold,
    and one model, trained on host 0's, copied to every host. Pulse's synthetic generator
    stands in for a week of the fleet's own readings; stored as collected, so the daemon
    sees hosts it has watched for a week (no warm start to replace, no likelihood to wait for)."""
    rng = random.Random(seed)
    for name in names:
        rows = [{"atom": name, "ts": start - (HISTORY - k) * INTERVAL, "source": "node_exporter",
                 "values": pulse.synthetic(rng, start - (HISTORY - k) * INTERVAL)} for k in range(HISTORY)]
        store.add_observations(rows)
    first = verbs.atom_module(names[0], settings)
    report = verbs.train(first, settings, store, steps=steps, now=start)
    model = settings.weights_path(names[0])
    for name in names[1:]:
        shutil.copyfile(model, settings.weights_path(name))
    threshold = report.threshold
    with store.conn:   # the history's scores in one transaction: the bench's setup, not the daemon's work
        store.conn.executemany(
            "INSERT INTO scores (atom, ts, observation_id, score, threshold, verdict, tokens)"
            " SELECT atom, ts, id, ?, ?, 'normal', '[]' FROM observations WHERE atom = ?",
            [(RATIO * threshold, threshold, name) for name in names])


def steady_cycles(daemon, clock, cycles, names, report):
    """`cycles` cycles in which every watched host is due: CPU and wall time per cycle."""
    cpu, walls = [], []
    for k in range(cycles + 1):
        clock[0] += INTERVAL
        wall, used = time.monotonic(), time.process_time()
        result = daemon.cycle()
        used, wall = time.process_time() - used, time.monotonic() - wall
        scored = sum(1 for s in result.scores if s.atom in set(names))
        if k == 0:   # the first loads every model and finds nothing due to train: not steady yet
            report(f"  first cycle: {scored} hosts scored, {used:.2f} CPU s, {wall:.1f} s")
            continue
        cpu.append(used)
        walls.append(wall)
        report(f"  cycle {k}: {scored} hosts scored, {used:.2f} CPU s, {wall:.1f} s"
               + (f"; errors: {result.errors[0]}" if result.errors else ""))
    report(f"  resident memory after them: {resident_mb():.0f} MB")
    per_cycle = sorted(cpu)[len(cpu) // 2]
    report(f"  steady: {per_cycle:.3f} CPU s per cycle (median of {len(cpu)}), "
           f"{100 * per_cycle / INTERVAL:.1f} % of one core at a {INTERVAL:g} s interval; "
           f"a cycle takes {sorted(walls)[len(walls) // 2]:.1f} s")
    return {"cpu_per_cycle_s": per_cycle, "core_share": per_cycle / INTERVAL,
            "cycle_wall_s": sorted(walls)[len(walls) // 2]}


def scrapes(settings, store, now, report):
    """CPU seconds of a Prometheus scrape of /metrics (the text, not the HTTP): the first
    reads every host's model; the next read only what changed (status.model_status)."""
    used = []
    for _ in range(SCRAPES):
        start = time.process_time()
        metrics.render(settings, store, now=now)
        used.append(time.process_time() - start)
    later = sorted(used[1:])[len(used[1:]) // 2]
    report(f"  a scrape of /metrics: {used[0]:.3f} CPU s the first, then {later:.3f} (median of {len(used) - 1}); "
           f"every 15 s, {100 * later / 15:.1f} % of one core")
    return {"scrape_first_s": used[0], "scrape_s": later}


def join(daemon, clock, newcomer, names, report, learn_after, done=0, most=1000):
    """Cycles until the new host watches (it has been read since the first of the `done`
    cycles before); the slowest cycle while it trains."""
    cycles, began, training_walls, trained_at = done, time.monotonic(), [], None
    while cycles < most:
        clock[0] += INTERVAL
        wall = time.monotonic()
        result = daemon.cycle()
        wall = time.monotonic() - wall
        cycles += 1
        if any(m.startswith(f"spawn:{newcomer}") for m in result.meta):
            trained_at = time.monotonic()
            report(f"  {newcomer}: {learn_after} readings after {cycles} cycles; training in the background")
        elif trained_at is not None:
            training_walls.append(wall)
        if any(s.atom == newcomer for s in result.scores):
            others = sum(1 for s in result.scores if s.atom in set(names))
            report(f"  {newcomer}: watching after {cycles} cycles ({time.monotonic() - began:.0f} s after the steady ones) "
                   f"(trained in {time.monotonic() - trained_at:.0f} s, while {len(training_walls)} cycles ran; "
                   f"the slowest {max(training_walls, default=0):.1f} s; this cycle scored {others} other hosts)")
            return {"join_cycles": cycles, "join_s": time.monotonic() - began,
                    "train_s": time.monotonic() - trained_at, "cycles_while_training": len(training_walls),
                    "slowest_cycle_while_training_s": max(training_walls, default=0.0)}
    raise RuntimeError(f"{newcomer} was not watching after {most} cycles")
