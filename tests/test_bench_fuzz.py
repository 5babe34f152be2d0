"""`kiri bench fuzz`: seeded hostile inputs into every edge; `make test` holds a couple of
hundred cases per edge to no traceback and no hang, and holds the fuzzer itself to counting
what it is there to count (a crash, a hang, a refusal of more than one line)."""

import contextlib
import sys
import threading
import unittest
from unittest import mock

from kiri.bench import fuzz, fuzz_edges
from kiri.errors import KiriError
from tests.helpers import CommandLineAssertions, run_kiri

CASES_PER_EDGE = 200


class EveryEdge(unittest.TestCase):
    def test_no_edge_has_a_traceback_or_a_hang(self):
        lines = []
        results = fuzz.run(cases=CASES_PER_EDGE * len(fuzz.EDGE_NAMES), seed=1, report=lines.append)
        self.assertEqual([r.name for r in results], list(fuzz.EDGE_NAMES))
        for r in results:
            with self.subTest(edge=r.name):
                self.assertEqual(r.cases, CASES_PER_EDGE)
                self.assertEqual((r.counts["traceback"], r.counts["hang"]), (0, 0), "\n".join(lines))
                # Both ways out are taken, or the edge's generator does not reach past its door.
                self.assertGreater(r.counts["accepted"], CASES_PER_EDGE // 20, r.line())
                self.assertGreater(r.counts["refused"], CASES_PER_EDGE // 20, r.line())
        self.assertEqual(lines[-1], "tracebacks 0 hangs 0")

    def test_an_edge_makes_the_same_cases_from_the_same_seed(self):
        import random
        edge = fuzz_edges.ConfigEdge.__new__(fuzz_edges.ConfigEdge)   # its cases need no folder to be made
        made = [[edge.case(random.Random("7/config"), i)[0] for i in range(50)] for _ in range(2)]
        self.assertEqual(made[0], made[1])


class Crash(KiriError):
    pass


class Classifier(unittest.TestCase):
    """The fuzzer can fail: a crash, a hang, a refusal in two lines are each counted as such."""

    def test_each_outcome(self):
        def crash():
            return 1 / 0

        def refuse(text):
            def call():
                raise KiriError(text)
            return call

        def broken_promise():
            raise fuzz.Defect("a score of nan")

        self.assertEqual(fuzz.classify(lambda: None, 5).kind, "accepted")
        self.assertEqual(fuzz.classify(lambda: "refused", 5).kind, "refused")
        self.assertEqual(fuzz.classify(refuse("one line"), 5).kind, "refused")
        outcome = fuzz.classify(crash, 5)
        self.assertEqual((outcome.kind, outcome.error), ("traceback", "ZeroDivisionError: division by zero"))
        self.assertIn("ZeroDivisionError", outcome.details)
        self.assertEqual(fuzz.classify(refuse("two\nlines"), 5).kind, "traceback")
        self.assertEqual(fuzz.classify(broken_promise, 5).kind, "traceback")
        self.assertEqual(fuzz.classify(refuse("a KiriError where none is expected"), 5, refusals=()).kind, "traceback")
        self.assertEqual(fuzz.classify(lambda: sys.exit(2), 5).kind, "traceback")   # SystemExit: caught, never the run's

    def test_a_hang(self):
        release = threading.Event()
        self.addCleanup(release.set)
        self.assertEqual(fuzz.classify(lambda: release.wait(30), 0.05).kind, "hang")

    def test_a_case_that_wants_all_the_memory_is_a_traceback_not_the_end_of_the_run(self):
        import resource
        with fuzz.memory_limit(fuzz.MEMORY_LIMIT):
            if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
                self.skipTest("this system does not enforce RLIMIT_AS (macOS)")
            outcome = fuzz.classify(lambda: bytearray(2 * fuzz.MEMORY_LIMIT), 30)
        self.assertEqual((outcome.kind, outcome.error.split(":")[0]), ("traceback", "MemoryError"))

    def test_a_crashing_edge_is_counted_shown_and_fails_the_command(self):
        class CrashingEdge(fuzz_edges.Edge):
            name = "obs"   # in the place of a real edge

            def case(self, rng, i):
                def call():
                    if i % 3 == 0:
                        return {}["no such key"]
                    if i % 3 == 1:
                        raise KiriError("refused")
                return f"input {i}", call

        lines = []
        with mock.patch.object(fuzz_edges, "EDGES", [CrashingEdge]), \
                mock.patch.object(fuzz_edges, "Fixture", lambda path: contextlib.nullcontext()):
            code = fuzz.main(cases=30, seed=1, edges=["obs"], report=lines.append)
        self.assertEqual(code, 1)
        self.assertTrue(lines[0].startswith("edge obs       cases 30 refused 10 accepted 10 tracebacks 10 hangs 0 "), lines)
        self.assertIn("traceback x10 at", lines[1])
        self.assertIn("KeyError: 'no such key'", lines[1])
        self.assertEqual(lines[2], "    input: input 0")
        self.assertEqual(lines[-1], "tracebacks 10 hangs 0")


class Flags(CommandLineAssertions, unittest.TestCase):
    def test_bad_values_are_one_line(self):
        for args, said in [(("--cases", "0"), "argument --cases: expected a whole number of cases from 1 to 10000000"),
                           (("--cases", "abc"), "got 'abc'"), (("--cases", "10000001"), "--cases"),
                           (("--seed", "-1"), "argument --seed"), (("--timeout", "0"), "argument --timeout"),
                           (("--timeout", "nan"), "argument --timeout"), (("--edge", "nope"), "invalid choice: 'nope'")]:
            with self.subTest(args=args):
                self.assertUserError(run_kiri("bench", "fuzz", *args, timeout=60), said, code=2)


if __name__ == "__main__":
    unittest.main()
