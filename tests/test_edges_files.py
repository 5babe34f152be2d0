"""Files at the edges (issue 13), through the real command line: no output option may name
a file KIRI manages, what KIRI writes is written whole or not at all, trouble with the
user's files and disks is one line (never a traceback), the database and its home are
private, and the temp files of a killed write are removed at the next start.

Each command is its own `python -m kiri …` with its own KIRI_HOME. Permissions are tested
as the user meets them: run as root (as CI is), a child would read and write anything, so
there it runs without root's power over file modes (CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped from its capability bounding set before it starts).
A full disk is RLIMIT_FSIZE (a write past it fails with "File too large").
"""

import ctypes
import os
import resource
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from kiri.config import KEYS
from kiri.store import open_store
from tests.helpers import REPO, CommandLineAssertions, kiri_env

TIMEOUT = 60
NEUTRAL_ENV = dict({"KIRI_" + key.upper(): "" for key in KEYS}, KIRI_CONFIG="")
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def obey_file_modes():
    """preexec_fn: a root child loses its power over file modes (a child that is not root has none)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def full_disk(limit):
    """preexec_fn: files may grow to `limit` bytes and no further, as on a disk that is full."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


_modes_bind = None


def file_modes_bind():
    """Whether a child run with obey_file_modes is refused a file of mode 000 (else: skip)."""
    global _modes_bind
    if _modes_bind is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "closed"
            path.write_text("x")
            path.chmod(0)
            try:
                proc = subprocess.run([sys.executable, "-c", f"open({str(path)!r})"], preexec_fn=obey_file_modes,
                                      capture_output=True, timeout=TIMEOUT)
                _modes_bind = proc.returncode != 0
            except (OSError, subprocess.SubprocessError):
                _modes_bind = False
    return _modes_bind


class EdgeCommandLine(CommandLineAssertions, unittest.TestCase):
    """A temp folder per test: `home` (KIRI_HOME) and `user` (HOME of every command)."""

    def setUp(self):
        self.tmp_dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp_dir.cleanup)
        self.tmp = Path(self.tmp_dir.name)
        self.home, self.user = self.tmp / "home", self.tmp / "user"
        self.user.mkdir()

    def kiri(self, *args, env=None, preexec=None, stdout=subprocess.PIPE, home=None):
        full = dict(NEUTRAL_ENV, HOME=str(self.user), **(env or {}))
        return subprocess.run([sys.executable, "-m", "kiri"] + [str(a) for a in args], cwd=str(REPO),
                              env=kiri_env(self.home if home is None else home, full), stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=TIMEOUT, preexec_fn=preexec)

    def assertFails(self, proc, text):
        """Exit 1, no traceback, and the last line on stderr (after training's progress) is one
        `kiri: error:` line holding `text`."""
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        last = proc.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("kiri: error: "), proc.stderr)
        self.assertIn(text, last)

    def ok(self, *args, **kwargs):
        proc = self.kiri(*args, **kwargs)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc

    def restricted(self, *args, **kwargs):
        """`kiri args…` bound by file modes as any user is (skips where that cannot be arranged)."""
        if not file_modes_bind():
            self.skipTest("file modes cannot be made to bind a child here")
        return self.kiri(*args, preexec=obey_file_modes, **kwargs)

    def with_history(self, trained=False):
        """The home with 50 synthetic Pulse readings (and weights trained on them for 1 step)."""
        self.ok("pulse", "collect", "--synthetic", 50)
        if trained:
            self.ok("pulse", "train", "--warm-start", "--steps", 1)

    def files(self, folder=None):
        """{name: bytes} of the files in `folder` (default: the home and its weights)."""
        folders = [folder] if folder else [self.home, self.home / "weights"]
        return {str(p): p.read_bytes() for f in folders if f.is_dir() for p in sorted(f.iterdir()) if p.is_file()}


class OutputOptions(EdgeCommandLine):
    def test_no_output_option_writes_over_a_file_kiri_manages(self):
        """export --out kiri.db was a traceback and left kiri.db at 0 bytes; --metrics too;
        --out weights/pulse.json truncated the weights. Now each is one line and nothing changes,
        also through a symbolic or a hard link."""
        self.with_history(trained=True)
        (self.home / "config.ini").write_text("[kiri]\n", encoding="utf-8")
        (self.tmp / "link").symlink_to(self.home / "kiri.db")
        os.link(str(self.home / "kiri.db"), str(self.tmp / "hard"))
        before = self.files()
        h = self.home
        for args, said in [(("export", "--out", h / "kiri.db"), "is the database"),
                           (("export", "--out", h / "kiri.db-wal"), "is the database"),
                           (("export", "--out", h / "kiri.db-journal"), "is the database"),
                           (("export", "--out", h / "weights" / "pulse.json"), "is in the weights folder"),
                           (("export", "--out", h / "weights" / "new.json"), "is in the weights folder"),
                           (("export", "--out", h / "config.ini"), "is the config file"),
                           (("export", "--out", h / "kiri.log"), "is a log file"),
                           (("export", "--out", h / "daemon.lock"), "lock file"),
                           (("export", "--out", self.tmp / "link"), "is the database"),
                           (("export", "--out", self.tmp / "hard"), "is the database"),
                           (("pulse", "train", "--steps", 1, "--metrics", h / "kiri.db"), "--metrics"),
                           (("names", "train", "--steps", 1, "--out", h / "weights" / "pulse.json"), "weights folder"),
                           (("names", "train", "--steps", 1, "--metrics", h / "kiri.db-shm"), "is the database"),
                           (("export", "--out", h), "is a folder"),
                           (("export", "--out", self.tmp / "no" / "x.jsonl"), "does not exist")]:
            with self.subTest(args=args):
                self.assertUserError(self.kiri(*args), said)
        self.assertEqual(self.files(), before, "nothing of the home changed")
        self.assertEqual(len(self.ok("export").stdout.splitlines()), 50)

    def test_names_train_may_write_its_own_weights(self):
        out = self.home / "weights" / "names.json"
        self.ok("names", "train", "--steps", 1, "--out", out)
        self.assertTrue(out.is_file())

    def test_an_export_is_written_whole_or_not_at_all(self):
        self.ok("pulse", "collect", "--synthetic", 500)   # an export of ~120 kB
        out = self.tmp / "out.jsonl"
        out.write_text("the old export\n")
        proc = self.kiri("export", "--out", out, preexec=full_disk(64_000))
        self.assertUserError(proc, f"{out}: File too large")
        self.assertEqual(out.read_text(), "the old export\n", "the old file stands")
        self.assertEqual(sorted(p.name for p in self.tmp.iterdir()), ["home", "out.jsonl", "user"], "no temp file")
        self.ok("export", "--out", out)
        self.assertEqual(len(out.read_text().splitlines()), 500)
        self.assertEqual(stat.S_IMODE(out.stat().st_mode), 0o600, "an export is the machine's history")

    def test_a_pipe_is_written_in_place(self):
        """Replacing a device or a pipe with a file (as an atomic write does) would destroy it."""
        self.with_history()
        fifo = self.tmp / "fifo"
        os.mkfifo(str(fifo))
        got = []
        reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
        reader.start()
        self.ok("export", "--out", fifo)
        reader.join(TIMEOUT)
        self.assertEqual(len(got[0].splitlines()), 50)
        self.assertTrue(stat.S_ISFIFO(os.lstat(str(fifo)).st_mode))

    def test_a_full_stdout_is_one_line(self):
        self.with_history()
        with open(os.devnull if not os.path.exists("/dev/full") else "/dev/full", "w") as full:
            if full.name == os.devnull:
                self.skipTest("no /dev/full here")
            for args in (("status",), ("export",), ("alerts",)):
                with self.subTest(args=args):
                    self.assertUserError(self.kiri(*args, stdout=full), "No space left on device")


class Trouble(EdgeCommandLine):
    def test_a_read_only_database_is_one_line(self):
        self.with_history(trained=True)
        (self.home / "kiri.db").chmod(0o400)
        for args in (("pulse", "collect"), ("pulse", "score"), ("task", "add"), ("daemon", "--once")):
            with self.subTest(args=args):
                self.assertUserError(self.restricted(*args), "readonly database")
        self.assertIn("pulse", self.restricted("status").stdout, "reading still works")

    def test_a_read_only_weights_folder_is_one_line(self):
        self.with_history(trained=True)
        (self.home / "weights").chmod(0o500)
        self.assertFails(self.restricted("pulse", "train", "--warm-start", "--steps", 1), "Permission denied")
        self.assertFails(self.restricted("names", "train", "--steps", 1), "Permission denied")

    def test_a_full_disk_is_one_line(self):
        self.with_history()
        self.assertFails(self.kiri("pulse", "train", "--warm-start", "--steps", 1, preexec=full_disk(200_000)),
                         "File too large")
        self.assertUserError(self.kiri("pulse", "collect", "--synthetic", 5000, preexec=full_disk(200_000)),
                             "kiri.db")
        self.assertEqual(len(self.ok("export").stdout.splitlines()), 50, "what was stored is still there")

    def test_a_home_or_database_of_the_wrong_kind_is_one_line(self):
        self.home.write_text("not a folder")
        for args in (("status",), ("pulse", "collect"), ("daemon", "--once"), ("status", "--home", self.home)):
            with self.subTest(args=args):
                self.assertUserError(self.kiri(*args), "is not a folder: it is a file")
        self.assertUserError(self.kiri("status", home=self.home / "sub"), f"would be inside the file {self.home}")
        self.home.unlink()
        (self.home / "kiri.db").mkdir(parents=True)
        self.assertUserError(self.kiri("status"), "kiri.db is a folder")

    def test_a_names_file_that_is_not_text_is_one_line(self):
        names = self.tmp / "names.txt"
        names.write_bytes(b"anna\n\xff\xfebob\n")
        self.assertUserError(self.kiri("names", "train", "--steps", 1, "--data", names), "is not UTF-8 text")
        self.assertUserError(self.kiri("names", "train", "--steps", 1, "--out", self.tmp), "is a folder")

    def test_a_declared_atom_printing_a_huge_number_is_one_short_line(self):
        self.home.mkdir()
        (self.home / "config.ini").write_text(
            f"[kiri]\n[atom:gpu]\nschema = T=0:100:5\ncommand = {sys.executable} -c \"print('{{\\\"T\\\": 1' + '0' * 399 + '}}')\"\n",
            encoding="utf-8")
        proc = self.kiri("atom", "gpu", "collect")
        self.assertUserError(proc, "gpu: field T must be a finite number")
        self.assertLess(len(proc.stderr), 200)


class Private(EdgeCommandLine):
    def test_the_database_and_the_home_are_private(self):
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        self.with_history()
        self.assertEqual(stat.S_IMODE(self.home.stat().st_mode), 0o700)
        self.assertEqual(stat.S_IMODE((self.home / "kiri.db").stat().st_mode), 0o600)
        db, wal = self.home / "kiri.db", self.home / "kiri.db-wal"
        # A database an older KIRI made 0644 is made private at the next open, with its log.
        db.chmod(0o644)
        with open(str(wal), "ab"):
            pass
        wal.chmod(0o644)
        self.ok("status")
        for path in (db, wal):
            if path.exists():
                self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600, path)
        # While a process writes, SQLite's -wal and -shm take the database's mode.
        with open_store(self.home) as store:
            store.add_observation("pulse", {"C": 1.0})
            for end in ("-wal", "-shm"):
                self.assertEqual(stat.S_IMODE(os.stat(str(db) + end).st_mode), 0o600, end)


class Leftovers(EdgeCommandLine):
    def test_the_temp_files_of_a_killed_write_are_removed_at_the_next_start(self):
        weights = self.home / "weights"
        weights.mkdir(parents=True)
        old = time.time() - 120
        stale = [weights / ".pulse.json.k1ll3d_x.tmp", self.home / ".config.ini.abcd1234.tmp"]
        kept = [weights / ".pulse.json.y0ung_xx.tmp",   # a minute old at most: perhaps a writer at work
                weights / "notes.tmp", self.home / ".hidden.tmp"]   # not KIRI's pattern
        for path in stale + kept:
            path.write_bytes(b"half a file")
        for path in stale + kept[1:]:
            os.utime(str(path), (old, old))
        self.ok("status")
        self.assertEqual([p for p in stale if p.exists()], [])
        self.assertEqual([p for p in kept if not p.exists()], [])


if __name__ == "__main__":
    unittest.main()
