"""Run every test and end on one plain summary line: 'python X.Y.Z: N passed, N failed, N skipped'.

The test modules run in JOBS worker processes at once (default: the number of CPUs, at
most 4), each module whole in one process, so a module's fixtures (setUpModule, a trained
home) are built once as under plain unittest. Many tests wait on something — a
subprocess, a server, a browser — so two workers nearly halve the time on two cores.
Modules start longest first (SLOW_FIRST), so a long one does not start last and run alone.
A module's output is printed when it ends, in one piece.

    python tests/run.py            # every module, in parallel
    python tests/run.py -j 1       # one at a time, in this process's order
    python tests/run.py -v         # each test's name and outcome
    python tests/run.py --module tests.test_store   # one module (what a worker runs)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The modules that take longest, slowest first (measured), started first; the rest by name.
SLOW_FIRST = ("tests.test_atoms", "tests.test_lifecycle", "tests.test_bench_month", "tests.test_cli_loop",
              "tests.test_cli_atoms", "tests.test_loop", "tests.test_bench_month_kill", "tests.test_bench_fleet",
              "tests.test_kill_points", "tests.test_cli_demo", "tests.test_bench_fuzz", "tests.test_stream",
              "tests.test_setup", "tests.test_edges_files", "tests.test_fleet", "tests.test_bench_speed")
RESULT_PREFIX = "tests/run.py result: "


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run KIRI's tests.")
    parser.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--module", help="run one test module (a worker)")
    args = parser.parse_args(argv)
    if args.module:
        return run_module(args.module, args.verbose)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    passed, failed, skipped, ran = run_all(modules(), args.jobs, args.verbose)
    print(f"python {sys.version.split()[0]}: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and ran > 0 else 1


def modules():
    """Every test module's dotted name, the slow ones first."""
    names = sorted(f"tests.{p.stem}" for p in (ROOT / "tests").glob("test_*.py"))
    return [m for m in SLOW_FIRST if m in names] + [m for m in names if m not in SLOW_FIRST]


def run_module(name, verbose):
    """Run one module in this process; its counts go to stdout as the last line, as JSON."""
    sys.path.insert(0, str(ROOT))   # as `python tests/run.py`, this folder is on the path, not the project
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = unittest.TextTestRunner(verbosity=2 if verbose else 1).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    counts = {"ran": result.testsRun, "failed": failed, "skipped": len(result.skipped)}
    sys.stderr.flush()
    print(RESULT_PREFIX + json.dumps(counts), flush=True)
    return 0


def run_all(names, jobs, verbose):
    """(passed, failed, skipped, ran) of every module, `jobs` worker processes at a time."""
    waiting, running = list(names), []
    passed = failed = skipped = ran = 0
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            argv = [sys.executable, str(ROOT / "tests" / "run.py"), "--module", name] + (["-v"] if verbose else [])
            output = tempfile.TemporaryFile()   # a file, not a pipe: a chatty module never blocks on a full pipe
            running.append((name, time.monotonic(), output,
                            subprocess.Popen(argv, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)))
        time.sleep(0.05)
        for entry in [e for e in running if e[3].poll() is not None]:
            running.remove(entry)
            name, started, file, proc = entry
            file.seek(0)
            output = file.read().decode("utf-8", "replace")
            file.close()
            counts = result_of(output)
            if counts is None:   # the worker died before it could count: every test in it failed
                counts = {"ran": 1, "failed": 1, "skipped": 0}
                output += f"\n{name}: the worker exited with {proc.returncode} before reporting\n"
            body = output.rsplit(RESULT_PREFIX, 1)[0].rstrip()
            print(f"== {name} ({time.monotonic() - started:.0f} s)\n{body}", flush=True)
            ran += counts["ran"]
            failed += counts["failed"]
            skipped += counts["skipped"]
            passed += counts["ran"] - counts["failed"] - counts["skipped"]
    return passed, failed, skipped, ran


def result_of(output):
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


if __name__ == "__main__":
    sys.exit(main())
