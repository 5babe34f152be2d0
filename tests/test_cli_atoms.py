"""The atom commands (collect, train, score, task, export, import) through the real command line.

Every command runs as its own `python -m kiri …` (or `python -m kiri.atoms.<atom>.<verb> …`)
subprocess against a temporary KIRI_HOME, so these tests see exactly what a user sees:
stdout, stderr, the exit code and what landed in the store (read back with `kiri export`).
Training uses a few steps on small synthetic histories, to keep the file fast.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from tests.helpers import REPO, CommandLineAssertions, run_kiri, trained_pulse_home

TIMEOUT = 60  # seconds any one command may take before the test fails instead of hanging

# One reading of `pulse collect`: "3/5 | C=12% M=47% D=22% S=0% L=0.51 N=1".
PROGRESS = re.compile(r"^(\d+)/(\d+) \| C=\d+% M=\d+% D=\d+% S=\d+% L=\d+(?:\.\d+)? N=[01]$")
SCORE_LINE = re.compile(r"^pulse: score (\d+\.\d+)  threshold (\d+\.\d+)  ratio \S+  (NORMAL|ANOMALY)$")
COUNTS = re.compile(r"\((\d+) real, (\d+) synthetic observations\)")

SYSTEM_PULSE = sys.platform.startswith("linux") or sys.platform == "darwin"
needs_system_pulse = unittest.skipUnless(SYSTEM_PULSE, "pulse has no system source on this platform")

# "C=95 M=90 D=40 S=80 L=18 N=1" quantizes to these tokens under the pulse schema.
HIGH_VALUES = "C=95 M=90 D=40 S=80 L=18 N=1"
HIGH_TOKENS = ["C9", "M9", "D4", "S4", "L4", "N1"]


def pulse_row(ts, values, synthetic=False, source="linux"):
    return {"atom": "pulse", "ts": ts, "values": values, "source": source, "synthetic": synthetic}


def real_pulse_rows(n, end):
    """n plausible real pulse rows, one every 5 minutes, the last at `end`."""
    return [pulse_row(end - (n - 1 - i) * 300.0,
                      {"C": 20.0 + i % 7, "M": 50.0 + i % 3, "D": 40.0, "S": 10.0, "L": 1.0 + (i % 4) / 4, "N": 1})
            for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def trained_template():
    """A home with 60 synthetic pulse observations and weights trained on them, built once
    and copied into each test that needs a trained atom (each test still gets its own home)."""
    return trained_pulse_home(60, 10, timeout=TIMEOUT)


class AtomCommandLine(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.tmp = Path(self.dir.name)
        self.home = self.tmp / "home"

    # --- helpers -------------------------------------------------------------------

    def kiri(self, *args, home=None, **kwargs):
        return run_kiri(*args, home=self.home if home is None else home, timeout=TIMEOUT, **kwargs)

    def ok(self, *args, **kwargs):
        proc = self.kiri(*args, **kwargs)
        self.assertEqual(proc.returncode, 0, f"kiri {' '.join(map(str, args))}: {proc.stderr}")
        self.assertNotIn("Traceback", proc.stderr)
        return proc

    def export(self, atom=None, home=None, env=None):
        args = ("export",) + (("--atom", atom) if atom else ())
        proc = self.ok(*args, home=home, env=env)
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def use_trained_home(self):
        shutil.copytree(str(trained_template()), str(self.home))

    def weights_snapshot(self):
        folder = self.home / "weights"
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    def import_rows(self, rows, home=None):
        path = write_jsonl(self.tmp / f"rows-{time.monotonic_ns()}.jsonl", rows)
        self.ok("import", path, home=home)

    def score_json(self, *args):
        proc = self.ok("pulse", "score", "--json", *args)
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 1, proc.stdout)
        return json.loads(lines[0])


class PulseCollect(AtomCommandLine):
    @needs_system_pulse
    def test_one_reading_is_stored(self):
        proc = self.ok("pulse", "collect")
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 1, proc.stdout)
        self.assertRegex(lines[0], PROGRESS)
        self.assertTrue(lines[0].startswith("1/1 | "))
        rows = self.export("pulse")
        self.assertEqual(len(rows), 1)
        self.assertFalse(rows[0]["synthetic"])
        self.assertEqual(sorted(rows[0]["values"]), ["C", "D", "L", "M", "N", "S"])
        self.assertLess(abs(rows[0]["ts"] - time.time()), 600)

    @needs_system_pulse
    def test_interval_and_duration_print_progress_and_store_every_reading(self):
        proc = self.ok("pulse", "collect", "--interval", 0.2, "--duration", 1)
        lines = proc.stdout.splitlines()
        self.assertEqual(len(lines), 5, proc.stdout)
        totals = set()
        for k, line in enumerate(lines, start=1):
            match = PROGRESS.match(line)
            self.assertIsNotNone(match, line)
            self.assertEqual(int(match.group(1)), k)
            totals.add(int(match.group(2)))
        self.assertEqual(totals, {len(lines)})
        rows = self.export("pulse")
        self.assertEqual(len(rows), len(lines))
        self.assertTrue(all(not row["synthetic"] for row in rows))
        self.assertEqual(len({row["ts"] for row in rows}), len(rows))

    @needs_system_pulse
    def test_module_form_is_the_same_command(self):
        via_cli = self.ok("pulse", "collect")
        via_module = self.ok(module="kiri.atoms.pulse.collect")
        for proc in (via_cli, via_module):
            self.assertEqual(len(proc.stdout.splitlines()), 1, proc.stdout)
            self.assertRegex(proc.stdout.strip(), PROGRESS)
        rows = self.export("pulse")
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["source"], rows[1]["source"])
        # Flags work the same way, --home included.
        other = self.tmp / "other"
        proc = self.ok("--synthetic", 3, "--home", other, module="kiri.atoms.pulse.collect")
        self.assertIn("wrote 3 synthetic observations", proc.stdout)
        self.assertEqual(len(self.export("pulse", home=other)), 3)
        self.assertUserError(self.kiri("--interval", 0, module="kiri.atoms.pulse.collect"), "--interval")

    def test_bad_collect_flags(self):
        self.assertUserError(self.kiri("pulse", "collect", "--interval", -1), "--interval")
        self.assertUserError(self.kiri("pulse", "collect", "--duration", "soon"), "--duration")
        self.assertUserError(self.kiri("pulse", "collect", "--synthetic", 0), "--synthetic")


class Synthetic(AtomCommandLine):
    def test_synthetic_and_dry_run_write_marked_rows(self):
        proc = self.ok("pulse", "collect", "--synthetic", 12)
        self.assertIn("wrote 12 synthetic observations", proc.stdout)
        proc = self.ok("pulse", "collect", "--dry-run", 5, "--seed", 1)
        self.assertIn("wrote 5 synthetic observations", proc.stdout)
        rows = self.export("pulse")
        self.assertEqual(len(rows), 17)
        self.assertTrue(all(row["synthetic"] for row in rows))
        self.assertTrue(all(row["ts"] <= time.time() + 1 for row in rows))

    @needs_system_pulse
    def test_synthetic_rows_never_replace_real_ones(self):
        self.ok("pulse", "collect")
        real_before = [row for row in self.export("pulse") if not row["synthetic"]]
        self.assertEqual(len(real_before), 1)
        # A real row imported at the exact values and time a synthetic one might take.
        ts = real_before[0]["ts"] - 300
        self.import_rows([pulse_row(ts, {"C": 10, "M": 50, "D": 40, "S": 10, "L": 1, "N": 1})])
        self.import_rows([pulse_row(ts, {"C": 10, "M": 50, "D": 40, "S": 10, "L": 1, "N": 1}, synthetic=True,
                                    source="synthetic")])
        self.ok("pulse", "collect", "--synthetic", 10)
        self.ok("pulse", "collect", "--dry-run", 4, "--seed", 2)
        rows = self.export("pulse")
        real = [row for row in rows if not row["synthetic"]]
        synthetic = [row for row in rows if row["synthetic"]]
        self.assertEqual(len(real), 2)
        self.assertIn(real_before[0], real)
        self.assertEqual(len(synthetic), 15)
        self.assertTrue(all(row["synthetic"] is True for row in synthetic))
        self.assertTrue(all(row["synthetic"] is False for row in real))


class Train(AtomCommandLine):
    def test_reports_real_and_synthetic_counts_and_only_a_warm_start_takes_synthetic(self):
        self.import_rows(real_pulse_rows(25, end=time.time() - 86400))
        self.ok("pulse", "collect", "--synthetic", 40)
        metrics = self.tmp / "metrics.jsonl"
        proc = self.ok("pulse", "train", "--steps", 6, "--metrics", metrics, "--warm-start")
        self.assertEqual(COUNTS.search(proc.stdout).groups(), ("25", "40"), proc.stdout)
        self.assertIn("trained 6 steps", proc.stdout)
        self.assertTrue((self.home / "weights" / "pulse.json").is_file())
        self.assertIn(str(self.home / "weights" / "pulse.json"), proc.stdout)

        lines = metrics.read_text(encoding="utf-8").splitlines()
        self.assertEqual(len(lines), 6)
        records = [json.loads(line) for line in lines]
        self.assertEqual([r["step"] for r in records], [1, 2, 3, 4, 5, 6])
        for r in records:
            self.assertLessEqual({"step", "loss", "lr", "seconds"}, set(r))
            self.assertGreater(r["loss"], 0)

        proc = self.ok("pulse", "train", "--steps", 4)   # synthetic history is never mixed in silently
        self.assertEqual(COUNTS.search(proc.stdout).groups(), ("25", "0"), proc.stdout)
        weights = json.loads((self.home / "weights" / "pulse.json").read_text(encoding="utf-8"))
        self.assertEqual(weights["trained_on"]["synthetic"], 0)
        self.assertFalse(weights["trained_on"]["warm_start"])

    def test_too_few_real_rows_fails_clearly_and_names_the_warm_start(self):
        self.import_rows(real_pulse_rows(5, end=time.time()))
        self.ok("pulse", "collect", "--synthetic", 40)
        proc = self.kiri("pulse", "train", "--steps", 3)
        self.assertUserError(proc, "only 5 real readings")
        self.assertIn("kiri pulse train --warm-start", proc.stderr)
        self.assertFalse((self.home / "weights" / "pulse.json").exists())

    def test_zero_steps_is_a_one_line_error(self):
        self.ok("pulse", "collect", "--synthetic", 30)
        self.assertUserError(self.kiri("pulse", "train", "--steps", 0), "--steps")
        self.assertUserError(self.kiri("pulse", "train", "--steps", "many"), "--steps")
        self.assertFalse((self.home / "weights").exists() and any((self.home / "weights").iterdir()))

    def test_too_little_data_leaves_existing_weights_untouched(self):
        self.use_trained_home()
        before = self.weights_snapshot()
        self.assertIn("pulse.json", before)
        # The trained home holds synthetic rows only: without --warm-start there is nothing to learn from.
        self.assertUserError(self.kiri("pulse", "train", "--steps", 3), "need at least")
        # And the last 0.00001 days (under a second) hold nothing either.
        self.assertUserError(self.kiri("pulse", "train", "--steps", 3, "--days", 0.00001, "--warm-start"),
                             "need at least")
        self.assertUserError(self.kiri("pulse", "train", "--steps", 0), "--steps")
        self.assertEqual(self.weights_snapshot(), before)

    def test_empty_home_fails_clearly(self):
        self.assertUserError(self.kiri("pulse", "train", "--steps", 3), "only 0 observations")


class Score(AtomCommandLine):
    def test_values_and_tokens_give_the_same_score_and_table(self):
        self.use_trained_home()
        tables = []
        for obs in (HIGH_VALUES, " ".join(HIGH_TOKENS)):
            proc = self.ok("pulse", "score", "--obs", obs)
            lines = proc.stdout.splitlines()
            match = SCORE_LINE.match(lines[0])
            self.assertIsNotNone(match, proc.stdout)
            score, threshold, verdict = float(match.group(1)), float(match.group(2)), match.group(3)
            self.assertGreater(threshold, 0)
            if abs(score - threshold) > 0.001:
                self.assertEqual(verdict, "ANOMALY" if score > threshold else "NORMAL")
            header = lines[1].split()
            self.assertEqual(header[:3], ["token", "surprise", "expected"])
            rows = [line.split() for line in lines[2:2 + len(HIGH_TOKENS)]]
            self.assertEqual([row[0] for row in rows], HIGH_TOKENS)
            for row in rows:
                self.assertGreaterEqual(float(row[1]), 0)                 # surprise
                self.assertRegex(row[2], "^" + row[0][0] + r"\d$")         # expected token, same field
                self.assertTrue(0 <= float(row[3]) <= 1)                  # its probability
            tables.append(lines[:2 + len(HIGH_TOKENS)])
        self.assertEqual(tables[0], tables[1])

    def test_json_output(self):
        self.use_trained_home()
        by_values = self.score_json("--obs", HIGH_VALUES)
        by_tokens = self.score_json("--obs", " ".join(HIGH_TOKENS))
        for result in (by_values, by_tokens):
            self.assertLessEqual({"score", "threshold", "verdict", "tokens"}, set(result))
            self.assertIn(result["verdict"], ("normal", "anomaly"))
            self.assertEqual(result["verdict"], "anomaly" if result["score"] > result["threshold"] else "normal")
            self.assertEqual([t["token"] for t in result["tokens"]], HIGH_TOKENS)
            for t in result["tokens"]:
                self.assertLessEqual({"token", "surprise", "expected", "p"}, set(t))
                self.assertGreaterEqual(t["surprise"], 0)
                self.assertTrue(0 <= t["p"] <= 1)
                self.assertEqual(t["expected"][0], t["token"][0])
            mean = sum(t["surprise"] for t in result["tokens"]) / len(result["tokens"])
            self.assertAlmostEqual(result["score"], mean, places=9)
        self.assertAlmostEqual(by_values["score"], by_tokens["score"], places=9)

    def test_out_of_range_values_are_clamped_and_reported(self):
        self.use_trained_home()
        result = self.score_json("--obs", "C=-5 M=90 D=40 S=80 L=180 N=1")
        self.assertEqual([t["token"] for t in result["tokens"]][:5], ["C0", "M9", "D4", "S4", "L4"])
        self.assertEqual(sorted(result["clamped"]), ["C", "L"])
        proc = self.ok("pulse", "score", "--obs", "C=-5 M=90 D=40 S=80 L=180 N=1")
        self.assertIn("clamped to the edge bucket: C, L", proc.stdout)

    def test_without_obs_scores_the_latest_stored_observation(self):
        self.use_trained_home()
        now = time.time()
        self.import_rows([pulse_row(now, {"C": 95, "M": 90, "D": 40, "S": 80, "L": 18, "N": 1})])
        self.assertEqual([t["token"] for t in self.score_json()["tokens"]], HIGH_TOKENS)
        self.import_rows([pulse_row(now + 60, {"C": 5, "M": 50, "D": 40, "S": 0, "L": 1, "N": 1})])
        self.assertEqual([t["token"] for t in self.score_json()["tokens"]], ["C0", "M5", "D4", "S0", "L0", "N1"])
        proc = self.ok("pulse", "score")
        self.assertRegex(proc.stdout.splitlines()[0], SCORE_LINE)

    def test_the_latest_stored_observation_gets_a_likelihood_once_there_is_history(self):
        from kiri.store import open_store
        self.use_trained_home()
        # A history of 40 readings, full with the 59 scored: a full one speaks before it spans a week.
        with open(self.home / "config.ini", "a", encoding="utf-8") as f:
            f.write("\n[kiri]\nlikelihood_history = 40\n")
        self.import_rows(real_pulse_rows(60, time.time() - 60))
        self.assertIsNone(self.score_json()["likelihood"], "no scored history yet")
        with open_store(self.home) as store:   # as if the daemon had scored every reading
            threshold = self.score_json()["threshold"]
            for obs in store.observations("pulse")[:-1]:
                store.add_score("pulse", 0.3 * threshold, threshold=threshold, observation_id=obs["id"], ts=obs["ts"])
        result = self.score_json()
        self.assertGreaterEqual(result["likelihood"], 0.0)
        self.assertEqual(result["unusual_at"], 0.3)
        self.assertIn("recent surprise: likelihood", self.ok("pulse", "score").stdout)
        self.assertIsNone(self.score_json("--obs", "C=5 M=50 D=40 S=0 L=1 N=1")["likelihood"],
                          "a reading typed in has no history")

    def test_bad_obs_is_one_line_on_stderr(self):
        self.use_trained_home()
        cases = {
            "C=95 M=90 D=40 S=80 L=18 X=1": "unknown field 'X'",
            "C=high M=90 D=40 S=80 L=18 N=1": "must be a number",
            "C=nan M=90 D=40 S=80 L=18 N=1": "finite",
            "C=95 M=90 D=40 S=80 L=18": "field N is missing",
            "C12 M9 D4 S4 L4 N1": "C12",
            "X1 M9 D4 S4 L4 N1": "X1",
            "M9 C9 D4 S4 L4 N1": "M9",
            "C9 M9 D4": "expected 8 tokens",
            "C=95 M9 D4 S4 L4 N1": "mix of values and tokens",
            "C=1 C=2 M=90 D=40 S=80 L=18 N=1": "field C given twice",
        }
        for obs, text in cases.items():
            with self.subTest(obs=obs):
                proc = self.kiri("pulse", "score", "--obs", obs)
                self.assertUserError(proc, text)
                self.assertEqual(proc.stdout, "")

    def test_before_any_training(self):
        self.ok("pulse", "collect", "--synthetic", 30)
        self.assertUserError(self.kiri("pulse", "score"), "no trained weights yet")
        self.assertUserError(self.kiri("pulse", "score", "--obs", HIGH_VALUES), "no trained weights yet")
        self.assertUserError(self.kiri("pulse", "score", "--json", "--obs", " ".join(HIGH_TOKENS)),
                             "no trained weights yet")


class Home(AtomCommandLine):
    def test_home_flag_wins_over_kiri_home(self):
        flag_home, env_home = self.tmp / "flag", self.tmp / "env"
        self.ok("pulse", "collect", "--synthetic", 30, "--home", flag_home, home=env_home)
        self.ok("pulse", "train", "--steps", 3, "--warm-start", "--home", flag_home, home=env_home)
        self.assertTrue((flag_home / "kiri.db").is_file())
        self.assertTrue((flag_home / "weights" / "pulse.json").is_file())
        self.assertFalse(env_home.exists())
        self.ok("pulse", "score", "--obs", HIGH_VALUES, "--home", flag_home, home=env_home)
        self.assertFalse(env_home.exists())

    def test_kiri_home_is_used_without_the_flag(self):
        env_home, other = self.tmp / "env", self.tmp / "other"
        self.ok("drift", "collect", "--added", 2, home=env_home)
        self.ok("task", "add", "kiri", home=env_home)
        self.assertTrue((env_home / "kiri.db").is_file())
        self.assertEqual(len(self.export("drift", home=env_home)), 1)
        self.assertEqual(self.export("drift", home=other), [])
        # And export/import honour --home too.
        proc = self.ok("export", "--atom", "drift", "--home", env_home, home=other)
        self.assertEqual(len(proc.stdout.splitlines()), 1)


class Drift(AtomCommandLine):
    def test_counts_are_logged_as_one_period(self):
        proc = self.ok("--added", 3, "--completed", 1, "--switched", 2, module="kiri.atoms.drift.collect")
        self.assertIn("A=3 C=1 S=2", proc.stdout)
        self.ok("drift", "collect", "--added", 2)
        rows = self.export("drift")
        self.assertEqual([row["values"] for row in rows], [{"A": 3, "C": 1, "S": 2}, {"A": 2, "C": 0, "S": 0}])
        self.assertTrue(all(row["synthetic"] is False for row in rows))

    def test_bad_counts(self):
        for flag, value in (("--added", -1), ("--completed", 1.5), ("--switched", "two")):
            with self.subTest(flag=flag, value=value):
                self.assertUserError(self.kiri("drift", "collect", flag, value), flag)
                self.assertUserError(self.kiri(flag, value, module="kiri.atoms.drift.collect"), flag)
        self.assertEqual(self.export("drift"), [])

    def test_task_events_are_summed_by_the_next_collect(self):
        for kind, project in (("add", "kiri"), ("add", "kiri"), ("add", "home"), ("done", "kiri"),
                              ("switch", "home"), ("switch", "")):
            self.ok("task", kind, *([project] if project else []))
        proc = self.ok("drift", "collect")
        self.assertEqual(proc.stdout.strip(), "1/1 | A=3 C=1 S=2")
        rows = self.export("drift")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["values"], {"A": 3, "C": 1, "S": 2})
        self.assertFalse(rows[0]["synthetic"])

        self.ok("drift", "collect")
        rows = self.export("drift")
        self.assertEqual([row["values"] for row in rows], [{"A": 3, "C": 1, "S": 2}, {"A": 0, "C": 0, "S": 0}])
        self.assertLess(rows[0]["ts"], rows[1]["ts"])
        self.assertUserError(self.kiri("task", "finish", "kiri"), "invalid choice")

    def test_synthetic_train_and_score(self):
        self.ok("drift", "collect", "--synthetic", 40)
        proc = self.ok("drift", "train", "--steps", 4, "--warm-start")
        self.assertEqual(COUNTS.search(proc.stdout).groups(), ("0", "40"))
        result = json.loads(self.ok("drift", "score", "--json", "--obs", "A=3 C=1 S=2").stdout)
        self.assertEqual([t["token"] for t in result["tokens"]], ["A3", "C1", "S2"])


class Rhythm(AtomCommandLine):
    def test_collect_stores_a_reading_or_says_it_cannot(self):
        proc = self.kiri("rhythm", "collect")
        self.assertNotIn("Traceback", proc.stderr)
        rows = self.export("rhythm")
        if proc.returncode == 0:
            self.assertEqual(len(rows), 1, proc.stdout)
            self.assertFalse(rows[0]["synthetic"])
            self.assertEqual(sorted(rows[0]["values"]), ["A", "F", "G", "H", "I", "W"])
            self.assertRegex(proc.stdout.strip(), r"^1/1 \| I=")
        else:
            self.assertUserError(proc, "not available on this system")
            self.assertEqual(rows, [])

    def test_synthetic(self):
        proc = self.ok("rhythm", "collect", "--synthetic", 50)
        self.assertIn("wrote 50 synthetic observations", proc.stdout)
        rows = self.export("rhythm")
        self.assertEqual(len(rows), 50)
        self.assertTrue(all(row["synthetic"] for row in rows))
        self.assertTrue(all(sorted(row["values"]) == ["A", "F", "G", "H", "I", "W"] for row in rows))
        self.ok("rhythm", "train", "--steps", 3, "--warm-start")
        self.assertTrue((self.home / "weights" / "rhythm.json").is_file())


class ExportImport(AtomCommandLine):
    def test_each_line_names_the_machine_and_a_router_fed_pulse_names_the_router(self):
        self.ok("drift", "collect", "--added", "1", "--completed", "0", "--switched", "0")
        self.import_rows(real_pulse_rows(2, end=time.time()))
        rows = self.export(env={"KIRI_HOST_NAME": "box1"})
        self.assertEqual({(r["atom"], r["host"]) for r in rows}, {("drift", "box1"), ("pulse", "box1")})
        router = {"KIRI_HOST_NAME": "box1", "KIRI_PULSE_SOURCE": "mikrotik", "KIRI_MIKROTIK_URL": "https://192.168.88.1"}
        rows = self.export(env=router)
        self.assertEqual({(r["atom"], r["host"]) for r in rows}, {("drift", "box1"), ("pulse", "192.168.88.1")})
        # A file with hosts imports as before (the host is the exporter's note, not the row's identity).
        path = write_jsonl(self.tmp / "hosts.jsonl", rows)
        self.assertEqual(self.ok("import", path).stdout.strip(),
                         "imported 0 observations, skipped 0 bad lines, 3 already stored")

    def test_export_into_a_closed_pipe_stops_quietly(self):
        self.ok("pulse", "collect", "--synthetic", 3000)
        env = dict(os.environ, PYTHONPATH=str(REPO), KIRI_HOME=str(self.home))
        proc = subprocess.run(f"{shlex.quote(sys.executable)} -m kiri export | head -n 2", shell=True, cwd=str(REPO),
                              env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(len(proc.stdout.splitlines()), 2)
        self.assertNotIn("Traceback", proc.stderr)

    def test_export_then_import_into_a_fresh_home(self):
        self.ok("pulse", "collect", "--synthetic", 6)
        self.import_rows(real_pulse_rows(3, end=time.time() - 7200))
        self.ok("drift", "collect", "--added", 1)

        proc = self.ok("export", "--atom", "pulse", "--format", "jsonl")
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        self.assertEqual(len(rows), 9)
        for row in rows:
            self.assertEqual(set(row), {"atom", "ts", "values", "source", "synthetic", "host"})
            self.assertEqual(row["atom"], "pulse")
        self.assertEqual(sum(1 for row in rows if row["synthetic"]), 6)
        self.assertEqual([row["ts"] for row in rows], sorted(row["ts"] for row in rows))
        self.assertEqual(len(self.export()), 10)

        out = self.tmp / "pulse.jsonl"
        proc = self.ok("export", "--atom", "pulse", "--out", out)
        self.assertEqual(proc.stdout, "")
        self.assertIn("exported 9 observations", proc.stderr)
        self.assertEqual([json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()], rows)

        fresh = self.tmp / "fresh"
        proc = self.ok("import", out, home=fresh)
        self.assertIn("imported 9 observations", proc.stdout)
        self.assertEqual(self.export("pulse", home=fresh), rows)
        self.assertEqual(self.export("drift", home=fresh), [])
        proc = self.ok("import", out, home=fresh)
        self.assertIn("imported 0 observations", proc.stdout)
        self.assertIn("9 already stored", proc.stdout)
        self.assertEqual(self.export("pulse", home=fresh), rows)

    def test_bad_lines_are_reported_and_good_lines_imported(self):
        good = {"C": 1, "M": 2, "D": 3, "S": 4, "L": 0.5, "N": 1}
        path = self.tmp / "mixed.jsonl"
        path.write_text("\n".join([
            json.dumps(pulse_row(1000.0, good)),                                  # 1 good
            "this is not json",                                                   # 2
            json.dumps(pulse_row(1001.0, dict(good, C=float("nan")))),            # 3 NaN
            json.dumps(pulse_row(1002.0, dict(good, C="high"))),                  # 4 text
            json.dumps({"atom": "pulse", "values": good}),                        # 5 no ts
            "",                                                                   # 6 blank: ignored
            json.dumps(pulse_row(1003.0, dict(good, C=5), synthetic=True)),       # 7 good
        ]) + "\n", encoding="utf-8")
        proc = self.kiri("import", path)
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", proc.stderr)
        errors = proc.stderr.strip().splitlines()
        self.assertEqual(len(errors), 4, proc.stderr)
        for line, number in zip(errors, (2, 3, 4, 5)):
            self.assertTrue(line.startswith(f"{path}:{number}: "), line)
        self.assertIn("ts", errors[3])
        self.assertIn("imported 2 observations", proc.stdout)
        rows = self.export("pulse")
        self.assertEqual([(row["ts"], row["synthetic"]) for row in rows], [(1000.0, False), (1003.0, True)])

    def test_missing_file(self):
        self.assertUserError(self.kiri("import", self.tmp / "nope.jsonl"), "cannot read")
        self.assertUserError(self.kiri("export", "--out", self.tmp / "no" / "dir" / "x.jsonl"), "cannot write")


class ConcurrentWriters(AtomCommandLine):
    @needs_system_pulse
    def test_two_writers_at_once_lose_nothing(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["KIRI_HOME"] = str(self.home)
        collector = subprocess.Popen(
            [sys.executable, "-m", "kiri.atoms.pulse.collect", "--interval", "0.2", "--duration", "4"],
            cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for i in range(15):
                proc = self.kiri("drift", "collect", "--added", 1)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                if i == 0:
                    self.assertIsNone(collector.poll(), "the collector ended before the drift writes started")
            out, err = collector.communicate(timeout=120)
        finally:
            if collector.poll() is None:
                collector.kill()
                collector.communicate()
        self.assertEqual(collector.returncode, 0, err)
        self.assertNotIn("Traceback", err)
        readings = [line for line in out.splitlines() if PROGRESS.match(line)]
        self.assertGreater(len(readings), 0, out)
        self.assertEqual(len(readings), len(out.splitlines()), out)

        drift = self.export("drift")
        self.assertEqual(len(drift), 15)
        self.assertTrue(all(row["values"] == {"A": 1, "C": 0, "S": 0} for row in drift))
        self.assertEqual(len(self.export("pulse")), len(readings))


class ModuleForm(AtomCommandLine):
    """`python -m kiri.atoms.<atom>.<verb> …` becomes `python -m kiri <atom> <verb> …` (kiri.atoms.entry)."""

    MODULES = [f"kiri.atoms.{atom}.{verb}" for atom in ("pulse", "rhythm", "drift")
               for verb in ("collect", "train", "score")]

    def test_drift_collect_with_home(self):
        home = self.tmp / "elsewhere"
        proc = self.ok("--added", 1, "--completed", 0, "--switched", 0, "--home", home,
                       module="kiri.atoms.drift.collect")
        self.assertEqual(proc.stdout.strip(), "drift: logged A=1 C=0 S=0")
        self.assertEqual(proc.stderr, "")
        self.assertEqual([row["values"] for row in self.export("drift", home=home)], [{"A": 1, "C": 0, "S": 0}])

    def test_bad_input_is_a_one_line_usage_error(self):
        proc = self.kiri("--added", -1, "--home", self.tmp / "elsewhere", module="kiri.atoms.drift.collect")
        self.assertUserError(proc, "--added", code=2)
        self.assertEqual(proc.stdout, "")

    def test_score_on_an_empty_home_is_a_one_line_error(self):
        empty = self.tmp / "empty"
        empty.mkdir()
        proc = self.kiri("--home", empty, module="kiri.atoms.pulse.score")
        self.assertUserError(proc, "no stored observation to score")
        self.assertEqual(proc.stderr, self.kiri("pulse", "score", "--home", empty).stderr)

    def python(self, *args, pythonpath):
        env = dict(os.environ, PYTHONPATH=str(pythonpath), KIRI_HOME=str(self.home))
        return subprocess.run([sys.executable] + [str(a) for a in args], cwd=str(self.tmp), env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)

    def test_the_entry_points_import_nothing_above_the_atoms(self):
        code = ("import importlib, sys\n"
                f"for name in {self.MODULES!r}: importlib.import_module(name)\n"
                "print('\\n'.join(m for m in sys.modules if m == 'kiri' or m.startswith('kiri.')))")
        proc = self.python("-c", code, pythonpath=REPO)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        loaded = proc.stdout.split()
        self.assertIn("kiri.atoms.entry", loaded)
        allowed = ("kiri.atoms", "kiri.core", "kiri.errors", "kiri.ground")
        self.assertEqual([m for m in loaded if m != "kiri" and not any(
            m == a or m.startswith(a + ".") for a in allowed)], [])

    def test_the_kiri_package_of_the_entry_point_is_the_one_run(self):
        # No PYTHONPATH leads to the repository and the working directory holds no kiri, but a
        # decoy `kiri` is on the caller's PYTHONPATH: the child must still run this repository's.
        decoy = self.tmp / "decoy" / "kiri"
        decoy.mkdir(parents=True)
        (decoy / "__init__.py").write_text("", encoding="utf-8")
        (decoy / "__main__.py").write_text("print('decoy'); raise SystemExit(7)\n", encoding="utf-8")
        start = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
                 "runpy.run_module('kiri.atoms.drift.collect', run_name='__main__', alter_sys=True)")
        proc = self.python("-c", start, REPO, "--added", 2, pythonpath=decoy.parent)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(proc.stdout.strip(), "drift: logged A=2 C=0 S=0")


if __name__ == "__main__":
    unittest.main()


class DeclaredAtomCommands(AtomCommandLine):
    """`kiri atom NAME collect|train|score` for an atom declared in config.ini."""

    def declare(self):
        self.home.mkdir()
        code = ("import json, itertools, time; i = int(time.time() * 20) % 3; "
                "print(json.dumps({'T': 45 + 5 * i, 'Q': (100, 200, 300)[i]}))")
        (self.home / "config.ini").write_text(
            "[atom:gauge]\nschema = T=0:100:10 Q=learn:4\ncommand = %s -c %s\ninterval = 60\n"
            % (shlex.quote(sys.executable), shlex.quote(code)), encoding="utf-8")

    def test_collect_train_and_score_a_declared_atom(self):
        self.declare()
        proc = self.ok("atom", "gauge", "collect", "--interval", 0.05, "--duration", 1.5)
        self.assertRegex(proc.stdout.splitlines()[-1], r"\| T=\d+ Q=\d00$")
        rows = self.export("gauge")
        self.assertGreaterEqual(len(rows), 20)
        self.assertEqual(sorted(rows[0]["values"]), ["Q", "T"])
        self.ok("atom", "gauge", "train", "--steps", 30)
        self.assertTrue((self.home / "weights" / "gauge.json").exists())
        result = json.loads(self.ok("atom", "gauge", "score", "--json", "--obs", "T=50 Q=9000").stdout)
        self.assertEqual([t["token"] for t in result["tokens"]], ["T5", "Q>"], "9000: above every learned bucket")
        self.assertEqual(result["verdict"], "anomaly")
        self.assertIn("gauge: score", self.ok("atom", "gauge", "score").stdout)

    def test_unknown_or_undeclared_atoms_and_synthetic_history_are_one_line_errors(self):
        self.declare()
        self.assertUserError(self.kiri("atom", "nope", "score"), "unknown atom 'nope'; choose one of pulse, rhythm, drift, gauge")
        self.assertUserError(self.kiri("atom", "gauge", "collect", "--synthetic", 5), "has no synthetic history")
        self.assertUserError(self.kiri("atom", "gauge", "score"),
                             "gauge: no stored observation to score; run `kiri atom gauge collect`")
        self.assertUserError(self.kiri("atom", "gauge", "score", "--obs", "T=50 Q=1"),
                             "gauge: no trained weights yet; run `kiri atom gauge train`")
        self.assertUserError(self.kiri("atom", "gauge"), "the following arguments are required")
        self.assertEqual(self.export("gauge"), [], "nothing was written")
