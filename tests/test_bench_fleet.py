"""`kiri bench fleet` on two hosts: the figures it prints, and its flags refused in one line.
The 100-host run is the benchmark (README, Watched hosts); this holds its shape in `make test`."""

import unittest

from kiri.bench import fleet
from tests.helpers import CommandLineAssertions, run_kiri


class FleetBenchTest(unittest.TestCase):
    def test_two_hosts_are_watched_and_a_third_joins_cold_and_watches(self):
        lines = []
        figures = fleet.run(hosts=2, cycles=2, steps=5, report=lines.append, learn_after=20)
        text = "\n".join(lines)
        self.assertIn("  cycle 1: 2 hosts scored, ", text)
        self.assertIn("  cycle 2: 2 hosts scored, ", text)
        self.assertRegex(text, r"pulse_h002: watching after \d+ cycles")
        self.assertGreaterEqual(figures["join_cycles"], 20, "it learns only after learn_after readings")
        self.assertGreater(figures["cpu_per_cycle_s"], 0)
        self.assertGreater(figures["rss_mb"], 0)
        self.assertRegex(text, r"a scrape of /metrics: \d+\.\d{3} CPU s the first, then \d+\.\d{3} \(median of 5\)")
        self.assertRegex(lines[-1], r"^fleet hosts 2 cpu_per_cycle_s \d+\.\d{3} rss_mb \d+$")


class FleetFlagsTest(unittest.TestCase, CommandLineAssertions):
    def test_out_of_range_flags_are_one_line_and_nothing_runs(self):
        for args, words in [(("--hosts", "0"), "an integer from 1 to 1000"),
                            (("--hosts", "1001"), "an integer from 1 to 1000"),
                            (("--cycles", "x"), "an integer from 1 to 1000"),
                            (("--steps", "0"), "an integer from 1 to 100000")]:
            with self.subTest(args=args):
                proc = run_kiri("bench", "fleet", *args)
                self.assertUserError(proc, words)
                self.assertEqual(proc.stdout, "", "nothing ran")
