"""The feedback loop: compose, Nerve, a daemon that learns from answers, Telegram end to
end, delivery retries, a SIGKILLed daemon, meta-actions and declared atoms.

Every test has its own KIRI_HOME and an injected clock; Telegram is a loopback fake
(kiri/bench/fake_telegram.py). Readings are injected, so no test depends on this machine's
load — except the SIGKILL test, which runs the real `python -m kiri daemon`.
"""

import dataclasses
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from kiri.atoms import verbs
from kiri.atoms.atom import Atom
from kiri.atoms import nerve
from kiri.compose import Molecule, Pipe
from kiri.config import load_settings
from kiri.core.weights import previous_path
from kiri.alerts import covered_parts, like_dismissed, same_situation, situation_of
from kiri.atoms.score import Score
from kiri.daemon import NERVE_TRAINED_KEY, CycleResult, Daemon, run_meta
from kiri.errors import KiriError
from kiri.notify.telegram import TelegramBot
from kiri.status import collect_status, format_status
from kiri.outbox import LogSink
from kiri.store import open_store

from kiri.bench.fake_telegram import FakeTelegram
from tests.helpers import REPO, DaemonChildren, capture_kiri_log

TOKEN = "123:SECRET"
CHAT = 4242
ATOMS = ["pulse", "rhythm", "drift"]

# Readings (values, not tokens). The shared Pulse model is trained on a synthetic
# weekday 9–18 routine, so at 14:00 on a weekday NORMALS are what it expects.
NORMALS = [dict(C=52, M=55, D=44, S=30, L=5.2, N=1), dict(C=48, M=54, D=45, S=28, L=4.8, N=1),
           dict(C=56, M=57, D=43, S=32, L=5.6, N=1)]
HARMLESS = dict(C=75, M=60, D=44, S=30, L=6, N=1)       # a bit over the threshold; the user does not care
ANOMALIES = [dict(C=85, M=80, D=50, S=60, L=12, N=1),   # far over the threshold; the user cares
             dict(C=92, M=88, D=46, S=85, L=17, N=1),
             dict(C=35, M=98, D=60, S=95, L=3, N=1)]
BIG = dict(C=95, M=95, D=44, S=90, L=18, N=1)           # a different anomaly, never seen before
# Rhythm and Drift have no weights in these tests; injecting them keeps the OS out.
RHYTHM = dict(H=14, W=2, I=0, A=100, F=30, G=0)
DRIFT = dict(A=1, C=1, S=0)


def local(day, hour=0, minute=0):
    """Local-time timestamp of a date at hour:minute (DST-proof: mktime of the wall clock)."""
    return time.mktime((day.year, day.month, day.day, hour, minute, 0, 0, 0, -1))


HISTORY_END = local(datetime.date(2024, 1, 3), 12)   # a Wednesday noon
FIRST_MONDAY = datetime.date(2024, 1, 8)              # the loop's weeks start here

_shared = {}


def trained_pulse_weights():
    """One Pulse model per process (150 steps on 600 synthetic readings), copied into each home."""
    if "pulse" not in _shared:
        tmp = tempfile.mkdtemp(prefix="kiri-loop-shared-")
        _shared["dir"] = tmp
        settings = load_settings(home=tmp, env={})
        module = verbs.atom_module("pulse")
        with open_store(tmp) as store:
            verbs.add_synthetic(module, store, 600, seed=7, end=HISTORY_END)
            verbs.train(module, settings, store, steps=150, warm_start=True)
        _shared["pulse"] = settings.weights_path("pulse")
    return _shared["pulse"]


def tearDownModule():
    if "dir" in _shared:
        shutil.rmtree(_shared["dir"], ignore_errors=True)


def total(counts):
    """Every stored reading: real, synthetic and injected."""
    return sum(counts.values())


class HomeCase(unittest.TestCase):
    """A temp KIRI_HOME, an injected clock (self.now), and the kiri logs captured (not printed)."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-loop-")
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        self.now = 0.0
        self.log = capture_kiri_log(self)

    def clock(self):
        return self.now

    def settings(self, **env):
        base = {"KIRI_ALERT_COOLDOWN": "1", "KIRI_RETRAIN_DAYS": "365"}
        base.update(env)
        return load_settings(home=self.home, env=base)

    def store(self):
        store = open_store(self.home)
        self.addCleanup(store.close)
        return store

    def install_pulse(self, settings):
        path = settings.weights_path("pulse")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trained_pulse_weights(), path)

    def daemon(self, settings, store, bot=None):
        return Daemon(settings, store, clock=self.clock, sinks=[LogSink()] + ([bot] if bot else []))

    def cycle(self, d, at, pulse=None):
        """One daemon cycle at time `at`, Pulse reading `pulse` (None: nothing new for Pulse)."""
        self.now = at
        inject = {"rhythm": RHYTHM, "drift": DRIFT}
        if pulse is not None:
            inject["pulse"] = pulse
        result = d.cycle(inject=inject)
        self.assertEqual(result.errors, [], "a cycle failed: %r" % (result.errors,))
        return result


# --------------------------------------------------------------------------------------
# 1. compose


class Ticker:
    """A clock that advances `step` seconds every time it is read."""

    def __init__(self, step=0.5):
        self.t, self.step = 100.0, step

    def __call__(self):
        self.t += self.step
        return self.t


class PipeTest(unittest.TestCase):
    def test_stages_chain_and_each_records_its_time_and_outcome(self):
        pipe = Pipe("p", [("double", lambda x: x * 2), ("inc", lambda x: x + 1)], clock=Ticker(0.5))
        run = pipe.run(5)
        self.assertTrue(run.ok)
        self.assertEqual(run.output, 11)
        self.assertEqual([(s.name, s.status, s.seconds, s.error) for s in run.stages],
                         [("double", "ok", 0.5, ""), ("inc", "ok", 0.5, "")])
        self.assertEqual(run.error, "")

    def test_a_raising_stage_stops_only_its_own_pipe(self):
        heard, called = [], []

        def boom(x):
            raise ValueError("disk on fire")

        pipe = Pipe("pulse", [("collect", lambda x: 1), ("score", boom), ("act", called.append)],
                    clock=Ticker(0.25), on_error=lambda *args: heard.append(args))
        run = pipe.run()  # must not raise
        self.assertFalse(run.ok)
        self.assertIsNone(run.output)
        self.assertEqual([(s.name, s.status) for s in run.stages],
                         [("collect", "ok"), ("score", "error"), ("act", "skipped")])
        self.assertEqual(run.stages[1].error, "ValueError: disk on fire")
        self.assertEqual(run.stages[1].seconds, 0.25)
        self.assertEqual(run.stages[2].seconds, 0.0)
        self.assertEqual(run.error, "ValueError: disk on fire")
        self.assertEqual(called, [], "a stage after the failure ran")
        self.assertEqual(len(heard), 1)
        pipe_name, stage, exc, tb = heard[0]
        self.assertEqual((pipe_name, stage), ("pulse", "score"))
        self.assertIsInstance(exc, ValueError)
        self.assertIn("disk on fire", tb)
        # Without on_error it is still only recorded; the pipe can run again.
        self.assertEqual(Pipe("q", [("s", boom)]).run().stages[0].status, "error")
        self.assertTrue(Pipe("q", [("s", lambda x: x)]).run(3).ok)

    def test_molecule_runs_every_atom_then_decides_on_the_others_scores(self):
        order, decided, acted, errors = [], [], [], []

        def atom(name, result=None, fail=False):
            def collect(_):
                order.append(name)
                if fail:
                    raise OSError("%s: source gone" % name)
                return result
            return Pipe(name, [("collect", collect), ("score", lambda r: r)],
                        on_error=lambda *args: errors.append(args[:2]))

        pipes = {"a": atom("a", "score-a"), "b": atom("b", fail=True), "c": atom("c", None),
                 "d": atom("d", "score-d")}
        molecule = Molecule(pipes, decide=lambda scores: decided.append(list(scores)) or "alert",
                            act=lambda decision: acted.append(decision) or "done",
                            on_error=lambda *args: errors.append(args[:2]))
        report = molecule.cycle()
        self.assertEqual(order, ["a", "b", "c", "d"], "an atom after the failing one did not run")
        self.assertEqual(decided, [["score-a", "score-d"]], "decide must get the others' scores only")
        self.assertEqual(acted, ["alert"])
        self.assertEqual(report.decision.output, "done")
        self.assertEqual([r.name for r in report.atoms], ["a", "b", "c", "d"])
        self.assertEqual(report.errors, [("b", "collect", "OSError: b: source gone")])
        self.assertEqual(errors, [("b", "collect")])

        # A failing decide skips act and is reported; the cycle itself never raises.
        def bad_decide(scores):
            raise KeyError("nerve")

        report = Molecule({"a": atom("a", "s")}, decide=bad_decide, act=acted.append,
                          on_error=lambda *args: errors.append(args[:2])).cycle()
        self.assertEqual([s.status for s in report.decision.stages], ["error", "skipped"])
        self.assertEqual(report.errors, [("nerve", "decide", "KeyError: 'nerve'")])
        self.assertEqual(errors, [("b", "collect"), ("nerve", "decide")])
        self.assertEqual(acted, ["alert"])


# --------------------------------------------------------------------------------------
# 2. Nerve


class NerveTest(unittest.TestCase):
    def state(self, p=None, r=None, d=None, u=None, hour=14.0, weekday=2):
        return {"P": p, "R": r, "D": d, "U": u, "H": hour, "W": weekday}

    def test_language_absent_atom_is_its_own_token_and_act_is_categorical(self):
        language = nerve.spec(ATOMS + ["gpu"]).language()
        self.assertEqual(language.fields, ["P", "R", "D", "GPU", "U", "H", "W", "act"])
        ids = language.encode(dict(P=None, R=0.2, D=3.5, GPU=1.2, U=None, H=14.2, W=2, act="suppress"))
        self.assertEqual(language.decode(ids), "P_ R0 D5 GPU2 U_ H4 W2 suppress")
        p0 = language.encode(dict(P=0.0, R=0.2, D=3.5, GPU=1.2, U=1.1, H=14.2, W=2, act="ok"))
        self.assertNotEqual(ids[1], p0[1], "an absent atom must not read as a score of 0")
        self.assertEqual(language.token_name(p0[1]), "P0")
        self.assertEqual(language.labels["act"], nerve.actions(ATOMS + ["gpu"]))
        for action in ("ok", "alert", "suppress", "retrain:pulse:7d", "spawn:gpu"):
            self.assertIn(action, language.labels["act"])
            self.assertEqual(language.decode(language.encode(dict(P=1, R=1, D=1, GPU=1, U=1, H=1, W=1, act=action)))
                             .split()[-1], action)
        for bad in ("bogus", 1, None):
            with self.assertRaises(ValueError):
                language.encode(dict(P=1, R=1, D=1, GPU=1, U=1, H=1, W=1, act=bad))
        self.assertEqual([nerve.prefix_of(a) for a in ATOMS + ["gpu"]], ["P", "R", "D", "GPU"])

    def test_state_of_ratios_absent_atoms_and_time(self):
        ts = local(datetime.date(2024, 1, 10), 14, 30)   # a Wednesday
        scores = [SimpleNamespace(atom="pulse", score=3.0, threshold=2.0, likelihood=None, unusual_at=0.1),
                  SimpleNamespace(atom="drift", score=1.0, threshold=float("inf"),   # no threshold
                                  likelihood=None, unusual_at=None),
                  SimpleNamespace(atom="other", score=9.0, threshold=1.0,            # not Nerve's atom
                                  likelihood=0.9, unusual_at=0.1)]
        self.assertEqual(nerve.state_of(scores, ATOMS, ts),
                         {"P": 1.5, "R": None, "D": None, "U": None, "H": 14.5, "W": 2})
        scores += [SimpleNamespace(atom="rhythm", score=0.5, threshold=1.0, likelihood=0.15, unusual_at=0.1)]
        state = nerve.state_of(scores, ATOMS, ts)
        self.assertEqual((state["R"], round(state["U"], 6)), (0.5, 1.5), "U: the likelihood over its alert level")

    def test_rule_alerts_only_when_an_atom_is_over_its_threshold(self):
        self.assertEqual(nerve.rule(self.state(p=0.4)), "ok")
        self.assertEqual(nerve.rule(self.state(p=1.0)), "ok")
        self.assertEqual(nerve.rule(self.state(p=0.4, d=1.01)), "alert")
        self.assertEqual(nerve.rule(self.state()), "ok", "absent atoms are not anomalies")
        self.assertEqual(nerve.rule(self.state(p=0.2, hour=23.0, weekday=6)), "ok", "H and W are not scores")
        self.assertEqual(nerve.rule(self.state(p=0.4, u=0.9)), "ok")
        self.assertEqual(nerve.rule(self.state(p=0.4, u=1.3)), "alert", "recent readings unusual together")

    def test_untrained_nerve_decides_by_the_rule(self):
        untrained = Atom(nerve.spec(ATOMS))
        self.assertFalse(untrained.trained)
        for model in (None, untrained):
            self.assertEqual(nerve.decide(model, self.state(p=2.7)), ("alert", 1.0, "rule"))
            self.assertEqual(nerve.decide(model, self.state(p=0.3)), ("ok", 1.0, "rule"))

    def test_training_history_relabels_answers_and_weights_them(self):
        def row(i, action, verdict=None, source="rule"):
            return {"id": i, "ts": 1000.0 + i, "state": self.state(p=0.1 * i), "action": action,
                    "source": source, "verdict": verdict}

        labelled = [row(1, "ok"), row(2, "alert", "dismiss"), row(3, "alert", "approve"),
                    row(4, "alert"), row(5, "ok", source="inject"), row(6, "alert", "dismiss", source="inject"),
                    row(7, "retrain:pulse:7d"), row(8, "spawn:gpu")]
        rows = nerve.training_history(labelled)
        acts = [(r["ts"], r["values"]["act"]) for r in rows]
        w = nerve.ANSWER_WEIGHT
        # `ok` is no row: the model only ever chooses between alert and suppress.
        self.assertEqual(acts, [(1002.0, "suppress")] * w + [(1003.0, "alert")] * w +
                         [(1004.0, "alert")] + [(1006.0, "suppress")] * w)
        self.assertEqual(rows[0]["values"], dict(self.state(p=0.2), act="suppress"))
        self.assertFalse(any(r["synthetic"] for r in rows))
        # A repeat merged into a dismissed alert is a `suppress` too, counted once: the owner
        # answered the alert, not each of its repeats.
        repeat = dict(row(9, "alert", "dismiss"), repeat_of=2)
        self.assertEqual([r["values"]["act"] for r in nerve.training_history([repeat])], ["suppress"])

    def test_decisions_stored_before_u_or_a_new_atom_still_train(self):
        old_state = {"P": 1.5, "R": None, "D": 0.2, "H": 14.0, "W": 2}   # no U, no GPU: an older release
        labelled = [{"id": i, "ts": 1000.0 + i, "state": dict(old_state, P=0.1 * i), "action": "alert",
                     "source": "rule", "verdict": "dismiss" if i % 5 == 0 else None} for i in range(30)]
        with tempfile.TemporaryDirectory() as tmp:
            trained = nerve.train(ATOMS + ["gpu"], labelled, Path(tmp) / "nerve.json", steps=5)
        self.assertTrue(trained.trained)
        self.assertIn("U", trained.language.fields)

    def test_ready_needs_enough_decisions_and_answers(self):
        m, a = nerve.MIN_DECISIONS, nerve.MIN_ANSWERS
        self.assertEqual((m, a), (30, 3))
        self.assertFalse(nerve.ready(m - 1, a))
        self.assertFalse(nerve.ready(m, a - 1))
        self.assertTrue(nerve.ready(m, a))
        self.assertTrue(nerve.ready(m + 10, m))
        self.assertFalse(nerve.ready(0, 0))


# --------------------------------------------------------------------------------------
# 3 + 4. The loop learns: a pattern the user keeps dismissing is suppressed


def weekday(week, day, hour, minute=0):
    """Local time of (week, day 0 = Monday) after FIRST_MONDAY."""
    return local(FIRST_MONDAY + datetime.timedelta(days=7 * week + day), hour, minute)


def teaching_schedule():
    """Five weeks of cycles: (ts, kind, values), oldest first, 28 decisions in all.

    Normal readings Mon/Tue/Thu/Fri at 14:00; on Wednesdays an anomaly at 13:00 (weeks
    0–2: approved, approved, unanswered) and the harmless pattern at 14:00 (every week,
    dismissed). Cycles are hours apart, so each reading is scored on its own (no context).
    """
    events, n = [], 0
    for week in range(5):
        for day in range(5):
            if day == 2:
                if week < 3:
                    events.append((weekday(week, 2, 13), ("approve", "approve", None)[week], ANOMALIES[week]))
                events.append((weekday(week, 2, 14), "dismiss", HARMLESS))
            else:
                events.append((weekday(week, day, 14), "normal", NORMALS[n % len(NORMALS)]))
                n += 1
    return events



class LearningCase(HomeCase):
    """Drives the teaching schedule through a Daemon; answers come from `answer(alert_id, verdict)`."""

    def teach(self, d, store, answer):
        harmless_alerts, harmless_states = [], []
        for ts, kind, values in teaching_schedule():
            result = self.cycle(d, ts, values)
            decision = result.decision
            if kind == "normal":
                self.assertEqual((decision["action"], decision["source"]), ("ok", "inject"))
                self.assertIsNone(result.alert)
                continue
            # Before Nerve is trained, the rule alerts on anything over its threshold.
            self.assertEqual((decision["action"], decision["source"]), ("alert", "inject"))
            self.assertIsNotNone(result.alert, "no alert for %r" % (values,))
            self.assertIsNone(result.alert["merged_into"], "each repeat must be its own alert")
            if kind == "dismiss":
                harmless_alerts.append(result.alert["id"])
                harmless_states.append(decision["state"])
            if kind in ("approve", "dismiss"):
                answer(result.alert["id"], kind)
        self.assertEqual(len(set(harmless_alerts)), 5)
        self.assertTrue(all(s == harmless_states[0] for s in harmless_states), "the harmless state varied")
        self.assertEqual(len(store.decisions()), 28)
        self.assertFalse(d.settings.weights_path("nerve").exists(), "Nerve trained too early")
        return harmless_alerts, harmless_states

    def finish_and_check(self, d, store, harmless_states):
        """Two more normal cycles (the second makes 30 decisions: Nerve retrains), then the
        harmless pattern (suppressed by the model) and BIG (still alerted by the model)."""
        nerve_path = d.settings.weights_path("nerve")
        result = self.cycle(d, weekday(5, 2, 10), NORMALS[0])
        self.assertEqual(len(store.labelled_decisions()), nerve.MIN_DECISIONS - 1)
        self.assertNotIn("retrain:nerve", result.meta)
        self.assertFalse(nerve_path.exists(), "Nerve trained before it had MIN_DECISIONS decisions")

        result = self.cycle(d, weekday(5, 2, 11), NORMALS[1])
        self.assertEqual(len(store.labelled_decisions()), nerve.MIN_DECISIONS)
        self.assertEqual(result.meta, ["retrain:nerve"])
        self.assertTrue(nerve_path.exists())
        self.assertEqual(store.get_kv(NERVE_TRAINED_KEY), weekday(5, 2, 11))

        alerts_before = len(store.alerts())
        result = self.cycle(d, weekday(5, 2, 14), HARMLESS)
        decision = result.decision
        self.assertEqual(decision["state"], harmless_states[0], "not the same situation as before")
        # Like what was dismissed, and nothing as mild approved: quiet by the owner's answers
        # (the rule; `inject` for a typed-in reading) — and the model has learned it too.
        self.assertEqual((decision["action"], decision["source"]), ("suppress", "inject"),
                         "the dismissed pattern was not learned: %r" % (decision,))
        action, probability, source = nerve.decide(d.load_nerve(), decision["state"])
        self.assertEqual((action, source), ("suppress", "model"))
        self.assertGreaterEqual(probability, nerve.SUPPRESS_CONFIDENCE)
        self.assertIsNone(result.alert)
        self.assertEqual(len(store.alerts()), alerts_before)
        self.assertEqual(store.decisions()[-1]["action"], "suppress")

        result = self.cycle(d, weekday(5, 2, 14, 30), BIG)
        decision = result.decision
        self.assertGreaterEqual(decision["state"]["P"], 2.5, "BIG should be far over the threshold")
        self.assertEqual((decision["action"], decision["source"]), ("alert", "model"),
                         "a different anomaly must still alert: %r" % (decision,))
        self.assertIsNotNone(result.alert)
        self.assertIsNone(result.alert["merged_into"])
        self.assertEqual(len(store.alerts()), alerts_before + 1)
        self.assertEqual(result.meta, [], "Nerve retrained with no new answers")
        return result


class LoopLearnsTest(LearningCase):
    def test_the_loop_visibly_learns_through_the_daemon(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        d = self.daemon(settings, store)
        # The patterns sit where the test needs them relative to the model's threshold.
        atom = verbs.load_atom(verbs.atom_module("pulse"), settings)
        at = local(FIRST_MONDAY, 14)   # the loop's readings come on weekday afternoons

        def ratio(values):
            return atom.score(values, ts=at).ratio
        self.assertTrue(1.0 < ratio(HARMLESS) < 2.5, ratio(HARMLESS))
        self.assertTrue(all(ratio(v) < 1.0 for v in NORMALS))
        self.assertTrue(all(ratio(v) >= 2.5 for v in ANOMALIES + [BIG]), [ratio(v) for v in ANOMALIES + [BIG]])

        answered = []

        def answer(alert_id, verdict):
            self.assertFalse(store.add_feedback(alert_id, verdict, ts=self.now + 60))
            answered.append((alert_id, verdict))

        harmless_alerts, states = self.teach(d, store, answer)
        self.assertEqual([v for _, v in answered], ["approve", "dismiss", "approve"] + ["dismiss"] * 4)
        self.assertEqual(sorted(a["state"] for a in store.alerts() if a["id"] in harmless_alerts),
                         ["dismissed"] * 5)
        unanswered = [a for a in store.alerts() if a["feedback"] is None]
        self.assertEqual(len(unanswered), 1, "the third anomaly was left unanswered")
        verdicts = [row["verdict"] for row in store.labelled_decisions() if row["verdict"]]
        self.assertEqual(sorted(verdicts), ["approve"] * 2 + ["dismiss"] * 5)
        self.finish_and_check(d, store, states)


class NerveWaitsTest(HomeCase):
    def test_ready_but_too_few_flagged_decisions_waits_without_an_error(self):
        settings = self.settings()
        store = self.store()
        d = self.daemon(settings, store)
        for i in range(nerve.MIN_DECISIONS - nerve.MIN_ANSWERS):
            store.add_decision({"P": 0.1}, "ok", ts=1000 + i)
        for i in range(nerve.MIN_ANSWERS):   # three answers weigh 15 rows: fewer than training needs
            alert = store.add_alert("pulse", "m", decision_id=store.add_decision({"P": 2.0}, "alert", ts=2000 + i))
            store.add_feedback(alert, "dismiss", ts=2100 + i)
        now = 100_000.0
        result = CycleResult(ts=now)
        d.maybe_retrain_nerve(now, result)
        self.assertEqual((result.meta, result.errors), ([], []))
        self.assertFalse(settings.weights_path("nerve").exists())
        self.assertEqual(sum("Nerve waits" in line for line in self.log.lines), 1)
        d.maybe_retrain_nerve(now + 60, result)   # and does not try again at every tick
        self.assertEqual(sum("Nerve waits" in line for line in self.log.lines), 1)


class TelegramCase(HomeCase):
    def setUp(self):
        super().setUp()
        self.fake = FakeTelegram(token=TOKEN, chat_id=CHAT, max_wait=0.1)
        self.fake.__enter__()
        self.addCleanup(self.fake.__exit__, None, None, None)
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.bot = TelegramBot(TOKEN, CHAT, api=self.fake.url, timeout=5, opener=no_proxy)

    def message_of(self, alert_id):
        """The fake's message_id of the message whose buttons answer alert_id."""
        ids = [mid for mid, m in self.fake.messages.items()
               if m["reply_markup"] and "fb:%d:dismiss" % alert_id in json.dumps(m["reply_markup"])]
        self.assertEqual(len(ids), 1, "alert %d is in messages %r" % (alert_id, ids))
        return ids[0]


class TelegramLoopTest(TelegramCase, LearningCase):
    def test_dismissed_in_telegram_then_suppressed_without_a_message(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        d = self.daemon(settings, store, bot=self.bot)
        pressed = []

        def answer(alert_id, verdict):
            # The alert went out in the cycle that raised it, with Approve / Dismiss buttons.
            sent = self.fake.sent()[-1]
            self.assertEqual(sent["text"], store.alert(alert_id)["message"])
            self.assertEqual(sent["chat_id"], CHAT)
            buttons = sent["reply_markup"]["inline_keyboard"][0]
            self.assertEqual([(b["text"], b["callback_data"]) for b in buttons],
                             [("Approve", "fb:%d:approve" % alert_id), ("Dismiss", "fb:%d:dismiss" % alert_id)])
            self.assertEqual(store.outbox_pending(), 0)
            message_id = self.message_of(alert_id)
            self.fake.press("fb:%d:%s" % (alert_id, verdict), message_id=message_id)
            self.assertIsNone(store.alert(alert_id)["feedback"], "stored before any poll")
            pressed.append((alert_id, verdict, message_id))

        harmless_alerts, states = self.teach(d, store, answer)
        # Each press was read by the next cycle's poll: feedback stored, press answered,
        # the message edited to show the answer and its buttons gone.
        self.assertEqual(len(pressed), 7)
        self.assertEqual(len(self.fake.sent()), 8)      # 3 anomalies + 5 harmless, each once
        self.assertEqual(len(self.fake.calls_to("answerCallbackQuery", ok=True)), 7)
        for alert_id, verdict, message_id in pressed:
            self.assertEqual(store.alert(alert_id)["feedback"]["verdict"], verdict)
            past = {"approve": "approved", "dismiss": "dismissed"}[verdict]
            self.assertEqual(store.alert(alert_id)["state"], past)
            self.assertTrue(self.fake.messages[message_id]["text"].endswith("Answered: %s." % past))
            self.assertIsNone(self.fake.messages[message_id]["reply_markup"], "buttons left after the answer")

        sent_before = len(self.fake.sent())
        result = self.finish_and_check(d, store, states)
        # The suppressed pattern sent nothing; BIG's alert went out, once.
        self.assertEqual(len(self.fake.sent()), sent_before + 1)
        self.assertEqual(self.fake.sent()[-1]["text"], result.alert["message"])
        self.assertEqual(store.outbox_pending(), 0)


# --------------------------------------------------------------------------------------
# 5. A send that fails twice arrives exactly once


class RetryTest(TelegramCase):
    def test_a_send_that_fails_twice_arrives_exactly_once(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        d = self.daemon(settings, store, bot=self.bot)
        self.fake.fail_next("sendMessage", 2, status=500)
        t0 = weekday(0, 0, 14)

        def send_calls():
            return self.fake.calls_to("sendMessage")

        result = self.cycle(d, t0, ANOMALIES[0])
        alert_id = result.alert["id"]
        self.assertEqual(len(send_calls()), 1)
        self.assertEqual(self.fake.sent(), [])
        [row] = store.outbox_due("telegram", t0 + 10 ** 6)
        outbox_id = row["id"]
        self.assertEqual(store.outbox_row(outbox_id)["next_try"], t0 + 30)

        # (Pulse is not due again within these 250 s, so nothing new is read or alerted.)
        for offset, calls, sent in ((10, 1, 0), (31, 2, 0), (60, 2, 0), (92, 3, 1), (150, 3, 1), (250, 3, 1)):
            result = self.cycle(d, t0 + offset)
            self.assertIsNone(result.decision)
            self.assertEqual((len(send_calls()), len(self.fake.sent())), (calls, sent), "at +%ds" % offset)
            if offset == 31:
                self.assertEqual(store.outbox_row(outbox_id)["next_try"], t0 + 31 + 60)
        row = store.outbox_row(outbox_id)
        self.assertEqual(row["attempts"], 2)
        self.assertEqual(row["sent_ts"], t0 + 92)
        self.assertIn("500", row["last_error"])
        [message] = self.fake.sent()
        self.assertEqual(message["text"], store.alert(alert_id)["message"])
        self.assertIn("fb:%d:dismiss" % alert_id, json.dumps(message["reply_markup"]))
        self.assertEqual(store.outbox_pending(), 0)
        self.assertEqual(len(store.alerts()), 1)


# --------------------------------------------------------------------------------------
# 6. SIGKILL mid-cycle: nothing stored is lost, nothing queued is sent twice


class DaemonProcessTest(DaemonChildren, HomeCase):
    TEXT = "KIRI test alert, queued before the daemon started"

    def child_env(self, fake):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIRI_") and "proxy" not in k.lower()}
        env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), NO_PROXY="127.0.0.1,localhost",
                   KIRI_HOME=str(self.home), KIRI_TICK="0.2", KIRI_PULSE_INTERVAL="0.3",
                   KIRI_TELEGRAM_TOKEN=TOKEN, KIRI_TELEGRAM_CHAT_ID=str(CHAT), KIRI_TELEGRAM_API=fake.url)
        return env

    def start(self, env, name):
        out = open(str(self.home.parent / (name + ".out")), "w")
        self.addCleanup(out.close)
        proc = subprocess.Popen([sys.executable, "-m", "kiri", "daemon"], cwd=str(REPO), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(self.reap, proc)
        proc.output_path = self.home.parent / (name + ".out")
        return proc

    def test_sigkill_mid_cycle_loses_no_observation_and_sends_once(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        alert_id = store.add_alert("pulse", self.TEXT, situation="queued-before-start")
        outbox_id = store.enqueue("telegram", {"text": self.TEXT, "alert_id": alert_id}, "alert:%d" % alert_id,
                                  alert_id=alert_id)

        def observation_ids():
            return {o["id"] for atom in store.atoms() for o in store.observations(atom)}

        def pulse_count():
            return total(store.count_observations("pulse"))

        with FakeTelegram(token=TOKEN, chat_id=CHAT, max_wait=0.1) as fake:
            def ours():
                return [m for m in fake.sent() if m["text"] == self.TEXT]

            env = self.child_env(fake)
            first = self.start(env, "first")
            self.wait_for(first, lambda: pulse_count() >= 3 and store.outbox_row(outbox_id)["sent_ts"] is not None,
                          "three readings and the queued alert delivered")
            # Kill it right after its next reading is stored: the cycle is still to score, decide, act.
            n = pulse_count()
            self.wait_for(first, lambda: pulse_count() > n, "another reading", poll=0.002)
            first.send_signal(signal.SIGKILL)
            self.assertEqual(first.wait(timeout=30), -signal.SIGKILL)
            before = observation_ids()
            self.assertGreaterEqual(len(before), 4)
            self.assertEqual(len(ours()), 1)

            second = self.start(env, "second")
            self.wait_for(second, lambda: pulse_count() >= n + 3, "readings after the restart")
            second.send_signal(signal.SIGTERM)
            self.assertEqual(second.wait(timeout=30), 0, second.output_path.read_text()[-3000:])

            after = observation_ids()
            self.assertTrue(before <= after, "observations lost: %r" % sorted(before - after))
            self.assertGreater(len(after), len(before))
            self.assertEqual(len(ours()), 1, "the queued alert was sent %d times" % len(ours()))
            self.assertIn("fb:%d:dismiss" % alert_id, json.dumps(ours()[0]["reply_markup"]))
        row = store.outbox_row(outbox_id)
        self.assertIsNotNone(row["sent_ts"])
        self.assertEqual(row["attempts"], 0)
        log = settings.log_path.read_text()
        self.assertEqual(log.count("daemon started"), 2)
        self.assertIn("daemon stopped", log)
        self.assertNotIn(TOKEN, log)
        self.assertNotIn("Traceback", second.output_path.read_text())


# --------------------------------------------------------------------------------------
# 7. Meta-actions and declared atoms


def command(code):
    """A command line running `code` with this Python, quoted for the config file."""
    return "%s -c %s" % (shlex.quote(sys.executable), shlex.quote(code))


class MetaTest(HomeCase):
    def write_config(self, text):
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.ini").write_text(text)

    def test_retrain_uses_the_last_days_only_and_swaps_weights_atomically(self):
        settings = self.settings()
        store = self.store()
        real = verbs.atom_module("pulse")
        # Pulse with fewer training steps, to keep the test short.
        quick = SimpleNamespace(SPEC=dataclasses.replace(real.SPEC, steps=20), read=real.read,
                                synthetic=real.synthetic)
        modules = dict(verbs.all_atoms(settings), pulse=quick)
        # Ten days of real readings, hourly, half an hour off the hour: none sits on the 7-day boundary.
        # A fixed time, so the readings' hours (Pulse reads them) are the same on every run.
        now = local(FIRST_MONDAY, 14)
        rng, end = random.Random(3), now - 1800
        store.add_observations([{"atom": "pulse", "ts": end - (240 - i) * 3600, "source": "linux",
                                 "values": real.synthetic(rng, end - (240 - i) * 3600)} for i in range(240)])
        # The current model barely trained, so the retrained one is better and is swapped in
        # (the gate that keeps a worse one aside has tests of its own, in test_lifecycle).
        verbs.train(quick, settings, store, steps=2, now=now)
        path = settings.weights_path("pulse")
        old = path.read_bytes()
        self.assertEqual(json.loads(old)["trained_on"]["observations"], 240)

        window = [o for o in store.observations("pulse") if o["ts"] >= now - 7 * 86400]
        self.assertEqual(len(window), 167)
        outcome = run_meta("retrain:pulse:7d", settings, store, modules, now=now)
        self.assertRegex(outcome, r"^pulse: retrained on its last 7 days \(mean surprise [0-9.]+, \d+ false alarms on the newest \d+ real")
        new = json.loads(path.read_text())
        self.assertEqual(new["trained_on"]["days"], 7)
        self.assertEqual(new["trained_on"]["observations"], len(window))
        self.assertEqual(new["trained_on"]["from_ts"], window[0]["ts"])
        self.assertEqual(previous_path(path).read_bytes(), old, ".prev.json must hold the old weights")
        self.assertNotEqual(new["params"], json.loads(old)["params"])
        self.assertEqual(sorted(p.name for p in path.parent.iterdir()), ["pulse.json", "pulse.prev.json"])
        self.assertTrue(verbs.load_atom(real, settings).trained)

        # Through the daemon: the meta-action is run and recorded as a decision.
        d = self.daemon(settings, store)
        d.modules = modules
        result = SimpleNamespace(meta=[])
        current = path.read_bytes()
        d.meta("retrain:pulse:7d", now, result)   # the same window: the same model, swapped in
        self.assertEqual(result.meta, ["retrain:pulse:7d"])
        self.assertEqual(store.decisions()[-1]["action"], "retrain:pulse:7d")
        self.assertEqual(previous_path(path).read_bytes(), current)

        for bad in ("retrain:pulse:7", "retrain:nope:7d", "spawn:nope", "explode"):
            with self.assertRaises(KiriError, msg=bad):
                run_meta(bad, settings, store, modules)

    def test_a_declared_atom_is_collected_then_spawned_and_scored(self):
        self.write_config("[atom:gpu]\nschema = T=0:100:10 U=0:100:5\n"
                          "command = %s\ninterval = 1\nsteps = 20\n"
                          % command('import json; print(json.dumps({"T": 61, "U": 37}))'))
        settings = self.settings(KIRI_SPAWN_AFTER="25")
        self.install_pulse(settings)
        store = self.store()
        d = self.daemon(settings, store)
        self.assertEqual(list(d.modules), ATOMS + ["gpu"])
        t0 = weekday(0, 0, 14)
        for i in range(25):
            result = self.cycle(d, t0 + 2 * i, NORMALS[i % len(NORMALS)])
            self.assertEqual(result.absent.get("gpu"), "no weights yet", "cycle %d" % i)
            self.assertNotIn("gpu", [s.atom for s in result.scores])
            self.assertIsNone(result.decision["state"]["GPU"], "an untrained atom must be absent in Nerve's state")
            self.assertEqual(result.meta, ["spawn:gpu"] if i == 24 else [], "cycle %d" % i)
        self.assertEqual(total(store.count_observations("gpu")), 25)
        latest = store.latest_observation("gpu")
        self.assertEqual((latest["values"], latest["source"]), ({"T": 61, "U": 37}, "command"))
        self.assertTrue(settings.weights_path("gpu").exists())
        self.assertEqual(store.decisions()[-1]["action"], "spawn:gpu")

        result = self.cycle(d, t0 + 50, NORMALS[0])
        self.assertNotIn("gpu", result.absent)
        [gpu] = [s for s in result.scores if s.atom == "gpu"]
        self.assertEqual([t["token"] for t in gpu.tokens], ["T6", "U1"])
        self.assertIn("GPU", result.decision["state"])
        self.assertAlmostEqual(result.decision["state"]["GPU"], gpu.score / gpu.threshold)
        self.assertEqual(store.latest_scores("gpu", limit=1)[0]["score"], gpu.score)
        self.assertIn("GPU", nerve.spec(list(d.modules)).language().fields)

    def test_a_declared_atom_that_fails_or_prints_garbage_is_absent_with_its_reason(self):
        schema = "schema = T=0:100:10 U=0:100:5\n"
        self.write_config(
            "[atom:bad]\n" + schema + "command = %s\n" % command("import sys; sys.stderr.write('no gpu here'); "
                                                                "sys.exit(3)") +
            "[atom:junk]\n" + schema + "command = %s\n" % command("print('hello')") +
            "[atom:half]\n" + schema + "command = %s\n" % command("print('{\"T\": 5}')") +
            "[atom:text]\n" + schema + "command = %s\n" % command("print('{\"T\": 5, \"U\": \"hot\"}')") +
            "[atom:gone]\n" + schema + "command = /nonexistent/kiri-gpu-stats\n")
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        d = self.daemon(settings, store)
        t0 = weekday(0, 0, 14)
        for i in range(2):
            result = self.cycle(d, t0 + 400 * i, NORMALS[i])  # the helper checks: no errors
            absent = result.absent
            self.assertTrue(absent["bad"].startswith("unavailable: bad: "), absent["bad"])
            self.assertIn("failed (exit 3): no gpu here", absent["bad"])
            self.assertIn("did not print one JSON object: 'hello'", absent["junk"])
            self.assertIn("has no field 'U'", absent["half"])
            self.assertIn("field U must be a finite number, got 'hot'", absent["text"])
            self.assertIn("command not found: /nonexistent/kiri-gpu-stats", absent["gone"])
            # The cycle went on: Pulse was scored and Nerve decided, with the others absent.
            self.assertEqual([s.atom for s in result.scores], ["pulse"])
            state = result.decision["state"]
            self.assertEqual([state[p] for p in ("BAD", "JUNK", "HALF", "TEXT", "GONE")], [None] * 5)
            self.assertEqual(result.decision["action"], "ok")
        self.assertEqual(total(store.count_observations("bad")), 0)
        self.assertIn("no gpu here", store.get_kv("atom.bad.source"))
        # Logged once, when the reason appeared, not every cycle.
        self.assertEqual(sum("no gpu here" in line for line in self.log.lines), 1)


if __name__ == "__main__":
    unittest.main()


class UnusualTogetherTest(HomeCase):
    """Readings each under the threshold, but together more surprising than the atom usually is."""

    def run_with_recent(self, recent_ratio, history="100", first_ts=None):
        """111 readings from 04:45 on, then a cycle at 14:00. With 100 readings of history
        (the default 2000 would hold nine hours of one day) the history is full."""
        settings = self.settings(KIRI_LIKELIHOOD_HISTORY=history)
        self.install_pulse(settings)
        store = self.store()
        threshold = Atom.load(verbs.atom_module("pulse").SPEC, settings.weights_path("pulse")).threshold
        start = local(FIRST_MONDAY, 4)   # the last of them at 13:10; the cycle runs at 14:00
        for i in range(111):   # 100 usual collected readings, then 11 at `recent_ratio` of the threshold
            ratio = (0.25 + 0.1 * (i % 3) / 2) if i < 100 else recent_ratio
            ts = first_ts if i == 0 and first_ts is not None else start + 300 * i
            obs = store.add_observation("pulse", NORMALS[i % 3], ts=ts, source="linux")
            store.add_score("pulse", ratio * threshold, threshold=threshold, observation_id=obs, ts=ts)
        return self.cycle(self.daemon(settings, store), local(FIRST_MONDAY, 14), pulse=NORMALS[0]), store

    def test_a_run_of_elevated_readings_alerts_with_its_likelihood(self):
        result, store = self.run_with_recent(0.9)
        pulse = result.scores[0]
        self.assertLess(pulse.score, pulse.threshold, "no single reading is over the threshold")
        self.assertEqual(pulse.verdict, "unusual")
        self.assertGreater(pulse.likelihood, pulse.unusual_at)
        self.assertGreater(result.decision["state"]["U"], 1.0)
        self.assertEqual(result.decision["action"], "alert")
        self.assertIn("more surprising than usual, together", result.alert["message"])
        self.assertEqual(store.latest_scores("pulse", limit=1)[0]["likelihood"], pulse.likelihood)
        self.assertEqual(store.latest_scores("pulse", limit=1)[0]["verdict"], "unusual")
        status = format_status(collect_status(self.settings(), store, now=self.now), now=self.now)
        self.assertIn(f"(unusual, likelihood {pulse.likelihood:.2f}, 0 s ago)", status)

    def test_no_likelihood_until_there_is_history(self):
        settings = self.settings()
        self.install_pulse(settings)
        result = self.cycle(self.daemon(settings, self.store()), local(FIRST_MONDAY, 14), pulse=NORMALS[0])
        self.assertIsNone(result.scores[0].likelihood, "41 readings are too few to know what is usual")
        self.assertIsNone(result.decision["state"]["U"])

    def test_no_likelihood_until_its_history_is_full_or_spans_a_week(self):
        # Nine hours of a Monday are not what is usual for this atom: a Monday morning after
        # a history of one weekend would look "unusual together" (the simulated month's day 14).
        result, _ = self.run_with_recent(0.9, history="2000")
        self.assertIsNone(result.scores[0].likelihood)
        self.assertEqual(result.decision["action"], "ok")

    def test_a_history_that_spans_a_week_speaks_before_it_is_full(self):
        result, _ = self.run_with_recent(0.9, history="2000", first_ts=local(FIRST_MONDAY, 4) - 7 * 86400)
        self.assertEqual(result.scores[0].verdict, "unusual")

    def test_the_usual_level_stays_quiet(self):
        result, _ = self.run_with_recent(0.3)
        pulse = result.scores[0]
        self.assertEqual(pulse.verdict, "normal")
        self.assertLess(pulse.likelihood, pulse.unusual_at)
        self.assertEqual(result.decision["action"], "ok")
        self.assertIsNone(result.alert)


def scored(atom, **surprises):
    """A reading over its threshold with these token surprises (each where its field's bucket 4
    was expected)."""
    return Score(atom, 2.0, 1.0, [{"token": t, "field": t[0], "expected": t[0] + "4", "surprise": v}
                                  for t, v in surprises.items()])


class SituationTest(unittest.TestCase):
    def test_a_situation_names_every_surprising_token_of_every_flagged_atom(self):
        pulse = scored("pulse", L4=10.5, S4=9.7, M9=8.0, C9=7.5, N1=0.4)
        self.assertEqual(situation_of([scored("drift", A8=3.0), pulse]), "drift:A>,pulse:C>+L!+M>+S!")
        self.assertEqual(situation_of([scored("pulse", C0=4.0, D9=5.0)]), "pulse:C<+D>")
        self.assertEqual(situation_of([scored("pulse", C5=0.3)]), "pulse")
        self.assertEqual(situation_of([]), "unknown")

    def test_one_incident_read_twice_is_one_situation(self):
        # Seen on CI: the same injected reading, read after a different one, swapped the
        # third and fourth most surprising tokens; an exact top-3 key made a second alert.
        first = situation_of([scored("pulse", L4=10.52, S4=9.70, M9=7.99, C9=7.50)])
        again = situation_of([scored("pulse", L4=10.73, S4=9.41, C9=8.12, M9=7.82)])
        self.assertTrue(same_situation(first, again))
        self.assertTrue(same_situation("pulse:C9+M9+S4", "pulse:C9+M9+S4+L4"), "a token crossing the line")
        self.assertTrue(same_situation("pulse", "pulse"))
        self.assertTrue(same_situation("unknown", "unknown"))

    def test_a_field_moving_on_the_same_way_is_the_same_situation(self):
        # A disk filling over a day: D6, then D7, then D9 — one thing happening.
        self.assertEqual(situation_of([scored("pulse", D6=5.0)]), situation_of([scored("pulse", D9=9.0)]))

    def test_different_fields_directions_or_atoms_are_a_new_situation(self):
        for a, b in [("pulse:C>+M>+S!+L!", "pulse:C>+D>+L!+M<+N<+S<"),   # memory fell, disk filled
                     ("pulse:C>+M>", "pulse:C<+M>"),                      # CPU at the other end
                     ("pulse", "pulse:C9"),                             # a spike after a slow climb
                     ("pulse:C>", "pulse:C>,rhythm:I<"),
                     ("pulse:C>", "drift:C>")]:
            with self.subTest(a=a, b=b):
                self.assertFalse(same_situation(a, b))
                if a != "pulse":
                    self.assertFalse(same_situation(b, a))

    def test_a_situation_is_the_fields_that_carry_the_surprise(self):
        # Seen in the simulated month: memory leaking all morning made CPU read a bucket
        # under what the model expected at ten and a bucket over at half past eleven (2 nats
        # against the memory's 20), and the one leak made two alerts.
        at_ten = situation_of([scored("pulse", M8=19.3, C3=2.2)])
        at_half_past_eleven = situation_of([scored("pulse", M8=22.3, C6=2.3)])
        self.assertEqual((at_ten, at_half_past_eleven), ("pulse:M>", "pulse:M>"))
        self.assertEqual(situation_of([scored("pulse", M8=19.3, C3=9.7)]), "pulse:C<+M>", "half as surprising counts")

    def test_an_atom_flagged_by_its_likelihood_alone_is_the_atom(self):
        # Seen in the simulated month: 25 minutes after a CPU runaway, the likelihood's window
        # still held it, and a reading under its threshold with memory a little high (2.7
        # nats) was "pulse:M>", a new situation, a second alert.
        after = Score("pulse", 0.59, 1.35, scored("pulse", M5=2.7).tokens, likelihood=0.34, unusual_at=0.3)
        self.assertEqual(situation_of([after]), "pulse")
        self.assertTrue(same_situation("pulse:C>+L>", situation_of([after])))

    def test_the_likelihood_still_flagging_an_incident_is_the_same_situation(self):
        # Seen on a real machine: 30 s after a CPU + memory stress ended, the likelihood's
        # window still held it, and 'pulse' (no surprising token) made a second alert.
        self.assertTrue(same_situation("pulse:C9+M9", "pulse"))
        self.assertFalse(same_situation("pulse:C9+M9", "pulse,rhythm"), "another atom joined in")


class DismissedTest(unittest.TestCase):
    """Nerve may keep quiet only about what is like an alert the owner dismissed."""

    def dismissed(self, *scores):
        return {"situation": situation_of(list(scores)), "details": {"scores": [x.to_json() for x in scores]}}

    def test_the_same_field_as_far_off_or_less_is_like_it(self):
        backup = self.dismissed(scored("pulse", C7=5.0))     # C7 where C4 was expected
        self.assertTrue(like_dismissed([backup], [scored("pulse", C7=4.0)]))
        self.assertTrue(like_dismissed([backup], [scored("pulse", C6=3.0)]))

    def test_the_same_field_further_off_or_something_more_is_not(self):
        backup = self.dismissed(scored("pulse", C7=5.0))
        self.assertFalse(like_dismissed([backup], [scored("pulse", C9=9.0)]), "a runaway is not the backup")
        self.assertFalse(like_dismissed([backup], [scored("pulse", C7=5.0, L9=6.0)]), "something more came")
        self.assertFalse(like_dismissed([backup], [scored("pulse", C1=5.0)]), "the other way")
        self.assertFalse(like_dismissed([backup], [scored("rhythm", A9=5.0)]))


    def test_each_field_may_reach_as_far_as_any_dismissed_alert_of_the_situation_went(self):
        long_block = self.dismissed(scored("rhythm", F7=5.0, A3=3.0))    # F three buckets long, A one short
        short_break = self.dismissed(scored("rhythm", F5=3.0, A1=4.0))   # F one long, A three short
        both = [scored("rhythm", F7=5.0, A1=4.0)]
        self.assertFalse(like_dismissed([long_block], both))
        self.assertFalse(like_dismissed([short_break], both))
        self.assertTrue(like_dismissed([long_block, short_break], both), "each field within what was dismissed")
        self.assertFalse(like_dismissed([long_block, short_break], [scored("rhythm", F9=6.0, A1=4.0)]),
                         "further than either went")
        other = self.dismissed(scored("rhythm", F9=9.0, I9=5.0))       # another situation reaches no further here
        self.assertFalse(like_dismissed([long_block, other], [scored("rhythm", F9=6.0, A3=3.0)]))
        self.assertFalse(like_dismissed([], both), "nothing dismissed")


class AnswersFirstTest(HomeCase):
    """Once Nerve decides, what is like an alert you dismissed is quiet, unless you approved
    one of its situation as mild: then your answers disagree and the model weighs them."""

    def answered(self, store, verdict, *scores):
        alert = store.add_alert("pulse", "m", situation=situation_of(list(scores)), ts=1000,
                                details={"scores": [x.to_json() for x in scores]})
        store.add_feedback(alert, verdict, ts=1100)

    def test_dismissed_and_approved_alerts_like_what_is_flagged(self):
        store = self.store()
        d = self.daemon(self.settings(), store)
        now = 100_000.0

        def answered_like(*scores):
            return d.answered_like(CycleResult(ts=now, recent=list(scores), sustained={"pulse": 2.0}), {"P": 2.0})
        self.answered(store, "dismiss", scored("pulse", M6=10.0))               # memory 2 buckets high
        self.assertEqual(answered_like(scored("pulse", M5=8.0)), (True, False))
        self.assertEqual(answered_like(scored("pulse", M9=30.0)), (False, False), "further than dismissed")
        self.answered(store, "approve", scored("pulse", M8=20.0))               # 4 high: an incident
        self.assertEqual(answered_like(scored("pulse", M5=8.0)), (True, False), "milder than the approved one")
        self.answered(store, "approve", scored("pulse", M5=9.0))                # 1 high, and it mattered
        self.assertEqual(answered_like(scored("pulse", M5=8.0)), (True, True))


class CoveringTest(unittest.TestCase):
    """A new situation is a repeat when every atom's part of it already has a running alert."""

    ACTIVE = [{"id": 2, "situation": "drift:A>+S>"}, {"id": 1, "situation": "pulse:L>"}]

    def ids(self, situation):
        return {atom: a and a["id"] for atom, a in covered_parts(self.ACTIVE, situation).items()}

    def test_parts_covered_by_different_alerts_are_a_repeat(self):
        self.assertEqual(self.ids("drift:A>+S>,pulse:L>"), {"drift": 2, "pulse": 1})
        self.assertEqual(self.ids("pulse"), {"pulse": 1}, "the likelihood's aftershock")

    def test_a_part_no_alert_covers_is_news(self):
        self.assertEqual(self.ids("pulse:L>,rhythm:F>"), {"pulse": 1, "rhythm": None})
        self.assertEqual(self.ids("pulse:C>+M>"), {"pulse": None})


class AtomJoinsAnIncidentTest(HomeCase):
    def test_an_atom_joining_a_running_incident_is_an_alert_about_itself_alone(self):
        settings = self.settings(KIRI_ALERT_COOLDOWN="3600")
        store = self.store()
        d = self.daemon(settings, store)
        now = local(FIRST_MONDAY, 14)
        storm = scored("pulse", M9=8.0, S9=7.0)
        first = store.add_alert("pulse", "the swap storm", situation=situation_of([storm]), ts=now - 300,
                                details={"scores": [storm.to_json()]}, sinks=["log"])
        result = CycleResult(ts=now, recent=[storm, scored("rhythm", F9=6.0)])
        state = {"P": 3.0, "R": 1.5, "D": None}
        decision = {"id": store.add_decision(state, "alert", 1.0, ts=now), "action": "alert", "state": state}
        alert = d.act(decision, now, result)
        self.assertIsNone(alert["merged_into"], "the rhythm part is news")
        self.assertEqual(store.alert(alert["id"])["situation"], "rhythm:F>", "about rhythm alone")
        self.assertNotIn("swap", alert["message"])
        self.assertEqual(store.alert(first)["last_ts"], now, "the storm's alert saw its repeat")
        again = d.act(dict(decision, id=store.add_decision(state, "alert", 1.0, ts=now + 300)), now + 300,
                      CycleResult(ts=now + 300, recent=result.recent))
        self.assertIn(again["merged_into"], (first, alert["id"]), "both parts have their alerts now")
        self.assertEqual(len(store.alerts()), 2)


class LeftoverTest(HomeCase):
    def test_a_reading_a_stop_left_unscored_is_scored_at_the_next_start(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        start = local(FIRST_MONDAY, 14)
        obs_id = store.add_observation("pulse", NORMALS[0], ts=start)   # stored, then the process died
        self.now = start + 60
        self.daemon(settings, store).cycle(inject={"rhythm": RHYTHM, "drift": DRIFT})
        self.assertEqual([r["observation_id"] for r in store.latest_scores("pulse")][-1:], [obs_id])
        self.assertTrue(any("a stop had left unscored" in line for line in self.log.lines), self.log.lines)

    def test_a_reading_scored_but_never_decided_on_is_decided_at_the_next_start(self):
        settings = self.settings()
        self.install_pulse(settings)
        store = self.store()
        start = local(FIRST_MONDAY, 14)
        obs_id = store.add_observation("pulse", BIG, ts=start)
        d = self.daemon(settings, store)
        self.now = start + 1
        d.score_reading("pulse", store.observation(obs_id))       # scored, then the process died
        self.assertEqual(store.decisions(), [])
        self.now = start + 60
        result = self.daemon(settings, store).cycle(inject={"rhythm": RHYTHM, "drift": DRIFT})
        self.assertGreater(result.decision["state"]["P"], 1.0, "Nerve decided on the pulse reading")


class CooldownTest(HomeCase):
    def pulse_daemon(self):
        """(daemon, store, a Monday 14:00) with a trained Pulse and an hour's cooldown."""
        settings = self.settings(KIRI_ALERT_COOLDOWN="3600")
        self.install_pulse(settings)
        store = self.store()
        return self.daemon(settings, store), store, local(FIRST_MONDAY, 14)

    def test_repeats_merge_inside_the_cooldown_and_alert_again_after_it(self):
        d, store, start = self.pulse_daemon()
        first = self.cycle(d, start, BIG).alert
        self.assertIsNone(first["merged_into"])
        again = self.cycle(d, start + 300, BIG).alert
        self.assertEqual(again["merged_into"], first["id"])
        other = self.cycle(d, start + 600, dict(C=2, M=20, D=95, S=0, L=0, N=0)).alert
        self.assertIsNone(other["merged_into"], "a different situation inside the cooldown")
        later = self.cycle(d, start + 3600 + 301, BIG).alert
        self.assertIsNone(later["merged_into"], "the cooldown is over")
        self.assertEqual(len(store.alerts()), 3)

    def test_an_incident_that_lasts_longer_than_the_cooldown_is_one_alert(self):
        d, store, start = self.pulse_daemon()
        alerts = [self.cycle(d, start + 300 * i, BIG).alert for i in range(30)]   # two and a half hours
        self.assertIsNone(alerts[0]["merged_into"])
        self.assertEqual({a["merged_into"] for a in alerts[1:]}, {alerts[0]["id"]})
        self.assertEqual(len(store.alerts()), 1)

    def test_a_dismissed_alert_stops_absorbing_repeats_after_its_cooldown(self):
        d, store, start = self.pulse_daemon()
        first = self.cycle(d, start, BIG).alert
        store.add_feedback(first["id"], "dismiss", ts=start + 60)
        inside = [self.cycle(d, start + 300 * i, BIG).alert for i in range(1, 12)]
        self.assertEqual({a["merged_into"] for a in inside}, {first["id"]}, "merged within its cooldown")
        after = self.cycle(d, start + 3600 + 300, BIG)
        self.assertNotEqual((after.alert or {}).get("merged_into"), first["id"],
                            "a dismissed situation that goes on is judged afresh after its cooldown")


    def test_your_answer_labels_every_repeat_for_nerve(self):
        d, store, start = self.pulse_daemon()
        first = self.cycle(d, start, BIG).alert
        self.cycle(d, start + 300, BIG)                 # a repeat before you answer
        store.add_feedback(first["id"], "dismiss", ts=start + 400)
        self.cycle(d, start + 600, BIG)                 # and one after
        alerting = [r for r in store.labelled_decisions() if r["action"] == "alert"]
        self.assertEqual([(r["repeat_of"], r["verdict"]) for r in alerting],
                         [(None, "dismiss"), (first["id"], "dismiss"), (first["id"], "dismiss")])
        acts = [r["values"]["act"] for r in nerve.training_history(alerting)]
        self.assertEqual(acts, ["suppress"] * (nerve.ANSWER_WEIGHT + 2),
                         "three times dismissed, not once dismissed and twice alerted")


class DaemonReadsWeightsOnlyWhenTheyChange(unittest.TestCase):
    def test_cached_atom_is_reloaded_after_a_new_save(self):
        from kiri import daemon as daemon_module
        from kiri.atoms import verbs
        from kiri.config import load_settings
        from kiri.store import open_store
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(home=tmp, env={})
            with open_store(tmp) as store:
                pulse = verbs.atom_module("pulse")
                verbs.add_synthetic(pulse, store, 40, end=1_790_000_000.0)
                d = daemon_module.Daemon(settings, store)
                self.assertFalse(d.atom("pulse").trained)
                verbs.train(pulse, settings, store, steps=2, warm_start=True)
                first = d.atom("pulse")
                self.assertTrue(first.trained)
                self.assertIs(d.atom("pulse"), first)        # unchanged file: no second parse
                verbs.train(pulse, settings, store, steps=3, warm_start=True)
                second = d.atom("pulse")
                self.assertIsNot(second, first)
                self.assertEqual(second.weights.step, 3)
