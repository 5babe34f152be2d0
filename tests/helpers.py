"""Shared test helpers: run the real `python -m kiri` in a subprocess with an isolated KIRI_HOME."""

import logging
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def kiri_env(home=None, env=None):
    """The environment of a `python -m kiri` child: this checkout on PYTHONPATH, KIRI_HOME=home, then env."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if home is not None:
        full_env["KIRI_HOME"] = str(home)
    full_env.update(env or {})
    return full_env


def run_kiri(*args, home=None, env=None, timeout=300, module="kiri"):
    """Run `python -m <module> args…`; returns the CompletedProcess (text, captured)."""
    return subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], cwd=str(REPO),
                          env=kiri_env(home, env), capture_output=True, text=True, timeout=timeout)


class DaemonChildren:
    """For unittest.TestCase classes that start `python -m kiri daemon` children, each with
    `output_path` (the file its output goes to) set: cleanup kills and reaps them."""

    @staticmethod
    def reap(proc):
        if proc.poll() is None:  # only the processes this test started
            proc.kill()
        proc.wait(timeout=30)

    def wait_for(self, proc, condition, what, timeout=60, poll=0.02):
        """Poll `condition` until it holds; fail early, with the child's output, if the child exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if proc.poll() is not None:
                self.fail("the daemon exited (%s) before %s:\n%s" % (proc.returncode, what,
                                                                     proc.output_path.read_text()[-3000:]))
            time.sleep(poll)
        self.fail("no %s within %ss:\n%s" % (what, timeout, proc.output_path.read_text()[-3000:]))


class CommandLineAssertions:
    """For unittest.TestCase classes that run the real command line."""

    def assertUserError(self, proc, text, code=None):
        """Exit non-zero (or exactly `code`), one line on stderr holding `text`, no traceback."""
        if code is None:
            self.assertNotEqual(proc.returncode, 0, proc.stdout)
        else:
            self.assertEqual(proc.returncode, code, proc.stdout + proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
        self.assertIn(text, proc.stderr)


_trained_homes = {}


def trained_pulse_home(readings, steps, env=None, timeout=300):
    """A KIRI_HOME with `readings` synthetic Pulse readings and weights trained on them for
    `steps` steps, built once per test module (copy it: each test keeps its own home)."""
    key = (readings, steps)
    # The cache outlives a module, its folder does not (addModuleCleanup): build it again.
    if key not in _trained_homes or not _trained_homes[key].exists():
        tmp = tempfile.TemporaryDirectory()
        unittest.addModuleCleanup(tmp.cleanup)
        home, user = Path(tmp.name) / "home", Path(tmp.name) / "user"
        user.mkdir()   # HOME of the child: nothing of the real user's files leaks in
        for args in (("pulse", "collect", "--synthetic", readings), ("pulse", "train", "--steps", steps, "--warm-start")):
            proc = run_kiri(*args, home=home, env=dict(env or {}, HOME=str(user)), timeout=timeout)
            if proc.returncode != 0:
                raise AssertionError(f"building the trained home failed: {proc.stderr}")
        _trained_homes[key] = home
    return _trained_homes[key]


class Capture(logging.Handler):
    """The messages of the records it hears, in order."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def capture_kiri_log(case):
    """The `kiri` logger's messages (INFO and up) for the length of test `case`, not printed."""
    capture = Capture()
    logger = logging.getLogger("kiri")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    case.addCleanup(logger.setLevel, old_level)
    case.addCleanup(logger.removeHandler, capture)
    return capture
