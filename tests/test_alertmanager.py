"""Alertmanager as a sink: alerts posted, re-posted while they go on and resolved when they end,
and a silence over an alert becomes its Dismiss.

First against a loopback fake (error paths, an injected clock), then against the real
`alertmanager` binary (Debian's prometheus-alertmanager), driven by a real Daemon; those
tests skip, saying why, when the binary is not installed.
"""

import json
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
from pathlib import Path
from unittest import mock

from kiri.alerts import ANSWERS, Alert, format_alert, situation_of
from kiri.atoms.score import Score
from kiri.bench.loopback import JsonHandler, QuietServer
from kiri.config import load_settings
from kiri.daemon import CycleResult, Daemon
from kiri.errors import KiriError
from kiri.notify import alertmanager, sinks_from_settings
from kiri.notify.alertmanager import (Alertmanager, AlertmanagerError, AlertmanagerRefused, covers,
                                      parse_rfc3339, rfc3339, severity)
from kiri.outbox import PERMANENT_RETRY, deliver
from kiri.store import Store

NOW = 1_700_000_000.0          # 2023-11-14T22:13:20Z
COOLDOWN = 3600.0
AHEAD = 600.0
HOST = "mini"
LABELS = {"C": ("CPU", "%"), "M": ("memory", "%")}

# The README's example, run as it is by the tests against the real binary.
ALERTMANAGER_YML = """\
route:
  receiver: default
  routes:
    - matchers: ['alertname="KiriAnomaly"']
      group_by: [alertname, host]
      receiver: kiri
receivers:
  - name: default
  - name: kiri            # add email_configs, webhook_configs, telegram_configs … here
"""


def token(name, value, surprise, expected, expected_range):
    return {"token": name, "field": name[0], "value": value, "surprise": surprise, "p": 0.001,
            "expected": expected, "p_expected": 0.6, "expected_range": expected_range}


def cpu_score(ratio=3.5):
    """A Pulse score `ratio` times its threshold: CPU and memory far above what was expected."""
    return Score("pulse", 2.0 * ratio, 2.0, [token("C9", 95.0, 12.1, "C1", [10.0, 20.0]),
                                            token("M8", 85.0, 9.5, "M4", [40.0, 50.0])])


def add_alert(store, ts, ratio=3.5, host=HOST, sinks=("log", "alertmanager")):
    """An alert stored as the daemon stores one, with one outbox row per sink."""
    scores = [cpu_score(ratio)]
    message = format_alert(scores, labels=LABELS, host=host)
    return store.add_alert("pulse", message, situation=situation_of(scores), ts=ts, sinks=sinks,
                           details={"host": host, "scores": [s.to_json() for s in scores]})


def closed_port():
    """A loopback port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def capture_logs(test):
    capture = Capture()
    logger = logging.getLogger("kiri")
    logger.addHandler(capture)
    test.addCleanup(logger.removeHandler, capture)
    test.addCleanup(logger.setLevel, logger.level)
    logger.setLevel(logging.INFO)
    return capture


# -- a loopback fake -------------------------------------------------------------------------

class FakeAlertmanager:
    """Records every request; answers the scripted (status, body, headers) first, in order, then
    200 with nothing to a POST and `silences` to GET /api/v2/silences."""

    def __init__(self):
        self.requests = []     # (method, path, decoded JSON body or None)
        self.script = []
        self.silences = []
        self.lock = threading.Lock()

    def __enter__(self):
        self.server = QuietServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def posted(self):
        """Every alert POSTed, in order."""
        return [alert for method, _, body in self.requests if method == "POST" for alert in body]

    def answer(self, handler, method):
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        with self.lock:
            self.requests.append((method, handler.path, body))
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            status, answer, headers = scripted
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            data = answer.encode("utf-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        elif method == "GET":
            handler.answer(200, self.silences)
        else:
            handler.answer(200, b"")


class _Handler(JsonHandler):
    def do_GET(self):
        self.server.fake.answer(self, "GET")

    def do_POST(self):
        self.server.fake.answer(self, "POST")


def silence(matchers, updated=NOW + 60, state="active", silence_id="s1"):
    return {"id": silence_id, "status": {"state": state}, "updatedAt": rfc3339(updated), "createdBy": "ops",
            "comment": "known", "startsAt": rfc3339(updated), "endsAt": rfc3339(updated + 3600),
            "matchers": [dict({"isRegex": False, "isEqual": True}, name=n, value=v) for n, v in matchers]}


class FakeCase(unittest.TestCase):
    def setUp(self):
        self.fake = FakeAlertmanager().__enter__()
        self.addCleanup(self.fake.__exit__)
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.folder = Path(tmp.name)
        self.now = NOW
        self.store = Store(self.folder / "kiri.db", clock=lambda: self.now)
        self.addCleanup(self.store.close)
        self.sink = self.make_sink(self.fake.url)
        self.log = capture_logs(self)

    def make_sink(self, url):
        return Alertmanager(url, "http://kiri.example:9788", lambda atom: HOST, COOLDOWN, ahead=AHEAD,
                            timeout=5, clock=lambda: self.now)

    def delivered_alert(self, ts=NOW, **kwargs):
        """An alert the outbox has delivered to the fake."""
        alert_id = add_alert(self.store, ts, **kwargs)
        self.assertEqual(deliver(self.store, self.sink, self.now), (1, 0))
        return alert_id


class PayloadTest(FakeCase):
    def test_labels_annotations_times_and_link(self):
        alert_id = self.delivered_alert()
        [posted] = self.fake.posted()
        self.assertEqual(self.fake.requests[0][:2], ("POST", "/api/v2/alerts"))
        self.assertEqual(posted["labels"], {"alertname": "KiriAnomaly", "host": HOST, "atom": "pulse",
                                            "alert_id": str(alert_id), "severity": "critical",
                                            "situation": "pulse:C>+M>"})
        message = self.store.alert(alert_id)["message"]
        self.assertEqual(posted["annotations"]["summary"], message.splitlines()[0])
        self.assertIn("KIRI alert on mini: pulse is unusual", posted["annotations"]["summary"])
        description = posted["annotations"]["description"]
        self.assertIn("CPU 95% (usually 10–20%)", description)
        self.assertIn("memory 85% (usually 40–50%)", description)
        self.assertNotIn(ANSWERS, description)   # no buttons here: a silence is the answer
        self.assertIn("Silencing this alert", description)
        self.assertEqual((posted["startsAt"], posted["endsAt"]), ("2023-11-14T22:13:20.000Z", "2023-11-14T22:23:20.000Z"))
        self.assertEqual(posted["generatorURL"], "http://kiri.example:9788/alerts/%d" % alert_id)

    def test_severity_is_critical_from_three_times_the_threshold(self):
        self.assertEqual(severity([cpu_score(2.99)]), "warning")
        self.assertEqual(severity([cpu_score(3.0)]), "critical")
        self.assertEqual(severity([cpu_score(1.2), cpu_score(4)]), "critical")
        self.assertEqual(severity([]), "warning")                                 # Nerve's own alert
        self.assertEqual(severity([Score("pulse", 5.0, float("inf"), [])]), "warning")   # no threshold yet

    def test_rfc3339_both_ways(self):
        self.assertEqual(rfc3339(0.25), "1970-01-01T00:00:00.250Z")
        self.assertEqual(parse_rfc3339("2026-12-02T07:54:31.566123456Z"), 1796198071.566123456)
        self.assertEqual(parse_rfc3339("2023-11-14T23:13:20+01:00"), NOW)
        for bad in ("2023-13-01T00:00:00Z", "yesterday", "", None, 5, "2023-11-14T22:13:20"):
            self.assertIsNone(parse_rfc3339(bad), bad)

    def test_a_wall_clock_stepped_back_never_ends_an_alert_before_it_began(self):
        alert_id = add_alert(self.store, NOW)
        self.now = NOW - 3600   # the sink's clock; the outbox's row is due at NOW
        self.assertEqual(deliver(self.store, self.sink, NOW), (1, 0))
        [posted] = self.fake.posted()
        self.assertEqual((posted["startsAt"], posted["endsAt"]), (rfc3339(NOW), rfc3339(NOW)))
        self.assertEqual(self.store.message_alert("alertmanager", alert_id), alert_id)

    def test_a_test_alert_without_a_time_starts_now(self):
        self.sink.send(Alert(7, "KIRI test alert: if you can read this, alerts reach you.", host=HOST))
        [posted] = self.fake.posted()
        self.assertEqual(posted["startsAt"], rfc3339(NOW))
        self.assertEqual(posted["labels"]["severity"], "warning")
        self.assertNotIn("situation", posted["labels"])


class DeliveryTest(FakeCase):
    def test_a_500_is_retried_through_the_outbox_and_the_alert_sent_once(self):
        self.fake.script.append((500, '{"code": 500, "message": "storage busy"}', {}))
        alert_id = add_alert(self.store, NOW)
        self.assertEqual(deliver(self.store, self.sink, NOW), (0, 1))
        [row] = self.store.outbox_due("alertmanager", NOW + 30)
        self.assertIn("HTTP 500: storage busy", self.store.outbox_row(row["id"])["last_error"])
        self.assertEqual(self.store.outbox_due("alertmanager", NOW + 29), [])   # the outbox's first backoff
        self.assertEqual(deliver(self.store, self.sink, NOW + 30), (1, 0))
        self.assertEqual(deliver(self.store, self.sink, NOW + 60), (0, 0))
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual([a["labels"]["alert_id"] for a in self.fake.posted()], [str(alert_id)] * 2)
        self.assertEqual(self.store.message_alert("alertmanager", alert_id), alert_id)

    def test_a_429_waits_for_its_retry_after(self):
        self.fake.script.append((429, "slow down", {"Retry-After": "120"}))
        add_alert(self.store, NOW)
        self.assertEqual(deliver(self.store, self.sink, NOW), (0, 1))
        self.assertEqual(self.store.outbox_due("alertmanager", NOW + 119), [])
        self.assertEqual(len(self.store.outbox_due("alertmanager", NOW + 120)), 1)
        self.assertTrue(any("HTTP 429: slow down" in line for line in self.log.lines))

    def test_a_400_is_permanent_and_the_alert_kept(self):
        self.fake.script.append((400, '"start time must be before end time"', {}))
        add_alert(self.store, NOW)
        self.assertEqual(deliver(self.store, self.sink, NOW), (0, 1))
        self.assertEqual(self.store.outbox_pending("alertmanager"), 1)
        [row] = self.store.outbox_due("alertmanager", NOW + PERMANENT_RETRY)
        self.assertEqual(self.store.outbox_due("alertmanager", NOW + PERMANENT_RETRY - 1), [])
        self.assertIn("HTTP 400: start time must be before end time", self.store.outbox_row(row["id"])["last_error"])

    def test_a_redirect_is_refused_not_followed(self):
        # urllib would follow it with a GET that "succeeds": the alert would be lost in silence.
        self.fake.script.append((301, "", {"Location": "https://am.example/api/v2/alerts"}))
        with self.assertRaises(AlertmanagerRefused) as caught:
            self.sink.send(Alert(1, "KIRI alert", ts=NOW))
        self.assertIn("redirected to https://am.example/api/v2/alerts", str(caught.exception))
        self.assertEqual([m for m, _, _ in self.fake.requests], ["POST"])

    def test_connection_refused_is_transient_and_kept(self):
        sink = self.make_sink("http://127.0.0.1:%d" % closed_port())
        add_alert(self.store, NOW)
        self.assertEqual(deliver(self.store, sink, NOW), (0, 1))
        [row] = self.store.outbox_due("alertmanager", NOW + 30)
        error = self.store.outbox_row(row["id"])["last_error"]
        self.assertRegex(error, r"^alertmanager: POST /api/v2/alerts: connection refused by 127\.0\.0\.1:\d+$")

    def test_an_answer_over_the_cap_is_an_error(self):
        self.fake.silences = [silence([("host", HOST)], silence_id="x" * 2000)] * 10
        self.delivered_alert()
        with mock.patch.object(alertmanager, "BODY_MAX", 10_000), self.assertRaises(AlertmanagerError) as caught:
            self.sink.answers(self.store)
        self.assertIn("an answer larger than", str(caught.exception))


class ResendTest(FakeCase):
    def test_reposted_while_it_goes_on_then_resolved_when_last_seen(self):
        alert_id = self.delivered_alert()
        self.now = NOW + 1800
        self.store.alert_seen(alert_id, NOW + 1500)   # a repeat: it goes on until NOW + 1500 + COOLDOWN
        self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.fake.posted()[-1]["endsAt"], rfc3339(self.now + AHEAD))
        self.now = NOW + 1500 + COOLDOWN + 1          # over: it ends when it was last seen
        self.sink.answers(self.store)
        self.assertEqual(self.fake.posted()[-1]["endsAt"], rfc3339(NOW + 1500))
        self.assertEqual(self.fake.posted()[-1]["startsAt"], rfc3339(NOW))
        requests = len(self.fake.requests)
        self.now = NOW + 1500 + COOLDOWN + AHEAD + 1  # Alertmanager has ended it by itself by now
        self.sink.answers(self.store)
        self.assertEqual(len(self.fake.requests), requests)

    def test_only_alerts_delivered_here_are_reposted(self):
        add_alert(self.store, NOW, sinks=("log",))        # raised before Alertmanager was set up
        add_alert(self.store, NOW)                         # its outbox row not delivered yet
        self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.fake.requests, [])

    def test_a_failing_repost_raises_one_line_and_the_daemon_goes_on(self):
        self.delivered_alert()
        self.fake.script.append((503, "<html>\n<b>Service Unavailable</b>\n</html>", {}))
        settings = load_settings(home=self.folder / "home", env={})
        daemon = Daemon(settings, self.store, clock=lambda: self.now, sinks=[self.sink])
        result = CycleResult(ts=self.now)
        daemon.deliver_and_poll(self.now, result)
        self.assertEqual(result.errors, [("alertmanager", "deliver", "alertmanager: POST /api/v2/alerts:"
                                          " HTTP 503: <html> <b>Service Unavailable</b> </html>")])
        self.assertFalse(any("Traceback" in line for line in self.log.lines))
        daemon.deliver_and_poll(self.now, result)   # the next cycle posts it again
        self.assertEqual(len(self.fake.posted()), 3)


class SilenceTest(FakeCase):
    def test_a_silence_over_host_and_atom_dismisses_once(self):
        alert_id = self.delivered_alert()
        self.fake.silences = [silence([("host", HOST), ("atom", "pulse")])]
        self.assertEqual(self.sink.answers(self.store), [(alert_id, "dismiss", False)])
        self.assertEqual(self.store.alert(alert_id)["feedback"]["verdict"], "dismiss")
        self.assertEqual(self.sink.answers(self.store), [])   # answered: never again
        self.assertTrue(any("silence s1 by ops" in line for line in self.log.lines))

    def test_an_answer_given_elsewhere_stands(self):
        alert_id = self.delivered_alert()
        self.store.add_feedback(alert_id, "approve")
        self.fake.silences = [silence([("host", HOST)])]
        self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.store.alert(alert_id)["state"], "approved")

    def test_an_answer_given_while_silences_were_read_stands(self):
        alert_id = self.delivered_alert()
        self.fake.silences = [silence([("host", HOST)])]
        read = self.sink.silences

        def approve_meanwhile():
            self.store.add_feedback(alert_id, "approve")
            return read()
        with mock.patch.object(self.sink, "silences", approve_meanwhile):
            self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.store.alert(alert_id)["state"], "approved")

    def test_what_does_not_count(self):
        alert_id = self.delivered_alert()
        cases = {"set before the alert began": silence([("host", HOST)], updated=NOW - 1),
                 "expired": silence([("host", HOST)], state="expired"),
                 "pending": silence([("host", HOST)], state="pending"),
                 "another host": silence([("host", "other")]),
                 "another label too": silence([("host", HOST), ("job", "node")])}
        for why, one in cases.items():
            with self.subTest(why):
                self.fake.silences = [one]
                self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.store.alert(alert_id)["state"], "open")

    def test_malformed_silences_are_one_clear_error(self):
        alert_id = self.delivered_alert()
        answers = {"not JSON": ("<html>", "malformed JSON from 127.0.0.1"),
                   "an object": ({"silences": []}, "the answer is not a list of silences"),
                   "no state": ([{"id": "a", "updatedAt": rfc3339(NOW), "matchers": []}], "malformed silence 0: no status.state"),
                   "a bad time": ([dict(silence([("host", HOST)]), updatedAt="soon")], "no updatedAt time"),
                   "no matchers": ([dict(silence([("host", HOST)]), matchers=[])], "no matchers"),
                   "a bad matcher": ([silence([("host", 5)])], "a matcher is not {name, value, isRegex, isEqual}"),
                   "too deep": ("[" * 100000 + "]" * 100000, "malformed JSON")}
        for what, (body, words) in answers.items():
            with self.subTest(what):
                self.fake.script = [(200, "", {}), (200, body if isinstance(body, str) else json.dumps(body), {})]
                with self.assertRaises(AlertmanagerError) as caught:
                    self.sink.answers(self.store)
                self.assertIn(words, str(caught.exception))
                self.assertTrue(str(caught.exception).startswith("alertmanager: GET /api/v2/silences: "))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
        self.assertEqual(self.store.alert(alert_id)["state"], "open")

    def test_nothing_going_on_asks_nothing(self):
        self.assertEqual(self.sink.answers(self.store), [])
        self.assertEqual(self.fake.requests, [])


class MatcherTest(unittest.TestCase):
    LABELS = {"alertname": "KiriAnomaly", "host": "mini", "atom": "pulse", "severity": "critical"}

    def matches(self, *matchers):
        checked = alertmanager._silence(dict(silence([]), matchers=[
            {"name": n, "value": v, "isRegex": r, "isEqual": e} for n, v, r, e in matchers]), 0, "test")
        return covers(checked["matchers"], self.LABELS)

    def test_equal_regex_and_negation(self):
        self.assertTrue(self.matches(("host", "mini", False, True), ("atom", "pulse", False, True)))
        self.assertFalse(self.matches(("host", "mini", False, True), ("atom", "rhythm", False, True)))
        self.assertTrue(self.matches(("host", "other", False, False)))
        self.assertFalse(self.matches(("host", "mini", False, False)))
        self.assertTrue(self.matches(("host", "mi.*", True, True)))
        self.assertTrue(self.matches(("severity", "warning|critical", True, True)))
        self.assertFalse(self.matches(("severity", "crit", True, True)))    # anchored: the whole value
        self.assertFalse(self.matches(("host", "ini", True, True)))
        self.assertTrue(self.matches(("host", "ini", True, False)))
        self.assertFalse(self.matches(("host", "mini|x", True, False)))

    def test_a_missing_label_is_the_empty_string(self):
        self.assertTrue(self.matches(("job", "", False, True)))
        self.assertFalse(self.matches(("job", "node", False, True)))
        self.assertTrue(self.matches(("job", "node", False, False)))
        self.assertTrue(self.matches(("job", ".*", True, True)))

    def test_a_regex_python_cannot_read_covers_nothing(self):
        self.assertFalse(self.matches(("host", r"\pL+", True, True)))
        self.assertFalse(self.matches(("host", r"\pL+", True, False)))

    def test_is_equal_defaults_to_true(self):
        checked = alertmanager._silence(dict(silence([]), matchers=[{"name": "host", "value": "mini", "isRegex": False}]),
                                        0, "test")
        self.assertTrue(covers(checked["matchers"], self.LABELS))


class FromSettingsTest(unittest.TestCase):
    def settings(self, **env):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        return load_settings(home=tmp.name, env=env)

    def test_not_configured_means_no_sink(self):
        self.assertEqual([s.name for s in sinks_from_settings(self.settings())], ["log"])

    def test_configured(self):
        sinks = sinks_from_settings(self.settings(KIRI_ALERTMANAGER_URL="http://127.0.0.1:9093/", KIRI_HOST_NAME="mini"))
        self.assertEqual([s.name for s in sinks], ["log", "alertmanager"])
        sink = sinks[1]
        self.assertEqual((sink.url, sink.web_url, sink.host_of("pulse"), sink.cooldown, sink.ahead),
                         ("http://127.0.0.1:9093", "http://127.0.0.1:9788", "mini", 3600, 600))

    def test_web_url_and_an_ipv6_bind(self):
        sink = alertmanager.from_settings(self.settings(KIRI_ALERTMANAGER_URL="http://am:9093", KIRI_TICK="600",
                                                        KIRI_WEB_URL="https://kiri.example/"))
        self.assertEqual((sink.web_url, sink.ahead), ("https://kiri.example", 2400))
        sink = alertmanager.from_settings(self.settings(KIRI_ALERTMANAGER_URL="http://am:9093", KIRI_WEB_BIND="[::1]:9788"))
        self.assertEqual(sink.web_url, "http://[::1]:9788")

    def test_a_bad_address_is_one_line(self):
        with self.assertRaises(KiriError):
            alertmanager.from_settings(self.settings(KIRI_ALERTMANAGER_URL="ftp://am"))


# -- the real Alertmanager --------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alertmanager_binary():
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class RealAlertmanager:
    """`alertmanager` on a free loopback port, no cluster, with ALERTMANAGER_YML, in a temp folder."""

    def __init__(self, binary, folder):
        self.folder = Path(folder)
        (self.folder / "alertmanager.yml").write_text(ALERTMANAGER_YML)
        self.url = "http://127.0.0.1:%d" % free_port()
        self.output = open(self.folder / "alertmanager.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "--config.file=%s" % (self.folder / "alertmanager.yml"),
             "--web.listen-address=" + self.url[len("http://"):], "--cluster.listen-address=",
             "--storage.path=%s" % (self.folder / "data")],
            stdout=self.output, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("alertmanager exited (%s): %s" % (self.proc.returncode, self.log()))
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("alertmanager not ready within %ss: %s" % (timeout, self.log()))

    def stop(self):
        if self.proc.poll() is None:   # only the process this test started
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.output.close()

    def log(self):
        return (self.folder / "alertmanager.log").read_text(errors="replace")[-2000:]

    def api(self, method, path, body=None):
        request = urllib.request.Request(self.url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode("utf-8"),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            data = answer.read()
        return json.loads(data) if data.strip() else None

    def kiri_alerts(self, host):
        return [a for a in self.api("GET", "/api/v2/alerts") if a["labels"].get("host") == host]

    def version(self):
        return self.api("GET", "/api/v2/status")["versionInfo"]["version"]


class RealAlertmanagerTest(unittest.TestCase):
    """One real Alertmanager for the class; each test is its own machine (host_name) and home."""

    @classmethod
    def setUpClass(cls):
        cls.binary = alertmanager_binary()
        if cls.binary is None:
            return
        cls.tmp = tempfile.TemporaryDirectory(prefix="kiri-am-")
        cls.server = RealAlertmanager(cls.binary, cls.tmp.name)
        try:
            cls.server.wait_ready()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "server", None) is not None:
            cls.server.stop()
            cls.server = None
            cls.tmp.cleanup()

    def setUp(self):
        if self.binary is None:
            self.skipTest("no alertmanager binary (install Debian's prometheus-alertmanager)")
        self.log = capture_logs(self)

    def daemon(self, host, cooldown):
        home = Path(tempfile.mkdtemp(dir=self.tmp.name, prefix="home-"))
        settings = load_settings(home=home, env={"KIRI_ALERTMANAGER_URL": self.server.url, "KIRI_HOST_NAME": host,
                                                 "KIRI_ALERT_COOLDOWN": str(cooldown)})
        store = Store(home / "kiri.db")
        self.addCleanup(store.close)
        return Daemon(settings, store, sinks=sinks_from_settings(settings))

    def cycle(self, daemon):
        result = CycleResult(ts=time.time())
        daemon.deliver_and_poll(result.ts, result)
        self.assertEqual(result.errors, [])

    def test_an_alert_fires_is_routed_and_resolves_when_over(self):
        self.assertEqual(self.server.version(), "0.25.0")
        daemon = self.daemon("kiri-fires", cooldown=2)
        alert_id = add_alert(daemon.store, time.time(), host="kiri-fires", sinks=[s.name for s in daemon.sinks])
        self.cycle(daemon)
        [firing] = self.server.kiri_alerts("kiri-fires")
        self.assertEqual(firing["labels"], {"alertname": "KiriAnomaly", "host": "kiri-fires", "atom": "pulse",
                                            "alert_id": str(alert_id), "severity": "critical",
                                            "situation": "pulse:C>+M>"})
        self.assertEqual(firing["annotations"]["summary"],
                         "KIRI alert on kiri-fires: pulse is unusual (score 7.0, 3.5× its threshold)")
        self.assertIn("CPU 95% (usually 10–20%)", firing["annotations"]["description"])
        self.assertEqual(firing["status"]["state"], "active")
        self.assertEqual(firing["receivers"], [{"name": "kiri"}])   # the README's route took it
        self.assertEqual(firing["generatorURL"], "http://127.0.0.1:9788/alerts/%d" % alert_id)
        self.assertGreater(parse_rfc3339(firing["endsAt"]), time.time() + 500)
        self.assertEqual(daemon.store.outbox_pending(), 0)

        time.sleep(max(0.0, daemon.store.alert(alert_id)["last_ts"] + 2.05 - time.time()))   # the cooldown runs out
        self.cycle(daemon)
        self.assertEqual(self.server.kiri_alerts("kiri-fires"), [])   # resolved: Alertmanager lists only active ones

    def test_a_silence_becomes_a_dismiss(self):
        daemon = self.daemon("kiri-silenced", cooldown=3600)
        sinks = [s.name for s in daemon.sinks]
        silenced = add_alert(daemon.store, time.time(), host="kiri-silenced", sinks=sinks)
        approved = add_alert(daemon.store, time.time(), ratio=1.5, host="kiri-silenced", sinks=sinks)
        daemon.store.add_feedback(approved, "approve")
        self.cycle(daemon)
        self.assertEqual(len(self.server.kiri_alerts("kiri-silenced")), 2)
        now = time.time()
        self.server.api("POST", "/api/v2/silences", {
            "matchers": [{"name": "host", "value": "kiri-silenced", "isRegex": False, "isEqual": True},
                         {"name": "atom", "value": "pulse", "isRegex": False, "isEqual": True}],
            "startsAt": rfc3339(now), "endsAt": rfc3339(now + 3600), "createdBy": "kiri test", "comment": "known"})
        self.cycle(daemon)
        self.assertEqual(daemon.store.alert(silenced)["feedback"]["verdict"], "dismiss")
        self.assertEqual(daemon.store.alert(approved)["state"], "approved")   # the owner's answer stands
        self.assertTrue(any("feedback from alertmanager: alert %d dismiss" % silenced in line for line in self.log.lines))
        self.cycle(daemon)
        self.assertEqual(sum("feedback from alertmanager" in line for line in self.log.lines), 1)
        states = {a["labels"]["alert_id"]: a["status"]["state"] for a in self.server.kiri_alerts("kiri-silenced")}
        self.assertEqual(states, {str(silenced): "suppressed", str(approved): "suppressed"})


if __name__ == "__main__":
    unittest.main()
