"""`kiri bench train`: it runs and prints its figures in their shape (how fast is the benchmark's business)."""

import re
import unittest

from tests.helpers import CommandLineAssertions, run_kiri

LINE = re.compile(r"train rows (\d+) seconds \d+\.\d\d rss_mb \d+\.\d\Z")


class TrainBench(CommandLineAssertions, unittest.TestCase):
    def test_one_line_per_size_the_largest_last(self):
        proc = run_kiri("bench", "train", "--sizes", "600,300", "--steps", "2", timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = proc.stdout.strip().splitlines()
        self.assertTrue(lines[0].startswith("pulse, 2 steps"), lines[0])
        self.assertEqual([LINE.match(line).group(1) for line in lines[1:]], ["300", "600"])
        self.assertIn("learned from the newest 600, scored 120 held-out readings", proc.stderr)

    def test_bad_flags_are_one_line_errors(self):
        for args, text in ((("--sizes", "300,abc"), "argument --sizes"), (("--sizes", "10"), "argument --sizes"),
                           (("--sizes", "9000000"), "argument --sizes"), (("--steps", "0"), "argument --steps"),
                           (("--steps", "5000"), "argument --steps")):
            with self.subTest(args=args):
                proc = run_kiri("bench", "train", *args, timeout=60)
                self.assertUserError(proc, text, code=2)
                self.assertEqual(proc.stdout, "")


if __name__ == "__main__":
    unittest.main()
