"""`kiri bench month --kill`: the simulated month, with the daemon in a child process that is
SIGKILLed at random moments and started again on the same home.

The parent holds what must outlive a kill: the loopback fake Bot API (and the Telegram
faults played on it), the fake owner who presses Approve / Dismiss, and the kills, seeded,
one every `kill_every` seconds of wall time (drawn uniformly), so that they land in every
stage of a cycle. The child (`python -m kiri.bench.month_kill`, this checkout first on
PYTHONPATH) runs the real Daemon as `kiri daemon` does — the OS lock, the log, the sinks from
the settings (Telegram pointed at the fake) — on month.py's simulated clock, and after each
cycle writes the clock and its counts to STATE_FILE in the home, atomically: a restarted
child goes on from the last completed cycle and reads the same readings (month.Machine is a
function of seed, atom and time). The clock steps and the cut weights file happen in the
child, at their time on its clock; the Telegram faults and the owner's answers in the parent,
between two cycles, while the child waits for it (one line each way on its stdout and stdin).

Printed: the faults as they happen, the kills and where each landed (just before a kill the
child writes its stack on SIGUSR1, with faulthandler), then the figures of `bench month` and
its last line, so the two compare directly.
"""

import argparse
import contextlib
import faulthandler
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from .. import daemon as daemon_module
from .. import lock
from ..config import load_settings
from ..errors import KiriError
from ..ground import atomic_write
from ..notify import sinks_from_settings
from ..store import open_store
from . import month
from .fake_telegram import FakeTelegram
from .speed import peak_rss_mb

STATE_FILE = "bench-month.json"     # in the home: the simulated clock and the counts, after each cycle
STACK_FILE = "bench-month.stack"    # in the home: where the child writes its stack when asked
KILL_EVERY = (1.0, 6.0)             # seconds of wall time between kills, drawn uniformly
CHECKOUT = str(Path(__file__).resolve().parents[2])
ON_THE_FAKE = (month.telegram_down, month.telegram_back, month.too_many_requests)   # played by the parent

# Where a kill landed: the innermost of these functions (of these files) on the child's stack.
# None of them: the child was starting (imports, the lock, the store) or could not be asked.
STAGES = {"daemon.py": {"collect": "collecting", "score": "scoring", "score_reading": "scoring",
                        "score_leftovers": "scoring", "decide": "deciding", "act": "alerting",
                        "act_on_interrupted": "alerting",
                        "deliver_and_poll": "delivering", "meta": "training", "maybe_retrain_nerve": "training",
                        "housekeeping": "housekeeping", "prune_old": "housekeeping", "cycle": "between stages"},
          "month.py": {"counted_cycle": "between stages"},
          "month_kill.py": {"save_state": "saving the clock", "wait_for_parent": "waiting for the parent",
                            "simulate": "between cycles"}}
FRAME = re.compile(r'File "([^"]*)", line \d+ in (\w+)')


def run(days=30, seed=1, planted=None, faults=month.FAULTS, settings_env=None, report=print, home=None, steps=None,
        kill_every=KILL_EVERY):
    """Simulate `days` days in `home` (a new temporary folder by default, removed after),
    killing the daemon's process every `kill_every` (low, high) seconds; returns the figures
    as a dict, `kills` being the stage each kill landed in (and reports them line by line).
    `planted` and `faults` must be the month's own (by name), at any time."""
    scenario = describe(month.incidents() if planted is None else planted, faults)
    planted, faults = rebuild(scenario)
    start = month.month_start()
    cpu_start = time.process_time() + children_cpu()
    report(f"bench month --kill: the daemon in a child process, SIGKILLed every {kill_every[0]:g}-{kill_every[1]:g} s "
           f"of wall time (seed {seed}) and restarted on the same home; the fake Telegram, its faults and the "
           f"owner outlive it")
    with (contextlib.nullcontext(home) if home else tempfile.TemporaryDirectory(prefix="kiri-month-kill-")) as home, \
            FakeTelegram(month.TOKEN, month.CHAT) as fake:
        store = open_store(home)   # the parent's own: the owner reads alerts from it, and the figures
        command = [sys.executable, "-m", __name__, home, "--days", str(days), "--seed", str(seed),
                   "--scenario", json.dumps(scenario)] + (["--steps", str(steps)] if steps else [])
        parent = Parent(fake, store, start, planted, faults, home, report)
        kills = drive(command, child_env(home, fake.url, settings_env), home, start, parent,
                      random.Random(f"kill:{seed}"), kill_every)
        state = read_state(home, start)
        figures = month.summarize(store, fake, start, planted, days)
        store.close()
    report(f"kills {len(kills)}" + "".join(f", {stage} {n}" for stage, n in Counter(kills).most_common()))
    return month.report_figures(figures, planted, report, days, kills=kills, cycles=state["cycles"],
                                lost=state["lost"], stuck=state["stuck"], rss_mb=state["rss_mb"],
                                cpu_s=time.process_time() + children_cpu() - cpu_start)


class Parent:
    """The parent's side of month.run's loop, done between two cycles of the child while it
    waits (or after a kill, for a cycle it finished but could not say so): the owner answers
    on the cycle's time, and the Telegram faults due by the next cycle are played on the fake."""

    def __init__(self, fake, store, start, planted, faults, home, report):
        self.fake, self.start, self.home, self.report = fake, start, home, report
        self.owner = month.Owner(fake, store, start, planted)
        self.pending = sorted(faults, key=lambda f: f[0])
        self.seen = start   # the child's clock when the parent last looked

    def between_cycles(self, state):
        if state["now"] == self.seen:
            return
        self.seen = state["now"]
        self.owner.answer(state["last"])
        for act in month.faults_due(self.pending, state["now"], self.start, self.report):
            if act in ON_THE_FAKE:
                act(self.fake, None, self.home)


def drive(command, env, home, start, parent, rng, kill_every):
    """Start the child, kill it, start it again… until it ends by itself; returns the stage
    each kill landed in. Between two cycles the child waits while the parent acts, in the same
    order as in month.run, so that what differs from it is what the kills did."""
    kills, stalls, child = [], 0, None
    with open(Path(home) / "child.err", "w+") as err:
        try:
            while True:
                child = subprocess.Popen(command, cwd=home, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True)
                # A child killed before it finished a cycle waits twice as long next time: a
                # training longer than the kill interval still ends, after a few kills inside it;
                # once past it, the kills come at the usual pace again.
                deadline, cycled = time.monotonic() + rng.uniform(*kill_every) * 2 ** stalls, False
                while True:
                    state = next_state(child, deadline)
                    if state is None:
                        break
                    if stalls and not cycled:
                        deadline = min(deadline, time.monotonic() + rng.uniform(*kill_every))
                    cycled = True
                    parent.between_cycles(state)
                    try:
                        child.stdin.write("go\n")
                        child.stdin.flush()
                    except BrokenPipeError:   # it ended on its own: the next look says how
                        pass
                stage = kill(child, home) if child.poll() is None else None
                if close(child) == 0:
                    return kills
                if child.returncode != -signal.SIGKILL:
                    err.seek(0)
                    raise KiriError(f"the daemon's process failed (exit {child.returncode}):\n"
                                    + "\n".join(err.read().splitlines()[-20:]))
                kills.append(stage)
                parent.between_cycles(read_state(home, start))   # a cycle it finished, if it died before saying so
                stalls = 0 if cycled else stalls + 1
        finally:   # an error or Ctrl-C here leaves no daemon running on a removed home
            if child is not None:
                close(child)


def close(child):
    """Kill the child if it still runs, reap it and close its pipes; returns its exit code."""
    if child.poll() is None:
        child.kill()
    child.stdin.close()
    child.stdout.close()
    return child.wait()


def next_state(child, deadline):
    """The state the child reports after its next cycle; None if it ended, or if the deadline
    passed first (a state it reported by then is still taken)."""
    if not select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        return None
    line = child.stdout.readline()   # one line at a time: the child waits for an answer to each
    if not line:
        child.wait()   # it ended
        return None
    return json.loads(line)


def describe(planted, faults):
    """The incidents and faults as names and times, for the child's command line."""
    known = {i.name for i in month.incidents()}
    for incident in planted:
        if incident.name not in known:
            raise ValueError(f"{incident.name!r}: the child knows only the month's own incidents")
    for _, what, act in faults:
        if getattr(month, act.__name__, None) is not act:
            raise ValueError(f"{what!r}: the child knows only the faults of month.py")
    return {"planted": [[i.name, i.start, i.end] for i in planted],
            "faults": [[at, what, act.__name__] for at, what, act in faults]}


def rebuild(scenario):
    """(planted, faults) from describe()'s names and times."""
    known = {i.name: i for i in month.incidents()}
    return ([replace(known[name], start=start, end=end) for name, start, end in scenario["planted"]],
            [(at, what, getattr(month, act)) for at, what, act in scenario["faults"]])


def child_env(home, api, settings_env):
    """The child's environment: the user's KIRI_ settings left out (as `bench month` does), this
    checkout first on PYTHONPATH, Telegram at the fake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIRI_")}
    env.update(settings_env or {}, KIRI_HOME=home, KIRI_HOST_NAME="sim", KIRI_TELEGRAM_TOKEN=month.TOKEN,
               KIRI_TELEGRAM_CHAT_ID=str(month.CHAT), KIRI_TELEGRAM_API=api)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, env.get("PYTHONPATH")) if p)
    return env


def children_cpu():
    """CPU seconds of this process's children that have ended, killed ones included."""
    import resource   # POSIX only, as SIGKILL is: `kiri bench month` without --kill imports this module too
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_state(home, start):
    """What the child wrote after its last completed cycle (the start of the month before any)."""
    try:
        return json.loads((Path(home) / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"now": start, "last": None, "faults": 0, "cycles": 0, "lost": 0, "stuck": 0, "rss_mb": 0.0}


def kill(child, home):
    """SIGKILL the child and reap it; returns the stage it was in a few milliseconds before,
    which it wrote on SIGUSR1. The stack file appears only once the child answers SIGUSR1
    (its default action would end the process), so until then the stage is "starting"."""
    path, stack = Path(home) / STACK_FILE, ""
    if path.exists():
        child.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 0.5
        while not stack and time.monotonic() < deadline:
            time.sleep(0.005)   # faulthandler writes the whole stack at once, in the signal handler
            stack = path.read_text()
    child.kill()
    child.wait()
    if path.exists():
        path.unlink()
        if not stack:
            return "unknown (no stack within 0.5 s)"
    return stage_of(stack)


def stage_of(stack):
    for path, function in FRAME.findall(stack):   # faulthandler lists the innermost call first
        stage = STAGES.get(os.path.basename(path), {}).get(function)
        if stage:
            return stage
    return "starting"


# --- the child ------------------------------------------------------------------------

def child_main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kiri.bench.month_kill",
                                     description="the daemon's process of `kiri bench month --kill`")
    parser.add_argument("home")
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--scenario", required=True, help="describe()'s JSON")
    args = parser.parse_args(argv)
    stack_file = answer_stack_requests(args.home)
    to_parent = os.fdopen(os.dup(1), "w")   # the cycles' states; anything else printed goes to stderr
    os.dup2(2, 1)
    settings = load_settings(home=args.home)   # KIRI_ settings from the parent: Telegram at its fake
    planted, faults = rebuild(json.loads(args.scenario))
    with lock.DaemonLock(settings.home, "forever"):
        store = open_store(settings.home)
        daemon_module.setup_logging(settings)
        start = month.month_start()
        state = read_state(args.home, start)
        clock = [state["now"]]
        d = daemon_module.Daemon(settings, store, clock=lambda: clock[0], sinks=sinks_from_settings(settings),
                                 mode="forever")
        machine = month.Machine(start, planted, args.seed)
        d.modules = {name: month.simulated(machine, clock, module, args.steps) for name, module in d.modules.items()}
        simulate(d, store, clock, state, faults, args.home, start, start + args.days * month.DAY, to_parent)
        store.close()
    stack_file.close()


def answer_stack_requests(home):
    """From now on SIGUSR1 makes this process write its stack to STACK_FILE, at once, whatever
    it is doing (faulthandler). The file gets its name once the handler is in place."""
    ready = Path(home) / (STACK_FILE + ".new")
    stack_file = open(ready, "w")
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    os.replace(ready, Path(home) / STACK_FILE)
    return stack_file


def simulate(d, store, clock, state, faults, home, start, end, to_parent):
    """month.run's loop, from the state of the last completed cycle on: a fault is counted
    done in the state as soon as it happened, a cycle with its counts once it is over; after
    each cycle the parent answers as the owner (on the cycle's time, `last`)."""
    pending = sorted(faults, key=lambda f: f[0])[state["faults"]:]
    while clock[0] < end + month.CATCH_UP * month.STEP:
        if clock[0] < end:
            due = month.faults_due(pending, clock[0], start, report=lambda line: None)   # the parent reports them
            for act in due:
                if act not in ON_THE_FAKE:
                    act(None, clock, home)
            if due:
                state["faults"] += len(due)
                save_state(home, state, clock)
            lost, stuck = month.counted_cycle(d, store)
            state.update(cycles=state["cycles"] + 1, lost=state["lost"] + lost, stuck=state["stuck"] + stuck)
        else:   # an hour for the outbox and the owner to catch up, nothing collected
            d.deliver_and_poll(clock[0], SimpleNamespace(errors=[]))
        state["last"] = clock[0]
        clock[0] += month.STEP
        save_state(home, state, clock)
        wait_for_parent(state, to_parent)


def wait_for_parent(state, to_parent):
    to_parent.write(json.dumps(state) + "\n")
    to_parent.flush()
    if not sys.stdin.readline():
        raise SystemExit("kiri.bench.month_kill: the parent is gone")


def save_state(home, state, clock):
    state.update(now=clock[0], rss_mb=max(state["rss_mb"], peak_rss_mb()))
    atomic_write(Path(home) / STATE_FILE, json.dumps(state))


if __name__ == "__main__":
    child_main()
