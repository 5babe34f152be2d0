"""kiri.units: the launchd plist, the systemd --user unit and the cron line, and install().

Everything is written into temporary directories; nothing calls launchctl, systemctl or
crontab. `systemd-analyze verify --user` (when this machine has it) checks the unit the
way ../shared/reference/launchd-systemd-cron.md did: XDG_RUNTIME_DIR set, exit 0.
"""

import configparser
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from kiri import units
from kiri.units import Installed, UnitError, cron_line, install, launchd_plist, systemd_unit

# Values no random temp dir name can hold by chance ("s3" once did: /tmp/tmp733ps38z).
SECRETS = {"KIRI_TELEGRAM_TOKEN": "123:abc", "KIRI_MIKROTIK_PASSWORD": "hunter2", "my_secret": "s3cr3t-value"}


def systemd_words(text):
    """Split one ExecStart=/Environment= value the way systemd.syntax(7) Quoting says."""
    escapes = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "s": " "}
    words, i = [], 0
    while i < len(text):
        if text[i] == " ":
            i += 1
            continue
        word = ""
        if text[i] in "\"'":
            quote, i = text[i], i + 1
            while text[i] != quote:
                if text[i] == "\\":
                    word += escapes[text[i + 1]]
                    i += 2
                else:
                    word += text[i]
                    i += 1
            i += 1
        else:
            while i < len(text) and text[i] != " ":
                word += text[i]
                i += 1
        words.append(word.replace("%%", "%"))
    return words


def parse_unit(text):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str   # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def unit_environment(text):
    """Every Environment= line (configparser keeps only the last of repeated keys)."""
    env = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            for word in systemd_words(line[len("Environment="):]):
                name, _, value = word.partition("=")
                env[name] = value
    return env


class TempCase(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        # A home with a space (macOS "Application Support" style) and a `%` (cron, systemd).
        self.home = str(self.tmp / "kiri home 50%")
        self.workdir = str(self.tmp / "my clone")
        self.python = "/opt/py 3/bin/python3"
        self.kw = dict(python=self.python, home=self.home, workdir=self.workdir, pythonpath=self.workdir)


class LaunchdPlistTest(TempCase):
    def plist(self, **kw):
        args = dict(self.kw, **kw)
        return plistlib.loads(launchd_plist(**args))

    def test_every_key(self):
        plist = self.plist(env={"KIRI_PULSE_SOURCE": "mikrotik"})
        self.assertEqual(plist["Label"], "com.kiri.daemon")
        self.assertEqual(plist["ProgramArguments"], [self.python, "-m", "kiri", "daemon"])
        self.assertIs(plist["RunAtLoad"], True)
        self.assertIs(plist["KeepAlive"], True)
        self.assertNotIn("StartInterval", plist)   # with KeepAlive it relaunches every ~10 s
        self.assertEqual(plist["ThrottleInterval"], 30)
        self.assertEqual(plist["ProcessType"], "Background")
        self.assertEqual(plist["UserName"], units.current_user())   # ignored by an agent; a LaunchDaemon's user
        self.assertEqual(plist["WorkingDirectory"], self.workdir)
        self.assertEqual(plist["StandardOutPath"], os.path.join(self.home, "daemon.out"))
        self.assertEqual(plist["StandardErrorPath"], os.path.join(self.home, "daemon.err"))
        env = plist["EnvironmentVariables"]
        self.assertEqual(env["KIRI_HOME"], self.home)
        self.assertEqual(env["PYTHONPATH"], self.workdir)
        self.assertEqual(env["KIRI_PULSE_SOURCE"], "mikrotik")
        self.assertEqual(env["PYTHONUNBUFFERED"], "1")
        path = env["PATH"].split(":")
        self.assertEqual(path[0], "/opt/py 3/bin")
        for system_dir in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            self.assertIn(system_dir, path)
        self.assertTrue(all(isinstance(v, str) for v in env.values()))

    def test_absolute_paths_only(self):
        # launchd has no shell: no `~`, no relative paths.
        plist = self.plist(home="~/kiri-test-home", workdir="rel/dir", python="/usr/bin/python3")
        self.assertEqual(plist["EnvironmentVariables"]["KIRI_HOME"], os.path.expanduser("~/kiri-test-home"))
        self.assertTrue(os.path.isabs(plist["WorkingDirectory"]))
        for value in (plist["StandardOutPath"], plist["ProgramArguments"][0]):
            self.assertTrue(os.path.isabs(value))
            self.assertNotIn("~", value)

    def test_never_a_secret(self):
        data = launchd_plist(env=dict(SECRETS, KIRI_PULSE_SOURCE="system"), **self.kw)
        env = plistlib.loads(data)["EnvironmentVariables"]
        for name, value in SECRETS.items():
            self.assertNotIn(name, env)
            self.assertNotIn(value.encode(), data)
        self.assertEqual(env["KIRI_PULSE_SOURCE"], "system")
        # …and says what it left out, by name, in a comment plistlib skips.
        self.assertIn(b"<!-- ", data)
        self.assertIn(b"KIRI_TELEGRAM_TOKEN", data)

    def test_home_argument_wins_over_env(self):
        plist = self.plist(env={"KIRI_HOME": "/elsewhere"})
        self.assertEqual(plist["EnvironmentVariables"]["KIRI_HOME"], self.home)

    def test_xml_special_characters_round_trip(self):
        home = str(self.tmp / "a & <b>")
        plist = self.plist(home=home)
        self.assertEqual(plist["EnvironmentVariables"]["KIRI_HOME"], home)

    def test_user_name(self):
        self.assertEqual(self.plist(user_name="alice")["UserName"], "alice")
        self.assertNotIn("UserName", self.plist(user_name=None))   # a uid without a name: no key

    def test_label(self):
        self.assertEqual(self.plist(label="org.example.kiri")["Label"], "org.example.kiri")
        for bad in ("", "../x", "a/b", "with space"):
            with self.assertRaises(ValueError):
                launchd_plist(label=bad, **self.kw)

    def test_no_pythonpath_when_installed(self):
        env = self.plist(pythonpath=None, workdir=None)
        self.assertNotIn("PYTHONPATH", env["EnvironmentVariables"])
        self.assertEqual(env["WorkingDirectory"], self.home)

    def test_source_checkout_detected(self):
        repo = Path(units.__file__).resolve().parent.parent
        self.assertEqual(units.source_checkout(repo), repo if (repo / "pyproject.toml").is_file() else None)
        self.assertIsNone(units.source_checkout(self.tmp))
        (self.tmp / "kiri").mkdir()
        (self.tmp / "kiri" / "__init__.py").write_text("")
        (self.tmp / "pyproject.toml").write_text("")
        self.assertEqual(units.source_checkout(self.tmp), self.tmp)

    def test_newline_in_a_path_is_refused(self):
        with self.assertRaises(ValueError):
            launchd_plist(**dict(self.kw, home="/tmp/a\nb"))

    def test_bad_env_name_is_refused(self):
        with self.assertRaises(ValueError):
            launchd_plist(env={"A B": "1"}, **self.kw)


class SystemdUnitTest(TempCase):
    def test_sections_and_keys(self):
        text = systemd_unit(env={"KIRI_PULSE_SOURCE": "system"}, **self.kw)
        unit = parse_unit(text)
        self.assertEqual(unit.sections(), ["Unit", "Service", "Install"])
        self.assertIn("KIRI", unit["Unit"]["Description"])
        # A --user manager has no network-online.target: ordering after it does nothing.
        self.assertNotIn("network-online.target", text)
        service = unit["Service"]
        self.assertEqual(service["Type"], "simple")
        self.assertIn(service["Restart"], ("always", "on-failure"))
        self.assertEqual(service["RestartSec"], "30")
        self.assertEqual(service["WorkingDirectory"], self.workdir)   # the rest of the line, unquoted
        self.assertEqual(unit["Install"]["WantedBy"], "default.target")
        argv = systemd_words(service["ExecStart"])
        self.assertEqual(argv, [self.python, "-m", "kiri", "daemon"])
        self.assertTrue(os.path.isabs(argv[0]))
        env = unit_environment(text)
        self.assertEqual(env["KIRI_HOME"], self.home)
        self.assertEqual(env["PYTHONPATH"], self.workdir)
        self.assertEqual(env["KIRI_PULSE_SOURCE"], "system")
        self.assertNotIn("PATH", env)   # the user manager's PATH is already a normal one

    def test_quoting(self):
        text = systemd_unit(**self.kw)
        # The interpreter path holds a space: one quoted word, not two.
        self.assertIn('ExecStart="/opt/py 3/bin/python3" -m kiri daemon', text)
        # `%` starts a specifier; doubled everywhere, including the unquoted WorkingDirectory.
        self.assertIn('Environment="KIRI_HOME=' + self.home.replace("%", "%%") + '"', text)
        self.assertIn("WorkingDirectory=" + self.workdir + "\n", text)

    def test_awkward_values(self):
        value = 'a "quoted" back\\slash $HOME 100% x=y'
        text = systemd_unit(env={"KIRI_NOTE": value}, **self.kw)
        self.assertEqual(unit_environment(text)["KIRI_NOTE"], value)
        self.assertEqual(units.systemd_quote("/a b/$x%y"), '"/a b/$$x%%y"')
        self.assertEqual(units.systemd_quote("/usr/bin/python3"), "/usr/bin/python3")

    def test_never_a_secret(self):
        text = systemd_unit(env=dict(SECRETS, KIRI_PULSE_SOURCE="system"), **self.kw)
        env = unit_environment(text)
        for name, value in SECRETS.items():
            self.assertNotIn(name, env)
            self.assertNotIn(value, text)
        self.assertIn("# left out (secrets", text)
        self.assertIn("KIRI_MIKROTIK_PASSWORD", text)

    def test_unrepresentable_paths_are_refused(self):
        for bad in ("/tmp/a\nb", "/tmp/trailing "):
            with self.assertRaises(ValueError):
                systemd_unit(**dict(self.kw, workdir=bad))


@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
class SystemdAnalyzeTest(TempCase):
    """`systemd-analyze verify --user` as in the reference; exit 0 alone is not enough (it
    only warns on bad lines), so stderr must be empty too."""

    def verify(self, text):
        runtime = self.tmp / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        unit_dir = self.tmp / "units"
        unit_dir.mkdir(exist_ok=True)
        path = unit_dir / "kiri.service"
        path.write_text(text)
        env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(self.tmp),
                   XDG_CONFIG_HOME=str(self.tmp / "config"), SYSTEMD_PAGER="", SYSTEMD_LOG_COLOR="0")
        return subprocess.run(["systemd-analyze", "verify", "--user", str(path)], env=env,
                              capture_output=True, text=True, timeout=60)

    def test_generated_unit_verifies(self):
        # verify checks that ExecStart's program exists, so give it a real one in a
        # directory with a space: the quoting must hold for that check to pass.
        bindir = self.tmp / "py bin 100%"
        bindir.mkdir()
        python = bindir / "python3"
        python.symlink_to(sys.executable)
        os.makedirs(self.home)
        os.makedirs(self.workdir)
        text = systemd_unit(python=str(python), home=self.home, workdir=self.workdir, pythonpath=self.workdir,
                            env={"KIRI_NOTE": 'a "b" \\ $c'})
        result = self.verify(text)
        if result.returncode != 0 and "RuntimeDirectory" in result.stderr + result.stdout:
            self.skipTest("systemd-analyze cannot start a user manager here: " + result.stderr.strip())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr.strip(), "")

        # The check has teeth: the same unit with the path unquoted is reported.
        broken = text.replace(units.systemd_quote(str(python)), str(python).replace("%", "%%"))
        self.assertNotEqual(broken, text)
        self.assertIn("not executable", self.verify(broken).stderr)


class CronLineTest(TempCase):
    def fields(self, line):
        schedule, command = line.split(" ", 5)[:5], line.split(" ", 5)[5]
        return schedule, command

    def test_shape(self):
        line = cron_line(**self.kw)
        schedule, command = self.fields(line)
        self.assertEqual(schedule, ["*/5", "*", "*", "*", "*"])
        self.assertNotIn("\n", line)
        self.assertIn(" -m kiri daemon --once >> ", line)
        self.assertTrue(line.endswith(" 2>&1"))
        # cron turns a bare % into a newline: every % is escaped.
        self.assertEqual(re.findall(r"(?<!\\)%", line), [])
        words = shlex.split(command.replace("\\%", "%"))
        self.assertEqual(words[:3], ["cd", self.workdir, "&&"])
        self.assertIn("KIRI_HOME=" + self.home, words)
        self.assertIn(self.python, words)
        self.assertEqual(words[-3:], [">>", os.path.join(self.home, "cron.log"), "2>&1"])

    def test_every_minutes(self):
        self.assertTrue(cron_line(every_minutes=1, **self.kw).startswith("* * * * * "))
        self.assertTrue(cron_line(every_minutes=15, **self.kw).startswith("*/15 * * * * "))
        for bad in (0, 60, -5, 2.5, "5", True):
            with self.assertRaises(ValueError):
                cron_line(every_minutes=bad, **self.kw)

    def test_never_a_secret(self):
        line = cron_line(env=dict(SECRETS), **self.kw)
        for name, value in SECRETS.items():
            self.assertNotIn(name, line)
            self.assertNotIn(value, line)

    @unittest.skipUnless(os.path.exists("/bin/sh"), "needs /bin/sh")
    def test_runs_under_sh_like_cron(self):
        """Run the command part the way cron does (`\\%` → `%`, then /bin/sh -c) with a fake
        python that reports its directory, environment and arguments."""
        bindir = self.tmp / "fake py"
        bindir.mkdir()
        fake = bindir / "python3"
        fake.write_text('#!/bin/sh\necho "cwd=$(pwd -P)"\necho "home=$KIRI_HOME"\necho "args=$*"\n')
        fake.chmod(0o755)
        os.makedirs(self.home)
        os.makedirs(self.workdir)
        line = cron_line(python=str(fake), home=self.home, workdir=self.workdir, pythonpath=self.workdir)
        command = self.fields(line)[1].replace("\\%", "%")
        subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin"}, check=True, timeout=30)
        log = Path(self.home, "cron.log").read_text().splitlines()
        self.assertEqual(log, [f"cwd={os.path.realpath(self.workdir)}", f"home={self.home}",
                               "args=-m kiri daemon --once"])


class InstallTest(TempCase):
    def setUp(self):
        super().setUp()
        # These homes live in the temp dir on purpose; LastingPathsTest tests the refusal.
        patcher = mock.patch("kiri.units.temporary_dirs", return_value=())
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_launchd_writes_plist(self):
        target = self.tmp / "LaunchAgents"
        result = install("launchd", target_dir=target, uid=501, **self.kw)
        self.assertIsInstance(result, Installed)
        path, text, command = result
        self.assertEqual(path, target / "com.kiri.daemon.plist")
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)
        self.assertEqual(path.read_text(), text)
        self.assertEqual(plistlib.loads(path.read_bytes())["Label"], "com.kiri.daemon")
        self.assertTrue(os.path.isdir(self.home))   # launchd fails (status 78) without the log dir
        self.assertIn(f"launchctl bootstrap gui/501 {shlex.quote(str(path))}", command)
        self.assertIn("launchctl bootout gui/501/com.kiri.daemon", command)
        self.assertEqual(os.listdir(target), ["com.kiri.daemon.plist"])   # no temp file left

    def test_launchd_says_what_gui_needs_and_what_runs_headless(self):
        path, text, command = install("launchd", target_dir=self.tmp, uid=501, user_name="alice", **self.kw)
        self.assertIn("# gui/501 is the session of a login at the screen", command)
        self.assertIn("after a reboot the agent waits for someone to log in", command)
        self.assertIn("runs it as alice", command)
        self.assertEqual(plistlib.loads(text.encode())["UserName"], "alice")
        self.assertIn(f"sudo install -m 644 -o root -g wheel {shlex.quote(str(path))} "
                      "/Library/LaunchDaemons/com.kiri.daemon.plist", command)
        self.assertIn("sudo launchctl bootstrap system /Library/LaunchDaemons/com.kiri.daemon.plist", command)
        self.assertTrue(all(line.startswith("#") for line in command.splitlines()[1:]))

    def test_launchd_label_names_the_file(self):
        path = install("launchd", target_dir=self.tmp, label="org.example.kiri", uid=0, **self.kw).path
        self.assertEqual(path.name, "org.example.kiri.plist")

    def test_systemd_writes_unit(self):
        target = self.tmp / "systemd" / "user"
        path, text, command = install("systemd", target_dir=target, **self.kw)
        self.assertEqual(path, target / "kiri.service")
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o644)
        self.assertEqual(path.read_text(), text)
        self.assertEqual(parse_unit(text)["Install"]["WantedBy"], "default.target")
        self.assertEqual(command.splitlines()[0],
                         "systemctl --user daemon-reload && systemctl --user enable --now kiri.service")

    def test_default_locations_under_the_given_user_home(self):
        user_home = self.tmp / "alice"
        launchd = install("launchd", user_home=user_home, uid=501, **self.kw).path
        systemd = install("systemd", user_home=user_home, **self.kw).path
        self.assertEqual(launchd, user_home / "Library" / "LaunchAgents" / "com.kiri.daemon.plist")
        self.assertEqual(systemd, user_home / ".config" / "systemd" / "user" / "kiri.service")
        self.assertTrue(launchd.is_file() and systemd.is_file())

    def test_default_kiri_home(self):
        user_home = self.tmp / "bob"
        with mock.patch.dict(os.environ, {"KIRI_HOME": ""}):
            text = install("cron", user_home=user_home, python=self.python, pythonpath=None).text
        self.assertIn(shlex.quote(str(user_home / ".kiri")), text)
        with mock.patch.dict(os.environ, {"KIRI_HOME": str(self.tmp / "from env")}):
            text = install("cron", user_home=user_home, python=self.python, pythonpath=None).text
        self.assertIn(shlex.quote(str(self.tmp / "from env")), text)

    def test_print_only_writes_nothing(self):
        before = sorted(self.tmp.rglob("*"))
        for kind in ("systemd", "cron"):
            path, text, command = install(kind, target_dir=self.tmp / "t", print_only=True, uid=501, **self.kw)
            self.assertIsNone(path)
            self.assertTrue(text and command)
        self.assertEqual(sorted(self.tmp.rglob("*")), before)

    def test_print_only_launchd_makes_only_kiri_home(self):
        # launchd opens daemon.out/err there before the daemon runs: without it, status 78.
        path, text, command = install("launchd", target_dir=self.tmp / "t", print_only=True, uid=501, **self.kw)
        self.assertIsNone(path)
        self.assertEqual(sorted(self.tmp.rglob("*")), [Path(self.home)])
        self.assertEqual(stat.S_IMODE(os.stat(self.home).st_mode), 0o700)

    def test_cron_never_writes(self):
        before = sorted(self.tmp.rglob("*"))
        path, line, command = install("cron", target_dir=self.tmp, every_minutes=10, **self.kw)
        self.assertIsNone(path)
        self.assertEqual(line, cron_line(every_minutes=10, **self.kw))
        self.assertIn("crontab -e", command)
        self.assertIn("| crontab -", command)
        self.assertIn(shlex.quote(line), command)
        self.assertEqual(sorted(self.tmp.rglob("*")), before)

    def test_cron_command_appends_and_replaces(self):
        """The crontab pipeline, with a fake `crontab` that keeps its table in a file."""
        table = self.tmp / "table"
        table.write_text("0 3 * * * backup\n*/5 * * * * cd /old && /old/python -m kiri daemon --once\n")
        bindir = self.tmp / "bin"
        bindir.mkdir()
        fake = bindir / "crontab"
        # Like the real one, it reads the whole new table before replacing the old.
        fake.write_text(f'#!/bin/sh\nif [ "$1" = "-l" ]; then cat {shlex.quote(str(table))}; '
                        f'else new=$(cat); printf "%s\\n" "$new" > {shlex.quote(str(table))}; fi\n')
        fake.chmod(0o755)
        line = install("cron", **self.kw).text
        command = install("cron", **self.kw).next_command
        pipeline = [c for c in command.splitlines() if "| crontab -" in c][0]
        subprocess.run(["/bin/sh", "-c", pipeline], env={"PATH": f"{bindir}:/usr/bin:/bin"}, check=True, timeout=30)
        self.assertEqual(table.read_text().splitlines(), ["0 3 * * * backup", line])

    def test_overwrite_is_atomic(self):
        target = self.tmp / "units"
        first = install("systemd", target_dir=target, **self.kw).path
        old = first.read_text()
        # A failure between writing and renaming leaves the old file whole and no temp file.
        with mock.patch("kiri.units.os.replace", side_effect=OSError("disk full")):
            with self.assertRaisesRegex(UnitError, "^cannot write .*kiri.service: disk full$"):
                install("systemd", target_dir=target, **dict(self.kw, env={"KIRI_X": "1"}))
        self.assertEqual(first.read_text(), old)
        self.assertEqual(os.listdir(target), ["kiri.service"])
        # A successful overwrite replaces the file (a new inode, via os.replace).
        inode = first.stat().st_ino
        with mock.patch("kiri.units.os.replace", wraps=os.replace) as replace:
            second = install("systemd", target_dir=target, **dict(self.kw, env={"KIRI_X": "1"})).path
        replace.assert_called_once()
        self.assertEqual(second, first)
        self.assertIn('Environment="KIRI_X=1"', second.read_text())
        self.assertNotEqual(second.stat().st_ino, inode)
        self.assertEqual(stat.S_IMODE(second.stat().st_mode), 0o644)

    def test_secret_names_are_reported(self):
        for kind in ("launchd", "systemd", "cron"):
            path, text, command = install(kind, print_only=True, uid=1, env=dict(SECRETS), **self.kw)
            self.assertIn("KIRI_TELEGRAM_TOKEN", command)
            self.assertNotIn("123:abc", text + command)

    def test_unwritable_places_are_one_line(self):
        blocker = self.tmp / "a file"
        blocker.write_text("")
        with self.assertRaisesRegex(UnitError, r"^cannot create KIRI_HOME .*a file/kiri: "):
            install("launchd", print_only=True, uid=1, **dict(self.kw, home=str(blocker / "kiri")))
        with self.assertRaisesRegex(UnitError, r"^cannot write .*a file/kiri.service: "):
            install("systemd", target_dir=blocker, **self.kw)

    def test_bad_kind(self):
        with self.assertRaises(ValueError):
            install("upstart", target_dir=self.tmp)
        self.assertEqual(list(self.tmp.iterdir()), [])

    def test_irrelevant_flags_are_ignored(self):
        # The CLI may pass every flag it has; each kind takes what it needs.
        install("systemd", target_dir=self.tmp, label="x.y", every_minutes=5, **self.kw)
        install("cron", label="x.y", **self.kw)


class LastingPathsTest(TempCase):
    """A unit runs for months: what it names must not be in a temporary directory, and what a
    later change may take away (a venv, one pyenv version, a folder macOS protects) is said."""

    def setUp(self):
        super().setUp()
        self.scratch = self.tmp / "scratch"   # stands for /tmp here: the rest of self.tmp lasts
        patcher = mock.patch("kiri.units.temporary_dirs", return_value=(str(self.scratch),))
        patcher.start()
        self.addCleanup(patcher.stop)

    def assertRefused(self, what, **kw):
        args = dict(self.kw, **kw)
        for kind in ("launchd", "systemd", "cron"):
            with self.assertRaises(UnitError) as caught:
                install(kind, target_dir=self.tmp / "units", print_only=False, uid=501, **args)
            message = str(caught.exception)
            self.assertEqual(len(message.splitlines()), 1)
            self.assertTrue(message.startswith(what + " "), message)
            self.assertIn(f"is in {self.scratch}, which the system empties", message)
        self.assertFalse((self.tmp / "units").exists())
        self.assertFalse(os.path.exists(self.home))

    def test_a_temporary_kiri_home_is_refused(self):
        self.assertRefused("KIRI_HOME", home=str(self.scratch / "kiri"))
        self.assertRefused("KIRI_HOME", home=str(self.scratch))

    def test_a_temporary_clone_is_refused(self):
        clone = str(self.scratch / "kiri-clone")
        self.assertRefused("working directory", workdir=clone, pythonpath=clone)
        self.assertRefused("PYTHONPATH", pythonpath=clone)

    def test_a_temporary_python_is_refused(self):
        self.assertRefused("python", python=str(self.scratch / "venv" / "bin" / "python3"))

    def test_the_real_temporary_directories(self):
        with mock.patch("kiri.units.temporary_dirs", wraps=lambda: units.TEMP_DIRS + (tempfile.gettempdir(),)):
            for path in ("/tmp/kiri", "/var/tmp/x/kiri", "/private/var/folders/zz/abc/T/kiri",
                         os.path.join(tempfile.gettempdir(), "kiri")):
                with self.assertRaises(UnitError, msg=path):
                    units.refuse_temporary({"KIRI_HOME": path})
            units.refuse_temporary({"KIRI_HOME": "/Users/alice/.kiri", "PYTHONPATH": None})
            self.assertIsNone(units.inside("/tmpfoo/kiri", ["/tmp"]))   # a prefix of the name is not inside

    def test_a_link_into_a_temporary_directory_is_seen(self):
        self.scratch.mkdir()
        link = self.tmp / "looks lasting"
        link.symlink_to(self.scratch)
        self.assertRefused("KIRI_HOME", home=str(link / "kiri"))

    def test_lasting_paths_pass_without_warnings(self):
        command = install("systemd", target_dir=self.tmp / "units", **self.kw).next_command
        self.assertNotIn("WARNING", command)

    # --- the interpreter -----------------------------------------------------------

    def test_a_virtualenv_python_is_warned_about(self):
        venv = self.tmp / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        python = str(venv / "bin" / "python3")
        self.assertTrue(units.in_virtualenv(python))
        self.assertFalse(units.in_virtualenv(self.python))
        command = install("cron", **dict(self.kw, python=python)).next_command
        self.assertIn(f"# WARNING: {python} is the virtualenv {venv}'s", command)
        self.assertEqual(units.interpreter_notes(self.python), [])

    def test_version_pinned_interpreters(self):
        for python in ("/Users/a/.pyenv/versions/3.11.7/bin/python3", "/opt/pyenv/versions/3.9.18/bin/python3.9",
                       "/Users/a/.asdf/installs/python/3.12.1/bin/python3",
                       "/opt/homebrew/Cellar/python@3.11/3.11.7/bin/python3.11"):
            self.assertTrue(units.version_pinned(python), python)
        for python in ("/usr/bin/python3", "/Users/a/.pyenv/shims/python3", "/opt/homebrew/bin/python3",
                       "/Library/Frameworks/Python.framework/Versions/3.11/bin/python3"):
            self.assertFalse(units.version_pinned(python), python)

    def test_stable_candidates(self):
        self.assertEqual(units.stable_pythons("/Users/a/.pyenv/versions/3.11.7/bin/python3")[0],
                         "/Users/a/.pyenv/shims/python3")
        self.assertEqual(units.stable_pythons("/Users/a/.asdf/installs/python/3.12.1/bin/python3.12")[0],
                         "/Users/a/.asdf/shims/python3.12")
        self.assertEqual(units.stable_pythons("/opt/homebrew/Cellar/python@3.11/3.11.7/bin/python3.11")[0],
                         "/opt/homebrew/opt/python@3.11/bin/python3.11")
        self.assertEqual(units.stable_pythons("/usr/bin/python3"), list(units.SYSTEM_PYTHONS))

    def fake_probe(self, answers):
        """probe(python, pythonpath, workdir) from {python: what it reports}; None for the others."""
        return lambda python, pythonpath, workdir: answers.get(python)

    def test_a_pinned_python_gives_way_to_one_running_the_same_python(self):
        pinned = "/u/.pyenv/versions/3.11.7/bin/python3"
        same = "3.11 /clone/kiri"
        cases = [({"/u/.pyenv/shims/python3": same, "/usr/bin/python3": same}, "/u/.pyenv/shims/python3"),
                 ({"/u/.pyenv/shims/python3": "3.12 /clone/kiri", "/usr/bin/python3": same}, "/usr/bin/python3"),
                 ({"/usr/bin/python3": "3.11 /usr/lib/python3/dist-packages/kiri"}, pinned),   # another kiri
                 ({}, pinned)]
        for others, chosen in cases:
            with self.subTest(chosen=chosen):
                probe = self.fake_probe(dict(others, **{pinned: same}))
                python, notes = units.choose_python(pinned, "/clone", "/clone", probe=probe)
                self.assertEqual(python, chosen)
                self.assertEqual(len(notes), 1)
                if chosen == pinned:
                    self.assertTrue(notes[0].startswith(f"# WARNING: {pinned} belongs to one installed version"))
                else:
                    self.assertEqual(notes[0].split(",")[0], f"# python: {chosen}")

    def test_a_pinned_python_that_cannot_run_kiri_is_kept(self):
        pinned = "/u/.pyenv/versions/3.11.7/bin/python3"
        python, notes = units.choose_python(pinned, None, "/", probe=self.fake_probe({}))
        self.assertEqual(python, pinned)
        self.assertIn("WARNING", notes[0])

    def test_a_stable_python_is_left_alone(self):
        self.assertEqual(units.choose_python("/usr/bin/python3", None, "/", probe=self.fake_probe({})),
                         ("/usr/bin/python3", []))

    def test_install_prefers_the_stable_python_only_when_none_was_given(self):
        pinned = "/u/.pyenv/versions/3.11.7/bin/python3"
        probe = self.fake_probe({pinned: "3.11 /clone/kiri", "/u/.pyenv/shims/python3": "3.11 /clone/kiri"})
        kw = {k: v for k, v in self.kw.items() if k != "python"}
        with mock.patch.object(units.sys, "executable", pinned), mock.patch("kiri.units.probe_python", probe):
            chosen = install("cron", **kw)
            given = install("cron", **dict(kw, python=pinned))
        self.assertIn(" /u/.pyenv/shims/python3 -m kiri daemon --once", chosen.text)
        self.assertIn("# python: /u/.pyenv/shims/python3", chosen.next_command)
        self.assertIn(f" {pinned} -m kiri daemon --once", given.text)
        self.assertIn(f"# WARNING: {pinned} belongs to one installed version", given.next_command)

    def test_the_probe_runs_kiri_as_the_unit_would(self):
        here = units.probe_python(sys.executable, str(units.REPO), str(units.REPO))
        self.assertEqual(here, "%d.%d %s" % (sys.version_info[:2] + (os.path.realpath(units.REPO / "kiri"),)))
        self.assertIsNone(units.probe_python(str(self.tmp / "no-python"), None, str(self.tmp)))

    # --- macOS privacy protection (TCC) --------------------------------------------

    def test_protected_folders_are_warned_about_for_launchd(self):
        user_home = self.tmp / "alice"
        for folder in ("Documents", "Desktop", "Downloads", "Library/Mobile Documents"):
            with self.subTest(folder=folder):
                clone = str(user_home / folder / "kiri")
                kw = dict(self.kw, workdir=clone, pythonpath=clone)
                command = install("launchd", user_home=user_home, print_only=True, uid=501, **kw).next_command
                self.assertIn(f"# WARNING: working directory {clone} is in ~/{folder}, which macOS privacy "
                              "protection (TCC) keeps from background jobs", command)
                self.assertIn("pip install kiri", command)
                self.assertEqual(command.count("TCC"), 1)   # the clone is also PYTHONPATH: said once
                # systemd and cron run on Linux: no TCC there.
                self.assertNotIn("TCC", install("systemd", user_home=user_home, print_only=True, **kw).next_command)

    def test_a_protected_kiri_home_is_warned_about(self):
        user_home = self.tmp / "alice"
        home = str(user_home / "Documents" / "kiri-data")
        command = install("launchd", user_home=user_home, print_only=True, uid=501,
                          **dict(self.kw, home=home)).next_command
        self.assertIn(f"# WARNING: KIRI_HOME {home} is in ~/Documents", command)
        self.assertNotIn(f"working directory {self.workdir} is in", command)

    def test_a_folder_of_a_similar_name_is_not_protected(self):
        user_home = self.tmp / "alice"
        clone = str(user_home / "Documents-old" / "kiri")
        command = install("launchd", user_home=user_home, print_only=True, uid=501,
                          **dict(self.kw, workdir=clone, pythonpath=clone)).next_command
        self.assertNotIn("TCC", command)


if __name__ == "__main__":
    unittest.main()
