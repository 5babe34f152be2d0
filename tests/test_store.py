import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri import store as store_module
from kiri.store import ImportReport, Store, StoreError, default_home, open_store

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "store_writer.py")


def tally(counts):
    """The fold of these tests: each kind's count under "n_" + kind. (Which kind counts
    under which field is an atom's rule; the store only counts and stores.)"""
    return {"n_" + kind: n for kind, n in counts.items()}


def total(counts):
    """Every stored reading: real, synthetic and injected."""
    return sum(counts.values())


class StoreTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.dir = Path(self.tmp.name)
        self.path = self.dir / "kiri.db"

    def open(self, path=None, clock=lambda: 5000.0, **kwargs):
        store = Store(path or self.path, clock=clock, **kwargs)
        self.addCleanup(store.close)
        return store

    def raw(self, path=None):
        """A plain sqlite3 connection, to look at the file behind Store's back."""
        conn = sqlite3.connect(str(path or self.path))
        self.addCleanup(conn.close)
        return conn


class TestObservations(StoreTestCase):
    def test_round_trip(self):
        s = self.open()
        i = s.add_observation("pulse", {"C": 41.2, "M": 73, "D": 0.0}, ts=100.5, source="linux")
        self.assertEqual(s.observations("pulse"), [
            {"id": i, "atom": "pulse", "ts": 100.5, "values": {"C": 41.2, "D": 0.0, "M": 73},
             "source": "linux", "synthetic": False}])

    def test_ts_defaults_to_clock(self):
        s = self.open()
        s.add_observation("pulse", {"C": 1})
        self.assertEqual(s.latest_observation("pulse")["ts"], 5000.0)

    def test_same_observation_twice_is_stored_once(self):
        s = self.open()
        a = s.add_observation("pulse", {"C": 1, "M": 2}, ts=1)
        b = s.add_observation("pulse", {"M": 2, "C": 1}, ts=1)  # same dict, other key order
        self.assertEqual(a, b)
        self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 0, "injected": 0})

    def test_filters(self):
        s = self.open()
        for ts in (5, 1, 3, 2, 4):  # inserted out of order on purpose
            s.add_observation("pulse", {"x": ts}, ts=ts)
        s.add_observation("pulse", {"x": 2.5}, ts=2.5, synthetic=True)
        s.add_observation("drift", {"x": 3}, ts=3)

        def ts_of(rows):
            return [r["ts"] for r in rows]

        self.assertEqual(ts_of(s.observations("pulse")), [1, 2, 2.5, 3, 4, 5])
        self.assertEqual(ts_of(s.observations("pulse", since=2)), [2, 2.5, 3, 4, 5])
        self.assertEqual(ts_of(s.observations("pulse", until=3)), [1, 2, 2.5])
        self.assertEqual(ts_of(s.observations("pulse", since=2, until=4)), [2, 2.5, 3])
        self.assertEqual(ts_of(s.observations("pulse", real_only=True)), [1, 2, 3, 4, 5])
        self.assertEqual(ts_of(s.observations("pulse", limit=2)), [4, 5])
        self.assertEqual(ts_of(s.observations("pulse", until=3, limit=2, real_only=True)), [1, 2])
        self.assertEqual(s.observations("nobody"), [])

    def test_newest_first_limit_leaves_injected_rows_out_in_sql(self):
        s = self.open()
        s.add_observations([{"atom": "pulse", "ts": t, "values": {"C": float(t)}} for t in range(1, 6)])
        s.add_observation("pulse", {"C": 99.0}, ts=6, source="inject")
        self.assertEqual([o["ts"] for o in s.observations("pulse", limit=2)], [5.0, 6.0])
        self.assertEqual([o["ts"] for o in s.observations("pulse", limit=2, injected=False)], [4.0, 5.0],
                         "the limit counts only the rows that are wanted")

    def test_latest_and_count(self):
        s = self.open()
        self.assertIsNone(s.latest_observation("pulse"))
        s.add_observation("pulse", {"x": 1}, ts=1)
        s.add_observation("pulse", {"x": 2}, ts=2, synthetic=True)
        self.assertEqual(s.latest_observation("pulse")["ts"], 2)
        self.assertEqual(s.latest_observation("pulse", real_only=True)["ts"], 1)
        self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 1, "injected": 0})
        self.assertEqual(s.count_observations("drift"), {"real": 0, "synthetic": 0, "injected": 0})
        s.add_observation("pulse", {"x": 99}, ts=3, source="inject")   # made up by hand: not a real reading
        self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 1, "injected": 1})

    def test_bulk_insert(self):
        s = self.open()
        added = s.add_observations([
            {"atom": "pulse", "values": {"x": 1}, "ts": 1},
            {"atom": "pulse", "values": {"x": 2}, "ts": 2, "source": "cli", "synthetic": True},
            {"atom": "pulse", "values": {"x": 1}, "ts": 1},  # duplicate of the first
        ])
        self.assertEqual(added, 2)
        self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 1, "injected": 0})

    def test_bulk_insert_is_all_or_nothing(self):
        s = self.open()
        with self.assertRaisesRegex(ValueError, r"row 1: values\['x'\]"):
            s.add_observations([{"atom": "pulse", "values": {"x": 1}, "ts": 1},
                                {"atom": "pulse", "values": {"x": "high"}, "ts": 2}])
        self.assertEqual(s.observations("pulse"), [])

    def test_atoms_and_observation_count(self):
        s = self.open()
        self.assertEqual(s.atoms(), [])
        self.assertEqual(total(s.count_observations()), 0)
        self.assertEqual(total(s.count_observations("pulse")), 0)
        s.add_observation("rhythm", {"x": 1}, ts=1)
        s.add_observation("pulse", {"x": 1}, ts=1)
        s.add_observation("pulse", {"x": 2}, ts=2, synthetic=True)
        s.add_observation("drift", {"x": 1}, ts=1)
        s.add_event("nerve", "add", ts=1)  # events alone are not observations
        self.assertEqual(s.atoms(), ["drift", "pulse", "rhythm"])
        self.assertEqual(total(s.count_observations()), 4)
        self.assertEqual(total(s.count_observations("pulse")), 2)  # synthetic rows count too
        self.assertEqual(total(s.count_observations("nerve")), 0)


class TestValidation(StoreTestCase):
    def assertRejects(self, field, **kwargs):
        s = self.open()
        args = dict(atom="pulse", values={"C": 1.0}, ts=1.0)
        args.update(kwargs)
        with self.assertRaises(ValueError) as caught:
            s.add_observation(**args)
        self.assertTrue(str(caught.exception).startswith(field),
                        "%r does not name %s" % (str(caught.exception), field))
        self.assertEqual(s.count_observations("pulse"), {"real": 0, "synthetic": 0, "injected": 0})

    def test_atom(self):
        for atom in ("", "1pulse", "pul se", "pulse;drop", None, 3, "x" * 65):
            with self.subTest(atom=atom):
                self.assertRejects("atom", atom=atom)

    def test_values(self):
        self.assertRejects("values", values=[1, 2])
        self.assertRejects("values", values={})
        self.assertRejects("values", values={1: 2.0})
        self.assertRejects("values['M']", values={"C": 1, "M": "high"})
        self.assertRejects("values['M']", values={"C": 1, "M": None})
        self.assertRejects("values['M']", values={"C": 1, "M": True})
        self.assertRejects("values['M']", values={"C": 1, "M": float("nan")})
        self.assertRejects("values['M']", values={"C": 1, "M": float("inf")})

    def test_other_fields(self):
        self.assertRejects("ts", ts=float("nan"))
        self.assertRejects("ts", ts="yesterday")
        self.assertRejects("source", source=None)
        self.assertRejects("synthetic", synthetic=2)
        self.assertRejects("synthetic", synthetic="yes")

    def test_score_fields(self):
        s = self.open()
        with self.assertRaisesRegex(ValueError, "^score"):
            s.add_score("pulse", float("nan"))
        with self.assertRaisesRegex(ValueError, "^threshold"):
            s.add_score("pulse", 1.0, threshold="high")
        with self.assertRaisesRegex(ValueError, "^tokens"):
            s.add_score("pulse", 1.0, tokens=[{"surprise": float("inf")}])


class TestScoresAndKV(StoreTestCase):
    def test_scores(self):
        s = self.open()
        obs = s.add_observation("pulse", {"M": 93}, ts=1)
        tokens = [{"token": "M9", "surprise": 3.25, "expected": "M5"}]
        first = s.add_score("pulse", 3.25, threshold=2.0, verdict="anomaly", tokens=tokens,
                            ts=1, observation_id=obs)
        s.add_score("drift", 0.5, ts=2)
        s.add_score("pulse", 0.75, threshold=2.0, verdict="normal", ts=3)

        self.assertEqual([r["atom"] for r in s.latest_scores()], ["pulse", "drift", "pulse"])
        pulse = s.latest_scores("pulse", limit=5)
        self.assertEqual([r["ts"] for r in pulse], [3, 1])
        self.assertEqual(pulse[1], {"id": first, "atom": "pulse", "ts": 1, "observation_id": obs,
                                    "score": 3.25, "threshold": 2.0, "verdict": "anomaly",
                                    "tokens": tokens, "likelihood": None})
        self.assertEqual(len(s.latest_scores(limit=1)), 1)
        self.assertEqual([r["ts"] for r in s.latest_scores("pulse", since=2)], [3])

    def test_reading_ratios_are_collected_readings_only_one_per_observation(self):
        s = self.open()
        real = [s.add_observation("pulse", {"C": i}, ts=10 * i, source="linux") for i in range(1, 5)]
        injected = s.add_observation("pulse", {"C": 99}, ts=45, source="inject")
        synthetic = s.add_observation("pulse", {"C": 7}, ts=46, synthetic=True)
        for i, obs in enumerate(real, start=1):
            s.add_score("pulse", float(i), threshold=2.0, ts=10 * i, observation_id=obs, likelihood=0.01 * i)
        s.add_score("pulse", 8.0, threshold=2.0, ts=41, observation_id=real[3])   # scored again by the CLI
        s.add_score("pulse", 50.0, threshold=2.0, ts=45, observation_id=injected)
        s.add_score("pulse", 50.0, threshold=2.0, ts=46, observation_id=synthetic)
        s.add_score("pulse", 50.0, threshold=2.0, ts=47)                          # typed in by hand
        s.add_score("pulse", 50.0, threshold=None, ts=48, observation_id=real[0]) # no threshold yet
        self.assertEqual(s.reading_ratios("pulse", 10), [0.5, 1.0, 1.5, 4.0])
        self.assertEqual(s.reading_ratios("pulse", 2), [1.5, 4.0])
        self.assertEqual(s.reading_ratios("pulse", 10, exclude_observation=real[3]), [0.5, 1.0, 1.5])
        self.assertEqual(s.reading_ratios("drift", 10), [])
        self.assertEqual(s.latest_scores("pulse", limit=10)[-1]["likelihood"], 0.01)
        with self.assertRaisesRegex(ValueError, "likelihood"):
            s.add_score("pulse", 1.0, likelihood=float("nan"))

    def test_foreign_keys_are_enforced(self):
        s = self.open()
        with self.assertRaises(sqlite3.IntegrityError):
            s.add_score("pulse", 1.0, observation_id=12345)

    def test_kv(self):
        s = self.open()
        self.assertIsNone(s.get_kv("telegram.offset"))
        self.assertEqual(s.get_kv("telegram.offset", 0), 0)
        s.set_kv("telegram.offset", 41)
        s.set_kv("telegram.offset", 42)
        s.set_kv("state", {"paused": True, "atoms": ["pulse"]})
        self.assertEqual(s.get_kv("telegram.offset"), 42)
        self.assertEqual(s.get_kv("state"), {"paused": True, "atoms": ["pulse"]})
        self.assertEqual(self.open().get_kv("telegram.offset"), 42)  # another connection


class TestSchema(StoreTestCase):
    TABLES = {"observations", "scores", "decisions", "alerts", "feedback", "outbox", "kv",
              "events"}

    def tables(self, path=None):
        rows = self.raw(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    def version(self, path=None):
        return self.raw(path).execute("PRAGMA user_version").fetchone()[0]

    def test_new_file(self):
        self.open().close()
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))
        self.assertTrue(self.TABLES <= self.tables())

    def test_empty_file(self):
        self.path.touch()  # a zero-byte file is a valid, empty SQLite database
        self.open().add_observation("pulse", {"x": 1})
        self.assertTrue(self.TABLES <= self.tables())

    def test_version_0_db_with_other_tables(self):
        conn = sqlite3.connect(str(self.path))
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
        conn.commit()
        conn.close()
        self.open().close()
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))
        self.assertEqual(self.raw().execute("SELECT text FROM notes").fetchall(), [("kept",)])

    def test_reopen_keeps_data(self):
        with Store(self.path) as s:
            s.add_observation("pulse", {"x": 1}, ts=1)
        with Store(self.path) as s:
            self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 0, "injected": 0})

    def test_pragmas(self):
        conn = self.open().conn
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(conn.execute("PRAGMA foreign_keys").fetchone()[0], 1)
        self.assertGreaterEqual(conn.execute("PRAGMA busy_timeout").fetchone()[0], 10000)

    def test_too_new_version_is_a_clear_error(self):
        conn = sqlite3.connect(str(self.path))
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        with self.assertRaises(StoreError) as caught:
            Store(self.path)
        message = str(caught.exception)
        self.assertIn(str(self.path), message)
        self.assertIn("99", message)
        self.assertIn("upgrade KIRI", message)

    def test_not_a_database_is_a_clear_error(self):
        self.path.write_bytes(b"this is not sqlite, just some text long enough" * 20)
        with self.assertRaisesRegex(StoreError, "cannot open"):
            Store(self.path)

    def test_older_db_is_migrated_forward(self):
        with Store(self.path) as s:
            s.add_observation("pulse", {"x": 1}, ts=1)

        def add_column(conn):
            conn.execute("ALTER TABLE alerts ADD COLUMN channel TEXT")

        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS + [add_column]):
            with Store(self.path) as s:
                self.assertEqual(s.count_observations("pulse"), {"real": 1, "synthetic": 0, "injected": 0})
        self.assertEqual(self.version(), len(store_module.MIGRATIONS) + 1)
        columns = [r[1] for r in self.raw().execute("PRAGMA table_info(alerts)")]
        self.assertIn("channel", columns)

    def test_failed_migration_changes_nothing(self):
        Store(self.path).close()

        def half_done(conn):
            conn.execute("CREATE TABLE half (x)")
            conn.execute("INSERT INTO no_such_table VALUES (1)")

        n = len(store_module.MIGRATIONS)
        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS + [half_done]):
            with self.assertRaisesRegex(StoreError, "version %d to %d" % (n, n + 1)):
                Store(self.path)
        self.assertEqual(self.version(), n)
        self.assertNotIn("half", self.tables())

    def test_version_1_db_is_migrated_to_2(self):
        # A database as the first release left it: made by the first migration only.
        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1]):
            with Store(self.path) as s:
                obs = s.add_observation("pulse", {"C": 41.5}, ts=1, source="linux")
                s.conn.execute("INSERT INTO scores (atom, ts, observation_id, score) VALUES ('pulse', 1, ?, 2.5)",
                               (obs,))
                s.set_kv("telegram.offset", 42)
        self.assertEqual(self.version(), 1)
        self.assertNotIn("events", self.tables())

        with self.open() as s:
            self.assertEqual(s.observations("pulse"), [
                {"id": obs, "atom": "pulse", "ts": 1, "values": {"C": 41.5}, "source": "linux",
                 "synthetic": False}])
            self.assertEqual(s.latest_scores("pulse")[0]["observation_id"], obs)
            self.assertEqual(s.get_kv("telegram.offset"), 42)
            s.add_event("drift", "add", ts=2)
            s.add_event("drift", "done", ts=3)
            period = s.fold_events("drift", tally, until=10)
            self.assertEqual(s.observations("drift")[0]["values"], {"n_add": 1, "n_done": 1})
            self.assertEqual(s.atoms(), ["drift", "pulse"])
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))
        self.assertIn("events", self.tables())
        self.assertEqual(self.raw().execute("SELECT period_id FROM events").fetchall(),
                         [(period,), (period,)])


    def test_version_3_db_keeps_its_scores_and_gains_likelihood(self):
        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS[:3]):
            with Store(self.path) as s:
                obs = s.add_observation("pulse", {"C": 41.5}, ts=1, source="linux")
                s.conn.execute("INSERT INTO scores (atom, ts, observation_id, score, threshold, verdict)"
                               " VALUES ('pulse', 1, ?, 3.0, 2.0, 'anomaly')", (obs,))
        self.assertEqual(self.version(), 3)
        with self.open() as s:
            old = s.latest_scores("pulse")[0]
            self.assertEqual((old["score"], old["verdict"], old["likelihood"]), (3.0, "anomaly", None))
            self.assertEqual(s.reading_ratios("pulse", 5), [1.5])
            s.add_score("pulse", 1.0, threshold=2.0, ts=2, likelihood=0.2)
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))

    def test_version_4_db_gains_the_indexes_retention_deletes_through(self):
        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS[:4]):
            with Store(self.path) as s:
                obs = s.add_observation("pulse", {"C": 41.5}, ts=1)
                s.add_score("pulse", 3.0, observation_id=obs, ts=1)
        with self.open() as s:
            plan = " ".join(r[3] for r in s.conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM scores WHERE observation_id = 1"))
            self.assertIn("scores_observation", plan)
            self.assertEqual(s.prune(2.0).deleted["observations"], 1)
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))
        indexes = {r[1] for r in self.raw().execute("SELECT type, name FROM sqlite_master WHERE type = 'index'")}
        self.assertTrue({"scores_observation", "outbox_alert"} <= indexes)

    def test_version_2_db_is_migrated_to_3(self):
        # A database as the second release left it: alerts and outbox without the
        # feedback-loop columns, and rows already in them.
        with mock.patch.object(store_module, "MIGRATIONS", store_module.MIGRATIONS[:2]):
            with Store(self.path) as s:
                s.add_observation("pulse", {"C": 41.5}, ts=1)
                s.set_kv("telegram.offset", 42)
                s.conn.execute("INSERT INTO decisions (ts, state, action, source)"
                               " VALUES (1, '{}', 'alert', 'rule')")
                s.conn.execute("INSERT INTO alerts (ts, decision_id, atom, message)"
                               " VALUES (2, 1, 'pulse', 'old alert')")
                s.conn.execute("INSERT INTO outbox (ts, sink, payload, dedup_key, next_try)"
                               " VALUES (3, 'telegram', '\"hi\"', 'old', 3)")
        self.assertEqual(self.version(), 2)
        columns = [r[1] for r in self.raw().execute("PRAGMA table_info(alerts)")]
        self.assertNotIn("situation", columns)

        with self.open() as s:
            self.assertEqual(s.alert(1), {
                "id": 1, "ts": 2, "last_ts": 2, "decision_id": 1, "atom": "pulse", "message": "old alert",
                "situation": "", "details": {}, "state": "open", "feedback": None})
            self.assertEqual(s.outbox_due("telegram", 3)[0]["alert_id"], None)
            self.assertIsNone(s.outbox_row(1)["message_id"])
            self.assertEqual(s.get_kv("telegram.offset"), 42)
            self.assertEqual(total(s.count_observations("pulse")), 1)
            s.outbox_sent(1, message_id=7, ts=4)
            new = s.add_alert("pulse", "new", situation="pulse:M", details={"score": 3}, ts=5)
            s.enqueue("telegram", {"text": "new"}, "new", alert_id=new, ts=5)
            self.assertFalse(s.add_feedback(1, "approve", ts=6))
            self.assertEqual(s.labelled_decisions()[0]["reward"], 1)
        self.assertEqual(self.version(), len(store_module.MIGRATIONS))
        columns = [r[1] for r in self.raw().execute("PRAGMA table_info(outbox)")]
        self.assertTrue({"alert_id", "message_id"} <= set(columns))


class TestDecisions(StoreTestCase):
    def test_round_trip_and_filters(self):
        s = self.open()
        a = s.add_decision({"pulse": 3.5, "hour": 4}, "alert", probability=0.75,
                           source="model", ts=2)
        b = s.add_decision({"pulse": 0.5}, "ok", ts=1)
        c = s.add_decision({}, "suppress", source="inject")  # ts from the clock: 5000
        self.assertEqual(s.decisions(), [
            {"id": b, "ts": 1, "state": {"pulse": 0.5}, "action": "ok", "probability": None,
             "source": "rule", "repeat_of": None},
            {"id": a, "ts": 2, "state": {"hour": 4, "pulse": 3.5}, "action": "alert",
             "probability": 0.75, "source": "model", "repeat_of": None},
            {"id": c, "ts": 5000.0, "state": {}, "action": "suppress", "probability": None,
             "source": "inject", "repeat_of": None}])
        self.assertEqual([d["id"] for d in s.decisions(since=2)], [a, c])
        self.assertEqual([d["id"] for d in s.decisions(limit=2)], [a, c])
        self.assertEqual([d["id"] for d in s.decisions(since=3, limit=5)], [c])

    def test_bad_decisions_are_refused(self):
        s = self.open()
        for field, kwargs in [
                ("state", dict(state=[1])), ("state", dict(state={"x": float("nan")})),
                ("action", dict(action="")), ("action", dict(action=None)),
                ("probability", dict(probability="high")),
                ("probability", dict(probability=1.5)),
                ("source", dict(source="human")), ("source", dict(source=["rule"])),
                ("ts", dict(ts="now"))]:
            args = dict(state={"x": 1}, action="ok")
            args.update(kwargs)
            with self.subTest(**{field: kwargs[field]}):
                with self.assertRaisesRegex(ValueError, "^" + field):
                    s.add_decision(**args)
        self.assertEqual(s.decisions(), [])


class TestAlertsAndFeedback(StoreTestCase):
    def test_a_repeat_keeps_an_alert_active_and_never_moves_it_back(self):
        with self.open() as s:
            a = s.add_alert("pulse", "disk filling", situation="pulse:D>", ts=2)
            s.alert_seen(a, 100)
            s.alert_seen(a, 50)   # an earlier clock never makes it older
            self.assertEqual(s.alert(a)["last_ts"], 100)
            self.assertEqual([x["id"] for x in s.alerts(active_since=99)], [a])
            self.assertEqual(s.alerts(active_since=101), [])
            self.assertEqual(s.alerts(since=3), [], "since still reads when it began")
            with self.assertRaises(ValueError):
                s.alert_seen(a, float("nan"))

    def test_round_trip(self):
        s = self.open()
        d = s.add_decision({"pulse": 3.5}, "alert", ts=1)
        details = {"score": 3.25, "tokens": [{"token": "M9", "expected": "M5"}]}
        a = s.add_alert("pulse", "memory high", decision_id=d, situation="pulse:M",
                        details=details, ts=2)
        b = s.add_alert("drift", "too many switches")  # ts 5000 from the clock
        self.assertEqual(s.alert(a), {
            "id": a, "ts": 2, "last_ts": 2, "decision_id": d, "atom": "pulse", "message": "memory high",
            "situation": "pulse:M", "details": details, "state": "open", "feedback": None})
        self.assertEqual(s.alert(b)["ts"], 5000.0)
        self.assertEqual(s.alert(b)["details"], {})
        self.assertIsNone(s.alert(12345))
        self.assertEqual([x["id"] for x in s.alerts()], [b, a])
        self.assertEqual([x["id"] for x in s.alerts(limit=1)], [b])
        self.assertEqual(s.alerts()[1], s.alert(a))

    def test_bad_alerts_are_refused(self):
        s = self.open()
        for field, kwargs in [
                ("atom", dict(atom="no such")), ("message", dict(message=None)),
                ("decision_id", dict(decision_id="1")), ("situation", dict(situation=3)),
                ("details", dict(details=[1])), ("details", dict(details={"x": float("inf")})),
                ("ts", dict(ts=float("nan")))]:
            args = dict(atom="pulse", message="m")
            args.update(kwargs)
            with self.subTest(field=field, **kwargs):
                with self.assertRaisesRegex(ValueError, "^" + field):
                    s.add_alert(**args)
        with self.assertRaises(sqlite3.IntegrityError):
            s.add_alert("pulse", "m", decision_id=12345)
        self.assertEqual(s.alerts(), [])

    def test_alerts_since(self):
        s = self.open()
        self.assertEqual(s.alerts(since=0), [])
        one = s.add_alert("pulse", "one", situation="pulse:M9", ts=10)
        two = s.add_alert("pulse", "two", situation="pulse:M9", ts=20)
        three = s.add_alert("pulse", "other", situation="pulse:C9", ts=30)
        self.assertEqual([a["id"] for a in s.alerts(since=0)], [three, two, one])
        self.assertEqual([a["id"] for a in s.alerts(since=20, limit=None)], [three, two])
        self.assertEqual([a["situation"] for a in s.alerts(since=21)], ["pulse:C9"])
        self.assertEqual(s.alerts(since=31), [])

    def test_feedback_and_replace(self):
        s = self.open()
        a = s.add_alert("pulse", "m", ts=1)
        b = s.add_alert("pulse", "n", ts=2)
        self.assertFalse(s.add_feedback(a, "approve", ts=3))
        self.assertEqual(s.alert(a)["state"], "approved")
        self.assertEqual(s.alert(a)["feedback"], {"verdict": "approve", "reward": 1, "ts": 3})
        self.assertTrue(s.add_feedback(a, "dismiss"))  # a second answer replaces the first
        self.assertFalse(s.add_feedback(a, "dismiss"))  # the same answer again replaces nothing
        self.assertEqual(s.alert(a)["state"], "dismissed")
        self.assertEqual(s.alert(a)["feedback"], {"verdict": "dismiss", "reward": -1,
                                                  "ts": 5000.0})
        self.assertEqual(self.raw().execute("SELECT COUNT(*) FROM feedback").fetchone()[0], 1)
        self.assertEqual([x["id"] for x in s.alerts(state="open")], [b])
        self.assertEqual([x["id"] for x in s.alerts(state="dismissed")], [a])
        self.assertEqual(s.alerts(state="approved"), [])

    def test_bad_feedback_is_refused(self):
        s = self.open()
        a = s.add_alert("pulse", "m", ts=1)
        with self.assertRaises(KeyError) as caught:
            s.add_feedback(12345, "approve")
        self.assertEqual(caught.exception.args[0], "alert 12345 does not exist")
        with self.assertRaisesRegex(ValueError, "^verdict"):
            s.add_feedback(a, "maybe")
        with self.assertRaisesRegex(ValueError, "^alert_id"):
            s.add_feedback("1", "approve")
        with self.assertRaisesRegex(ValueError, "^ts"):
            s.add_feedback(a, "approve", ts="now")
        self.assertEqual(s.alert(a)["state"], "open")
        self.assertIsNone(s.alert(a)["feedback"])

    def test_labelled_decisions(self):
        s = self.open()
        unanswered = s.add_decision({"x": 1}, "alert", ts=1)
        s.add_alert("pulse", "m", decision_id=unanswered, ts=1)
        no_alert = s.add_decision({"x": 2}, "ok", ts=2)
        approved = s.add_decision({"x": 3}, "alert", source="model", ts=3)
        s.add_feedback(s.add_alert("pulse", "m", decision_id=approved, ts=3), "approve", ts=4)
        dismissed = s.add_decision({"x": 4}, "alert", ts=4)
        first = s.add_alert("pulse", "m", decision_id=dismissed, ts=4)
        second = s.add_alert("pulse", "m", decision_id=dismissed, ts=5)
        s.add_feedback(first, "approve", ts=5)
        s.add_feedback(second, "dismiss", ts=6)  # the latest answer wins
        s.add_alert("pulse", "no decision", ts=7)  # alerts without a decision are left out

        rows = s.labelled_decisions()
        self.assertEqual(rows[2], {"id": approved, "ts": 3, "state": {"x": 3},
                                   "action": "alert", "source": "model", "repeat_of": None,
                                   "verdict": "approve", "reward": 1})
        self.assertEqual([(r["id"], r["verdict"], r["reward"]) for r in rows], [
            (unanswered, None, None), (no_alert, None, None), (approved, "approve", 1),
            (dismissed, "dismiss", -1)])
        self.assertEqual([r["id"] for r in s.labelled_decisions(since=3)], [approved, dismissed])
        # The same counts, without reading every decision: 4 decisions, 2 of them answered
        # (the decision with two answered alerts counts once).
        self.assertEqual(s.decision_counts(), (4, 2))
        self.assertEqual(s.decision_counts(), (len(rows), sum(1 for r in rows if r["verdict"])))


    def test_alert_and_answer_counts(self):
        s = self.open()
        self.assertEqual((s.alert_counts(), s.answer_counts()), ({}, {}))
        a, b = s.add_alert("pulse", "m", ts=1), s.add_alert("pulse", "m", ts=2)
        s.add_alert("rhythm", "m", ts=3)
        s.add_feedback(a, "dismiss", ts=4)
        s.add_feedback(b, "approve", ts=5)
        s.add_feedback(b, "dismiss", ts=6)   # a second answer replaces the first
        self.assertEqual(s.alert_counts(), {("pulse", "dismissed"): 2, ("rhythm", "open"): 1})
        self.assertEqual(s.answer_counts(), {"dismiss": 2})

    def test_a_repeat_takes_the_answer_of_the_alert_it_merged_into(self):
        s = self.open()
        first = s.add_decision({"x": 1}, "alert", ts=1)
        alert = s.add_alert("rhythm", "m", decision_id=first, situation="rhythm:F>", ts=1)
        repeats = [s.add_decision({"x": i}, "alert", ts=i) for i in (2, 3)]
        s.alert_seen(alert, 2, decision_id=repeats[0])
        s.add_feedback(alert, "dismiss", ts=3)
        s.alert_seen(alert, 3, decision_id=repeats[1], going_on=False)   # after you dismissed it
        self.assertEqual(s.alert(alert)["last_ts"], 2, "a dismissed alert's cooldown does not go on")
        rows = s.labelled_decisions()
        self.assertEqual([(r["id"], r["repeat_of"], r["verdict"], r["reward"]) for r in rows],
                         [(first, None, "dismiss", -1), (repeats[0], alert, "dismiss", -1),
                          (repeats[1], alert, "dismiss", -1)])
        self.assertEqual(s.decision_counts(), (3, 1), "one answer, whatever its repeats")
        for bad in ("2", 2.5, True):
            with self.subTest(decision_id=bad), self.assertRaisesRegex(ValueError, "^decision_id"):
                s.alert_seen(alert, 4, decision_id=bad)


class TestOutbox(StoreTestCase):
    def test_due_failed_sent_cycle(self):
        s = self.open()
        alert = s.add_alert("pulse", "m", ts=1)
        payload = {"text": "memory high", "buttons": ["approve", "dismiss"]}
        i = s.enqueue("telegram", payload, "alert:%d" % alert, alert_id=alert, ts=10)
        j = s.enqueue("telegram", "plain text", "note", ts=11)
        s.enqueue("email", "x", "mail", ts=10)
        self.assertEqual(s.outbox_due("telegram", 9), [])
        self.assertEqual(s.outbox_due("telegram", 10), [
            {"id": i, "ts": 10, "sink": "telegram", "payload": payload,
             "dedup_key": "alert:1", "alert_id": alert, "attempts": 0}])
        self.assertEqual([r["id"] for r in s.outbox_due("telegram", 100)], [i, j])
        self.assertEqual(s.outbox_pending(), 3)
        self.assertEqual(s.outbox_pending("telegram"), 2)
        self.assertEqual(s.outbox_pending("nobody"), 0)

        s.outbox_failed(i, ConnectionError("timed out"), next_try=40)
        s.outbox_failed(i, "HTTP 502", next_try=70)
        row = s.outbox_row(i)
        self.assertEqual((row["attempts"], row["last_error"], row["next_try"]),
                         (2, "HTTP 502", 70))
        self.assertEqual([r["id"] for r in s.outbox_due("telegram", 69)], [j])
        self.assertEqual(s.outbox_due("telegram", 70)[0]["attempts"], 2)

        s.outbox_sent(i, message_id=981, ts=71)
        self.assertEqual(s.outbox_row(i), {
            "id": i, "ts": 10, "sink": "telegram", "payload": payload, "dedup_key": "alert:1",
            "alert_id": alert, "attempts": 2, "next_try": 70, "sent_ts": 71,
            "message_id": "981", "last_error": "HTTP 502"})
        s.outbox_sent(j)
        self.assertEqual(s.outbox_row(j)["sent_ts"], 5000.0)
        self.assertIsNone(s.outbox_row(j)["message_id"])
        self.assertEqual(s.outbox_due("telegram", 1000), [])
        self.assertEqual(s.outbox_pending(), 1)
        self.assertIsNone(s.outbox_row(12345))

        self.assertEqual(s.message_alert("telegram", 981), alert)
        self.assertEqual(s.message_alert("telegram", "981"), alert)
        self.assertIsNone(s.message_alert("email", 981))
        self.assertIsNone(s.message_alert("telegram", 982))

    def test_dedup(self):
        s = self.open()
        first = s.enqueue("telegram", "a", "alert:1", ts=1)
        self.assertIsNotNone(first)
        self.assertIsNone(s.enqueue("telegram", "b", "alert:1", ts=2))
        s.outbox_sent(first, ts=3)
        self.assertIsNone(s.enqueue("telegram", "c", "alert:1", ts=4))  # sent stays deduped
        self.assertEqual(s.outbox_row(first)["payload"], "a")
        self.assertEqual(s.enqueue("telegram", "d", "alert:2"), first + 1)
        self.assertEqual(s.outbox_row(first + 1)["next_try"], 5000.0)

    def test_bad_input_is_refused(self):
        s = self.open()
        for field, kwargs in [
                ("sink", dict(sink="")), ("payload", dict(payload={"x": float("nan")})),
                ("payload", dict(payload=object())), ("dedup_key", dict(dedup_key=None)),
                ("alert_id", dict(alert_id="1")), ("ts", dict(ts="now"))]:
            args = dict(sink="telegram", payload="p", dedup_key="k")
            args.update(kwargs)
            with self.subTest(field=field):
                with self.assertRaisesRegex(ValueError, "^" + field):
                    s.enqueue(**args)
        with self.assertRaises(sqlite3.IntegrityError):
            s.enqueue("telegram", "p", "k", alert_id=12345)
        self.assertEqual(s.outbox_pending(), 0)

        i = s.enqueue("telegram", "p", "k", ts=1)
        with self.assertRaisesRegex(ValueError, "^message_id"):
            s.outbox_sent(i, message_id=[1])
        with self.assertRaisesRegex(ValueError, "^ts"):
            s.outbox_sent(i, ts="now")
        with self.assertRaisesRegex(ValueError, "^next_try"):
            s.outbox_failed(i, "boom", next_try=None)
        with self.assertRaises(KeyError):
            s.outbox_sent(12345)
        with self.assertRaises(KeyError):
            s.outbox_failed(12345, "boom", next_try=1)
        self.assertEqual(s.outbox_row(i)["attempts"], 0)
        self.assertIsNone(s.outbox_row(i)["sent_ts"])


class TestEvents(StoreTestCase):
    def period_ids(self):
        """{event id: period_id} of every event, read behind Store's back."""
        return dict(self.raw().execute("SELECT id, period_id FROM events"))

    def test_add_and_pending(self):
        s = self.open()
        late = s.add_event("drift", "done", project="kiri", ts=3)
        early = s.add_event("drift", "add", project="kiri", ts=1)
        now = s.add_event("drift", "switch")
        s.add_event("other", "add", ts=2)
        self.assertEqual(s.pending_events("drift"), [
            {"id": early, "atom": "drift", "ts": 1, "kind": "add", "project": "kiri",
             "period_id": None},
            {"id": late, "atom": "drift", "ts": 3, "kind": "done", "project": "kiri",
             "period_id": None},
            {"id": now, "atom": "drift", "ts": 5000.0, "kind": "switch", "project": "",
             "period_id": None}])
        self.assertEqual(s.pending_events("nobody"), [])

    def test_fold_counts_each_kind(self):
        s = self.open()
        ids = [s.add_event("drift", kind, ts=ts) for ts, kind in
               [(1, "add"), (2, "add"), (3, "switch"), (3.5, "add"), (4, "done"), (6, "done")]]
        folded = []  # what fold was given, call by call

        def fold(counts):
            folded.append(dict(counts))
            return tally(counts)
        first = s.fold_events("drift", fold, until=4)  # ts < until: the event at 4 waits
        self.assertEqual(folded, [{"add": 3, "switch": 1}])
        self.assertEqual(s.observations("drift"), [
            {"id": first, "atom": "drift", "ts": 4, "values": {"n_add": 3, "n_switch": 1},
             "source": "events", "synthetic": False}])
        self.assertEqual([e["ts"] for e in s.pending_events("drift")], [4, 6])

        second = s.fold_events("drift", fold, until=10, ts=9.5, source="cli")
        self.assertEqual(folded[1:], [{"done": 2}])
        self.assertEqual(s.observations("drift")[1], {
            "id": second, "atom": "drift", "ts": 9.5, "values": {"n_done": 2},
            "source": "cli", "synthetic": False})
        self.assertEqual(s.pending_events("drift"), [])
        self.assertEqual(self.period_ids(), dict(zip(ids, [first] * 4 + [second] * 2)))

    def test_fold_defaults_to_now(self):
        s = self.open()  # its clock says 5000
        s.add_event("drift", "add", ts=4999)
        s.add_event("drift", "add")  # at 5000, so not before now
        period = s.fold_events("drift", tally)
        self.assertEqual(s.latest_observation("drift")["ts"], 5000.0)
        self.assertEqual(s.latest_observation("drift")["values"], {"n_add": 1})
        self.assertEqual([e["ts"] for e in s.pending_events("drift")], [5000.0])
        self.assertIsNotNone(period)

    def test_nothing_pending_writes_nothing(self):
        s = self.open()
        self.assertIsNone(s.fold_events("drift", tally, until=10))
        s.add_event("drift", "add", ts=20)   # after until
        s.add_event("other", "add", ts=1)    # another atom's
        self.assertIsNone(s.fold_events("drift", tally, until=10))
        s.add_event("drift", "done", ts=5)
        self.assertIsNotNone(s.fold_events("drift", tally, until=10))
        self.assertIsNone(s.fold_events("drift", tally, until=10))  # already counted
        self.assertEqual(total(s.count_observations()), 1)

    def test_identical_observation_is_refused_and_events_stay_pending(self):
        s = self.open()
        existing = s.add_observation("drift", {"n_add": 1}, ts=10)
        event = s.add_event("drift", "add", ts=5)
        # Returning `existing` would silently drop this event from every count.
        with self.assertRaisesRegex(ValueError, "^ts"):
            s.fold_events("drift", tally, until=10)
        self.assertEqual([e["id"] for e in s.pending_events("drift")], [event])
        self.assertEqual([o["id"] for o in s.observations("drift")], [existing])
        self.assertIsNotNone(s.fold_events("drift", tally, until=10, ts=10.5))

    def test_bad_events_are_refused(self):
        s = self.open()
        good = dict(atom="drift", kind="add", project="kiri", ts=1.0)
        for field, bad in [("kind", ""), ("kind", "k" * 33), ("kind", None),
                           ("kind", ["add"]), ("project", None), ("project", 3),
                           ("project", "x" * 201), ("atom", ""), ("atom", "drift;"),
                           ("ts", float("nan")), ("ts", "now")]:
            with self.subTest(field=field, bad=bad):
                args = dict(good, **{field: bad})
                with self.assertRaises(ValueError) as caught:
                    s.add_event(**args)
                self.assertTrue(str(caught.exception).startswith(field), str(caught.exception))
        self.assertEqual(s.pending_events("drift"), [])
        s.add_event("drift", "switch", project="x" * 200, ts=1)  # the limits themselves are fine
        s.add_event("drift", "k" * 32, ts=1)  # any short name: which kinds exist is the atom's rule
        self.assertEqual(len(s.pending_events("drift")), 2)

    def test_bad_fold_is_refused(self):
        s = self.open()
        s.add_event("drift", "add", ts=1)
        for field, kwargs in [("atom", {"atom": "1drift"}), ("until", {"until": float("inf")}),
                              ("until", {"until": "now"}), ("ts", {"ts": float("nan")}),
                              ("source", {"source": None}), ("fold", {"fold": None}),
                              ("values", {"fold": lambda counts: {}}),
                              ("values", {"fold": lambda counts: {"n": "many"}}),
                              ("values", {"fold": lambda counts: list(counts)})]:
            with self.subTest(kwargs=kwargs):
                args = dict({"atom": "drift", "fold": tally, "until": 10}, **kwargs)
                with self.assertRaisesRegex(ValueError, "^" + field):
                    s.fold_events(**args)
        self.assertEqual(len(s.pending_events("drift")), 1)
        self.assertEqual(total(s.count_observations()), 0)

    def test_a_failing_fold_writes_nothing(self):
        s = self.open()
        event = s.add_event("drift", "add", ts=1)

        def broken(counts):
            raise RuntimeError("the atom's rule broke")
        with self.assertRaisesRegex(RuntimeError, "rule broke"):
            s.fold_events("drift", broken, until=10)
        self.assertEqual([e["id"] for e in s.pending_events("drift")], [event])
        self.assertEqual(total(s.count_observations()), 0)
        self.assertIsNotNone(s.fold_events("drift", tally, until=10))  # the lock was let go


def as_bytes(text_file):
    """What export_jsonl wrote to a StringIO, as the binary file import_jsonl reads."""
    return io.BytesIO(text_file.getvalue().encode("utf-8"))


class TestJSONL(StoreTestCase):
    def open(self, path=None):
        # A clock after the readings below: an import refuses readings from the future.
        return super().open(path, clock=lambda: 1800000000.0)

    def fill(self, s):
        s.add_observation("pulse", {"C": 41.2, "M": 73}, ts=1700000000.125, source="linux")
        s.add_observation("pulse", {"C": 0.1 + 0.2, "M": 1e-12}, ts=1700000001.0, source="macos")
        s.add_observation("pulse", {"C": 50, "M": 50}, ts=1700000002.0, synthetic=True)
        s.add_observation("drift", {"rx": 12345678901234}, ts=1700000000.5, source="mikrotik")

    @staticmethod
    def without_ids(rows):
        return [{k: v for k, v in r.items() if k != "id"} for r in rows]

    def test_export_then_import_gives_identical_rows(self):
        a = self.open()
        self.fill(a)
        out = io.StringIO()
        self.assertEqual(a.export_jsonl(out), 4)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(set(lines[0]), {"atom", "ts", "values", "source", "synthetic"})

        b = self.open(self.dir / "other.db")
        report = b.import_jsonl(as_bytes(out))
        self.assertEqual(report, ImportReport(imported=4, skipped=[], duplicates=0))
        for atom in ("pulse", "drift"):
            self.assertEqual(self.without_ids(b.observations(atom)),
                             self.without_ids(a.observations(atom)))

    def test_export_one_atom(self):
        s = self.open()
        self.fill(s)
        out = io.StringIO()
        self.assertEqual(s.export_jsonl(out, atom="drift"), 1)
        self.assertEqual(json.loads(out.getvalue())["atom"], "drift")

    def test_bad_lines_are_reported_and_good_lines_imported(self):
        text = "\n".join([
            '{"atom": "pulse", "ts": 1, "values": {"C": 1}}',          # 1 good
            '{"atom": "pulse", "ts": 2, "values": {"C": 2}',           # 2 bad JSON
            '{"atom": "pulse", "ts": 3, "values": {"C": NaN}}',        # 3 NaN
            '{"atom": "pulse", "values": {"C": 4}}',                   # 4 no ts
            '',                                                        # 5 blank: ignored
            '{"atom": "pulse", "ts": 6, "values": {"C": "busy"}}',     # 6 text value
            '[{"atom": "pulse", "ts": 7, "values": {"C": 7}}]',        # 7 a list
            '{"atom": "pulse", "ts": 8, "values": {"C": 8}, "synthetic": true}',  # 8 good
            '{"atom": "", "ts": 9, "values": {"C": 9}}',               # 9 bad atom
            '{"atom": "pulse", "ts": 10, "values": [10]}',             # 10 values not a dict
            '{"atom": "pulse", "ts": 11, "values": {"C": 11}, "source": "linux"}',  # 11 good
        ]) + "\n"
        s = self.open()
        report = s.import_jsonl(io.BytesIO(text.encode()))
        self.assertEqual(report.imported, 3)
        self.assertEqual(report.skipped_count, 7)
        self.assertEqual([n for n, _ in report.skipped], [2, 3, 4, 6, 7])   # the first SKIP_EXAMPLES
        reasons = dict(report.skipped)
        self.assertIn("not JSON", reasons[2])
        self.assertIn("values['C']", reasons[3])
        self.assertIn("ts", reasons[4])
        self.assertIn("values['C']", reasons[6])
        self.assertIn("not a JSON object", reasons[7])
        reasons = dict(s.import_jsonl(io.BytesIO("\n".join(text.splitlines()[8:10]).encode())).skipped)
        self.assertIn("atom", reasons[1])
        self.assertIn("values", reasons[2])

        rows = s.observations("pulse")
        self.assertEqual([(r["ts"], r["source"], r["synthetic"]) for r in rows],
                         [(1, "import", False), (8, "import", True), (11, "linux", False)])

    def test_double_import_does_not_duplicate(self):
        a = self.open()
        self.fill(a)
        out = io.StringIO()
        a.export_jsonl(out)
        b = self.open(self.dir / "other.db")
        b.import_jsonl(as_bytes(out))
        again = b.import_jsonl(as_bytes(out))
        self.assertEqual(again, ImportReport(imported=0, skipped=[], duplicates=4))
        self.assertEqual(b.count_observations("pulse"), {"real": 2, "synthetic": 1, "injected": 0})
        self.assertEqual(b.count_observations("drift"), {"real": 1, "synthetic": 0, "injected": 0})
        # and importing into the database it came from changes nothing either
        self.assertEqual(a.import_jsonl(as_bytes(out)).imported, 0)

    def test_synthetic_rows_never_replace_real_ones(self):
        s = self.open()
        real = s.add_observation("pulse", {"C": 1}, ts=1, source="linux")
        line = json.dumps({"atom": "pulse", "ts": 1, "values": {"C": 1}, "source": "model",
                           "synthetic": True})
        self.assertEqual(s.import_jsonl(io.BytesIO(line.encode() + b"\n")).imported, 1)
        rows = s.observations("pulse")
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0], {"id": real, "atom": "pulse", "ts": 1, "values": {"C": 1},
                                   "source": "linux", "synthetic": False})
        self.assertEqual(s.observations("pulse", real_only=True), rows[:1])


class TestConcurrentWriters(StoreTestCase):
    N = 300

    def run_writers(self, *argvs):
        """Run one store_writer.py per argv (arguments after DB) at once; check they all succeed."""
        writers = [subprocess.Popen([sys.executable, WRITER, str(self.path)] + list(argv),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, universal_newlines=True)
                   for argv in argvs]
        for w in writers:
            self.addCleanup(self.stop, w)
        # Let both write only once both are ready, so their writes really overlap.
        for w in writers:
            if w.stdout.readline().strip() != "ready":  # it died opening the db
                self.fail("writer did not start:\n" + w.communicate()[1])
        for w in writers:
            w.stdin.write("go\n")
            w.stdin.flush()
        for w in writers:
            # The timeout only keeps a broken run from hanging forever; it is far
            # beyond what 300 small inserts take on any machine, busy or not.
            out, err = w.communicate(timeout=600)
            self.assertEqual(w.returncode, 0, err)
            self.assertNotIn("locked", err)

    def write_observations_at_once(self):
        self.run_writers(["pulse", str(self.N)], ["drift", str(self.N)])
        with Store(self.path) as s:
            for atom in ("pulse", "drift"):
                rows = s.observations(atom)
                self.assertEqual(len(rows), self.N)
                self.assertEqual(sorted(r["values"]["i"] for r in rows), list(range(self.N)))

    @staticmethod
    def stop(writer):
        if writer.poll() is None:
            writer.kill()
        writer.communicate()

    def test_two_processes_write_at_once(self):
        Store(self.path).close()  # as when the daemon has created the db long ago
        self.write_observations_at_once()

    def test_two_processes_create_the_db_at_once(self):
        self.write_observations_at_once()
        self.assertEqual(self.raw().execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_two_processes_fold_at_once(self):
        # Both add events and fold the same periods, racing for the same
        # pending events; each event must end up in exactly one observation.
        Store(self.path).close()
        self.run_writers(["drift", str(self.N), "events", "0"],
                         ["drift", str(self.N), "events", "1"])
        with Store(self.path) as s:
            self.assertEqual(s.pending_events("drift"), [])
            periods = s.observations("drift")
        events = self.raw().execute("SELECT kind, period_id FROM events").fetchall()
        self.assertEqual(len(events), 2 * self.N)

        # The writers fold with dict: each observation's values are its events' counts per kind.
        counted = {}  # period id -> {kind: n} of the events marked with it
        for kind, period in events:
            values = counted.setdefault(period, {})
            values[kind] = values.get(kind, 0) + 1
        self.assertEqual(set(counted), {p["id"] for p in periods})
        for p in periods:
            self.assertEqual(p["values"], counted[p["id"]], p)


class TestHome(unittest.TestCase):
    def test_default_home(self):
        with mock.patch.dict(os.environ, {"KIRI_HOME": "/srv/kiri"}):
            self.assertEqual(default_home(), Path("/srv/kiri"))
        with mock.patch.dict(os.environ, {"KIRI_HOME": "", "HOME": "/home/ann"}):
            self.assertEqual(default_home(), Path("/home/ann/.kiri"))

    def test_open_store_creates_private_home(self):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "a" / "kiri"
            with mock.patch.dict(os.environ, {"KIRI_HOME": str(home)}):
                with open_store() as s:
                    s.add_observation("pulse", {"x": 1})
            self.assertTrue((home / "kiri.db").is_file())
            self.assertEqual(home.stat().st_mode & 0o777, 0o700)


if __name__ == "__main__":
    unittest.main()


class HomeCreationRace(unittest.TestCase):
    def test_open_store_when_home_appears_meanwhile(self):
        # Two processes starting together both see no home; the second mkdir must not fail.
        from unittest import mock
        from kiri.store import open_store
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            with mock.patch.object(Path, "exists", return_value=False):
                store = open_store(home)
            store.close()
            self.assertTrue((home / "kiri.db").exists())
