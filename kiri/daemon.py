"""The daemon: collect → score → decide → act, on a schedule, forever.

One cycle (`kiri daemon --once`, or every `tick` seconds in `kiri daemon`):

1. each atom whose interval has passed takes a reading and scores it (its own pipe:
   a failing source or a missing model never stops the others), with its likelihood:
   are its recent readings, together, more surprising than usual (verbs.add_likelihood);
2. Nerve reads every atom's latest score relative to its threshold (an atom with no
   recent score, no weights, or no source here is *absent*, never "0 = normal") and the
   highest likelihood, and decides: ok, alert or suppress;
3. acting: an alert is stored, merged with a repeat of the same situation inside the
   cooldown, and queued for every sink (the log, Telegram, …) in the same transaction;
4. housekeeping: each sink's outbox is delivered and its answers become feedback;
   Nerve retrains after every few answers and daily; each atom moves along its
   lifecycle (lifecycle.py): trained once it has `learn_after` real readings
   (`spawn:<atom>`), retrained on its last days on a schedule (`retrain:<atom>:7d`).

SIGTERM / SIGINT stop the daemon after the stage it is in.
"""

import concurrent.futures
import logging
import logging.handlers
import math
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field

from . import lifecycle, outbox
from .alerts import Alert, covered_parts, format_alert, like_dismissed, same_situation, situation_of
from .atoms import is_host_atom, nerve, verbs
from .atoms.atom import MIN_OBSERVATIONS, Atom
from .atoms.score import Score
from .atoms.sources import CollectorError
from .compose import Molecule, Pipe
from .core.weights import previous_path
from .errors import KiriError
from .store import open_store

log = logging.getLogger("kiri.daemon")

HEARTBEAT_KEY = "daemon.heartbeat"    # {"ts", "pid", "mode", "started"} after every cycle (a bare ts before)
STOPPED_KEY = "daemon.stopped"        # {"ts", "pid"} when run_forever ends: a daemon without one was killed
LAST_CYCLE_KEY = "daemon.last_cycle"
NERVE_TRAINED_KEY = "nerve.trained_at"
NERVE_ANSWERS_KEY = "nerve.answers_at_training"
NERVE_CLOCK_KEY = "nerve.trained_clock"   # when a training stamp from the future was first seen (lifecycle.age_since)
PRUNED_KEY = "store.pruned_at"   # when the last prune finished
PRUNE_EVERY = 3600               # seconds between prunes: old rows are not urgent
PRUNE_BATCHES = 20               # short delete transactions per cycle at most (Store.prune)
REMOTE_READERS = 32              # watched hosts read at once (threads waiting on the network)


class PrivateLog(logging.handlers.RotatingFileHandler):
    """A rotating log only its owner can read: it holds the history of the machine."""

    def _open(self):
        if os.path.exists(self.baseFilename):
            os.chmod(self.baseFilename, 0o600)   # one written by an older KIRI
        return open(self.baseFilename, self.mode, encoding=self.encoding,
                    opener=lambda path, flags: os.open(path, flags, 0o600))


def setup_logging(settings, level=logging.INFO):
    """KIRI_HOME/kiri.log (0600), rotated at 1 MB, three old files kept."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = PrivateLog(settings.log_path, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("kiri")
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.handlers.RotatingFileHandler)]
    root.addHandler(handler)
    root.setLevel(level)
    return handler


UNIT_OUTPUT = ("daemon.out", "daemon.err", "cron.log")   # launchd's StandardOut/ErrorPath, cron's >>
UNIT_OUTPUT_BYTES = 1_000_000


def rotate_unit_output(home, max_bytes=UNIT_OUTPUT_BYTES, fds=(1, 2)):
    """Rotate the files launchd and cron append KIRI's output to, which neither ever does: one
    over max_bytes becomes <name>.1 (one kept). Called at daemon start and each --once run.

    launchd and the shell opened the file before KIRI started, so when it is this process's
    stdout or stderr that descriptor still writes to the renamed file: it is pointed at a new one.
    """
    for name in UNIT_OUTPUT:
        path = os.path.join(home, name)
        try:
            old = os.stat(path)
            if old.st_size <= max_bytes:
                continue
            os.replace(path, path + ".1")
            for fd in fds:
                _reopen_if_writing_to(fd, old, path)
        except FileNotFoundError:
            continue
        except OSError as e:   # a full or read-only disk must not stop the monitor
            log.warning("cannot rotate %s: %s", path, e.strerror or e)


def _reopen_if_writing_to(fd, old, path):
    """Point `fd` at a fresh `path` if it is open on the file `old` (an os.stat result)."""
    try:
        current = os.fstat(fd)
    except OSError:   # closed
        return
    if (current.st_dev, current.st_ino) != (old.st_dev, old.st_ino):
        return
    for stream in (sys.stdout, sys.stderr):   # what Python buffered belongs to the old file
        stream.flush()
    new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(new, fd)
    os.close(new)


AFTER_STEPS = {"score_leftovers": "pick up the readings a stop left unscored or undecided",
               "act_on_interrupted": "act on the decision a stop interrupted",
               "deliver_and_poll": "deliver alerts", "housekeeping": "do housekeeping", "prune_old": "prune old history"}


@dataclass
class CycleResult:
    ts: float
    scores: list = field(default_factory=list)        # Score objects of this cycle
    absent: dict = field(default_factory=dict)        # atom -> why it has no score
    waiting: dict = field(default_factory=dict)       # atom -> why it took no reading (not due yet)
    decision: dict = None                              # {id, action, probability, source, state}
    alert: dict = None                                 # {id, message, merged_into}
    meta: list = field(default_factory=list)          # meta-actions run: ["retrain:pulse:7d", …]
    errors: list = field(default_factory=list)        # (pipe, stage, error)
    recent: list = field(default_factory=list)        # every atom's recent Score, read once for Nerve
    sustained: dict = field(default_factory=dict)     # atom -> its ratio held for alert_after readings (sustain)
    leftovers: list = field(default_factory=list)     # Scores a stop left undecided (first cycle only)


class Daemon:
    def __init__(self, settings, store, clock=time.time, sinks=None, mode="once", monotonic=None):
        """`sinks`: where alerts go (kiri.notify.sinks_from_settings); the log alone by default.
        `mode`: "forever" or "once", written with each heartbeat so `kiri status` tells them apart.

        `clock` gives the wall time every row is stamped with; `monotonic` the time the schedule
        runs on (is an atom due, when does the next cycle start), which a step of the wall clock
        (NTP, a dead RTC, a user) never moves. By default time.monotonic, or the injected clock
        when one is given without it (a simulation's time is one clock: bench month, tests)."""
        self.settings, self.store, self.clock = settings, store, clock
        if monotonic is None:
            monotonic = time.monotonic if clock is time.time else clock
        self.monotonic = monotonic
        self.modules = verbs.all_atoms(settings)
        self.sinks = [outbox.LogSink()] if sinks is None else list(sinks)
        self.stop_event = threading.Event()
        self.mode, self.started = mode, clock()
        self._atoms = {}  # name -> (weights file stamp, Atom): a file is parsed again only when it changes
        self._leftovers_checked = False
        # atom -> (id, monotonic time) of its newest reading this process knows the age of (_collector)
        self._last_read = {}
        self.trainer = None   # a Trainer while run_forever runs: atoms train beside the cycles

    # --- one cycle -------------------------------------------------------------------

    def cycle(self, inject=None, collect_all=False):
        """Run one full cycle; `inject` = {atom: values} replaces those atoms' readings.

        Each atom reads only when its interval has passed, unless `collect_all`.
        """
        now, mono = self.clock(), self.monotonic()
        result = CycleResult(ts=now)
        inject = inject or {}
        if not self._leftovers_checked:
            self._leftovers_checked = True
            self._guarded(self.act_on_interrupted, now, result)
            self._guarded(self.score_leftovers, now, result)
        fetched = self.read_remote(now, mono, inject, collect_all)
        pipes = {name: Pipe(name, [("collect", self._collector(name, now, mono, inject.get(name), result,
                                                               collect_all, fetched.get(name))),
                                   ("score", self._scorer(name, result))], on_error=self._log_error)
                 for name in self.modules}
        molecule = Molecule(pipes, decide=lambda scores: self.decide(scores, now, result, bool(inject)),
                            act=lambda decision: self.act(decision, now, result), on_error=self._log_error)
        report = molecule.cycle()
        result.errors += report.errors
        for step in (self.deliver_and_poll, self.housekeeping, self.prune_old):
            if self.stop_event.is_set():
                break
            self._guarded(step, now, result)
        self.store.set_kv(HEARTBEAT_KEY, {"ts": self.clock(), "pid": os.getpid(), "mode": self.mode,
                                          "started": self.started})
        self.store.set_kv(LAST_CYCLE_KEY, summary(result))
        return result

    def _guarded(self, step, now, result):
        """Run one of the cycle's after-steps; whatever fails, the loop goes on."""
        what = AFTER_STEPS.get(step.__name__, step.__name__)
        try:
            step(now, result)
        except (KiriError, OSError, sqlite3.Error) as e:   # the disk, the database, the network: one line
            result.errors.append(("housekeeping", what, str(e)))
            log.warning("could not %s: %s", what, e)
        except Exception as e:  # a bug: its traceback is worth the lines
            result.errors.append(("housekeeping", what, str(e)))
            log.exception("could not %s", what)

    def _log_error(self, pipe, stage, error, tb):
        if isinstance(error, KiriError):
            log.warning("%s %s: %s", pipe, stage, error)
        else:
            log.error("%s %s failed:\n%s", pipe, stage, tb)

    def interval(self, name):
        return self.modules[name].SPEC.interval

    def read_remote(self, now, mono, inject, collect_all):
        """{atom: (values, source) or the error} of the due atoms that read over the network
        alone (watched hosts), read at once in threads: a hundred hosts, each a second or more
        away (two node_exporter scrapes a second apart), would take minutes one after another.
        Only the reading happens here; storing it stays in the cycle's own thread and pipe."""
        due = [name for name, module in self.modules.items()
               if getattr(module, "REMOTE", False) and name not in inject and not self._not_due(name, now, mono, collect_all)]
        if not due:
            return {}

        def read(name):
            module = self.modules[name]
            try:
                return module.read(module.SPEC, self.settings, None)
            except Exception as e:   # handed to the atom's own pipe, which logs it as it would its own
                return e
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(REMOTE_READERS, len(due))) as pool:
            return dict(zip(due, pool.map(read, due)))

    def _not_due(self, name, now, mono, collect_all):
        """Why the atom takes no reading now, or None when it is due."""
        age = self._reading_age(name, now, mono)
        # Due at the tick nearest the interval: a reading `tick` early would drift the
        # schedule (at 0.9 of it, five-minute readings came every 270 s).
        if age is not None and not collect_all and age < self.interval(name) - self.settings.number("tick") / 2:
            return f"not due yet (last reading {age:.0f} s ago, every {self.interval(name):g} s)"
        return None

    def _collector(self, name, now, mono, injected, result, collect_all=False, fetched=None):
        """The collect stage: the injected reading, the one read_remote `fetched`, or one read now."""
        module = self.modules[name]

        def collect(_):
            if injected is not None:
                obs_id = self.store.add_observation(name, injected, ts=now, source="inject")
                self._last_read[name] = (obs_id, mono)
                return self.store.observation(obs_id)
            why = self._not_due(name, now, mono, collect_all)
            if why:
                result.waiting[name] = why
                return None
            try:
                if isinstance(fetched, Exception):
                    raise fetched
                obs = verbs.collect_once(module, self.settings, self.store, now=now, reading=fetched)
            except CollectorError as e:
                # Not a crash and not a 0: the atom is absent this cycle and `status` says why.
                # Logged when the reason changes, not every cycle.
                result.absent[name] = f"unavailable: {e}"
                if self.store.get_kv(f"atom.{name}.source") != str(e):
                    log.warning("%s (left out until it can be read)", e)
                    self.store.set_kv(f"atom.{name}.source", str(e))
                return None
            self._last_read[name] = (obs["id"], mono)
            self.store.set_kv(f"atom.{name}.source", "")
            return obs
        return collect

    def _reading_age(self, name, now, mono):
        """Seconds since the atom's last reading on the monotonic clock, or None: due now.

        A reading this process took is aged on the monotonic clock alone, so a wall clock
        stepping back neither stops collection (its readings would all look "from the future")
        nor, stepping forward or back, makes it read twice. A newer stored reading this process
        did not take (one from before it started: its first cycle; or `kiri <atom> collect`)
        is aged by the wall clock once, and from then on on the monotonic one; one stamped in
        the future (the clock stepped back since) tells nothing and never blocks collection."""
        known = self._last_read.get(name)
        latest = self.store.latest_observation(name, real_only=True)
        if latest is not None and (known is None or latest["id"] > known[0]) and now >= latest["ts"]:
            known = self._last_read[name] = (latest["id"], mono - (now - latest["ts"]))
        if known is None or mono < known[1]:   # only an injected clock runs backwards: due
            return None
        return mono - known[1]

    def _scorer(self, name, result):
        module = self.modules[name]

        def score(obs):
            if obs is None:
                return None
            if not self.atom(name).trained:
                result.absent[name] = "no weights yet"
                return None
            s = self.score_reading(name, obs)
            result.scores.append(s)
            return s
        return score

    def score_reading(self, name, obs):
        """Score a stored reading after the ones before it, and store the score."""
        atom = self.atom(name)
        history = self.store.observations(name, until=obs["ts"] + 1e-6, limit=self.modules[name].SPEC.context + 1)
        s = atom.score(obs["values"], atom.context_of(history, len(history) - 1), ts=obs["ts"])
        verbs.add_likelihood(s, self.settings, self.store, obs["id"], obs["ts"])
        verbs.record_score(self.store, s, obs["id"], ts=obs["ts"])
        return s

    def act_on_interrupted(self, now, result):
        """At the first cycle: Nerve's last decision to alert, if a kill, power cut or crash
        came between storing it and storing its alert, is acted on now, at its own time (so
        the cooldown and the alert's time are as they would have been). Only a decision after
        the last heartbeat can be one (a cycle that ends writes one), so an old decision is
        never sent late. Acting is idempotent: a decision merged into an earlier alert (it has
        no alert of its own either) only marks that alert seen at its time again. "Last" is by
        time, as score_leftovers' readings are: in the hour after the wall clock stepped back
        an hour, the decisions from before the step come later and hide an interrupted one."""
        last = [d for d in self.store.decisions(limit=10) if d["action"] in ("ok", "alert", "suppress")][-1:]
        if not last or last[0]["action"] != "alert":
            return
        decision, beat = last[0], self.store.get_kv(HEARTBEAT_KEY)
        beat = beat.get("ts") if isinstance(beat, dict) else beat   # a bare ts from an older KIRI
        if isinstance(beat, (int, float)) and decision["ts"] <= beat:
            return
        if any(a["decision_id"] == decision["id"] for a in self.store.alerts(since=decision["ts"], limit=None)):
            return
        then = CycleResult(ts=decision["ts"])
        then.recent = self.recent_scores(decision["ts"], [])
        alert = self.act(decision, decision["ts"], then)
        if alert and not alert.get("merged_into"):
            log.info("alert %s stored for decision %s, which a stop had left without one", alert["id"], decision["id"])

    def score_leftovers(self, now, result):
        """At the first cycle: each trained atom's latest reading that a kill, power cut or
        crash left between storing and deciding. Unscored, it is scored now (else it would
        stay unscored for good, and missing from the likelihood's window); scored after
        Nerve's last decision, it is decided on in this cycle (result.leftovers) — an
        alert it called for must not be lost with the process."""
        decided = self.store.decisions(limit=1)
        last_decision = decided[0]["ts"] if decided else -math.inf
        for name in self.modules:
            latest = self.store.latest_observation(name, real_only=True)
            if latest is None or not self.atom(name).trained:
                continue
            scored = self.store.latest_scores(name, limit=1)
            if not scored or scored[0]["observation_id"] != latest["id"]:
                result.leftovers.append(self.score_reading(name, latest))
                log.info("%s: scored reading %s, which a stop had left unscored", name, latest["id"])
            elif scored[0]["ts"] > last_decision and scored[0]["threshold"]:
                score = Score.from_json(scored[0])
                score.unusual_at = self.settings.fraction("likelihood_alert")
                result.leftovers.append(score)

    def recent_scores(self, now, fresh):
        """Each atom's latest score if it is recent (within two of its intervals), else absent."""
        by_atom = {s.atom: s for s in fresh}
        out = []
        for name in self.modules:
            if name in by_atom:
                out.append(by_atom[name])
                continue
            latest = self.store.latest_scores(name, limit=1)
            if latest and now - latest[0]["ts"] <= 2 * self.interval(name) and latest[0]["threshold"]:
                score = Score.from_json(latest[0])
                score.unusual_at = self.settings.fraction("likelihood_alert")
                out.append(score)
        return out

    def decide(self, fresh, now, result, injected=False):
        """Nerve's decision over every atom's recent score; None when nothing new was scored."""
        fresh = list(fresh) + [s for s in result.leftovers if s.atom not in {f.atom for f in fresh}]
        if not fresh:
            return None
        atoms = list(self.modules)
        scores = result.recent = self.recent_scores(now, fresh)
        state = nerve.state_of(scores, atoms, now)
        result.sustained = self.sustain(state, scores, now, injected)
        # The model decides only once there is enough labelled history (README: cold start).
        ready = nerve.ready(*self.store.decision_counts())
        action, probability, source = nerve.decide(self.load_nerve() if ready else None, state)
        if ready and action in ("alert", "suppress"):
            dismissed, torn = self.answered_like(result, state)
            if dismissed and not torn:
                # You dismissed one like it and approved none as mild: quiet, whatever the
                # model guesses. A few answers teach a model of coarse tokens little about a
                # weekday or an hour it has no answer for (it alerted, 92 % sure, about a
                # Monday's long focus block after four like it dismissed on other days).
                action, probability, source = "suppress", 1.0, "rule"
            elif action == "suppress" and not dismissed:
                # Nerve silences only what you have taught it to: an alert like one you dismissed.
                # A model that has heard nothing but "dismiss" would otherwise silence everything.
                action, probability, source = "alert", 1.0, "rule"
        source = "inject" if injected and source == "rule" else source
        decision_id = self.store.add_decision(state, action, probability, source=source, ts=now)
        result.decision = {"id": decision_id, "action": action, "probability": probability, "source": source,
                           "state": state}
        log.info("decision %s (p %.2f, %s) on %s", action, probability, source, describe_state(state))
        return result.decision

    def sustain(self, state, scores, now, injected=False):
        """Each atom's ratio becomes the lowest of its last `alert_after` readings
        (Prometheus' `for:`): over the threshold means over it for that long. Returns
        {atom: that ratio}; in Nerve's state each field becomes the highest of its atoms'
        (one atom each, but HOSTS holds every watched host).

        At the 99th percentile, one reading in a hundred of a normal machine is over the
        threshold: three a day at 5-minute readings. Two in a row, by chance, are about one
        in ten thousand. A reading after a gap (a sleep, a restart) stands on its own. A
        reading typed in to try the loop (`injected`) is taken as lasting.
        """
        n = self.settings.count("alert_after")
        sustained = {}
        for s in scores:
            if not (math.isfinite(s.threshold) and s.threshold > 0):
                continue
            sustained[s.atom] = s.ratio
            if n <= 1 or injected:
                continue
            readings = {}   # observation -> its newest score (a reading scored twice counts once)
            for r in self.store.latest_scores(s.atom, limit=2 * n):
                if r["observation_id"] is not None and r["threshold"] and len(readings) < n:
                    readings.setdefault(r["observation_id"], r)
            recent = [r["score"] / r["threshold"] for r in readings.values()
                      if now - r["ts"] <= (n + 1) * self.interval(s.atom)]
            sustained[s.atom] = min([s.ratio] + recent)
        for key in {nerve.prefix_of(atom) for atom in sustained}:
            if key in state:
                state[key] = max(r for atom, r in sustained.items() if nerve.prefix_of(atom) == key)
        return sustained

    def answered_like(self, result, state):
        """(dismissed, torn): whether the owner dismissed an alert like what is flagged now
        (within retention), and whether they also approved one of its situation that was
        no further off than those they dismissed — then their answers disagree here, and
        Nerve's model weighs them."""
        flagged = self.flagged(result, state)
        dismissed = self.store.alerts(state="dismissed", limit=500)
        if not like_dismissed(dismissed, flagged):
            return False, False
        situation = situation_of(flagged)
        torn = any(same_situation(a["situation"], situation) and like_dismissed(dismissed, Alert.from_json(a).scores)
                   for a in self.store.alerts(state="approved", limit=500))
        return True, torn

    @staticmethod
    def flagged(result, state):
        """The scores an alert now is about: each atom over its threshold for `alert_after`
        readings (its sustained ratio), or unusual together by its likelihood. A lone
        reading over the line on another atom is not part of the situation. A decision a
        kill interrupted comes back with its stored state alone: then an atom's ratio is
        its field's, and a watched host's no more than its own reading's."""
        def unusual(s):
            return s.likelihood is not None and s.unusual_at is not None and s.likelihood > s.unusual_at

        def ratio(s):
            if s.atom in result.sustained:
                return result.sustained[s.atom]
            held = state.get(nerve.prefix_of(s.atom)) or 0
            return min(held, s.ratio) if is_host_atom(s.atom) else held
        return [s for s in result.recent if ratio(s) > 1 or unusual(s)]

    def act(self, decision, now, result):
        if decision is None or decision["action"] == "ok":
            return None
        flagged = self.flagged(result, decision["state"])
        situation = situation_of(flagged)
        if decision["action"] == "suppress":
            log.info("suppressed (Nerve has learned you do not want this one): %s", situation)
            return None
        cooldown = self.settings.number("alert_cooldown")
        parts = covered_parts(self.store.alerts(active_since=now - cooldown, limit=None), situation)
        covered = list({a["id"]: a for a in parts.values() if a is not None}.values())
        # Merged while it goes on: the cooldown runs from its last repeat, so an
        # incident that lasts all day is one alert, not one an hour. Not once you have
        # dismissed it: what comes back after its cooldown is judged afresh (a CPU
        # runaway can follow the nightly backup you dismissed an hour before).
        # Either way the decision is the alert's repeat, so your answer to the alert labels it.
        for alert in covered:
            self.store.alert_seen(alert["id"], now, decision_id=decision["id"],
                                  going_on=alert["state"] != "dismissed")
        news = [s for s in flagged if parts.get(s.atom) is None]
        if covered and not news:
            earlier = covered[0]
            log.info("repeat of alert %s within the cooldown: %s", ", ".join(str(a["id"]) for a in covered), situation)
            result.alert = {"id": earlier["id"], "merged_into": earlier["id"], "message": earlier["message"]}
            return result.alert
        if covered:
            # Atom by atom: an atom that joins a running incident is its own alert, about
            # itself; the incident's atoms are the running alert's repeat, not news again.
            log.info("repeat of alert %s within the cooldown, and news from %s: %s",
                     ", ".join(str(a["id"]) for a in covered), ", ".join(s.atom for s in news), situation)
            flagged, situation = news, situation_of(news)
        labels = {name: m.SPEC.labels for name, m in self.modules.items()}
        host = ", ".join(dict.fromkeys(self.settings.host_of(s.atom) for s in flagged)) or self.settings.host
        message = format_alert(flagged, labels=labels, host=host) if flagged else \
            f"KIRI alert on {host}: Nerve decided to alert on {describe_state(decision['state'])}"
        main_atom = flagged[0].atom if flagged else "nerve"
        # The alert and its outbox rows commit together: a kill in between cannot leave an
        # alert that no sink will ever send.
        alert_id = self.store.add_alert(main_atom, message, decision_id=decision["id"], situation=situation,
                                        details={"host": host, "scores": [s.to_json() for s in flagged]},
                                        ts=now, sinks=[sink.name for sink in self.sinks])
        result.alert = {"id": alert_id, "merged_into": None, "message": message}
        return result.alert

    # --- housekeeping ----------------------------------------------------------------

    def deliver_and_poll(self, now, result):
        """Each sink: send what is due, then read its answers. A sink that cannot be reached
        is one line in the log and in the cycle's errors; the others go on."""
        for sink in self.sinks:
            try:
                outbox.deliver(self.store, sink, now)
                for alert_id, verdict, replaced in sink.answers(self.store):
                    log.info("feedback from %s: alert %s %s%s", sink.name, alert_id, verdict,
                             " (replaced)" if replaced else "")
            except KiriError as e:
                result.errors.append((sink.name, "deliver", str(e)))
                # A sink's errors name it already ("telegram: getUpdates: …").
                log.warning("%s", e if str(e).startswith(sink.name) else f"{sink.name}: {e}")

    def housekeeping(self, now, result):
        """Nerve learns from new answers; each atom moves along its lifecycle (lifecycle.py):
        its first model once it has enough real readings, a retrain when one is due. With a
        trainer (the forever loop) an atom trains in its thread while the cycles go on."""
        self.maybe_retrain_nerve(now, result)
        learn_after = self.settings.learn_after
        for name in self.modules:
            if self.stop_event.is_set():
                return
            action = lifecycle.due(name, self.atom(name), lambda: self.store.count_real(name, learn_after),
                                   self.settings, self.store, now)
            if action and self.trainer is not None:
                if self.trainer.submit(action):
                    result.meta.append(f"{action} (training in the background)")
            elif action:
                self.meta(action, now, result)
        if self.trainer is not None:   # what failed in the background is this cycle's error, as inline
            result.errors += [(action, "housekeeping", error) for action, error in self.trainer.take_errors()]

    def meta(self, action, now, result):
        """Run a meta-action for real and record it as a decision. An atom that cannot be
        trained yet (too few readings in its window) is one line in the log, not a crash."""
        try:
            run_and_record(action, self.settings, self.store, self.modules, now)
        except KiriError as e:
            result.errors.append((action, "housekeeping", str(e)))
            log.warning("%s: %s", action, e)
            return
        result.meta.append(action)

    def load_nerve(self):
        return self.atom("nerve")

    def atom(self, name):
        """The atom with its current weights; the JSON is parsed again only when the file changed."""
        path = self.settings.weights_path(name)
        stamps = []
        for p in (path, previous_path(path)):
            try:
                st = p.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append(None)
        cached = self._atoms.get(name)
        if cached is None or cached[0] != stamps:
            spec = nerve.spec(list(self.modules)) if name == "nerve" else self.modules[name].SPEC
            cached = self._atoms[name] = (stamps, Atom.load(spec, path, engine=self.settings.engine))
        return cached[1]

    def maybe_retrain_nerve(self, now, result):
        # Counted in SQL every tick; the decisions themselves are read only to train.
        decisions, answers = self.store.decision_counts()
        if not nerve.ready(decisions, answers):
            return
        since_answers = answers - (self.store.get_kv(NERVE_ANSWERS_KEY) or 0)
        age = lifecycle.age_since(self.store, NERVE_CLOCK_KEY, self.store.get_kv(NERVE_TRAINED_KEY) or 0, now)
        # New answers retrain it at most hourly: a burst of answers is one lesson, not ten trainings.
        if (since_answers >= self.settings.number("nerve_retrain_answers") and age >= 3600) or age > 86400:
            labelled = self.store.labelled_decisions()
            self.store.set_kv(NERVE_TRAINED_KEY, now)   # tried now: the next try waits as after a training
            if len(nerve.training_history(labelled)) < MIN_OBSERVATIONS:
                log.info("Nerve waits: its %d decisions hold too few flagged ones to learn from yet", decisions)
                return
            nerve.train(list(self.modules), labelled, self.settings.weights_path("nerve"), engine=self.settings.engine)
            self.store.set_kv(NERVE_ANSWERS_KEY, answers)
            result.meta.append("retrain:nerve")
            log.info("Nerve retrained on %d decisions (%d answers)", decisions, answers)

    def prune_old(self, now, result):
        """Forget what is older than `retain_days` (Store.prune keeps answers and whatever is
        still needed). A cycle spends at most PRUNE_BATCHES short deletes on it, so a long
        backlog is worked off over several cycles; once a prune finishes, none for an hour."""
        last = self.store.get_kv(PRUNED_KEY) or 0
        if 0 <= now - last < PRUNE_EVERY:   # a clock stepped back does not stop pruning
            return
        days = self.settings.count("retain_days", "days")
        report = self.store.prune(now - days * 86400, max_batches=PRUNE_BATCHES)
        if report.finished:
            self.store.set_kv(PRUNED_KEY, now)
        if any(report.deleted.values()):
            log.info("forgot what is older than %d days: %s%s", days,
                     ", ".join(f"{n} {table}" for table, n in report.deleted.items() if n),
                     "" if report.finished else " (more next cycle)")

    # --- forever -----------------------------------------------------------------------

    def run_forever(self, sleep=None):
        """Cycle every `tick` seconds until SIGTERM/SIGINT (or stop_event) arrives.

        A cycle starts `tick` after the previous one started, on the monotonic clock, so the
        time a cycle takes does not add up into a drifting schedule. One that took longer
        than `tick` (a retrain) is followed at once, by one cycle only: there is no burst of
        cycles to catch up, since each atom reads by its own interval anyway."""
        tick = self.settings.number("tick")
        log.info("daemon started (tick %gs, atoms %s)", tick, ", ".join(self.modules))
        self.trainer = Trainer(self.settings, self.modules, self.clock)
        while not self.stop_event.is_set():
            started = self.monotonic()
            try:
                self.cycle()
            except Exception:  # the loop outlives any bug in one cycle
                log.exception("cycle failed")
            took = self.monotonic() - started   # < 0 only on an injected clock run backwards: a whole tick
            (sleep or self.stop_event.wait)(tick if took < 0 else max(0.0, tick - took))
        self.trainer.stop()
        self.store.set_kv(STOPPED_KEY, {"ts": self.clock(), "pid": os.getpid()})
        log.info("daemon stopped")

    def install_signal_handlers(self):
        def stop(signum, frame):
            log.info("signal %s: stopping after the current stage", signum)
            self.stop_event.set()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


class Trainer:
    """Trains atoms one at a time in a thread of its own, for the forever loop.

    A Pulse learns 2,000 steps in a few minutes of CPU; inline, every cycle would wait for
    it, and a fleet of watched hosts learning on the same day would stop readings for hours.
    In this thread (its own database connection; the weights file is swapped atomically and
    the cycle loads it when it changes) the cycles go on. The GIL shares the CPU between
    the two: a cycle takes longer while an atom trains, but it runs. An atom is queued once,
    however many cycles find it due meanwhile. A stop leaves the training unfinished: the
    weights it would have written never replace the current ones half-way.
    """

    def __init__(self, settings, modules, clock=time.time):
        self.settings, self.modules, self.clock = settings, modules, clock
        self.queue, self.pending, self.lock = queue.Queue(), set(), threading.Lock()
        self.errors = []   # (action, one line) of the trainings that failed, until take_errors()
        self.thread = threading.Thread(target=self.run, name="kiri-trainer", daemon=True)
        self.thread.start()

    def submit(self, action):
        """Queue a meta-action unless one for its atom is queued or running; True if queued."""
        atom = action.split(":")[1]
        with self.lock:
            if atom in self.pending:
                return False
            self.pending.add(atom)
        self.queue.put(action)
        return True

    def run(self):
        with open_store(self.settings.home) as store:
            while True:
                action = self.queue.get()
                if action is None:
                    return
                try:
                    run_and_record(action, self.settings, store, self.modules, self.clock())
                except (KiriError, OSError, sqlite3.Error) as e:
                    log.warning("%s: %s", action, e)
                    self._failed(action, str(e))
                except Exception as e:  # a bug: the thread, like the loop, outlives it
                    log.exception("%s failed", action)
                    self._failed(action, f"{type(e).__name__}: {e}")
                finally:
                    with self.lock:
                        self.pending.discard(action.split(":")[1])

    def _failed(self, action, error):
        with self.lock:
            self.errors.append((action, error))

    def take_errors(self):
        """The failures since the last call, oldest first."""
        with self.lock:
            errors, self.errors = self.errors, []
        return errors

    def stop(self, wait=1.0):
        """Drop what is queued and end after the training running now (waiting `wait` s for it)."""
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        self.queue.put(None)
        self.thread.join(wait)


def run_and_record(action, settings, store, modules, now):
    """Run a meta-action (lifecycle.run), store it as a rule's decision and log its outcome."""
    outcome = lifecycle.run(action, settings, store, modules, now=now)
    store.add_decision({}, action, 1.0, source="rule", ts=now)
    log.info("%s", outcome)


def run_meta(action, settings, store, modules=None, now=None):
    """`retrain:<atom>:<days>d` or `spawn:<atom>` for real (lifecycle.run); returns its outcome."""
    return lifecycle.run(action, settings, store, modules or verbs.all_atoms(settings), now=now)


def describe_state(state):
    return " ".join(f"{k}={'-' if v is None else round(v, 2)}" for k, v in state.items())


def summary(result):
    """What `kiri status` shows of the last cycle."""
    return {"ts": result.ts,
            "scores": {s.atom: s.to_json() for s in result.scores},
            "absent": result.absent,
            "decision": None if result.decision is None else
            {k: result.decision[k] for k in ("id", "action", "probability", "source")},
            "alert": result.alert, "meta": result.meta, "errors": [list(e) for e in result.errors]}


def describe_cycle(result):
    """One cycle in a few lines: each atom's score, Nerve's decision, the alert."""
    lines = []
    for s in result.scores:
        likelihood = "" if s.likelihood is None else f"  (likelihood {s.likelihood:.2f})"
        lines.append(f"{s.atom}: score {s.score:.3f}  threshold {s.threshold:.3f}  {s.verdict}{likelihood}")
    for atom, why in sorted(result.absent.items()):
        lines.append(f"{atom}: absent ({why})")
    for atom, why in sorted(result.waiting.items()):
        lines.append(f"{atom}: {why}")
    if result.decision is None:
        lines.append("nerve: nothing new to decide on")
    else:
        d = result.decision
        lines.append(f"nerve: {d['action']} (p {d['probability']:.2f}, {d['source']})")
    if result.alert:
        a = result.alert
        head = f"alert {a['id']}" + (" (repeat, merged)" if a.get("merged_into") else "")
        lines.append(head + ":\n  " + a["message"].replace("\n", "\n  "))
    lines += [f"meta: {m}" for m in result.meta]
    lines += [f"error: {pipe} {stage}: {error}" for pipe, stage, error in result.errors]
    return "\n".join(lines)
