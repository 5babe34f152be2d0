"""The ground helpers: atomic writes on real files, the number check, platform, home, network words."""
import errno
import os
import socket
import ssl
import stat
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from kiri.ground import (atomic_file, atomic_write, connection_problem, default_home, is_finite_number, platform_name,
                         remove_stale_temp_files)


class AtomicWriteTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "f.txt"

    def tearDown(self):
        self.dir.cleanup()

    def test_bytes_and_str(self):
        self.assertEqual(atomic_write(self.path, b"\x00\xff"), self.path)
        self.assertEqual(self.path.read_bytes(), b"\x00\xff")
        atomic_write(str(self.path), "é\n")
        self.assertEqual(self.path.read_bytes(), "é\n".encode("utf-8"))

    def test_mode_and_missing_directory(self):
        path = Path(self.dir.name) / "a" / "b" / "unit"
        atomic_write(path, b"x", mode=0o644)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)
        atomic_write(self.path, b"x")
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)

    def assert_failure_keeps_old_file(self, data, error, replace=os.replace):
        atomic_write(self.path, b"old")
        with mock.patch("kiri.ground.os.replace", side_effect=replace):
            with self.assertRaises(error):
                atomic_write(self.path, data)
        self.assertEqual(self.path.read_bytes(), b"old")
        self.assertEqual(os.listdir(self.dir.name), ["f.txt"], "no temp file is left")

    def test_encoding_failure(self):
        self.assert_failure_keeps_old_file("\udc80", UnicodeEncodeError)  # a lone surrogate has no UTF-8

    def test_rename_failure(self):
        self.assert_failure_keeps_old_file(b"new", OSError, replace=OSError(errno.EIO, "power cut"))


class AtomicFileTest(unittest.TestCase):
    """atomic_file: what KIRI writes in a stream (an export, training's metrics) appears whole or not at all."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.path = self.dir / "out.jsonl"
        self.path.write_text("old\n")

    def test_the_file_appears_only_when_the_block_ends(self):
        with atomic_file(self.path, text=True) as f:
            f.write("new\n")
            f.flush()
            self.assertEqual(self.path.read_text(), "old\n", "not yet")
        self.assertEqual(self.path.read_text(), "new\n")
        self.assertEqual(os.listdir(str(self.dir)), ["out.jsonl"])

    def test_an_error_in_the_block_keeps_the_old_file_and_leaves_no_temp_file(self):
        for error in (KeyboardInterrupt, ValueError, OSError(errno.ENOSPC, "No space left on device")):
            with self.subTest(error=error), self.assertRaises(type(error) if isinstance(error, OSError) else error) as caught:
                with atomic_file(self.path, text=True) as f:
                    f.write("half")
                    raise error
            self.assertEqual(self.path.read_text(), "old\n")
            self.assertEqual(os.listdir(str(self.dir)), ["out.jsonl"])
        self.assertEqual(caught.exception.filename, os.path.realpath(self.path), "the error names the file, not the temp")

    def test_a_link_is_written_through_and_a_pipe_in_place(self):
        link = self.dir / "link"
        link.symlink_to(self.path)
        atomic_write(link, "through\n")
        self.assertTrue(link.is_symlink())
        self.assertEqual(self.path.read_text(), "through\n")
        fifo = self.dir / "fifo"
        os.mkfifo(str(fifo))
        reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        with atomic_file(fifo) as f:
            f.write(b"in place")
        self.assertEqual(os.read(reader, 100), b"in place")
        self.assertTrue(stat.S_ISFIFO(os.lstat(str(fifo)).st_mode), "still a pipe, not a file")


class StaleTempFilesTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def make(self, name, age):
        path = self.dir / name
        path.write_bytes(b"half")
        os.utime(str(path), (time.time() - age, time.time() - age))
        return path

    def test_only_abandoned_temp_files_of_atomic_writes_go(self):
        stale = self.make(".pulse.json.ab_d1234.tmp", 120)
        young = self.make(".pulse.json.efgh5678.tmp", 10)
        others = [self.make(name, 120) for name in ("pulse.json", ".pulse.json.tmp", "x.abcd1234.tmp", ".a.abc.tmp")]
        self.assertEqual(remove_stale_temp_files(self.dir), [stale.name])
        self.assertTrue(young.exists())
        self.assertTrue(all(p.exists() for p in others))
        self.assertEqual(remove_stale_temp_files(self.dir / "missing"), [], "a missing folder is nothing to do")

    @unittest.skipIf(os.name != "posix", "flock")
    def test_a_write_in_progress_keeps_its_file_however_old(self):
        target = self.dir / "export.jsonl"
        with atomic_file(target, text=True) as f:
            f.write("slow")
            (temp,) = [p for p in self.dir.iterdir() if p.name.endswith(".tmp")]
            os.utime(str(temp), (time.time() - 3600, time.time() - 3600))
            self.assertEqual(remove_stale_temp_files(self.dir), [])
        self.assertEqual(target.read_text(), "slow")


class IsFiniteNumberTest(unittest.TestCase):
    def test_values(self):
        for x in (0, -3, 1.5, 10 ** 300, -1e308):
            self.assertTrue(is_finite_number(x), x)
        for x in (True, False, float("nan"), float("inf"), -float("inf"), 10 ** 400, -10 ** 400,
                  "3", None, [1], 1j):
            self.assertFalse(is_finite_number(x), x)


class PlatformTest(unittest.TestCase):
    def test_names(self):
        self.assertEqual(platform_name("linux"), "linux")
        self.assertEqual(platform_name("linux2"), "linux")
        self.assertEqual(platform_name("darwin"), "macos")
        self.assertEqual(platform_name("win32"), "win32")
        self.assertEqual(platform_name(platform_name("darwin")), "macos")


class DefaultHomeTest(unittest.TestCase):
    def test_env(self):
        self.assertEqual(default_home({"KIRI_HOME": "/srv/kiri"}), Path("/srv/kiri"))
        with mock.patch.dict(os.environ, {"HOME": "/home/ann"}):
            self.assertEqual(default_home({"KIRI_HOME": "~/k"}), Path("/home/ann/k"))
            self.assertEqual(default_home({}), Path("/home/ann/.kiri"))
            self.assertEqual(default_home({"KIRI_HOME": ""}), Path("/home/ann/.kiri"))
        with mock.patch.dict(os.environ, {"KIRI_HOME": "/from/os"}):
            self.assertEqual(default_home(), Path("/from/os"))


class ConnectionProblemTest(unittest.TestCase):
    def test_each_reason(self):
        untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
        untrusted.verify_message = "self-signed certificate"
        cases = [
            (socket.timeout("timed out"), "no answer from h:1 within 2.5 s"),
            (TimeoutError(), "no answer from h:1 within 2.5 s"),
            (ConnectionRefusedError(111, "refused"), "connection refused by h:1"),
            (untrusted, "certificate of h:1 is not trusted (self-signed certificate)"),
            (socket.gaierror(-2, "Name or service not known"), "cannot resolve the address of h:1"),
            (ConnectionResetError(104, "reset"), "cannot reach h:1: [Errno 104] reset"),
            ("a plain text", "cannot reach h:1: a plain text"),
        ]
        for reason, words in cases:
            self.assertEqual(connection_problem(reason, "h:1", 2.5), words)


if __name__ == "__main__":
    unittest.main()
