"""One daemon per home, and whether it is alive: the lock (kiri.lock), the daemon's heartbeat
and stop record, `kiri daemon status | stop | uninstall`, and the daemon line of `kiri status`.

The lock is tested with real processes: `python -m kiri daemon` children (tick 0.2 s) in a
temporary KIRI_HOME, with a temporary HOME and every KIRI_ setting of the caller's
environment blanked. Every test kills and reaps the children it started.
"""

import json
import os
import plistlib
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from kiri import lock, units
from kiri.config import load_settings
from kiri.daemon import HEARTBEAT_KEY, STOPPED_KEY, Daemon
from kiri.errors import KiriError
from kiri.status import collect_status, describe_daemon
from kiri.store import open_store
from tests.helpers import REPO, CommandLineAssertions, DaemonChildren, kiri_env, run_kiri
from tests.test_cli_loop import HIGH_VALUES, NEUTRAL_ENV

TIMEOUT = 60   # seconds a command, or a daemon getting somewhere, may take before the test fails


def install(kind, **kw):
    """units.install into this test's temporary folders, which it refuses for real homes
    (test_units.LastingPathsTest tests that refusal)."""
    with mock.patch("kiri.units.temporary_dirs", return_value=()):
        return units.install(kind, python=sys.executable, env={}, **kw)


class TempHome(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-lock-")
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.home = self.tmp / "home"

    def store(self):
        store = open_store(self.home)
        self.addCleanup(store.close)
        return store


# --------------------------------------------------------------------------------------
# 1. The lock and its file, in this process


class LockFileTest(TempHome):
    def test_the_holder_is_named_and_a_second_taker_is_refused(self):
        with lock.DaemonLock(self.home, "forever"):
            path = lock.lock_path(self.home)
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
            self.assertEqual(json.loads(path.read_text())["pid"], os.getpid())
            held = lock.holder(self.home)
            self.assertEqual((held.pid, held.mode), (os.getpid(), "forever"))
            # flock belongs to the open file, so a second one in this process is refused too.
            with self.assertRaises(KiriError) as caught:
                with lock.DaemonLock(self.home, "once"):
                    self.fail("took a lock that is held")
            message = str(caught.exception)
            self.assertIn(f"another kiri daemon (PID {os.getpid()}, running since ", message)
            self.assertIn(f"holds {self.home}; stop it with kiri daemon stop", message)
        self.assertIsNone(lock.holder(self.home))
        with lock.DaemonLock(self.home, "once"):   # free again: the file left behind blocks nothing
            self.assertEqual(lock.holder(self.home).mode, "once")

    def test_a_home_where_no_daemon_ever_ran_has_no_holder(self):
        self.assertIsNone(lock.holder(self.home))
        self.assertFalse(self.home.exists())

    def test_without_flock_each_use_is_one_clear_line(self):
        with mock.patch.object(lock, "fcntl", None):   # as on Windows
            for use in (lambda: lock.DaemonLock(self.home, "forever").__enter__(),
                        lambda: lock.holder(self.home), lambda: lock.stop(self.home)):
                with self.assertRaisesRegex(KiriError, r"^one daemon per home needs flock\(2\), which this platform"):
                    use()
            # `kiri status` still shows everything else.
            info = collect_status(load_settings(home=self.home, env={}), self.store())
        self.assertEqual(info["daemon"]["state"], "unknown")
        self.assertTrue(describe_daemon(info["daemon"]).startswith("unknown (one daemon per home needs flock(2)"))

    def test_a_lock_file_is_read_defensively(self):
        for data in (b"", b"garbage", b"\xff\xfe", b"[12]", b'{"pid": "12"}',
                     b'{"pid": true, "mode": "sometimes", "started": "yesterday"}', b'{"pid": -3}'):
            with self.subTest(data=data):
                self.assertEqual(lock.parse_holder(data), lock.Holder(None, None, None))
        self.assertEqual(lock.parse_holder(b'{"pid": 12, "mode": "once", "started": 1.5}\n'),
                         lock.Holder(12, "once", 1.5))

    def test_heartbeats_old_and_new(self):
        self.assertEqual(lock.parse_heartbeat(1234.5), {"ts": 1234.5, "pid": None, "mode": None, "started": None})
        beat = {"ts": 10.0, "pid": 7, "mode": "forever", "started": 5.0}
        self.assertEqual(lock.parse_heartbeat(beat), beat)
        for bad in (None, "soon", float("nan"), {"pid": 7}, {"ts": "10"}, [10.0]):
            with self.subTest(bad=bad):
                self.assertIsNone(lock.parse_heartbeat(bad))


class StateTest(unittest.TestCase):
    HOLDER = lock.Holder(7, "forever", 1.0)

    def beat(self, ts=100.0, mode="forever"):
        return {"ts": ts, "pid": 7, "mode": mode, "started": 1.0}

    def test_each_state(self):
        cases = [((self.HOLDER, None, None), "running"),
                 ((None, None, None), "never"),
                 ((None, None, 50.0), "stopped"),                      # stopped before its first cycle
                 ((None, self.beat(), None), "stale"),                 # killed: no stop recorded
                 ((None, self.beat(), 99.0), "stale"),                 # the stop is an earlier run's
                 ((None, self.beat(), 100.0), "stopped"),
                 ((None, self.beat(mode="once"), None), "stopped"),    # --once ends after its heartbeat
                 ((None, self.beat(mode=None), None), "stale")]        # an older KIRI's heartbeat
        for args, state in cases:
            with self.subTest(args=args):
                self.assertEqual(lock.state_of(*args), state)


# --------------------------------------------------------------------------------------
# 2. What the daemon records, and the words for it


class DaemonRecordsTest(TempHome):
    def test_each_cycle_names_pid_and_mode_and_a_clean_end_records_the_stop(self):
        settings = load_settings(home=self.home, env={})
        store = self.store()
        d = Daemon(settings, store, clock=lambda: 1000.0, mode="forever")
        with self.assertLogs("kiri", level="INFO") as logs:
            d.run_forever(sleep=lambda tick: d.stop_event.set())   # one cycle, then a stop
        self.assertIn("daemon stopped", logs.output[-1])
        self.assertEqual(store.get_kv(HEARTBEAT_KEY), {"ts": 1000.0, "pid": os.getpid(), "mode": "forever",
                                                       "started": 1000.0})
        self.assertEqual(store.get_kv(STOPPED_KEY), {"ts": 1000.0, "pid": os.getpid()})
        info = lock.daemon_status(self.home, store, now=1180.0)
        self.assertEqual((info["state"], info["pid"], info["stopped_at"]), ("stopped", os.getpid(), 1000.0))
        self.assertEqual(describe_daemon(info, now=1180.0), "stopped 3 min ago")

    def test_the_status_line_of_each_state(self):
        store = self.store()
        now = time.time()
        self.assertEqual(describe_daemon(lock.daemon_status(self.home, store, now)), "never run")
        store.set_kv(HEARTBEAT_KEY, now - 2400)   # as an older KIRI wrote it, then was killed
        info = collect_status(load_settings(home=self.home, env={}), store, now)
        self.assertAlmostEqual(info["heartbeat_age"], 2400)
        self.assertEqual(describe_daemon(info["daemon"], now),
                         "stale — last heartbeat 40 min ago, no stop recorded (killed?)")
        store.set_kv(HEARTBEAT_KEY, {"ts": now - 12, "pid": os.getpid(), "mode": "forever", "started": now - 60})
        with lock.DaemonLock(self.home, "forever"):
            info = lock.daemon_status(self.home, store, now)
            self.assertEqual((info["state"], info["mode"]), ("running", "forever"))
            self.assertEqual(describe_daemon(info, now), f"running (PID {os.getpid()}, 0 s, last cycle 12 s ago)")
            store.set_kv(HEARTBEAT_KEY, {"ts": now - 12, "pid": os.getpid() + 1, "mode": "forever"})
            self.assertEqual(describe_daemon(lock.daemon_status(self.home, store, now), now),
                             f"running (PID {os.getpid()}, 0 s, no cycle finished yet)")


# --------------------------------------------------------------------------------------
# 3. Two real daemons on one home


class DaemonProcesses(DaemonChildren, CommandLineAssertions, TempHome):
    def setUp(self):
        super().setUp()
        self.user = self.tmp / "user"   # HOME of every child: unit files land here
        self.user.mkdir()
        self.env = dict(NEUTRAL_ENV, HOME=str(self.user), KIRI_TICK="0.2")

    def kiri(self, *args):
        return run_kiri(*args, home=self.home, env=self.env, timeout=TIMEOUT)

    def start(self, name, argv=("-m", "kiri", "daemon")):
        """`python argv…` in the background in this test's home, its output in <tmp>/<name>.out."""
        output = self.tmp / (name + ".out")
        out = open(str(output), "w")
        self.addCleanup(out.close)
        proc = subprocess.Popen([sys.executable, *argv], cwd=str(REPO), env=kiri_env(self.home, self.env),
                                stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(self.reap, proc)
        proc.output_path = output
        return proc

    def holds_lock(self, proc):
        held = lock.holder(self.home)
        return held is not None and held.pid == proc.pid

    def has_cycled(self, proc, store):
        beat = lock.parse_heartbeat(store.get_kv(HEARTBEAT_KEY))
        return beat is not None and beat["pid"] == proc.pid

    def daemon_status(self):
        proc = self.kiri("daemon", "status", "--json")
        info = json.loads(proc.stdout)
        self.assertEqual(proc.returncode, 0 if info["state"] == "running" else 3, proc.stdout + proc.stderr)
        return info

    def test_a_second_daemon_is_refused_then_status_stop_and_status_again(self):
        first = self.start("first")
        self.wait_for(first, lambda: self.holds_lock(first), "lock naming the daemon's PID")
        store = self.store()
        self.wait_for(first, lambda: self.has_cycled(first, store), "first cycle")
        for args in (("daemon",), ("daemon", "--once", "--inject", "pulse", HIGH_VALUES)):
            with self.subTest(args=args):
                proc = self.kiri(*args)
                self.assertUserError(proc, f"kiri: error: another kiri daemon (PID {first.pid}, running since ",
                                     code=1)
                self.assertIn(f"holds {self.home}; stop it with kiri daemon stop", proc.stderr)
                self.assertEqual(proc.stdout, "")
        self.assertEqual(store.count_observations("pulse")["injected"], 0, "the refused --once stored its reading")
        self.assertEqual(store.alerts(), [])
        log = (self.home / "kiri.log").read_text()
        self.assertEqual(log.count("daemon started"), 1, log)

        proc = self.kiri("daemon", "status")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, rf"^kiri daemon: running \(PID {first.pid}, \d+ s, last cycle \d+ s ago\)\n")
        info = self.daemon_status()
        self.assertEqual((info["state"], info["pid"], info["mode"]), ("running", first.pid, "forever"))
        self.assertRegex(self.kiri("status").stdout, rf"(?m)^daemon: running \(PID {first.pid}, ")

        install("systemd", user_home=self.user, home=self.home)
        proc = self.kiri("daemon", "stop")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        stopped, note = proc.stdout.splitlines()
        self.assertEqual(stopped, f"stopped (PID {first.pid})")
        self.assertIn("so systemd will start the daemon again; to keep it stopped: "
                      "systemctl --user disable --now kiri.service", note)
        self.assertEqual(first.wait(timeout=TIMEOUT), 0)   # the lock is free only once it has stopped

        info = self.daemon_status()
        self.assertEqual((info["state"], info["pid"]), ("stopped", first.pid))
        self.assertRegex(self.kiri("daemon", "status").stdout, r"^kiri daemon: stopped \d+ s ago\n")
        proc = self.kiri("daemon", "stop")
        self.assertEqual((proc.returncode, proc.stdout), (0, f"kiri daemon is not running (home {self.home})\n"))
        self.assertIn("daemon stopped", (self.home / "kiri.log").read_text())

    def test_a_killed_daemon_is_stale_and_a_new_one_starts_at_once(self):
        first = self.start("first")
        store = self.store()
        self.wait_for(first, lambda: self.has_cycled(first, store), "first cycle")
        first.send_signal(signal.SIGKILL)
        self.assertEqual(first.wait(timeout=TIMEOUT), -signal.SIGKILL)

        info = self.daemon_status()
        self.assertEqual((info["state"], info["pid"], info["mode"]), ("stale", first.pid, "forever"))
        proc = self.kiri("daemon", "status")
        self.assertRegex(proc.stdout, r"^kiri daemon: stale — last heartbeat \d+ s ago, no stop recorded \(killed\?\)\n")
        self.assertEqual(self.kiri("daemon", "stop").stdout, f"kiri daemon is not running (home {self.home})\n")

        second = self.start("second")   # the kernel released the lock with the killed process
        self.wait_for(second, lambda: self.holds_lock(second), "lock naming the new daemon")
        self.wait_for(second, lambda: self.has_cycled(second, store), "a cycle of the new daemon")
        self.assertEqual(self.daemon_status()["pid"], second.pid)
        second.send_signal(signal.SIGTERM)
        self.assertEqual(second.wait(timeout=TIMEOUT), 0, second.output_path.read_text())
        self.assertEqual(self.daemon_status()["state"], "stopped")


    def test_a_daemon_that_does_not_stop_in_time_is_one_line(self):
        """A holder that ignores SIGTERM: `stop` gives up after --wait, says so, and leaves it running."""
        code = ("import signal, sys, time\nfrom kiri import lock\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "with lock.DaemonLock(sys.argv[1], 'forever'):\n    time.sleep(120)\n")
        stubborn = self.start("stubborn", ("-c", code, str(self.home)))
        self.wait_for(stubborn, lambda: self.holds_lock(stubborn), "lock naming the stubborn process")
        proc = self.kiri("daemon", "stop", "--wait", "1")
        self.assertUserError(proc, f"PID {stubborn.pid} still holds {self.home} after 1 s", code=1)
        self.assertIsNone(stubborn.poll())


# --------------------------------------------------------------------------------------
# 4. Bad input, and uninstall through the command line


class DaemonCommands(CommandLineAssertions, TempHome):
    def setUp(self):
        super().setUp()
        self.user = self.tmp / "user"
        self.user.mkdir()

    def kiri(self, *args):
        return run_kiri(*args, home=self.home, env=dict(NEUTRAL_ENV, HOME=str(self.user)), timeout=TIMEOUT)

    def test_a_bad_wait_is_one_usage_line(self):
        for value in ("0", "abc", "601", "nan"):
            with self.subTest(value=value):
                proc = self.kiri("daemon", "stop", "--wait", value)
                self.assertUserError(proc, f"argument --wait: expected a number of seconds from 1 to 600, "
                                           f"got '{value}'", code=2)
                self.assertEqual(proc.stdout, "")

    def test_a_home_that_is_a_file_is_one_line(self):
        self.home.write_text("not a folder")
        self.assertUserError(self.kiri("daemon", "--once"), f"KIRI home {self.home} is not a folder", code=1)

    def test_uninstall_with_nothing_installed_is_one_line(self):
        for kind, path in (("launchd", "Library/LaunchAgents/com.kiri.daemon.plist"),
                           ("systemd", ".config/systemd/user/kiri.service")):
            with self.subTest(kind=kind):
                proc = self.kiri("daemon", "uninstall", f"--{kind}")
                self.assertUserError(proc, f"nothing to uninstall: {self.user / path} does not exist", code=1)

    def test_install_then_uninstall_through_the_command_line(self):
        path = install("launchd", user_home=self.user, home=self.home).path
        self.assertEqual(path, self.user / "Library" / "LaunchAgents" / "com.kiri.daemon.plist")
        proc = self.kiri("daemon", "uninstall", "--launchd", "--print")
        self.assertEqual(proc.stdout.splitlines()[0], f"would remove {path}")
        self.assertTrue(path.exists())
        proc = self.kiri("daemon", "uninstall", "--launchd")
        self.assertEqual(proc.stdout, f"removed {path}\nnext: launchctl bootout gui/{os.getuid()}/com.kiri.daemon\n")
        self.assertFalse(path.exists())
        proc = self.kiri("daemon", "uninstall", "--cron")
        self.assertEqual((proc.returncode, proc.stdout),
                         (0, "next: crontab -l 2>/dev/null | grep -v -F -e ' -m kiri daemon --once' | crontab -\n"))


# --------------------------------------------------------------------------------------
# 5. units.uninstall: exactly what install wrote, and nothing that is not KIRI's


def listing(folder):
    """Every path under `folder` with its bytes (None for a folder or a link)."""
    return {str(p.relative_to(folder)): None if p.is_dir() or p.is_symlink() else p.read_bytes()
            for p in sorted(Path(folder).rglob("*"))}


class UninstallTest(TempHome):
    KIND_FILES = {"launchd": "com.kiri.daemon.plist", "systemd": "kiri.service"}

    def folder(self, kind):
        """A unit folder holding someone else's file, which must survive everything."""
        folder = self.tmp / kind
        folder.mkdir()
        (folder / "other.unit").write_text("ExecStart=/usr/bin/other\n")
        return folder


    def test_install_then_uninstall_leaves_the_folder_as_it_was(self):
        for kind, stop in (("launchd", "launchctl bootout gui/501/com.kiri.daemon"),
                           ("systemd", "systemctl --user stop kiri.service 2>/dev/null; systemctl --user daemon-reload")):
            with self.subTest(kind=kind):
                folder = self.folder(kind)
                before = listing(folder)
                path = install(kind, target_dir=folder, home=self.home, uid=501).path
                self.assertEqual(units.uninstall(kind, target_dir=folder, uid=501, print_only=True),
                                 units.Uninstalled(path, stop))
                self.assertTrue(path.exists(), "print_only removed the unit")
                self.assertEqual(units.uninstall(kind, target_dir=folder, uid=501), units.Uninstalled(path, stop))
                self.assertEqual(listing(folder), before)

    def test_a_file_that_is_not_kiris_is_left_alone(self):
        strangers = {"launchd": [plistlib.dumps({"Label": "com.other", "ProgramArguments": ["/bin/other"]}),
                                 plistlib.dumps({"Label": "com.kiri.daemon", "ProgramArguments": ["/bin/other"]}),
                                 b"not a plist", b"<plist><dict><key>x</key></plist>"],
                     "systemd": [b"[Service]\nExecStart=/usr/bin/other\n", b"\xff\xfe", b""]}
        for kind, contents in strangers.items():
            folder = self.folder(kind)
            for data in contents:
                with self.subTest(kind=kind, data=data):
                    (folder / self.KIND_FILES[kind]).write_bytes(data)
                    before = listing(folder)
                    with self.assertRaises(units.UnitError) as caught:
                        units.uninstall(kind, target_dir=folder)
                    self.assertIn("was not written by kiri daemon install; left alone", str(caught.exception))
                    self.assertEqual(listing(folder), before)

    def test_an_enabled_systemd_unit_is_refused_until_it_is_disabled(self):
        folder = self.folder("systemd")
        path = install("systemd", target_dir=folder, home=self.home).path
        wants = folder / "default.target.wants"
        wants.mkdir()
        (wants / "kiri.service").symlink_to(path)   # what `systemctl --user enable` makes
        with self.assertRaises(units.UnitError) as caught:
            units.uninstall("systemd", target_dir=folder)
        self.assertIn("run first: systemctl --user disable --now kiri.service", str(caught.exception))
        self.assertTrue(path.exists())
        (wants / "kiri.service").unlink()           # what `systemctl --user disable` does
        self.assertEqual(units.uninstall("systemd", target_dir=folder).path, path)
        self.assertFalse(path.exists())

    def test_the_cron_command_drops_only_kiris_line(self):
        """The printed command, run for real against a stand-in `crontab` that keeps its table in a file."""
        line = install("cron", home=self.home).text
        table = self.tmp / "crontab.txt"
        table.write_text(f"0 3 * * * /usr/bin/backup\n{line}\n@reboot /usr/bin/other\n")
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "crontab"
        fake.write_text(f'#!/bin/sh\nif [ "$1" = -l ]; then cat "{table}"; else cat > "{table}.new"; fi\n')
        fake.chmod(0o755)
        command = units.uninstall("cron").next_command
        subprocess.run(["/bin/sh", "-c", command], env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"),
                       check=True, timeout=TIMEOUT)
        self.assertEqual(Path(f"{table}.new").read_text(), "0 3 * * * /usr/bin/backup\n@reboot /usr/bin/other\n")

    def test_installed_units_names_only_kiris(self):
        user = self.tmp / "user"
        self.assertEqual(units.installed_units(user_home=user), [])
        path = install("systemd", user_home=user, home=self.home).path
        self.assertEqual(units.installed_units(user_home=user), [("systemd", path)])
        path.write_text("[Service]\nExecStart=/usr/bin/other\n")
        self.assertEqual(units.installed_units(user_home=user), [])


if __name__ == "__main__":
    unittest.main()
