"""`kiri demo` (what `make demo` runs) through the real command line, shortened."""

import re
import sys
import tempfile
import unittest
from pathlib import Path

from tests.helpers import CommandLineAssertions, run_kiri

TIMEOUT = 180
# The demo reads this machine's Pulse; elsewhere it has nothing to collect.
SYSTEM_PULSE = sys.platform.startswith("linux") or sys.platform == "darwin"


class DemoCommandLine(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.tmp = Path(self.dir.name)

    def demo(self, *args):
        return run_kiri("demo", *args, env={"HOME": str(self.tmp)}, timeout=TIMEOUT)

    @unittest.skipUnless(SYSTEM_PULSE, "Pulse cannot read this system")
    def test_the_demo_runs_end_to_end_in_the_folder_it_is_given(self):
        home = self.tmp / "demo"
        proc = self.demo("--seconds", 2, "--steps", 100, "--home", home)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        out = proc.stdout
        self.assertIn(f"demo home: {home}", out)
        for step in range(1, 7):
            self.assertRegex(out, rf"(?m)^{step}\. ")
        ratio = re.search(r"'H1 W1 C9 M9 D4 S4 L4 N1' is (\d+\.\d)x as surprising as 'H7 W1 C5 M5 D4 S1 L1 N1'", out)
        self.assertIsNotNone(ratio, out)
        self.assertGreater(float(ratio.group(1)), 1.0)
        self.assertRegex(out, r"(?m)^nerve: alert \(p 1\.00, inject\)$")
        self.assertRegex(out, r"(?m)^alert 1:$")
        self.assertRegex(out, r"(?m)^  CPU 95% \(usually \d+–\d+%\)$")
        self.assertIn(f"look around: KIRI_HOME={home} kiri status", out)
        self.assertTrue((home / "kiri.db").is_file())
        self.assertTrue((home / "weights" / "pulse.json").is_file())

    def test_a_folder_that_holds_files_is_refused_and_left_as_it_was(self):
        home = self.tmp / "real-home"
        home.mkdir()
        (home / "kiri.db").write_bytes(b"someone's history")
        proc = self.demo("--seconds", 1, "--steps", 1, "--home", home)
        self.assertUserError(proc, "demo: --home must be a new or empty folder")
        self.assertEqual(proc.stdout, "")
        self.assertEqual(sorted(p.name for p in home.iterdir()), ["kiri.db"])
        self.assertEqual((home / "kiri.db").read_bytes(), b"someone's history")

        a_file = self.tmp / "a-file"
        a_file.write_text("x")
        self.assertUserError(self.demo("--home", a_file), "must be a new or empty folder")
        self.assertEqual(a_file.read_text(), "x")

    def test_bad_numbers_are_one_line_errors(self):
        for args in (("--seconds", 0), ("--steps", "many")):
            with self.subTest(args=args):
                self.assertUserError(self.demo(*args, "--home", self.tmp / "unused"), "kiri demo: error: argument")
                self.assertFalse((self.tmp / "unused").exists())


if __name__ == "__main__":
    unittest.main()
