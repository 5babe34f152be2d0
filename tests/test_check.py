"""`kiri check`, `kiri forget` and what `kiri status` says of trouble: a damaged database,
readings that do not fit, weights the atom fell back from, the last cycle's errors.

The library calls run against a real home (real SQLite, weights trained for two steps);
the commands run as real `python -m kiri` processes, as a user meets them.
"""

import os
import random
import shutil
import tempfile
import time
import unittest
from pathlib import Path

from kiri import check
from kiri.atoms import verbs
from kiri.config import load_settings
from kiri.core.weights import previous_path
from kiri.daemon import LAST_CYCLE_KEY
from kiri.errors import KiriError
from kiri.status import collect_status, format_status
from kiri.store import open_store
from tests.helpers import CommandLineAssertions, run_kiri

NOW = time.time()
GOOD = {"C": 12.0, "M": 50.0, "D": 40.0, "S": 1.0, "L": 0.5, "N": 1}


_template = []


def trained_home():
    """A home with 60 synthetic Pulse readings and Pulse weights trained on them, built once."""
    if not _template:
        tmp = tempfile.TemporaryDirectory()
        unittest.addModuleCleanup(tmp.cleanup)
        home = Path(tmp.name) / "home"
        with open_store(home) as store:
            pulse = verbs.atom_module("pulse")
            verbs.add_synthetic(pulse, store, 60, end=NOW - 600)
            verbs.train(pulse, load_settings(home=home, env={}), store, steps=2, warm_start=True)
        _template.append(home)
    return _template[0]


class Home(unittest.TestCase):
    """A copy of trained_home() of its own."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        shutil.copytree(str(trained_home()), str(self.home))
        self.store = self.open_store()
        self.pulse = verbs.atom_module("pulse", self.settings())

    def open_store(self):
        store = open_store(self.home)
        self.addCleanup(store.close)
        return store

    def settings(self):
        return load_settings(home=self.home, env={})

    def check(self):
        return check.check(self.settings(), now=NOW)

    def problems(self):
        return [str(p) for p in self.check().problems]

    def add_bad_readings(self):
        self.store.add_observation("pulse", {"Q": 1}, ts=NOW - 300, source="import")   # what import once let in
        self.store.add_observation("pulse", GOOD, ts=1e18, source="import")
        self.store.add_observation("gpu", {"T": 40}, ts=NOW - 300, source="command")     # declared no more

    def forget(self, atom, **filters):
        return check.forget(self.store, check.specs_of(self.settings()), atom, now=NOW, **filters)


class Check(Home):
    def test_a_sound_home(self):
        report = self.check()
        self.assertEqual(report.problems, [])
        self.assertEqual(report.checked, ["database sound, 60 readings", "weights of pulse load"])

    def test_readings_that_do_not_fit_or_come_from_the_future_or_from_an_atom_not_run(self):
        self.add_bad_readings()
        problems = self.problems()
        self.assertEqual(len(problems), 3, problems)
        gpu, unfit, future = problems
        self.assertIn("gpu: 1 reading of an atom this installation does not run — fix: kiri forget gpu --all", gpu)
        self.assertIn("pulse: 1 reading not fitting its schema (the first at ", unfit)
        self.assertIn("field C is missing) — fix: kiri forget pulse --bad", unfit)
        self.assertIn("pulse: 1 reading from the future (the first at ts 1e+18: ", future)
        self.assertTrue(future.endswith("— fix: kiri forget pulse --bad"), future)

    def test_the_fix_it_names_fixes_it(self):
        # The issue: a row that does not fit stops training, and no command could remove it.
        self.add_bad_readings()
        with self.assertRaisesRegex(KiriError, "field C is missing"):
            verbs.train(self.pulse, self.settings(), self.store, steps=1, warm_start=True)
        self.assertEqual(self.forget("pulse", bad=True), 2)
        self.assertEqual(self.forget("gpu", everything=True), 1)
        self.assertEqual(self.check().problems, [])
        verbs.train(self.pulse, self.settings(), self.store, steps=1, warm_start=True)
        self.assertEqual(self.store.count_observations("pulse")["synthetic"], 60)

    def test_unusable_weights_and_the_previous_ones(self):
        path = self.settings().weights_path("pulse")
        verbs.train(self.pulse, self.settings(), self.store, steps=2, warm_start=True)   # keeps a .prev.json
        path.write_text(path.read_text()[:1000])
        [problem] = self.problems()
        self.assertIn(f"pulse: weights unusable: {path}: not valid JSON", problem)
        self.assertIn("it uses pulse.prev.json meanwhile — fix: kiri pulse train", problem)
        previous_path(path).write_text("{}")
        problems = self.problems()
        self.assertIn(f"pulse: the previous weights, kept to fall back to, are unusable: {previous_path(path)}", problems[0])
        self.assertTrue(problems[0].endswith(f"— fix: rm {previous_path(path)} (training keeps a new one)"))
        self.assertIn("it scores nothing until retrained — fix: kiri pulse train", problems[1])

    def test_a_declared_atom_whose_schema_changed(self):
        config = self.home / "config.ini"
        config.write_text("[atom:gauge]\nschema = T=0:100:5\ncommand = true\n")
        for i in range(30):
            self.store.add_observation("gauge", {"T": 20 + i % 7}, ts=NOW - 300 * (30 - i), source="command")
        verbs.train(verbs.atom_module("gauge", self.settings()), self.settings(), self.store, steps=1)
        self.assertEqual(self.problems(), [])
        config.write_text("[atom:gauge]\nschema = T=0:100:5 U=0:10:2\ncommand = true\n")
        unfit, fields = self.problems()
        self.assertIn("gauge: 30 readings not fitting its schema", unfit)
        self.assertIn("field U is missing) — fix: kiri forget gauge --bad", unfit)
        self.assertEqual(fields, "gauge: its weights were trained on the fields T; the atom now reads T U — fix: "
                                 "kiri atom gauge train")

    def test_a_database_that_cannot_be_opened(self):
        self.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.store.close()
        damage(self.home, first=0)
        [problem] = self.problems()
        self.assertIn(f"database: cannot open {self.home / 'kiri.db'}: ", problem)
        self.assertIn(".recover", problem)
        (self.home / "kiri.db").write_bytes(b"this is no database" * 1000)
        [problem] = self.problems()
        self.assertIn("file is not a database", problem)


def damage(home, first=0.75):
    """Garble kiri.db's pages from `first` (a share of the file) to its end, as a failing disk
    would (seeded: the same every run). From 0.75 on they are the newest readings' pages, and
    the file still opens; from its third page on, its schema is gone too."""
    path = home / "kiri.db"
    rng = random.Random(7)
    pages = os.path.getsize(path) // 4096
    with open(path, "r+b") as f:
        for page in range(max(2, int(first * pages)), pages):
            f.seek(page * 4096 + 8)
            f.write(bytes(rng.randrange(256) for _ in range(1000)))


class Damaged(Home):
    def setUp(self):
        super().setUp()
        self.store.add_observations([{"atom": "pulse", "ts": NOW - 300 * (i + 20), "values": dict(GOOD, C=i % 100),
                                      "source": "linux"} for i in range(200)])
        self.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        damage(self.home)

    def test_check_says_so_and_how_to_recover(self):
        [problem] = self.problems()
        self.assertIn(f"database {self.home / 'kiri.db'} is damaged: ", problem)
        self.assertIn("fix: stop the daemon (kiri daemon stop), then `sqlite3 ", problem)

    def test_status_says_so_instead_of_counts(self):
        with open_store(self.home) as store:
            info = collect_status(self.settings(), store, now=NOW)
        self.assertTrue(info["database_damage"])
        self.assertNotIn("atoms", info)
        text = format_status(info, now=NOW)
        self.assertIn("database DAMAGED: ", text)
        self.assertIn("`kiri check` says how to recover it", text)
        self.assertNotIn("real", text)


class Forget(Home):
    def test_a_filter_is_required(self):
        with self.assertRaisesRegex(KiriError, "say which readings"):
            self.forget("pulse")
        self.assertEqual(self.store.count_observations("pulse")["synthetic"], 60)

    def test_by_time_and_source_with_a_dry_run_first(self):
        rows = self.store.observations("pulse")
        since, until = rows[10]["ts"], rows[20]["ts"]
        self.assertEqual(self.forget("pulse", since=since, until=until, dry_run=True), 10)
        self.assertEqual(len(self.store.observations("pulse")), 60)
        self.assertEqual(self.forget("pulse", since=since, until=until), 10)
        self.assertEqual([r["ts"] for r in self.store.observations("pulse")],
                         [r["ts"] for r in rows[:10] + rows[20:]])
        self.store.add_observation("pulse", GOOD, ts=NOW - 60, source="linux")
        self.assertEqual(self.forget("pulse", source="synthetic"), 50)
        self.assertEqual([r["source"] for r in self.store.observations("pulse")], ["linux"])

    def test_a_reading_goes_with_its_scores_and_the_events_counted_in_it(self):
        obs = self.store.observations("pulse")[-1]
        self.store.add_score("pulse", 1.0, threshold=2.0, observation_id=obs["id"], ts=obs["ts"])
        self.store.add_event("drift", "add", ts=NOW - 100)
        period = self.store.fold_events("drift", lambda counts: {"A": 1, "C": 0, "S": 0}, until=NOW - 50)
        self.assertEqual(self.forget("pulse", since=obs["ts"]), 1)
        self.assertEqual(self.store.latest_scores("pulse"), [])
        self.assertEqual(self.forget("drift", everything=True), 1)
        self.assertIsNone(self.store.observation(period))
        self.assertEqual(self.store.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0], 0)

    def test_a_bad_atom_name_is_one_line(self):
        with self.assertRaisesRegex(KiriError, "forget: atom: must be a name"):
            self.forget("no such atom", everything=True)


class Status(Home):
    def text(self):
        return format_status(collect_status(self.settings(), self.store, now=NOW), now=NOW)

    def test_weights_fallen_back_from(self):
        path = self.settings().weights_path("pulse")
        verbs.train(self.pulse, self.settings(), self.store, steps=2, warm_start=True)
        path.write_text(path.read_text()[:500])
        text = self.text()
        self.assertIn(f"weights: {path}: not valid JSON (truncated or corrupted?)", text)
        self.assertIn("; using pulse.prev.json", text)

    def test_the_last_cycles_errors(self):
        errors = [["pulse", "collect", f"problem {i}"] for i in range(8)]
        self.store.set_kv(LAST_CYCLE_KEY, {"ts": NOW - 30, "decision": None, "errors": errors})
        lines = self.text().splitlines()
        self.assertIn("  error: pulse collect: problem 0", lines)
        self.assertIn("  error: pulse collect: problem 4", lines)
        self.assertNotIn("  error: pulse collect: problem 5", lines)
        self.assertIn("  … and 3 more errors (kiri status --json lists them)", lines)


class Commands(CommandLineAssertions, Home):
    def kiri(self, *args):
        return run_kiri(*args, home=self.home, timeout=60)

    def test_check_exit_codes_and_lines(self):
        proc = self.kiri("check")
        self.assertEqual((proc.returncode, proc.stderr), (0, ""))
        self.assertEqual(proc.stdout, "ok: database sound, 60 readings; weights of pulse load\n")
        self.add_bad_readings()
        proc = self.kiri("check")
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(len(proc.stdout.splitlines()), 3, proc.stdout)
        self.assertTrue(all(" — fix: kiri forget " in line for line in proc.stdout.splitlines()))

    def test_forget(self):
        self.add_bad_readings()
        self.assertUserError(self.kiri("forget", "pulse"), "say which readings", code=1)
        self.assertUserError(self.kiri("forget", "pulse", "--since", "yesterday"), "expected seconds since 1970", code=2)
        proc = self.kiri("forget", "pulse", "--bad", "--dry-run")
        self.assertEqual(proc.stdout, "would forget 2 readings of pulse (with their scores); "
                                      "run it again without --dry-run to forget them\n")
        self.assertEqual(self.kiri("forget", "pulse", "--bad").stdout, "forgot 2 readings of pulse (with their scores)\n")
        day = time.strftime("%Y-%m-%d", time.localtime(NOW + 86400))
        self.assertEqual(self.kiri("forget", "pulse", "--since", day).stdout,
                         "forgot 0 readings of pulse (with their scores)\n")

    def test_score_says_on_stderr_that_it_fell_back(self):
        path = self.settings().weights_path("pulse")
        verbs.train(self.pulse, self.settings(), self.store, steps=2, warm_start=True)
        path.write_text(path.read_text()[:500])
        proc = self.kiri("pulse", "score")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stderr, f"kiri: warning: pulse: {path}: not valid JSON (truncated or corrupted?): "
                                      f"Expecting ',' delimiter: line 1 column 501 (char 500); using pulse.prev.json\n")
        self.assertTrue(proc.stdout.startswith("pulse: score "), proc.stdout)

    def test_status_of_a_damaged_database(self):
        self.store.add_observations([{"atom": "pulse", "ts": NOW - 300 * (i + 20), "values": dict(GOOD, C=i % 100),
                                      "source": "linux"} for i in range(200)])
        self.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.store.close()
        damage(self.home)
        proc = self.kiri("status")
        self.assertNotIn("Traceback", proc.stderr)
        self.assertIn("database DAMAGED", proc.stdout)


if __name__ == "__main__":
    unittest.main()
