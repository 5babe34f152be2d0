"""Rhythm sources: idle-time parsers on recorded outputs, idle_seconds() with a fake `run`,
count_commits() against a real temporary git repository, and the derived values."""
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from kiri.atoms.rhythm import sources
from kiri.atoms.sources import CollectorError

# `ioreg -c IOHIDSystem` in the tree shape quoted in shared/reference/macos-commands.md
# (`"HIDIdleTime" = 4500000000` is 4.5 s), with two IOHIDSystem entries: the smallest
# value (9 s, in the second) is the idle time.
IOREG_IDLE = """\
+-o Root  <class IORegistryEntry, id 0x100000100, retain 30>
  +-o J274AP  <class IOPlatformExpertDevice, id 0x100000210, registered, matched, active, busy 0 (146 ms), retain 36>
    +-o IOResources  <class IOResources, id 0x100000113, registered, matched, active, busy 0 (0 ms), retain 82>
      +-o IOHIDSystem  <class IOHIDSystem, id 0x100000282, registered, matched>
          {
            "HIDIdleTime" = 12000000000
            "HIDPointerAcceleration" = 49152
          }
      +-o IOHIDSystem  <class IOHIDSystem, id 0x100000283, registered, matched>
          {
            "HIDIdleTime" = 9000000000
          }
"""

XPRINTIDLE = "4500\n"

# `loginctl show-user 1000 -p Display` and `loginctl show-session 2 -p IdleHint -p IdleSinceHint`.
SHOW_USER_DISPLAY = "Display=2\n"
NOW = 1700000000.0
SESSION_ACTIVE = "IdleHint=no\nIdleSinceHint=1699999000000000\n"
SESSION_IDLE_10_MIN = "IdleHint=yes\nIdleSinceHint=1699999400000000\n"
SESSION_IDLE_UNKNOWN_SINCE = "IdleHint=yes\nIdleSinceHint=0\n"


class FakeRun:
    """`run(argv) -> stdout` answering from {command name or (name, verb): output or exception}."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        name = os.path.basename(argv[0])
        answer = self.answers.get((name, argv[1]) if len(argv) > 1 else None, self.answers.get(name))
        if answer is None:
            raise CollectorError(f"rhythm: command not found: {argv[0]}")
        if isinstance(answer, Exception):
            raise answer
        return answer


def no_commands(argv):
    raise CollectorError(f"rhythm: command not found: {argv[0]}")


class TestParsers(unittest.TestCase):
    def test_ioreg_smallest_of_several_entries(self):
        self.assertEqual(sources.parse_ioreg_idle(IOREG_IDLE), 9.0)

    def test_ioreg_single_entry_nanoseconds_to_seconds(self):
        self.assertEqual(sources.parse_ioreg_idle('"HIDIdleTime" = 4500000000\n'), 4.5)

    def test_ioreg_without_idle_time(self):
        with self.assertRaises(CollectorError) as caught:
            sources.parse_ioreg_idle("+-o Root  <class IORegistryEntry>\n")
        self.assertIn("HIDIdleTime", str(caught.exception))
        with self.assertRaises(CollectorError):
            sources.parse_ioreg_idle('"HIDIdleTime" = <garbled>')

    def test_xprintidle_milliseconds_to_seconds(self):
        self.assertEqual(sources.parse_xprintidle(XPRINTIDLE), 4.5)
        self.assertEqual(sources.parse_xprintidle("0"), 0.0)

    def test_xprintidle_garbled(self):
        for text in ("", "couldn't open display\n", "-5", "4.5"):
            with self.assertRaises(CollectorError) as caught:
                sources.parse_xprintidle(text)
            self.assertIn("xprintidle", str(caught.exception))

    def test_loginctl_active_session_is_not_idle(self):
        self.assertEqual(sources.parse_loginctl_idle(SESSION_ACTIVE, NOW), 0.0)

    def test_loginctl_idle_since(self):
        self.assertAlmostEqual(sources.parse_loginctl_idle(SESSION_IDLE_10_MIN, NOW), 600.0)

    def test_loginctl_idle_since_in_the_future_is_zero(self):
        self.assertEqual(sources.parse_loginctl_idle(SESSION_IDLE_10_MIN, 1699999000.0), 0.0)

    def test_loginctl_idle_without_since_is_unknown(self):
        self.assertIsNone(sources.parse_loginctl_idle(SESSION_IDLE_UNKNOWN_SINCE, NOW))

    def test_loginctl_garbled(self):
        for text in ("", "Failed to get session: No session '7' known\n", "IdleHint=maybe\n",
                     "IdleHint=yes\nIdleSinceHint=soon\n", "IdleHint=yes\n"):
            with self.assertRaises(CollectorError) as caught:
                sources.parse_loginctl_idle(text, NOW)
            self.assertIn("loginctl", str(caught.exception))

    def test_display_session(self):
        self.assertEqual(sources.parse_display_session(SHOW_USER_DISPLAY), "2")
        self.assertEqual(sources.parse_display_session("Display=c1\n"), "c1")
        # Empty or absent (older loginctl omits empty properties): nobody logged in.
        self.assertIsNone(sources.parse_display_session("Display=\n"))
        self.assertIsNone(sources.parse_display_session(""))


class TestIdleSeconds(unittest.TestCase):
    def test_macos_asks_ioreg(self):
        run = FakeRun({"ioreg": IOREG_IDLE})
        self.assertEqual(sources.idle_seconds(platform="darwin", run=run, env={}), 9.0)
        self.assertEqual(run.calls, [["/usr/sbin/ioreg", "-c", "IOHIDSystem"]])

    def test_macos_garbled_ioreg(self):
        run = FakeRun({"ioreg": "nothing here\n"})
        with self.assertRaises(CollectorError):
            sources.idle_seconds(platform="darwin", run=run, env={})

    def test_linux_with_display_and_xprintidle(self):
        run = FakeRun({"xprintidle": XPRINTIDLE})
        seconds = sources.idle_seconds(platform="linux", run=run, env={"DISPLAY": ":0"},
                                       now=lambda: NOW, which=lambda name: "/usr/bin/" + name)
        self.assertEqual(seconds, 4.5)
        self.assertEqual(run.calls, [["/usr/bin/xprintidle"]])

    def test_linux_only_loginctl(self):
        run = FakeRun({("loginctl", "show-user"): SHOW_USER_DISPLAY,
                       ("loginctl", "show-session"): SESSION_IDLE_10_MIN})
        seconds = sources.idle_seconds(platform="linux", run=run, env={"DISPLAY": ":0"},
                                       now=lambda: NOW, which=lambda name: None)
        self.assertAlmostEqual(seconds, 600.0)
        self.assertEqual(run.calls[0], ["loginctl", "show-user", str(os.getuid()), "-p", "Display"])
        self.assertEqual(run.calls[1], ["loginctl", "show-session", "2", "-p", "IdleHint", "-p", "IdleSinceHint"])

    def test_linux_without_display_skips_xprintidle(self):
        run = FakeRun({"xprintidle": XPRINTIDLE,
                       ("loginctl", "show-user"): SHOW_USER_DISPLAY,
                       ("loginctl", "show-session"): SESSION_ACTIVE})
        seconds = sources.idle_seconds(platform="linux", run=run, env={},
                                       now=lambda: NOW, which=lambda name: "/usr/bin/" + name)
        self.assertEqual(seconds, 0.0)
        self.assertNotIn(["/usr/bin/xprintidle"], run.calls)

    def test_linux_failing_xprintidle_falls_back_to_loginctl(self):
        run = FakeRun({"xprintidle": CollectorError("rhythm: xprintidle failed (exit 1): couldn't open display"),
                       ("loginctl", "show-user"): SHOW_USER_DISPLAY,
                       ("loginctl", "show-session"): SESSION_IDLE_10_MIN})
        seconds = sources.idle_seconds(platform="linux", run=run, env={"DISPLAY": ":0"},
                                       now=lambda: NOW, which=lambda name: "/usr/bin/" + name)
        self.assertAlmostEqual(seconds, 600.0)

    def test_linux_nothing_available(self):
        with self.assertRaises(CollectorError) as caught:
            sources.idle_seconds(platform="linux", run=no_commands, env={"DISPLAY": ":0"},
                                 now=lambda: NOW, which=lambda name: None)
        self.assertEqual(str(caught.exception),
                         "rhythm: idle time is not available on this system (no xprintidle, no loginctl session)")

    def test_linux_user_not_logged_in(self):
        run = FakeRun({("loginctl", "show-user"): "Display=\n"})
        with self.assertRaises(CollectorError) as caught:
            sources.idle_seconds(platform="linux", run=run, env={}, now=lambda: NOW, which=lambda name: None)
        self.assertEqual(str(caught.exception), sources.NOT_AVAILABLE)

    def test_linux_idle_since_unknown(self):
        run = FakeRun({("loginctl", "show-user"): SHOW_USER_DISPLAY,
                       ("loginctl", "show-session"): SESSION_IDLE_UNKNOWN_SINCE})
        with self.assertRaises(CollectorError) as caught:
            sources.idle_seconds(platform="linux", run=run, env={}, now=lambda: NOW, which=lambda name: None)
        self.assertEqual(str(caught.exception), sources.NOT_AVAILABLE)

    def test_other_platform(self):
        with self.assertRaises(CollectorError) as caught:
            sources.idle_seconds(platform="win32", run=no_commands, env={})
        self.assertIn("win32", str(caught.exception))
        self.assertEqual(len(str(caught.exception).splitlines()), 1)


class TestRunCommand(unittest.TestCase):
    """The default `run` is the shared runner (tests/test_sources.py), its messages saying "rhythm:"."""

    def test_stdout(self):
        self.assertEqual(sources.run_command([sys.executable, "-c", "print(42)"]).strip(), "42")

    def test_missing_command(self):
        with self.assertRaises(CollectorError) as caught:
            sources.run_command(["kiri-no-such-command-here"])
        self.assertEqual(str(caught.exception), "rhythm: command not found: kiri-no-such-command-here")

    def test_non_zero_exit_gives_the_first_stderr_line(self):
        argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\nmore\\n'); sys.exit(3)"]
        with self.assertRaises(CollectorError) as caught:
            sources.run_command(argv)
        message = str(caught.exception)
        self.assertTrue(message.startswith("rhythm: "))
        self.assertIn("exit 3", message)
        self.assertIn("boom", message)
        self.assertNotIn("\n", message)


@unittest.skipUnless(shutil.which("git"), "git is not installed")
class TestCountCommits(unittest.TestCase):
    """Against a real repository: commits at NOW - 100 s and NOW - 1000 s."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        # Keep git from finding a repository above the temporary directory, and
        # the user's own git config from changing what the test does.
        env = {"GIT_CEILING_DIRECTORIES": self.tmp.name, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": os.devnull}
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.repo = os.path.join(self.tmp.name, "repo")
        self.git("init", "-q", self.repo)
        self.commit("first", NOW - 1000)
        self.commit("second", NOW - 100)

    def git(self, *args, date=None):
        env = dict(os.environ, GIT_AUTHOR_NAME="Kiri Test", GIT_AUTHOR_EMAIL="kiri@example.com",
                   GIT_COMMITTER_NAME="Kiri Test", GIT_COMMITTER_EMAIL="kiri@example.com")
        if date is not None:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(date)} +0000"
        subprocess.run(["git"] + list(args), env=env, check=True, capture_output=True)

    def commit(self, message, date):
        self.git("-C", self.repo, "commit", "-q", "--allow-empty", "-m", message, date=date)

    def count(self, repos, since_seconds):
        return sources.count_commits(repos, since_seconds, now=lambda: NOW)

    def test_counts_commits_in_the_window(self):
        self.assertEqual(self.count([self.repo], 300), 1)
        self.assertEqual(self.count([self.repo], 3600), 2)
        self.assertEqual(self.count([self.repo], 50), 0)

    def test_window_start_is_inclusive(self):
        self.assertEqual(self.count([self.repo], 100), 1)
        self.assertEqual(self.count([self.repo], 99), 0)

    def test_counts_other_local_branches_too(self):
        self.git("-C", self.repo, "checkout", "-q", "-b", "feature")
        self.commit("on feature", NOW - 50)
        self.git("-C", self.repo, "checkout", "-q", "-")
        self.assertEqual(self.count([self.repo], 300), 2)

    def test_sums_over_repositories(self):
        other = os.path.join(self.tmp.name, "other")
        self.git("init", "-q", other)
        self.git("-C", other, "commit", "-q", "--allow-empty", "-m", "x", date=NOW - 10)
        self.assertEqual(self.count([self.repo, other], 300), 2)

    def test_repository_without_commits_counts_zero(self):
        empty = os.path.join(self.tmp.name, "empty")
        self.git("init", "-q", empty)
        self.assertEqual(self.count([empty], 300), 0)

    def test_no_repositories(self):
        self.assertEqual(self.count([], 300), 0)
        self.assertEqual(self.count((), 300), 0)

    def test_directory_that_is_not_a_repository(self):
        plain = os.path.join(self.tmp.name, "plain")
        os.mkdir(plain)
        with self.assertRaises(CollectorError) as caught:
            self.count([plain], 300)
        self.assertIn(plain, str(caught.exception))
        self.assertIn("not a git repository", str(caught.exception))

    def test_missing_path(self):
        missing = os.path.join(self.tmp.name, "nowhere")
        with self.assertRaises(CollectorError) as caught:
            self.count([missing], 300)
        self.assertIn(missing, str(caught.exception))


class TestDerived(unittest.TestCase):
    def test_activity(self):
        self.assertEqual(sources.activity_percent(0, 300), 100.0)
        self.assertEqual(sources.activity_percent(75, 300), 75.0)
        self.assertEqual(sources.activity_percent(300, 300), 0.0)
        self.assertEqual(sources.activity_percent(4000, 300), 0.0)
        self.assertEqual(sources.activity_percent(-1, 300), 100.0)

    def test_activity_needs_an_interval(self):
        with self.assertRaises(ValueError):
            sources.activity_percent(10, 0)

    def test_focus_grows_while_active(self):
        self.assertEqual(sources.focus_minutes(0.0, 10, 300), 5.0)
        self.assertEqual(sources.focus_minutes(25.0, 299, 300), 30.0)

    def test_focus_broken_by_a_long_pause(self):
        self.assertEqual(sources.focus_minutes(25.0, 300, 300), 0.0)
        self.assertEqual(sources.focus_minutes(25.0, 90, 60, break_s=60), 0.0)


class TestRead(unittest.TestCase):
    T = 1700000000.0 + 37 * 60  # any instant; expectations go through datetime, not time.localtime

    def read(self, idle_s, previous=None, **kwargs):
        return sources.read(previous=previous, interval_s=300, now=lambda: self.T,
                            idle=lambda: idle_s, **kwargs)

    def test_values(self):
        values = self.read(90.0, previous={"F": 20.0})
        local = datetime.datetime.fromtimestamp(self.T)
        self.assertEqual(set(values), {"I", "A", "H", "W", "F", "G"})
        self.assertEqual(values["I"], 1.5)
        self.assertEqual(values["A"], 70.0)
        self.assertAlmostEqual(values["H"], local.hour + local.minute / 60 + local.second / 3600)
        self.assertEqual(values["W"], local.weekday())
        self.assertEqual(values["F"], 25.0)
        self.assertEqual(values["G"], 0)

    def test_hour_is_a_fraction_of_the_day(self):
        hour = self.read(0.0)["H"]
        self.assertTrue(0.0 <= hour < 24.0)

    def test_focus_starts_without_previous_and_breaks_when_idle(self):
        self.assertEqual(self.read(0.0)["F"], 5.0)
        self.assertEqual(self.read(0.0, previous={"I": 0.0})["F"], 5.0)
        self.assertEqual(self.read(600.0, previous={"F": 45.0})["F"], 0.0)

    def test_commits_counted_over_the_interval(self):
        with tempfile.TemporaryDirectory() as repo:
            run = FakeRun({"git": "3\n"})
            values = self.read(0.0, repos=[repo], run=run)
        self.assertEqual(values["G"], 3)
        self.assertIn(f"--since=@{int(self.T) - 300}", run.calls[0])

    def test_garbled_git_output(self):
        with tempfile.TemporaryDirectory() as repo:
            with self.assertRaises(CollectorError):
                self.read(0.0, repos=[repo], run=FakeRun({"git": "fatal\n"}))


if __name__ == "__main__":
    unittest.main()
