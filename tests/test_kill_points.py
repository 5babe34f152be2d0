"""A kill at any commit point of a cycle loses nothing, sends nothing twice (but the one case
below), leaves nothing stuck.

Each test kills a real `python -m kiri daemon --once` subprocess right after one commit
(kiri/faults.py: KIRI_FAULT names the point, or gives n for the n-th one the process
reaches), then runs `daemon --once` again on the same home without the fault, and checks
what the two left: every reading scored, every score decided on, the anomaly's alert stored
once and delivered once to each sink, the owner's answer recorded, no outbox row pending.

The cycle under test: a trained Pulse (300 synthetic readings, 60 steps: the template home
tests/helpers.py builds once) gets an injected anomaly, Nerve alerts, the alert goes to the
log and to a loopback fake Telegram (kiri/bench/fake_telegram.py), where the owner has
already pressed Approve; then the cycle's housekeeping, prune and heartbeat. Every commit
point of that cycle is killed in turn, in order, until a run with KIRI_FAULT=n survives
(23 points today, each test of them about a second). Two more cycles are killed at their
own points: a repeat merged into the open alert (alert_seen), and a declared atom learning
its first model (its weights saved, the spawn recorded). Nerve's own retrain commits the
same way (weights:nerve.json, kv:nerve.trained_at) but costs seconds of training per run.

Sent but not yet marked sent (the point `sent_unmarked:<sink>`) is the one place where
exactly-once needs the receiver's help, which neither the log nor Telegram's Bot API gives
(sendMessage has no idempotency key). KIRI resends there: delivery is at-least-once, and
that alert arrives twice. Marking a row "sending" before the send and not resending it
after a restart would lose the alert instead whenever the kill came during the send —
while the request hangs on a dead network, by far the longer window — and a monitor that
may stay silent about an incident is worse than one that may say it twice.
"""

import json
import re
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import unittest
from pathlib import Path

from kiri.bench.fake_telegram import FakeTelegram
from kiri.config import KEYS
from kiri.store import open_store
from tests.helpers import run_kiri, trained_pulse_home

TIMEOUT = 60
HIGH_VALUES = "C=95 M=90 D=40 S=80 L=18 N=1"
TOKEN = "424242:TEST-token-of-the-kill-tests"
CHAT_ID = 4242
FIRST_MESSAGE = 1000   # the fake's first message id
# Every setting's variable set to "" (= not given): only the temp home counts.
NEUTRAL_ENV = dict({"KIRI_" + key.upper(): "" for key in KEYS}, KIRI_CONFIG="", KIRI_FAULT="")
KILLED = re.compile(r"^kiri: fault: killed at (\S+) \(point (\d+)\)$", re.M)
# The points the alerting cycle must reach (the n-th point enumeration below finds them all).
MUST_REACH = {"observation:pulse", "score:pulse", "decision:alert", "alert", "sent_unmarked:log",
              "sent_unmarked:telegram", "outbox_sent", "feedback", "kv:telegram.offset", "kv:store.pruned_at",
              "kv:daemon.heartbeat", "kv:daemon.last_cycle"}


@unittest.skipUnless(hasattr(signal, "SIGKILL"), "needs SIGKILL (and flock for the daemon)")
class KillPoints(unittest.TestCase):
    def setUp(self):
        self.template = trained_pulse_home(300, 60, env=NEUTRAL_ENV, timeout=TIMEOUT)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.user = self.tmp / "user"   # HOME of every command
        self.user.mkdir()

    # --- helpers -------------------------------------------------------------------

    def new_home(self, name):
        home = self.tmp / name
        shutil.copytree(str(self.template), str(home))
        return home

    def kiri(self, home, fake, *args, fault="", env=None):
        env = dict(NEUTRAL_ENV, HOME=str(self.user), KIRI_FAULT=str(fault), KIRI_TELEGRAM_TOKEN=TOKEN,
                   KIRI_TELEGRAM_CHAT_ID=str(CHAT_ID), KIRI_TELEGRAM_API=fake.url, **(env or {}))
        return run_kiri(*args, home=home, env=env, timeout=TIMEOUT)

    def killed(self, home, fake, fault, *args, env=None):
        """`daemon --once args…` with KIRI_FAULT=fault: the point it died at, or None if it ran through."""
        proc = self.kiri(home, fake, "daemon", "--once", *args, fault=fault, env=env)
        if proc.returncode == 0:
            self.assertNotIn("fault", proc.stderr)
            return None
        self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stdout + proc.stderr)
        found = KILLED.findall(proc.stderr)
        self.assertEqual(len(found), 1, proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        return found[0][0]

    def restart(self, home, fake, env=None):
        proc = self.kiri(home, fake, "daemon", "--once", env=env)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        return proc

    def db(self, home):
        conn = sqlite3.connect(str(home / "kiri.db"))
        conn.row_factory = sqlite3.Row
        self.addCleanup(conn.close)
        return conn

    def assertNothingLost(self, home, where):
        """Every pulse reading scored, every score decided on, nothing pending in the outbox."""
        db = self.db(home)
        unscored = db.execute("SELECT id FROM observations o WHERE atom = 'pulse' AND synthetic = 0 AND NOT EXISTS"
                              " (SELECT 1 FROM scores s WHERE s.observation_id = o.id)").fetchall()
        self.assertEqual([r["id"] for r in unscored], [], f"{where}: readings never scored")
        undecided = db.execute("SELECT id FROM scores s WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.ts >= s.ts"
                               " AND d.action IN ('ok', 'alert', 'suppress'))").fetchall()
        self.assertEqual([r["id"] for r in undecided], [], f"{where}: scores Nerve never decided on")
        pending = db.execute("SELECT id, sink FROM outbox WHERE sent_ts IS NULL").fetchall()
        self.assertEqual([tuple(r) for r in pending], [], f"{where}: outbox rows still pending")

    def log_alerts(self, home, alert_id):
        return sum(line.count(f"ALERT {alert_id}: ") for path in home.glob("kiri.log*")
                   for line in path.read_text(encoding="utf-8").splitlines())

    def telegram_alerts(self, fake, alert_id):
        return sum(f"fb:{alert_id}:approve" in json.dumps(m.get("reply_markup")) for m in fake.sent())

    # --- the tests -------------------------------------------------------------------

    def test_a_kill_at_each_commit_point_of_an_alerting_cycle(self):
        reached = []
        for n in range(1, 60):
            with self.subTest(point=n), FakeTelegram(token=TOKEN, chat_id=CHAT_ID) as fake:
                home = self.new_home(f"home-{n}")
                fake.press("fb:1:approve", message_id=FIRST_MESSAGE)   # the owner's answer, waiting
                point = self.killed(home, fake, n, "--inject", "pulse", HIGH_VALUES)
                if point is None:
                    break
                reached.append(point)
                self.restart(home, fake)
                where = f"killed at {point} (point {n})"
                self.assertNothingLost(home, where)
                db = self.db(home)
                alerts = db.execute("SELECT id, atom, state FROM alerts").fetchall()
                self.assertEqual([tuple(a) for a in alerts], [(1, "pulse", "approved")], where)
                decided = db.execute("SELECT COUNT(*) FROM decisions WHERE action = 'alert'").fetchone()[0]
                self.assertEqual(decided, 1, f"{where}: one decision to alert")
                self.assertEqual(db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0], 1, where)
                self.assertEqual(db.execute("SELECT COUNT(*) FROM outbox WHERE alert_id = 1").fetchone()[0], 2, where)
                # Exactly once to each sink; at least once where the kill fell between send and mark.
                self.assertEqual(self.log_alerts(home, 1), 2 if point == "sent_unmarked:log" else 1, where)
                self.assertEqual(self.telegram_alerts(fake, 1), 2 if point == "sent_unmarked:telegram" else 1, where)
        self.assertFalse(MUST_REACH - set(reached), f"points never reached; reached {reached}")

    def test_a_kill_after_a_repeat_is_merged(self):
        """A repeat of an open alert within its cooldown is merged into it (alert_seen): killed
        right after, the restart neither sends it nor makes a second alert."""
        with FakeTelegram(token=TOKEN, chat_id=CHAT_ID) as fake:
            home = self.new_home("home")
            self.assertIsNone(self.killed(home, fake, "", "--inject", "pulse", HIGH_VALUES))
            first_seen = self.db(home).execute("SELECT COALESCE(last_ts, ts) FROM alerts").fetchone()[0]
            self.assertEqual(self.killed(home, fake, "alert_seen", "--inject", "pulse", HIGH_VALUES), "alert_seen")
            self.restart(home, fake)
            self.assertNothingLost(home, "killed at alert_seen")
            db = self.db(home)
            [(alert_id, last_seen)] = db.execute("SELECT id, last_ts FROM alerts").fetchall()
            self.assertGreater(last_seen, first_seen)
            self.assertEqual((self.log_alerts(home, alert_id), self.telegram_alerts(fake, alert_id)), (1, 1))

    def test_a_kill_after_an_atom_learned(self):
        """A declared atom with enough readings learns in the cycle's housekeeping (spawn): killed
        right after its weights are saved, or after the spawn is recorded, the restart finds it
        trained, does not train it again, and scores and decides on the reading it took."""
        env = {"KIRI_LEARN_AFTER": "20"}
        config = ("[atom:gpu]\nschema = T=0:100:10 U=0:100:5\ninterval = 300\nsteps = 5\ncommand = %s -c %s\n"
                  % (shlex.quote(sys.executable), shlex.quote('import json; print(json.dumps({"T": 61, "U": 37}))')))
        for fault in ("weights:gpu.json", "decision:spawn:gpu"):
            with self.subTest(point=fault), FakeTelegram(token=TOKEN, chat_id=CHAT_ID) as fake:
                home = self.new_home("home-" + fault.replace(":", "-"))
                (home / "config.ini").write_text(config)
                with open_store(home) as store:
                    now = time.time()
                    store.add_observations([{"atom": "gpu", "values": {"T": 60 + i % 3, "U": 35 + i % 5},
                                             "ts": now - 300 * (20 - i), "source": "test"} for i in range(20)])
                self.assertEqual(self.killed(home, fake, fault, env=env), fault)
                weights = home / "weights" / "gpu.json"
                trained = weights.read_bytes()
                self.restart(home, fake, env=env)
                self.assertEqual(weights.read_bytes(), trained, "trained once, not again after the kill")
                self.assertEqual(sorted(p.name for p in (home / "weights").iterdir()), ["gpu.json", "pulse.json"])
                db = self.db(home)
                spawns = db.execute("SELECT COUNT(*) FROM decisions WHERE action = 'spawn:gpu'").fetchone()[0]
                self.assertEqual(spawns, 0 if fault.startswith("weights") else 1)
                [newest] = db.execute("SELECT id, ts FROM observations WHERE atom = 'gpu' ORDER BY ts DESC LIMIT 1")
                scored = db.execute("SELECT ts FROM scores WHERE observation_id = ?", (newest["id"],)).fetchall()
                self.assertEqual(len(scored), 1, "the reading taken before the kill is scored at the restart")
                self.assertNothingLost(home, f"killed at {fault}")


if __name__ == "__main__":
    unittest.main()
