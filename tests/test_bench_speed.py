"""`kiri bench speed`: its figures are consistent (not fast: that is the benchmark's job)."""

import json
import unittest

from kiri.bench import speed

from tests.helpers import CommandLineAssertions, run_kiri


class SpeedBench(CommandLineAssertions, unittest.TestCase):
    def test_figures_are_side_by_side_ratios(self):
        heard = []
        f = speed.run(ref_steps=1, fast_steps=2, ref_score_calls=1, fast_score_calls=2, report=heard.append)
        self.assertEqual(heard[0], "pulse: reference engine, 1 steps …")
        for label, tokens in (("pulse", 16), ("names", 7)):
            g = f[label]
            self.assertEqual(g["tokens"], tokens)
            self.assertGreater(g["fast_step_s"], 0)
            self.assertAlmostEqual(g["speedup"], g["value_step_s"] / g["fast_step_s"])
            self.assertAlmostEqual(g["fast_500_steps_s"], g["fast_step_s"] * speed.PROJECTED_STEPS)
        s = f["score"]
        self.assertEqual(s["tokens"], speed.OBSERVATION)
        self.assertAlmostEqual(s["speedup"], s["value_ms"] / s["fast_ms"])
        self.assertGreater(s["peak_rss_mb"], 1)
        self.assertEqual(f["speedup"], f["pulse"]["speedup"])
        text = speed.format_figures(f)
        self.assertEqual(len(text.splitlines()), 7)
        self.assertEqual(text.splitlines()[-1], f"speedup {f['speedup']:.1f}")
        json.dumps(f)   # --json prints exactly this dict

    def test_bad_step_counts_are_one_line_errors(self):
        for args in (("--ref-steps", "0"), ("--fast-steps", "fast")):
            with self.subTest(args=args):
                proc = run_kiri("bench", "speed", *args, timeout=60)
                self.assertUserError(proc, f"argument {args[0]}", code=2)
                self.assertEqual(proc.stdout, "")


if __name__ == "__main__":
    unittest.main()
