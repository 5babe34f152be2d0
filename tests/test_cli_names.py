"""The names demo through the real command line."""

import json
import tempfile
import unittest
from pathlib import Path

from tests.helpers import REPO, CommandLineAssertions, run_kiri, trained_pulse_home


class NamesCommandLine(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.tmp = Path(self.dir.name)

    def tearDown(self):
        self.dir.cleanup()

    def test_help_and_version(self):
        proc = run_kiri("--help", home=self.tmp)
        self.assertEqual(proc.returncode, 0)
        self.assertIn("names", proc.stdout)
        proc = run_kiri("--version", home=self.tmp)
        self.assertRegex(proc.stdout, r"^kiri \d+\.\d+\.\d+")

    def test_train_then_sample(self):
        out, metrics = self.tmp / "names.json", self.tmp / "m.jsonl"
        proc = run_kiri("names", "train", "--steps", 5, "--seed", 1, "--out", out, "--metrics", metrics, home=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("4192 parameters", proc.stdout)
        self.assertIn("names step 5/5 | loss", proc.stderr)
        self.assertEqual(len(metrics.read_text().splitlines()), 5)
        proc = run_kiri("names", "sample", "-n", 7, "--weights", out, "--seed", 3, home=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout.splitlines()), 7)

    def test_value_engine_gives_the_same_run(self):
        runs = []
        for engine in ("value", "fast"):
            metrics = self.tmp / f"{engine}.jsonl"
            proc = run_kiri("names", "train", "--steps", 3, "--engine", engine, "--out", self.tmp / f"{engine}.json",
                            "--metrics", metrics, home=self.tmp)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            runs.append([json.loads(line)["loss"] for line in metrics.read_text().splitlines()])
        for a, b in zip(*runs):
            self.assertAlmostEqual(a, b, delta=1e-9)

    def test_shipped_weights_sample_on_a_fresh_clone(self):
        self.assertTrue((REPO / "weights" / "names.json").exists())
        proc = run_kiri("names", "sample", "-n", 3, home=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout.splitlines()), 3)

    def test_train_without_out_writes_kiri_home_not_the_package(self):
        shipped = REPO / "weights" / "names.json"
        before = shipped.read_bytes()
        proc = run_kiri("names", "train", "--steps", 2, home=self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(f"saved {self.tmp / 'weights' / 'names.json'}", proc.stdout)
        self.assertEqual(shipped.read_bytes(), before)
        self.assertFalse((REPO / "weights" / "names.prev.json").exists())

    def test_sample_prefers_the_weights_trained_in_kiri_home(self):
        # A broken file there shows it is the one read, not the shipped weights.
        (self.tmp / "weights").mkdir()
        (self.tmp / "weights" / "names.json").write_text("{")
        proc = run_kiri("names", "sample", "-n", 1, home=self.tmp)
        self.assertUserError(proc, f"{self.tmp / 'weights' / 'names.json'}: not valid JSON")

    def test_bad_flags(self):
        self.assertUserError(run_kiri("names", "train", "--steps", -1, home=self.tmp), "--steps")
        self.assertUserError(run_kiri("names", "train", "--steps", "ten", home=self.tmp), "--steps")
        self.assertUserError(run_kiri("names", "sample", "--temperature", 0, home=self.tmp), "--temperature")
        self.assertUserError(run_kiri("names", "sample", "--weights", self.tmp / "nope.json", home=self.tmp),
                             "no such weights file")
        self.assertUserError(run_kiri("names", "train", "--steps", 2, "--data", self.tmp / "nope.txt", home=self.tmp),
                             "cannot read names file")
        self.assertUserError(run_kiri("names", "fly", home=self.tmp), "invalid choice")

    def test_an_atoms_weights_are_not_names_weights(self):
        home = trained_pulse_home(200, 2)
        proc = run_kiri("names", "sample", "--weights", home / "weights" / "pulse.json", home=self.tmp)
        self.assertUserError(proc, "not names weights")
        self.assertEqual(proc.stdout, "")

    def test_bad_engine_from_environment(self):
        proc = run_kiri("names", "sample", "-n", 1, home=self.tmp, env={"KIRI_ENGINE": "gpu"})
        self.assertUserError(proc, "engine must be one of")

    def test_failed_training_leaves_existing_weights_untouched(self):
        out = self.tmp / "names.json"
        self.assertEqual(run_kiri("names", "train", "--steps", 2, "--out", out, home=self.tmp).returncode, 0)
        before = out.read_bytes()
        (self.tmp / "empty.txt").write_text("\n\n")
        proc = run_kiri("names", "train", "--steps", 2, "--data", self.tmp / "empty.txt", "--out", out, home=self.tmp)
        self.assertUserError(proc, "holds no names")
        self.assertEqual(out.read_bytes(), before)


if __name__ == "__main__":
    unittest.main()
