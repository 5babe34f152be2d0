"""Retention: Store.prune forgets old rows but keeps answers and whatever is still needed;
the daemon prunes a little per cycle, at most hourly; `kiri status` shows the database size."""

import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri import daemon as daemon_module
from kiri.config import load_settings
from kiri.daemon import PRUNED_KEY, Daemon
from kiri.errors import KiriError
from kiri.status import collect_status, format_status
from kiri.store import Store, open_store

DAY = 86400.0
NOW = 1_790_000_000.0
CUTOFF = NOW - 90 * DAY
OLD, NEW = CUTOFF - DAY, CUTOFF + DAY


def tally(counts):
    return {"A": counts.get("add", 0)}


class Prune(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.store = Store(Path(tmp.name) / "kiri.db", clock=lambda: NOW)
        self.addCleanup(self.store.close)

    def ids(self, table):
        return [r[0] for r in self.store.conn.execute(f"SELECT id FROM {table} ORDER BY id")]

    def fill(self):
        """Rows on both sides of CUTOFF: what must go, and each reason for a row to stay."""
        s, rows = self.store, {}
        rows["old_obs"] = s.add_observation("pulse", {"C": 1.0}, ts=OLD)
        rows["new_obs"] = s.add_observation("pulse", {"C": 2.0}, ts=NEW)
        rows["old_score"] = s.add_score("pulse", 0.1, observation_id=rows["old_obs"], ts=OLD)
        rows["new_score"] = s.add_score("pulse", 0.2, observation_id=rows["new_obs"], ts=NEW)
        rows["late_score"] = s.add_score("pulse", 0.3, observation_id=rows["old_obs"], ts=NEW)  # old reading, scored late
        # Drift: old events folded into an old period, old events folded into a new period, an
        # old pending event, and a period stored at an old ts for events that are new.
        s.add_event("drift", "add", ts=OLD)
        rows["old_period"] = s.fold_events("drift", tally, until=OLD + 1)
        s.add_event("drift", "add", ts=OLD + 2)
        rows["new_period"] = s.fold_events("drift", tally, until=NEW)
        rows["new_event"] = s.add_event("drift", "add", ts=NEW + 1)
        rows["backdated_period"] = s.fold_events("drift", tally, until=NEW + 2, ts=OLD + 3)
        rows["pending_event"] = s.add_event("drift", "add", ts=OLD - 5)   # logged late, not folded yet
        # Decisions and alerts: answered, unanswered and delivered, unanswered and not yet sent.
        for name in ("answered", "delivered", "unsent"):
            rows[f"{name}_decision"] = s.add_decision({"P": 9}, "alert", ts=OLD)
            rows[f"{name}_alert"] = s.add_alert("pulse", name, decision_id=rows[f"{name}_decision"], ts=OLD,
                                                sinks=["log"])
        # Repeats merged into the answered alert (its answer labels them) and into an unanswered one.
        rows["answered_repeat"] = s.add_decision({"P": 9}, "alert", ts=OLD + 1)
        s.alert_seen(rows["answered_alert"], OLD + 1, decision_id=rows["answered_repeat"])
        rows["unanswered_repeat"] = s.add_decision({"P": 9}, "alert", ts=NEW)
        s.alert_seen(rows["delivered_alert"], NEW, decision_id=rows["unanswered_repeat"])
        rows["ok_decision"] = s.add_decision({"P": 0.1}, "ok", ts=OLD)
        rows["new_decision"] = s.add_decision({"P": 0.1}, "ok", ts=NEW)
        for name in ("answered", "delivered"):
            outbox_id = s.outbox_due("log", NOW)[0]["id"]
            s.outbox_sent(outbox_id, ts=OLD)
        s.add_feedback(rows["answered_alert"], "approve", ts=OLD)
        return rows

    def test_prune_keeps_exactly_what_it_must(self):
        rows = self.fill()
        report = self.store.prune(CUTOFF, batch=2)
        self.assertTrue(report.finished)
        self.assertEqual(report.deleted, {"scores": 1, "events": 2, "observations": 2, "outbox": 2,
                                          "alerts": 1, "decisions": 2})
        self.assertEqual(self.ids("observations"), [rows["new_obs"], rows["new_period"], rows["backdated_period"]])
        self.assertEqual(self.ids("scores"), [rows["new_score"], rows["late_score"]])
        late = self.store.latest_scores("pulse", limit=5)
        self.assertIsNone(next(s for s in late if s["id"] == rows["late_score"])["observation_id"],
                          "a score that outlives its reading loses only the link")
        events = self.store.conn.execute("SELECT id, period_id FROM events ORDER BY id").fetchall()
        self.assertEqual([tuple(e) for e in events], [(rows["new_event"], rows["backdated_period"]),
                                                      (rows["pending_event"], None)])
        self.assertEqual(self.ids("alerts"), [rows["answered_alert"], rows["unsent_alert"]])
        self.assertEqual(self.ids("decisions"), [rows["answered_decision"], rows["unsent_decision"],
                                                 rows["answered_repeat"], rows["unanswered_repeat"],
                                                 rows["new_decision"]])
        self.assertIsNone(self.store.labelled_decisions(since=NEW)[0]["repeat_of"],
                          "a repeat of a pruned alert only loses the link")
        self.assertEqual(self.store.outbox_pending(), 1, "the unsent message stays")
        self.assertEqual(len(self.ids("feedback")), 1)
        labelled = [d for d in self.store.labelled_decisions() if d["verdict"]]
        self.assertEqual([d["id"] for d in labelled], [rows["answered_decision"], rows["answered_repeat"]],
                         "Nerve keeps its answer, and the repeats it labels")
        self.assertEqual(self.store.conn.execute("PRAGMA foreign_key_check").fetchall(), [])

        again = self.store.prune(CUTOFF, batch=2)
        self.assertTrue(again.finished)
        self.assertEqual(sum(again.deleted.values()), 0)

    def test_max_batches_stops_early_and_the_next_call_goes_on(self):
        rows = self.fill()
        calls, report = 0, None
        while report is None or not report.finished:
            report = self.store.prune(CUTOFF, batch=1, max_batches=3)
            calls += 1
        self.assertEqual(calls, 4, "10 rows to delete, 3 a call")
        # The same end state as one call.
        self.assertEqual(self.ids("alerts"), [rows["answered_alert"], rows["unsent_alert"]])
        self.assertEqual(self.ids("observations"), [rows["new_obs"], rows["new_period"], rows["backdated_period"]])

    def test_rows_stay_bounded_while_days_go_by(self):
        # 40 days of 48 readings (each scored, each decided on), keeping 7 days: the tables
        # stop growing at a week's worth (the file's pages are reused, not returned).
        per_day, keep = 48, 7
        counts = []
        for day in range(40):
            for k in range(per_day):
                ts = NOW + day * DAY + k * 1800
                obs = self.store.add_observation("pulse", {"C": float(k)}, ts=ts)
                self.store.add_score("pulse", 0.1, observation_id=obs, ts=ts)
                self.store.add_decision({"P": 0.1}, "ok", ts=ts)
            self.store.prune(NOW + (day + 1) * DAY - keep * DAY, batch=50)
            counts.append(sum(self.store.count_observations().values()))
        self.assertEqual(max(counts), keep * per_day)
        self.assertEqual(counts[-1], keep * per_day)
        for table in ("scores", "decisions"):
            self.assertEqual(len(self.ids(table)), keep * per_day, table)

    def test_bad_arguments_are_refused(self):
        for kwargs in ({"before_ts": float("nan")}, {"before_ts": NOW, "batch": 0}, {"before_ts": NOW, "batch": True}):
            with self.subTest(kwargs=kwargs), self.assertRaises(ValueError):
                self.store.prune(**kwargs)

    def test_size_is_the_file_and_its_log(self):
        self.store.add_observation("pulse", {"C": 1.0}, ts=NEW)
        path = Path(self.store.path)
        wal = path.with_name(path.name + "-wal")
        self.assertEqual(self.store.size_bytes(), path.stat().st_size + (wal.stat().st_size if wal.exists() else 0))
        self.assertGreater(self.store.size_bytes(), 0)


class DaemonPrunes(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)
        self.now = NOW
        self.store = open_store(self.home)
        self.addCleanup(self.store.close)
        settings = load_settings(home=self.home, env={"KIRI_RETAIN_DAYS": "2"})
        self.daemon = Daemon(settings, self.store, clock=lambda: self.now)

    def readings(self):
        return sum(self.store.count_observations().values())

    def test_a_backlog_over_several_cycles_then_once_an_hour(self):
        self.store.add_observations([{"atom": "pulse", "values": {"C": float(k)}, "ts": NOW - 3 * DAY + k}
                                     for k in range(1200)])
        self.store.add_observation("pulse", {"C": 9.0}, ts=NOW - DAY)
        with mock.patch.object(daemon_module, "PRUNE_BATCHES", 2):
            self.daemon.prune_old(self.now, None)
            self.assertEqual(self.readings(), 201, "two batches of 500 in one cycle")
            self.assertIsNone(self.store.get_kv(PRUNED_KEY), "not finished: no hour's rest yet")
            self.daemon.prune_old(self.now, None)
        self.assertEqual(self.readings(), 1, "only the reading inside retain_days is left")
        self.assertEqual(self.store.get_kv(PRUNED_KEY), self.now)

        self.store.add_observation("pulse", {"C": 5.0}, ts=NOW - 3 * DAY)
        self.now += 600
        self.daemon.prune_old(self.now, None)
        self.assertEqual(self.readings(), 2, "within the hour: not again")
        self.now += 3600
        self.daemon.prune_old(self.now, None)
        self.assertEqual(self.readings(), 1)

    def test_a_cycle_prunes(self):
        self.store.add_observation("pulse", {"C": 1.0}, ts=NOW - 3 * DAY)
        self.daemon.cycle(inject={"pulse": {"C": 5, "M": 50, "D": 40, "S": 10, "L": 1, "N": 1}})
        self.assertEqual(self.store.observations("pulse", until=NOW - 2 * DAY), [])
        self.assertEqual(self.store.get_kv(PRUNED_KEY), NOW)


class Settings(unittest.TestCase):
    def test_retain_days_is_a_whole_number_of_days(self):
        for text, error in (("1.5", "setting retain_days must be a whole number of days, got '1.5'"),
                            ("0", "setting retain_days must be greater than 0"),
                            ("ninety", "setting retain_days must be a number")):
            with self.subTest(text=text), tempfile.TemporaryDirectory() as home:
                with self.assertRaisesRegex(KiriError, error):
                    load_settings(home=home, env={"KIRI_RETAIN_DAYS": text}).check()
        with tempfile.TemporaryDirectory() as home:
            self.assertEqual(load_settings(home=home, env={}).count("retain_days", "days"), 90)


class Status(unittest.TestCase):
    def test_status_shows_the_database_size(self):
        with tempfile.TemporaryDirectory() as home, open_store(home) as store:
            store.add_observation("pulse", {"C": 1.0}, ts=NOW)
            info = collect_status(load_settings(home=home, env={}), store, now=NOW)
            self.assertEqual(info["db_bytes"], store.size_bytes())
            self.assertIn(f"database {store.size_bytes() / 1e6:.1f} MB", format_status(info, now=NOW).splitlines())


if __name__ == "__main__":
    unittest.main()
