"""The files launchd and cron append the daemon's output to (daemon.out, daemon.err, cron.log)
are rotated by KIRI, since neither service manager ever does: in-process, and through a real
`sh -c '… daemon --once >> cron.log 2>&1'` as cron runs it."""

import errno
import os
import shlex
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri.daemon import UNIT_OUTPUT, rotate_unit_output
from tests.helpers import REPO

MB = 1_000_000


class RotateUnitOutput(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name)

    def fill(self, name, size):
        (self.home / name).write_bytes(b"x" * size)

    def test_small_and_missing_files_are_left_alone(self):
        self.fill("daemon.out", MB)   # exactly the limit: kept
        rotate_unit_output(self.home, fds=())
        self.assertEqual(sorted(p.name for p in self.home.iterdir()), ["daemon.out"])

    def test_each_file_over_the_limit_becomes_dot_1_and_one_is_kept(self):
        for name in UNIT_OUTPUT:
            (self.home / (name + ".1")).write_text("older still")
            self.fill(name, MB + 1)
        rotate_unit_output(self.home, fds=())
        for name in UNIT_OUTPUT:
            self.assertFalse((self.home / name).exists())
            self.assertEqual((self.home / (name + ".1")).stat().st_size, MB + 1)
        self.assertEqual(len(list(self.home.iterdir())), len(UNIT_OUTPUT))

    def test_a_descriptor_on_the_rotated_file_moves_to_a_new_one(self):
        self.fill("cron.log", MB + 1)
        fd = os.open(str(self.home / "cron.log"), os.O_WRONLY | os.O_APPEND)
        other = os.open(str(self.home / "unrelated"), os.O_WRONLY | os.O_CREAT)
        try:
            rotate_unit_output(self.home, fds=(fd, other))
            os.write(fd, b"after\n")
            os.write(other, b"untouched\n")
        finally:
            os.close(fd)
            os.close(other)
        self.assertEqual((self.home / "cron.log").read_text(), "after\n")
        self.assertEqual((self.home / "cron.log.1").stat().st_size, MB + 1)
        self.assertEqual((self.home / "unrelated").read_text(), "untouched\n")

    def test_a_failed_rotation_is_logged_not_raised(self):
        self.fill("daemon.err", MB + 1)
        failure = OSError(errno.EROFS, "Read-only file system")
        with mock.patch("kiri.daemon.os.replace", side_effect=failure), \
                self.assertLogs("kiri.daemon", "WARNING") as logged:
            rotate_unit_output(self.home, fds=())
        self.assertIn("cannot rotate", logged.output[0])
        self.assertIn("Read-only file system", logged.output[0])
        self.assertEqual((self.home / "daemon.err").stat().st_size, MB + 1)


@unittest.skipUnless(os.path.exists("/bin/sh"), "needs /bin/sh")
class CronRunRotates(unittest.TestCase):
    def test_once_under_cron_starts_a_fresh_cron_log(self):
        with tempfile.TemporaryDirectory() as tmp:
            home, user = Path(tmp) / "home", Path(tmp) / "user"
            home.mkdir()
            user.mkdir()
            old = b"old cycle\n" * (MB // 10 + 1)
            (home / "cron.log").write_bytes(old)
            env = {"PATH": "/usr/bin:/bin", "HOME": str(user), "KIRI_HOME": str(home), "PYTHONPATH": str(REPO)}
            # As the crontab line runs it: the shell opens cron.log before python starts.
            command = (f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m kiri daemon --once "
                       f">> {shlex.quote(str(home / 'cron.log'))} 2>&1")
            subprocess.run(["/bin/sh", "-c", command], env=env, timeout=120, check=True)
            self.assertEqual((home / "cron.log.1").read_bytes(), old)
            self.assertRegex((home / "cron.log").read_text(), r"(?m)^nerve: ")


if __name__ == "__main__":
    unittest.main()


class PrivateLogTest(unittest.TestCase):
    """kiri.log holds the machine's history: 0600 when created, rotated or left by an older KIRI."""

    def test_the_log_and_its_rotations_are_private(self):
        import logging
        from kiri.config import load_settings
        from kiri.daemon import setup_logging
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(home=Path(tmp) / "home", env={})
            settings.home.mkdir()
            settings.log_path.write_text("older\n")
            os.chmod(settings.log_path, 0o644)
            handler = setup_logging(settings)
            try:
                self.assertEqual(settings.log_path.stat().st_mode & 0o777, 0o600)
                handler.doRollover()
                logging.getLogger("kiri").info("after the rollover")
                for path in (settings.log_path, settings.log_path.with_name("kiri.log.1")):
                    self.assertEqual(path.stat().st_mode & 0o777, 0o600, path)
            finally:
                logging.getLogger("kiri").removeHandler(handler)
                handler.close()
