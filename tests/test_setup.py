"""`kiri setup`: the real command line in subprocesses, with its own KIRI_HOME and HOME, stdin
not a terminal (or a pseudo-terminal, for the questions), every KIRI_<KEY> of the caller's
environment neutralised; Telegram is the loopback fake (kiri/bench/fake_telegram.py), the
router a loopback RouterOS and the node_exporter a loopback server of a recorded scrape
(tests/data/node_exporter-1.5.0.metrics). No test installs a service: the choice of its
kind, its start commands and the wait for its first reading are tested as library calls,
the last against a real `kiri daemon` child.
"""

import os
import pty
import select
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from kiri import setup
from kiri.atoms.pulse.schema import SPEC as PULSE
from kiri.config import KEYS, load_settings, read_config_file, set_config_values, write_default_config
from kiri.errors import KiriError
from kiri.bench.fake_telegram import FakeTelegram
from kiri.bench.loopback import QuietServer
from kiri.store import open_store
from tests.helpers import REPO, CommandLineAssertions, DaemonChildren, kiri_env
from tests.test_pulse_mikrotik import INTERFACES, PASSWORD, RESOURCE_HAP, USER, FakeRouterOS, authorization
from tests.test_pulse_node_exporter import SAMPLE, FakeExporter, later, reading, serving

TIMEOUT = 60
TOKEN = "424242:TEST-token-that-must-never-be-printed"
CHAT_ID = 4242
# Every setting's variable set to "" (= not given), and KIRI_CONFIG too: only the temp home counts.
NEUTRAL_ENV = dict({"KIRI_" + key.upper(): "" for key in KEYS}, KIRI_CONFIG="", KIRI_HOME="")
LINUX = sys.platform.startswith("linux")
PULSE_QUESTION = "Pulse reads this machine (system), a MikroTik router (mikrotik) or a node_exporter (node_exporter)"
EXPORTER_QUESTION = "node_exporter address, e.g. http://nas.local:9100/metrics"


class SetupTestCase(CommandLineAssertions, unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.home, self.user = self.tmp / "home", self.tmp / "user"
        self.user.mkdir()   # HOME of the child: nothing of the real user's files is read or written

    def env(self, extra=None):
        return kiri_env(env=dict(NEUTRAL_ENV, HOME=str(self.user), **(extra or {})))

    def setup(self, *args, env=None):
        """`kiri setup --home HOME args…` with stdin not a terminal."""
        return subprocess.run([sys.executable, "-m", "kiri", "setup", "--home", str(self.home)] + [str(a) for a in args],
                              cwd=str(REPO), env=self.env(env), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=TIMEOUT)

    def ok(self, *args, env=None):
        proc = self.setup(*args, env=env)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(proc.stderr, "")
        return proc

    def secret_file(self, text, mode=0o600, name="secret"):
        path = self.tmp / name
        path.write_text(text + "\n", encoding="utf-8")
        os.chmod(str(path), mode)
        return path

    def config(self):
        return read_config_file(self.home / "config.ini")[0]

    def assertPrivate(self):
        self.assertEqual(stat.S_IMODE(os.stat(str(self.home)).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(str(self.home / "config.ini")).st_mode), 0o600)

    def assertNoSecret(self, secret, proc):
        for text in [proc.stdout, proc.stderr] + [p.read_text(encoding="utf-8") for p in self.home.glob("kiri.log*")]:
            self.assertNotIn(secret, text)
            self.assertNotIn(secret.split(":")[-1], text)

    def exporter(self):
        """A node_exporter on 127.0.0.1 answering the recorded scrape, then one a second later
        (Pulse's CPU is the rate between two scrapes): the server, and its address."""
        server = QuietServer(("127.0.0.1", 0), FakeExporter)
        server.paths, server.answers = [], [serving(SAMPLE), serving(later(SAMPLE))]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        self.addCleanup(thread.join, 2)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    def terminal(self, *args):
        """`kiri setup --home HOME args…` on a pseudo-terminal: a Terminal to answer its questions."""
        leader, follower = pty.openpty()
        child = subprocess.Popen([sys.executable, "-m", "kiri", "setup", "--home", str(self.home)] + list(args),
                                 cwd=str(REPO), env=self.env(), stdin=follower, stdout=follower, stderr=follower,
                                 start_new_session=True)   # no controlling terminal: getpass reads stdin
        os.close(follower)
        self.addCleanup(os.close, leader)
        return Terminal(self, child, leader)


class Terminal:
    """The screen of a child on a pseudo-terminal, read only as far as the test needs."""

    def __init__(self, test, child, leader):
        self.test, self.child, self.leader, self.screen = test, child, leader, ""

    def answer(self, prompt, text):
        """Wait for `prompt` (exactly), then type `text` and Enter; what came before it is dropped."""
        deadline = time.monotonic() + TIMEOUT
        while prompt not in self.screen:
            ready, _, _ = select.select([self.leader], [], [], max(0.0, deadline - time.monotonic()))
            self.test.assertTrue(ready, f"no prompt {prompt!r} in:\n{self.screen}")
            self.screen += os.read(self.leader, 4096).decode("utf-8", "replace")
        self.screen = self.screen.split(prompt, 1)[1]
        os.write(self.leader, text.encode() + b"\n")

    def finish(self):
        """Wait for the child to succeed; the rest of the screen since the last answer."""
        self.test.assertEqual(self.child.wait(timeout=TIMEOUT), 0, self.screen)
        while select.select([self.leader], [], [], 0.5)[0]:
            try:
                self.screen += os.read(self.leader, 4096).decode("utf-8", "replace")
            except OSError:   # the child has gone: the terminal is closed
                break
        return self.screen


class ConfigAndSources(SetupTestCase):
    def test_writes_a_private_config_checks_each_source_and_changes_nothing_the_second_time(self):
        proc = self.ok("--no-service", "--no-verify", "--host-name", "box1")
        self.assertPrivate()
        self.assertEqual(self.config(), {"host_name": "box1"})
        self.assertIn(f"config: wrote {self.home / 'config.ini'} (mode 0600): host_name = box1", proc.stdout)
        lines = proc.stdout.splitlines()
        if LINUX:
            self.assertRegex(proc.stdout, r"(?m)^  pulse: ok \(CPU \d+%, memory \d+%, disk \d+%, swap \d+%, "
                                          r"load [\d.]+, network (up|down)\) from linux$")
        self.assertEqual(len([line for line in lines if line.startswith("  rhythm: ")]), 1, proc.stdout)
        self.assertRegex(proc.stdout, r"(?m)^  rhythm: (ok \(hour .+\) from \w+|not available: .+ still runs?)$")
        self.assertRegex(proc.stdout, r"(?m)^  drift: ok: counts `kiri task add\|done\|switch` events")
        self.assertIn("telegram: not set up", proc.stdout)
        self.assertIn("service: not installed (--no-service)", proc.stdout)
        with open_store(self.home) as store:   # each source was read, nothing stored
            self.assertEqual(store.count_observations(), {"real": 0, "synthetic": 0, "injected": 0})

        before = (self.home / "config.ini").read_bytes(), os.stat(str(self.home / "config.ini")).st_mtime_ns
        again = self.ok("--no-service", "--no-verify", "--host-name", "box1")
        self.assertIn(f"config: {self.home / 'config.ini'} unchanged (it already holds what was given)", again.stdout)
        self.assertEqual(((self.home / "config.ini").read_bytes(), os.stat(str(self.home / "config.ini")).st_mtime_ns),
                         before)

        changed = self.ok("--no-service", "--host-name", "box2", "--pulse-source", "system")
        self.assertIn("config: changed host_name = box2, pulse_source = system in", changed.stdout)
        self.assertEqual(self.config(), {"host_name": "box2", "pulse_source": "system"})
        old, new = before[0].decode().splitlines(), (self.home / "config.ini").read_text().splitlines()
        self.assertEqual([(a, b) for a, b in zip(old, new) if a != b],
                         [("host_name = box1", "host_name = box2"), ("# pulse_source = system", "pulse_source = system")])
        self.assertPrivate()

    def test_with_nothing_given_and_no_terminal_the_defaults_hold_and_are_said(self):
        proc = self.ok("--no-service")
        self.assertRegex(proc.stdout, r"(?m)^no terminal to ask on, so the defaults: host name \S+ \(this machine's\); "
                                      r"Pulse reads this machine; no Telegram \(add it with --telegram-token-file")
        self.assertIn("every key at its default", proc.stdout)
        self.assertEqual(self.config(), {})
        self.assertPrivate()

    def test_a_router_is_checked_the_same_way_and_its_password_never_shown(self):
        server = QuietServer(("127.0.0.1", 0), FakeRouterOS)
        server.requests, server.release = [], threading.Event()
        server.expected_authorization = authorization(USER, PASSWORD)
        server.routes = {"/rest/system/resource": (200, RESOURCE_HAP, 0), "/rest/interface": (200, INTERFACES, 0)}
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        self.addCleanup(thread.join, 2)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = self.ok("--no-service", "--pulse-source", "mikrotik", "--mikrotik-url", url, "--mikrotik-user", USER,
                       "--mikrotik-password-file", self.secret_file(PASSWORD))
        self.assertIn("  pulse: ok (CPU 7%, memory 34%, disk 31%, swap 0%, load 0.3, network up) from mikrotik",
                      proc.stdout)
        self.assertIn("mikrotik_password (hidden)", proc.stdout)
        self.assertEqual(self.config()["mikrotik_password"], PASSWORD)
        self.assertNoSecret(PASSWORD, proc)

        wrong = self.ok("--no-service", "--mikrotik-password-file", self.secret_file("not-it", name="wrong"))
        self.assertRegex(wrong.stdout, r"(?m)^  pulse: not available: mikrotik: authentication failed \(HTTP 401\) "
                                       r"at 127\.0\.0\.1:\d+ — .*Drift still runs?$")
        self.assertIn("config: changed mikrotik_password (hidden) in", wrong.stdout)
        self.assertNoSecret("not-it", wrong)

    def test_a_node_exporter_is_written_to_the_config_and_read_from_it(self):
        server, url = self.exporter()
        pulse_ok = f"  pulse: ok ({setup.describe_reading(PULSE, reading(SAMPLE))}) from node_exporter"
        proc = self.ok("--no-service", "--pulse-source", "node_exporter", "--node-exporter-url", url + "/metrics")
        self.assertIn(f"config: wrote {self.home / 'config.ini'} (mode 0600): pulse_source = node_exporter, "
                      f"node_exporter_url = {url}/metrics\n", proc.stdout)
        self.assertEqual(self.config(), {"pulse_source": "node_exporter", "node_exporter_url": url + "/metrics"})
        self.assertIn(pulse_ok + "\n", proc.stdout)
        self.assertEqual(server.paths, ["/metrics", "/metrics"])   # two scrapes: CPU is their rate
        self.assertPrivate()
        with open_store(self.home) as store:   # read, not stored
            self.assertEqual(store.count_observations(), {"real": 0, "synthetic": 0, "injected": 0})

        # Nothing given: the source is the config's alone (check_sources reads the settings written).
        server.paths, server.answers = [], [serving(SAMPLE), serving(later(SAMPLE))]
        again = self.ok("--no-service")
        self.assertIn("unchanged (nothing given to change)", again.stdout)
        self.assertIn(pulse_ok + "\n", again.stdout)
        self.assertEqual(server.paths, ["/metrics", "/metrics"])

        # A query may hold a token: written and sent, never shown.
        server.paths, server.answers = [], [serving(SAMPLE), serving(later(SAMPLE))]
        query = self.ok("--no-service", "--node-exporter-url", url + "/metrics?token=s3cret")
        self.assertIn(f"config: changed node_exporter_url = {url}/metrics?… in", query.stdout)
        self.assertIn(pulse_ok + "\n", query.stdout)
        self.assertEqual(server.paths, ["/metrics?token=s3cret"] * 2)
        self.assertEqual(self.config()["node_exporter_url"], url + "/metrics?token=s3cret")
        self.assertNoSecret("s3cret", query)

    def test_a_source_address_alone_is_written_and_leaves_the_source_as_it_is(self):
        server, url = self.exporter()
        for flag, key in (("--mikrotik-url", "mikrotik_url"), ("--node-exporter-url", "node_exporter_url")):
            with self.subTest(flag=flag):
                proc = self.ok("--no-service", "--host-name", "box1", flag, url)
                self.assertEqual(self.config(), {"host_name": "box1", key: url})
                self.assertIn("no terminal to ask on, so the defaults: Pulse reads this machine;", proc.stdout)
                self.assertEqual(server.paths, [])   # not read: pulse_source is still system
                (self.home / "config.ini").unlink()


class Telegram(SetupTestCase):
    def test_a_test_alert_reaches_the_fake_bot_and_the_token_is_only_in_the_private_config(self):
        token_file = self.secret_file(TOKEN)
        with FakeTelegram(token=TOKEN, chat_id=CHAT_ID) as fake:
            proc = self.ok("--no-service", "--telegram-token-file", token_file, "--telegram-chat-id", CHAT_ID,
                           env={"KIRI_TELEGRAM_API": fake.url})
            sent = fake.sent()
        self.assertEqual(len(sent), 1)
        self.assertIn("KIRI test alert", sent[0]["text"])
        self.assertRegex(proc.stdout, r"(?m)^  telegram: delivered \(message \d+\)$")
        self.assertIn("telegram_token (hidden), telegram_chat_id = 4242", proc.stdout)
        self.assertNoSecret(TOKEN, proc)
        self.assertEqual(self.config()["telegram_token"], TOKEN)   # the daemon reads it there
        self.assertPrivate()

    def test_a_telegram_that_refuses_is_one_line(self):
        with FakeTelegram(token=TOKEN, chat_id=CHAT_ID) as fake:
            proc = self.setup("--no-service", "--telegram-token-file", self.secret_file(TOKEN),
                              "--telegram-chat-id", "999", env={"KIRI_TELEGRAM_API": fake.url})
        self.assertUserError(proc, "telegram: the test alert did not arrive", code=1)
        self.assertNoSecret(TOKEN, proc)

    def test_a_token_file_others_may_read_is_refused_before_anything_is_written(self):
        path = self.secret_file(TOKEN, mode=0o640)
        proc = self.setup("--no-service", "--telegram-token-file", path, "--telegram-chat-id", CHAT_ID)
        self.assertUserError(proc, f"{path} may be read by other users (mode 0640); run: chmod 600 {path}", code=1)
        self.assertNoSecret(TOKEN, proc)
        self.assertFalse(self.home.exists())


class Mistakes(SetupTestCase):
    def test_usage_errors_are_one_line(self):
        for args, text in ((("--wait", "0"), "--wait: expected a number of seconds from 1 to 600"),
                           (("--wait", "abc"), "--wait: expected a number of seconds from 1 to 600"),
                           (("--pulse-source", "nope"), "--pulse-source: invalid choice: 'nope'"),
                           (("--start", "--no-service"), "not allowed with argument"),
                           (("--telegram-token", TOKEN), "give --telegram-token-file FILE"),
                           ((f"--telegram-token={TOKEN}",), "give --telegram-token-file FILE"),
                           (("--mikrotik-password", PASSWORD), "give --mikrotik-password-file FILE")):
            with self.subTest(args=args):
                proc = self.setup(*args)
                self.assertUserError(proc, text, code=2)
                self.assertNoSecret(TOKEN, proc)
                self.assertNotIn(PASSWORD, proc.stderr)
                self.assertFalse(self.home.exists())

    def test_bad_values_are_one_line_before_anything_is_written(self):
        for args, text in ((("--host-name", "a b"), "host name must be"),
                           (("--telegram-chat-id", TOKEN), "telegram chat id must be a number"),
                           (("--mikrotik-url", "ftp://router"), "router address must look like"),
                           (("--mikrotik-url", "https://admin:pw@router"), "not inside its address"),
                           (("--telegram-token-file", TOKEN), "no such file (give a file that holds the bot token")):
            with self.subTest(args=args):
                proc = self.setup("--no-service", *args)
                self.assertUserError(proc, text, code=1)
                self.assertNoSecret(TOKEN, proc)
                self.assertNotIn("admin:pw", proc.stderr)
                self.assertFalse(self.home.exists())

    def test_a_bad_node_exporter_address_is_one_line_that_does_not_repeat_it_and_nothing_is_written(self):
        # kiri.ground.http_url_problem's words, after "node_exporter address ".
        scheme = "must start with https:// (or http://) and name a host"
        cases = (("ftp://box.lan/s3cret", scheme), ("box.lan:9100", scheme),
                 ("http://user:s3cret@box.lan:9100", "must not hold a user or password"),
                 ("http://box lan:9100/s3cret", "must not contain spaces or control characters"),
                 ("http://[::1/s3cret", "is not a valid address (like https://host or https://host:port)"))
        cases = [(url, "node_exporter address " + words) for url, words in cases]
        for url, words in cases:
            with self.subTest(url=url):
                proc = self.setup("--no-service", "--node-exporter-url", url)
                self.assertUserError(proc, words, code=1)
                self.assertTrue(proc.stderr.endswith(words + "\n"), proc.stderr)
                self.assertNotIn(url, proc.stderr)
                self.assertNoSecret("s3cret", proc)
                self.assertFalse(self.home.exists())
        # An existing config is left as it was, byte for byte and untouched.
        path = write_default_config(self.home, {"host_name": "box1"})
        before = path.read_bytes(), os.stat(str(path)).st_mtime_ns
        for url, words in cases:
            with self.subTest(url=url, config="existing"):
                proc = self.setup("--no-service", "--pulse-source", "node_exporter", "--node-exporter-url", url)
                self.assertUserError(proc, words, code=1)
                self.assertNoSecret("s3cret", proc)
                self.assertEqual((path.read_bytes(), os.stat(str(path)).st_mtime_ns), before)

    def test_a_file_without_a_token_is_refused_without_showing_it(self):
        proc = self.setup("--no-service", "--telegram-token-file", self.secret_file("my secret words"))
        self.assertUserError(proc, "that is not a bot token", code=1)
        self.assertNotIn("my secret words", proc.stderr)


class Questions(SetupTestCase):
    """On a terminal: what the flags left out is asked, secrets without echo."""

    def test_on_a_terminal_the_missing_values_are_asked(self):
        terminal = self.terminal("--no-service")
        terminal.answer("This machine's name in alerts [", "bad name!")
        terminal.answer("This machine's name in alerts [", "box3")
        terminal.answer(PULSE_QUESTION + " [system]: ", "")
        terminal.answer("Telegram bot token from @BotFather (not shown) [Enter: no Telegram]: ", "")
        self.assertIn("config: wrote", terminal.finish())
        self.assertEqual(self.config(), {"host_name": "box3"})

    def test_on_a_terminal_a_node_exporter_is_asked_for_its_address_and_read(self):
        server, url = self.exporter()
        terminal = self.terminal("--no-service", "--host-name", "box6")
        terminal.answer(PULSE_QUESTION + " [system]: ", "node_exporter")
        terminal.answer(EXPORTER_QUESTION + ": ", "http://user:s3cret@127.0.0.1:9100/metrics")
        terminal.answer(EXPORTER_QUESTION + ": ", url + "/metrics")
        terminal.answer("Telegram bot token from @BotFather (not shown) [Enter: no Telegram]: ", "")
        screen = terminal.finish()
        self.assertIn(f"pulse: ok ({setup.describe_reading(PULSE, reading(SAMPLE))}) from node_exporter", screen)
        self.assertEqual(self.config(), {"host_name": "box6", "pulse_source": "node_exporter",
                                         "node_exporter_url": url + "/metrics"})
        self.assertEqual(server.paths, ["/metrics", "/metrics"])

    def test_a_refused_node_exporter_address_is_one_line_that_does_not_repeat_it(self):
        settings = load_settings(self.home, env=NEUTRAL_ENV)
        asked, said = [], []
        answers = iter(["box7", "node_exporter", "http://user:s3cret@nas.local:9100", "ftp://nas.local/s3cret",
                        "http://nas.local:9100/metrics", ""])

        def ask(prompt):
            asked.append(prompt)
            return next(answers)
        values = setup.gather({}, settings, ask=ask, ask_secret=ask, report=said.append)
        self.assertEqual(values, {"host_name": "box7", "pulse_source": "node_exporter",
                                  "node_exporter_url": "http://nas.local:9100/metrics"})
        self.assertEqual(asked[1:], [PULSE_QUESTION + " [system]: "] + [EXPORTER_QUESTION + ": "] * 3
                         + ["Telegram bot token from @BotFather (not shown) [Enter: no Telegram]: "])
        self.assertEqual(said, ["  node_exporter address must not hold a user or password",
                                "  node_exporter address must start with https:// (or http://) and name a host"])

    def test_a_saved_node_exporter_address_is_shown_without_its_query_and_enter_keeps_it(self):
        saved = "http://nas.local:9100/metrics?token=s3cret"
        settings = load_settings(self.home, env=dict(NEUTRAL_ENV, KIRI_PULSE_SOURCE="node_exporter",
                                                     KIRI_NODE_EXPORTER_URL=saved))
        asked = []
        values = setup.gather({"host_name": "box8"}, settings, ask=lambda p: asked.append(p) or "",
                              ask_secret=lambda p: asked.append(p) or "")
        self.assertEqual(values, {"host_name": "box8"})
        self.assertEqual(asked[:2], [PULSE_QUESTION + " [node_exporter]: ",
                                     EXPORTER_QUESTION + " [http://nas.local:9100/metrics?…]: "])
        self.assertNotIn("s3cret", "".join(asked))

    def test_answers_in_order_enter_keeps_and_a_bad_answer_is_asked_again(self):
        settings = load_settings(self.home, env=NEUTRAL_ENV)
        asked, said = [], []
        answers = iter(["box!", "box4", "mikrotik", "https://192.168.88.1", "", "", TOKEN, "-100123"])

        def ask(prompt):
            asked.append(prompt)
            return next(answers)
        values = setup.gather({}, settings, ask=ask, ask_secret=ask, report=said.append)
        self.assertEqual(values, {"host_name": "box4", "pulse_source": "mikrotik", "mikrotik_url": "https://192.168.88.1",
                                  "telegram_token": TOKEN, "telegram_chat_id": "-100123"})
        self.assertEqual(len(asked), 8)
        self.assertTrue(asked[5].startswith("RouterOS password (not shown)"), asked)
        self.assertEqual(said, ["  host name must be 1 to 63 letters, digits, '.', '-' or '_', got 'box!'"])

    def test_a_saved_secret_is_never_shown_in_a_question_and_given_values_are_not_asked(self):
        settings = load_settings(self.home, env=dict(NEUTRAL_ENV, KIRI_TELEGRAM_TOKEN=TOKEN))
        asked = []
        values = setup.gather({"host_name": "box5", "pulse_source": "system"}, settings,
                              ask=lambda p: asked.append(p) or "", ask_secret=lambda p: asked.append(p) or "")
        self.assertEqual(values, {"host_name": "box5", "pulse_source": "system"})
        self.assertEqual(asked, ["Telegram bot token from @BotFather (not shown) [Enter keeps the saved one]: ",
                                 "Telegram chat id (README, Telegram: how to find it): "])
        self.assertNotIn(TOKEN, "".join(asked))

    def test_input_that_ends_is_one_error(self):
        def ended(prompt):
            raise EOFError
        with self.assertRaisesRegex(KiriError, "the input ended"):
            setup.gather({}, load_settings(self.home, env=NEUTRAL_ENV), ask=ended, ask_secret=ended)


class ConfigFile(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"

    def test_only_the_given_keys_change_and_every_other_line_stays(self):
        path = write_default_config(self.home, {"host_name": "box1"})
        text = path.read_text() + "[atom:gpu]\nschema = T=20:100:8\ncommand = /bin/true\n"
        path.write_text(text)
        os.chmod(str(path), 0o644)
        self.assertEqual(set_config_values(path, {"host_name": "box2", "tick": "10", "telegram_chat_id": "7"}),
                         ["host_name", "tick", "telegram_chat_id"])
        new = path.read_text()
        self.assertEqual([(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b],
                         [("host_name = box1", "host_name = box2"), ("# telegram_chat_id = ", "telegram_chat_id = 7"),
                          ("# tick = 30", "tick = 10")])
        self.assertEqual(stat.S_IMODE(os.stat(str(path)).st_mode), 0o600)
        values, atoms, _ = read_config_file(path)
        self.assertEqual(values, {"host_name": "box2", "tick": "10", "telegram_chat_id": "7"})
        self.assertEqual(atoms["gpu"]["command"], "/bin/true")

    def test_nothing_changed_leaves_the_file_alone_and_a_missing_key_is_added_to_its_section(self):
        self.home.mkdir()
        path = self.home / "config.ini"
        path.write_text("[kiri]\nhost_name = a\n  continued\n\n[atom:gpu]\nschema = T=20:100:8\ncommand = x\n")
        before = os.stat(str(path)).st_mtime_ns
        self.assertEqual(set_config_values(path, {"host_name": "a\ncontinued"}), [])
        self.assertEqual(os.stat(str(path)).st_mtime_ns, before)
        set_config_values(path, {"host_name": "b", "tick": "5"})
        self.assertEqual(path.read_text(), "[kiri]\nhost_name = b\ntick = 5\n\n[atom:gpu]\nschema = T=20:100:8\ncommand = x\n")
        path.write_text("[atom:gpu]\nschema = T=20:100:8\ncommand = x\n")
        set_config_values(path, {"host_name": "c"})
        self.assertEqual(read_config_file(path)[0], {"host_name": "c"})


class Service(unittest.TestCase):
    def test_the_kind_of_service_follows_the_platform_and_systemd(self):
        self.assertEqual(setup.service_kind("macos", systemd_usable=lambda: True), "launchd")
        self.assertEqual(setup.service_kind("linux", systemd_usable=lambda: True), "systemd")
        self.assertEqual(setup.service_kind("linux", systemd_usable=lambda: False), "cron")
        self.assertEqual(setup.service_kind("freebsd14", systemd_usable=lambda: True), "cron")
        with self.assertRaisesRegex(KiriError, "Linux and macOS"):
            setup.service_kind("win32")

    def test_start_commands(self):
        self.assertEqual(setup.start_commands("systemd", None),
                         [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "kiri.service"],
                          ["systemctl", "--user", "restart", "kiri.service"]])
        self.assertEqual(setup.start_commands("launchd", "/p/com.kiri.daemon.plist", uid=501),
                         [["launchctl", "bootout", "gui/501/com.kiri.daemon"],
                          ["launchctl", "bootstrap", "gui/501", "/p/com.kiri.daemon.plist"]])
        self.assertEqual(setup.start_commands("cron", None), [])

    def test_starting_stops_at_the_first_failure_but_a_bootout_of_nothing_is_fine(self):
        said = []

        def run(argv, source):
            if argv[1] == "bootout" or argv[-2] == "restart":
                raise setup.CollectorError(f"{source}: {' '.join(argv)} failed (exit 5): no")
        setup.start_service("launchd", "/p.plist", said.append, run=run)
        self.assertEqual(said, [f"  ran: launchctl bootout gui/{os.getuid()}/com.kiri.daemon (it was not loaded)",
                                f"  ran: launchctl bootstrap gui/{os.getuid()} /p.plist"])
        del said[:]
        with self.assertRaisesRegex(KiriError, "^service: systemctl --user restart kiri.service failed"):
            setup.start_service("systemd", None, said.append, run=run)
        self.assertEqual(said, ["  ran: systemctl --user daemon-reload", "  ran: systemctl --user enable kiri.service"])


class Verify(DaemonChildren, unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        self.settings = load_settings(self.home, env=NEUTRAL_ENV)

    def test_a_running_daemon_and_its_first_reading_are_found(self):
        since = time.time()
        output = self.home.parent / "daemon.out"
        with open(str(output), "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "kiri", "daemon", "--home", str(self.home)], cwd=str(REPO),
                                    env=kiri_env(env=dict(NEUTRAL_ENV, HOME=str(self.home.parent))),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        proc.output_path = output
        self.addCleanup(self.reap, proc)
        said = []
        setup.wait_for_first_reading(self.settings, since, TIMEOUT, "its log", said.append, poll=0.1)
        self.assertRegex(said[0], rf"^verify: running \(PID {proc.pid}, .*\); first reading at \d\d:\d\d:\d\d: \w+ \(")
        # A daemon that was there before setup started the service is not the service.
        with self.assertRaisesRegex(KiriError, f"another kiri daemon holds {self.home} \\(running \\(PID {proc.pid}"):
            setup.wait_for_first_reading(self.settings, time.time() + 5, 0.2, "its log", said.append, poll=0.1)

    def test_no_reading_in_time_is_one_error_naming_the_logs(self):
        with self.assertRaisesRegex(KiriError, r"^the service did not take a reading within 0\.3 s: see X/daemon\.err$"):
            setup.wait_for_first_reading(self.settings, time.time(), 0.3, "X/daemon.err", print, poll=0.1)


if __name__ == "__main__":
    unittest.main()
