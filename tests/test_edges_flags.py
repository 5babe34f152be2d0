"""Flags at the edge: whatever a command-line argument holds, an error about it is one line, a
count is bounded where it is typed, and a name is printed back as it was given.

argparse quotes an argument it does not know as it is, and a message of KIRI's may name a
file as given: a newline or a carriage return in either would break the one line a user
(or a script reading stderr) gets. Found by `kiri bench fuzz` (the flags edge).
"""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

from kiri.cli import build_parser, main
from tests.helpers import REPO, CommandLineAssertions, kiri_env, run_kiri


class OneLine(CommandLineAssertions, unittest.TestCase):
    def test_an_unknown_argument_with_line_breaks_is_one_line(self):
        proc = run_kiri("status", "a\r\nb\u2028c", env={"KIRI_HOME": "/nonexistent/kiri-home"}, timeout=60)
        self.assertUserError(proc, r"kiri: error: unrecognized arguments: a\r\nb\u2028c", code=2)

    def test_a_file_named_with_a_newline_is_one_line(self):
        proc = run_kiri("import", "no\nsuch.jsonl", env={"KIRI_HOME": "/nonexistent/kiri-home"}, timeout=60)
        self.assertUserError(proc, r"kiri: error: cannot read no\nsuch.jsonl: No such file or directory", code=1)


class Bounded(unittest.TestCase):
    """A count whose work or memory grows with it is bounded where it is typed: beyond SQLite's
    integers an id or a LIMIT was an OverflowError, and a million-fold typo ran out of memory."""

    def test_each_is_refused_beyond_its_bound_and_taken_at_it(self):
        for args, most in [(("feedback", "{}", "approve"), 2 ** 63 - 1), (("alerts", "--limit", "{}"), 2 ** 63 - 1),
                           (("names", "sample", "-n", "{}"), 100_000), (("pulse", "collect", "--synthetic", "{}"), 1_000_000),
                           (("pulse", "train", "--batch", "{}"), 10_000), (("bench", "nab", "--data", "d", "--out", "o",
                                                                          "--jobs", "{}"), 256),
                           (("pulse", "train", "--steps", "{}"), 100_000), (("demo", "--steps", "{}"), 100_000),
                           (("drift", "collect", "--added", "{}"), 1_000_000)]:   # 400 digits: "must be finite" raised
            with self.subTest(args=args):
                build_parser().parse_args([a.format(most) for a in args])
                with self.assertRaises(SystemExit) as caught, contextlib.redirect_stderr(io.StringIO()) as err:
                    build_parser().parse_args([a.format(most + 1) for a in args])
                self.assertEqual(caught.exception.code, 2)
                self.assertIn(f"to {most}, got '{most + 1}'", err.getvalue())


class Forget(unittest.TestCase):
    def test_forget_bad_of_an_atom_named_in_bytes_that_are_not_utf8_is_one_line(self):
        # Found by `kiri bench fuzz`: --bad walked the atom's readings before the name was checked.
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(["forget", os.fsdecode(b"pul\xffse"), "--bad", "--home", tmp])
        self.assertEqual(code, 1)
        self.assertIn("kiri: error: forget: atom: must be a name of letters, digits and _", err.getvalue())


class Names(CommandLineAssertions, unittest.TestCase):
    def test_a_home_of_a_user_this_system_does_not_have_is_one_line(self):
        # Path.expanduser raised RuntimeError ("Could not determine home directory") for --home ~nosuchuser.
        self.assertUserError(run_kiri("status", "--home", "~nosuchuser-kiri", timeout=60),
                             "kiri: error: --home '~nosuchuser-kiri': no home folder for '~nosuchuser-kiri'", code=1)
        self.assertUserError(run_kiri("status", env={"KIRI_HOME": "~nosuchuser-kiri"}, timeout=60),
                             "kiri: error: KIRI_HOME '~nosuchuser-kiri': no home folder", code=1)

    def test_an_atom_named_in_bytes_that_are_not_utf8_is_refused_where_typed(self):
        # `export --atom` put it in a query, which SQLite (UTF-8) could not take: a UnicodeEncodeError.
        with self.assertRaises(SystemExit) as caught, contextlib.redirect_stderr(io.StringIO()) as err:
            build_parser().parse_args(["export", "--atom", os.fsdecode(b"gpu\xff")])
        self.assertEqual(caught.exception.code, 2)
        self.assertIn("argument --atom: expected an atom's name (letters, digits and _), got 'gpu\\udcff'", err.getvalue())

    def test_a_folder_named_in_bytes_that_are_not_utf8_is_printed_as_those_bytes(self):
        # On a strict UTF-8 terminal (macOS), printing such a name was a UnicodeEncodeError.
        with tempfile.TemporaryDirectory() as tmp:
            home = os.fsencode(tmp) + b"/home\xff"
            proc = subprocess.run([sys.executable, "-m", "kiri", "init", "--home", home], cwd=str(REPO),
                                  env=kiri_env(env={"PYTHONIOENCODING": "utf-8:strict"}), capture_output=True, timeout=60)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn(b"created " + home + b"/config.ini", proc.stdout)
            self.assertTrue(os.path.exists(home + b"/config.ini"))


if __name__ == "__main__":
    unittest.main()
