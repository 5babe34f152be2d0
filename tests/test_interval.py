"""An atom's interval has one source of truth: the `<atom>_interval` setting, resolved once
into the atom's spec and read by the scheduler, the gap rule and Rhythm's windows."""

import os
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from kiri.atoms import verbs
from kiri.atoms.atom import Atom
from kiri.config import load_settings
from kiri.daemon import Daemon
from kiri.store import open_store


class IntervalTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)

    def settings(self, **env):
        return load_settings(home=self.root / "home", env=env)

    def test_the_setting_reaches_the_spec_the_schedule_and_the_gap_rule(self):
        settings = self.settings(KIRI_RHYTHM_INTERVAL="60", KIRI_DRIFT_INTERVAL="900")
        rhythm = verbs.atom_module("rhythm", settings)
        self.assertEqual((rhythm.SPEC.interval, rhythm.SPEC.max_gap), (60.0, 180.0))
        with open_store(settings.home) as store:
            d = Daemon(settings, store)
            self.assertEqual((d.interval("rhythm"), d.interval("drift"), d.interval("pulse")), (60.0, 900.0, 300.0))
            self.assertEqual(d.atom("rhythm").spec.interval, 60.0)
        # Readings 200 s apart: a gap at 60 s (over three intervals), consecutive at the default 300 s.
        history = [{"ts": 0.0, "values": {}}, {"ts": 200.0, "values": {}}]
        self.assertEqual(Atom(rhythm.SPEC).context_of(history, 1), [])
        self.assertEqual(len(Atom(verbs.atom_module("rhythm").SPEC).context_of(history, 1)), 1)

    @unittest.skipUnless(shutil.which("git"), "git is not installed")
    def test_with_rhythm_interval_60_a_commit_is_counted_once(self):
        repo = self.root / "repo"
        now = time.time()
        env = dict(os.environ, GIT_AUTHOR_NAME="Kiri Test", GIT_AUTHOR_EMAIL="kiri@example.com",
                   GIT_COMMITTER_NAME="Kiri Test", GIT_COMMITTER_EMAIL="kiri@example.com")
        subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
        # One commit 150 s ago (in the previous 60 s reading's window, not this one's), one 20 s ago.
        for ago in (150, 20):
            dated = dict(env, GIT_AUTHOR_DATE=f"@{int(now - ago)} +0000", GIT_COMMITTER_DATE=f"@{int(now - ago)} +0000")
            subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", str(ago)],
                           env=dated, check=True)
        # Idle time from a stand-in xprintidle, so the test runs on a machine without a display.
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        (bin_dir / "xprintidle").write_text("#!/bin/sh\necho 1000\n")
        (bin_dir / "xprintidle").chmod(0o755)
        with mock.patch.dict(os.environ, DISPLAY=":0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"):
            settings = self.settings(KIRI_RHYTHM_INTERVAL="60", KIRI_RHYTHM_REPOS=str(repo))
            with open_store(settings.home) as store:
                obs = verbs.collect_once(verbs.atom_module("rhythm", settings), settings, store)
        self.assertEqual(obs["values"]["G"], 1, "counted over the 60 s interval, not a 300 s window")


if __name__ == "__main__":
    unittest.main()
