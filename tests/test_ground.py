"""The ground helpers: atomic writes on real files, the number check, platform, home, network words."""
import errno
import os
import socket
import ssl
import stat
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri.ground import atomic_write, connection_problem, default_home, is_finite_number, platform_name


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
