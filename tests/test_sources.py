"""The shared command runner of the atoms' data sources, exercised with commands every Unix has."""
import sys
import unittest

from kiri.atoms.sources import CollectorError, run_command


class RunCommandTest(unittest.TestCase):
    def test_stdout(self):
        self.assertEqual(run_command([sys.executable, "-c", "print(42)"], "test").strip(), "42")

    def test_locale_is_forced_to_c(self):
        self.assertEqual(run_command(["/bin/sh", "-c", "echo $LC_ALL"], "test"), "C\n")

    def test_missing_command_names_it(self):
        with self.assertRaisesRegex(CollectorError, "^test: command not found: /nonexistent/vm_stat$"):
            run_command(["/nonexistent/vm_stat"], "test")

    def test_failure_shows_exit_code_and_first_stderr_line(self):
        with self.assertRaisesRegex(CollectorError, r"^test: /bin/sh -c .* failed \(exit 3\): oops$"):
            run_command(["/bin/sh", "-c", "echo oops >&2; echo more >&2; exit 3"], "test")

    def test_failure_without_stderr(self):
        with self.assertRaisesRegex(CollectorError, r"failed \(exit 1\): no message$"):
            run_command(["/bin/sh", "-c", "exit 1"], "test")

    def test_timeout(self):
        with self.assertRaisesRegex(CollectorError, "^test: .* did not finish within 0.2 s$"):
            run_command(["/bin/sh", "-c", "exec sleep 5"], "test", timeout=0.2)

    def test_not_executable(self):
        with self.assertRaisesRegex(CollectorError, "^test: cannot run /dev/null: "):
            run_command(["/dev/null"], "test")


if __name__ == "__main__":
    unittest.main()
