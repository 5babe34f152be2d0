"""GET /metrics (kiri/metrics.py): the text a Prometheus scrape gets.

Real parts throughout: a trained Pulse in a temp KIRI_HOME, one daemon cycle on an injected
reading, an answer to its alert. The text is checked three ways: by the line grammar below,
by the real `promtool check metrics`, and by a real Prometheus server that scrapes two real
`kiri serve` (one behind web_token) and is asked, through its HTTP API, for the score KIRI stored.
"""

import json
import logging
import math
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from unittest import mock

from kiri import metrics, status
from kiri.atoms import verbs
from kiri.config import load_settings
from kiri.core import weights
from kiri.daemon import Daemon
from kiri.outbox import LogSink
from kiri.store import open_store
from tests.helpers import kiri_env, run_kiri

HOST = "box"
ANOMALY = dict(C=95, M=95, D=44, S=90, L=18, N=1)   # far from the synthetic routine Pulse learned
RHYTHM = dict(H=14, W=2, I=0, A=100, F=30, G=0)      # injected, so no test reads this machine
DRIFT = dict(A=1, C=1, S=0)
READINGS, SCORED = 300, 40
# A short likelihood window and history, so 40 scored readings are history enough for a likelihood.
ENV = {"KIRI_HOST_NAME": HOST, "KIRI_LIKELIHOOD_WINDOW": "2", "KIRI_LIKELIHOOD_HISTORY": "30"}
HOSTILE = 'web "01" \\ prod\nrack 4'                # a host name with every character the format escapes
HOSTILE_LABELS = {"host": HOSTILE, "atom": HOSTILE, "field": "\\\\"}

# The scrape config README.md shows (there with 15s and web_bind's default address), without
# and with the lines that send web_token.
SCRAPE_JOB = """\
  - job_name: {job}
    scrape_interval: {interval}
    static_configs:
      - targets: ["{target}"]
"""
TOKEN_LINES = """\
    authorization:
      credentials_file: {token_file}
"""

# The expressions README.md suggests for alerting rules: Prometheus must accept each one.
README_QUERIES = ['kiri_atom_anomaly == 1', 'kiri_daemon_state{state="running"} == 0',
                  'time() - kiri_last_cycle_timestamp_seconds > 300', 'kiri_alerts{state="open"} > 0']

_home = {}


def setUpModule():
    """One home for the tests that only read. Pulse learns from 260 readings of its synthetic
    routine stored as this machine's real ones (so its threshold has held-out readings), scores
    40 more as `pulse collect` + `pulse score` would (so the latest have a likelihood), then one
    daemon cycle scores an injected anomaly, decides and alerts, and the alert is dismissed."""
    quiet = logging.NullHandler()
    logging.getLogger("kiri").addHandler(quiet)
    unittest.addModuleCleanup(logging.getLogger("kiri").removeHandler, quiet)
    tmp = tempfile.TemporaryDirectory(prefix="kiri-metrics-")
    unittest.addModuleCleanup(tmp.cleanup)
    home = Path(tmp.name) / "home"
    settings = load_settings(home=home, env=dict(ENV, KIRI_ALERT_AFTER="1"))
    pulse = verbs.atom_module("pulse")
    rng = random.Random(7)
    end = time.time()
    times = [end - (READINGS - i) * pulse.SPEC.interval for i in range(READINGS)]
    readings = [{"atom": "pulse", "ts": ts, "values": pulse.synthetic(rng, ts), "source": "linux"} for ts in times]
    with open_store(home) as store:
        store.add_observations(readings[:-SCORED])
        verbs.train(pulse, settings, store, steps=10)
        for reading in readings[-SCORED:]:
            store.add_observation(**reading)
            verbs.score(pulse, settings, store)
        # On the wall clock, as `pulse score` stamps its scores with it: the cycle's score is the latest.
        result = Daemon(settings, store, sinks=[LogSink()]).cycle(
            inject={"pulse": ANOMALY, "rhythm": RHYTHM, "drift": DRIFT})
        assert not result.errors, result.errors
        for alert in store.alerts():
            store.add_feedback(alert["id"], "dismiss")
    _home.update(home=home, settings=settings, cycle_ts=result.ts)


# -- reading the text back --------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
VALUE = r"NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
SAMPLE = re.compile(rf"(?P<name>{NAME})(?:\{{(?P<labels>(?:{LABEL},?)*)\}})? (?P<value>{VALUE})\Z")
HELP = re.compile(rf"# HELP ({NAME}) (.*)\Z")
TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge)\Z")


def unescape(text):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse(text):
    """{(family, ((label, value), ...)): value} of an exposition, after checking its grammar and
    KIRI's rules: every family with # HELP and # TYPE before its samples, in one group; names
    starting kiri_, `_total` exactly on counters; each series once; a newline at the end."""
    assert text.endswith("\n"), "the last line must end with a newline"
    series, families, family = {}, {}, None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        help_line, type_line, sample = HELP.match(line), TYPE.match(line), SAMPLE.match(line)
        if help_line:
            family = help_line.group(1)
            assert family not in families, f"{where}: a second group of {family}"
            assert family.startswith("kiri_") and help_line.group(2).strip(), where
            families[family] = None
        elif type_line:
            assert type_line.group(1) == family and families[family] is None, f"{where}: TYPE without its HELP"
            families[family] = type_line.group(2)
            assert (families[family] == "counter") == family.endswith("_total"), f"{where}: _total is for counters"
        elif sample:
            assert sample["name"] == family and families[family], f"{where}: a sample outside its family's group"
            labels = tuple(re.findall(LABEL, sample["labels"] or ""))
            assert len({k for k, _ in labels}) == len(labels), f"{where}: a label twice"
            key = (family, tuple((k, unescape(v)) for k, v in labels))
            assert key not in series, f"{where}: the same series twice"
            series[key] = float(sample["value"])
        else:
            raise AssertionError(f"{where}: not a line of the format")
    return series


def value(series, family, **labels):
    """The value of one series; None when it is absent."""
    matches = [v for (name, have), v in series.items() if name == family and dict(have) == labels]
    return matches[0] if matches else None


def family_labels(series, family):
    return [dict(labels) for name, labels in series if name == family]


def hostile_atom_text():
    """One sample whose every label needs escaping. The store and the config refuse such atom
    and field names; the escaping does not rely on that."""
    return metrics.exposition([("kiri_atom_token_surprise", HOSTILE_LABELS, 1.5)])


def render(home, env=None):
    settings = load_settings(home=home, env=dict(ENV, **(env or {})))
    with open_store(home) as store:
        return metrics.render(settings, store)


# -- the tests --------------------------------------------------------------------------

class FormatTest(unittest.TestCase):
    def test_the_text_follows_the_grammar_with_every_family(self):
        self.assertEqual({name for name, _ in parse(render(_home["home"]))}, set(metrics.FAMILIES))

    def test_every_family_is_documented_with_a_type_and_its_help(self):
        for name, (kind, help_text) in metrics.FAMILIES.items():
            self.assertRegex(name, r"\Akiri_[a-z_]+\Z")
            self.assertIn(kind, ("gauge", "counter"))
            self.assertEqual(kind == "counter", name.endswith("_total"), name)
            self.assertTrue(help_text.endswith("."), name)

    def test_every_series_carries_the_host(self):
        for family, labels in parse(render(_home["home"])):
            self.assertEqual(dict(labels)["host"], HOST, family)

    def test_values_print_as_prometheus_reads_them(self):
        self.assertEqual([metrics.number(x) for x in (3, True, 0.1, 1e-300, 1.7e308, math.inf, -math.inf, math.nan)],
                         ["3", "1", "0.1", "1e-300", "1.7e+308", "+Inf", "-Inf", "NaN"])


class ValuesTest(unittest.TestCase):
    """Each number is the one the store, the weights and the daemon hold."""

    @classmethod
    def setUpClass(cls):
        cls.series = parse(render(_home["home"]))
        with open_store(_home["home"]) as store:
            cls.score = store.latest_scores("pulse", limit=1)[0]
            cls.alerts = store.alerts()
            cls.counts = store.count_observations("pulse")
            cls.outbox = store.outbox_pending()
        cls.atom = verbs.load_atom(verbs.atom_module("pulse"), _home["settings"])

    def get(self, family, **labels):
        return value(self.series, family, host=HOST, **labels)

    def test_the_latest_score_its_ratio_likelihood_and_verdict(self):
        s = self.score
        self.assertEqual(self.get("kiri_atom_score", atom="pulse"), s["score"])
        self.assertEqual(self.get("kiri_atom_score_ratio", atom="pulse"), s["score"] / s["threshold"])
        self.assertEqual(self.get("kiri_atom_anomaly", atom="pulse"), float(s["score"] > s["threshold"]))
        self.assertEqual(self.get("kiri_atom_anomaly", atom="pulse"), 1.0, "the injected reading is an anomaly")
        self.assertEqual(self.get("kiri_atom_score_timestamp_seconds", atom="pulse"), s["ts"])
        self.assertIsNotNone(s["likelihood"])
        self.assertEqual(self.get("kiri_atom_likelihood", atom="pulse"), s["likelihood"])

    def test_each_fields_surprise(self):
        want = {t["field"]: t["surprise"] for t in self.score["tokens"]}
        self.assertEqual(set(want), set("CMDSLN"))
        for field, surprise in want.items():
            self.assertEqual(self.get("kiri_atom_token_surprise", atom="pulse", field=field), surprise)

    def test_the_model_threshold_and_when_it_was_trained(self):
        self.assertEqual(self.get("kiri_atom_threshold", atom="pulse"), self.atom.threshold)
        self.assertEqual(self.get("kiri_atom_heldout_false_alarm_ratio", atom="pulse"),
                         self.atom.weights.threshold["false_alarm_rate"])
        self.assertEqual(self.get("kiri_atom_last_training_timestamp_seconds", atom="pulse"),
                         self.atom.weights.trained_on["trained_at"])

    def test_phases_one_series_each_the_current_one_1(self):
        for atom, current in (("pulse", "watching"), ("rhythm", "cold"), ("drift", "cold")):
            for phase in metrics.PHASES:
                self.assertEqual(self.get("kiri_atom_phase", atom=atom, phase=phase), float(phase == current),
                                 (atom, phase))

    def test_atoms_without_a_score_have_a_phase_and_no_score_series(self):
        scored = {labels["atom"] for labels in family_labels(self.series, "kiri_atom_score")}
        self.assertEqual(scored, {"pulse"}, "rhythm and drift have no model, so no score")
        for family in ("kiri_atom_score_ratio", "kiri_atom_anomaly", "kiri_atom_token_surprise",
                       "kiri_atom_threshold"):
            self.assertEqual({labels["atom"] for labels in family_labels(self.series, family)}, {"pulse"}, family)

    def test_readings_by_kind(self):
        self.assertEqual(self.counts, {"real": READINGS, "synthetic": 0, "injected": 1})
        for kind, n in self.counts.items():
            self.assertEqual(self.get("kiri_atom_readings", atom="pulse", kind=kind), n)
        self.assertEqual(self.get("kiri_atom_readings", atom="drift", kind="injected"), 1)

    def test_alerts_by_state_and_answers_by_verdict(self):
        self.assertEqual([a["atom"] for a in self.alerts], ["pulse"])
        self.assertEqual(self.get("kiri_alerts", atom="pulse", state="dismissed"), 1)
        self.assertEqual(self.get("kiri_alerts", atom="pulse", state="open"), 0)
        self.assertEqual(self.get("kiri_alerts", atom="rhythm", state="open"), 0, "every atom, every state")
        self.assertEqual(self.get("kiri_feedback_answers", verdict="dismiss"), 1)
        self.assertEqual(self.get("kiri_feedback_answers", verdict="approve"), 0)

    def test_the_daemon_its_last_cycle_and_the_outbox(self):
        # Daemon() ran in-process as a --once cycle would, without the lock: stopped after one cycle.
        for state in metrics.DAEMON_STATES:
            self.assertEqual(self.get("kiri_daemon_state", state=state), float(state == "stopped"), state)
        self.assertEqual(self.get("kiri_last_cycle_timestamp_seconds"), _home["cycle_ts"])
        self.assertEqual(self.get("kiri_last_cycle_errors"), 0)
        self.assertEqual(self.get("kiri_outbox_pending"), self.outbox)
        self.assertEqual(self.get("kiri_database_readable"), 1)
        self.assertGreater(self.get("kiri_database_size_bytes"), 0)


class HostileInputTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-metrics-")
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"

    def test_an_empty_store_renders_valid_text(self):
        series = parse(render(self.home))
        self.assertEqual(family_labels(series, "kiri_atom_score"), [])
        self.assertEqual(value(series, "kiri_daemon_state", host=HOST, state="never"), 1)
        self.assertEqual(value(series, "kiri_atom_phase", host=HOST, atom="pulse", phase="cold"), 1)

    def test_a_host_name_with_quotes_backslash_and_newline_is_escaped(self):
        text = render(self.home, env={"KIRI_HOST_NAME": HOSTILE})
        self.assertIn(r'host="web \"01\" \\ prod\nrack 4"', text)
        self.assertEqual({dict(labels)["host"] for _, labels in parse(text)}, {HOSTILE})

    def test_an_atom_name_with_quotes_backslash_and_newline_is_escaped(self):
        series = parse(hostile_atom_text())
        self.assertEqual(series, {("kiri_atom_token_surprise", tuple(HOSTILE_LABELS.items())): 1.5})

    def test_no_secret_reaches_the_text(self):
        env = {"KIRI_TELEGRAM_TOKEN": "123:TELEGRAM-SECRET", "KIRI_WEB_TOKEN": "WEB-SECRET",
               "KIRI_MIKROTIK_PASSWORD": "ROUTER-SECRET", "KIRI_MIKROTIK_USER": "ROUTER-USER",
               "KIRI_PULSE_SOURCE": "mikrotik", "KIRI_MIKROTIK_URL": "https://router.lan"}
        text = render(_home["home"], env=env)
        for secret in ("SECRET", "ROUTER-USER"):
            self.assertNotIn(secret, text)
        self.assertEqual(value(parse(text), "kiri_atom_phase", host="router.lan", atom="pulse", phase="watching"), 1,
                         "a Pulse read from a router is that router's")

    def test_a_store_that_cannot_be_read_says_so_and_still_renders(self):
        with open_store(self.home) as store:
            store.conn.execute("DROP TABLE feedback")   # what a damaged or foreign file does to a query
        series = parse(render(self.home))
        self.assertEqual(value(series, "kiri_database_readable", host=HOST), 0)
        self.assertEqual({name for name, _ in series}, {"kiri_database_readable", "kiri_database_size_bytes"})


class ModelCacheTest(unittest.TestCase):
    """A scrape reads each atom's weights file only when it has changed since the last scrape
    (status.model_status): a new model and a damaged file both show in the next scrape."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-metrics-")
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"
        shutil.copytree(_home["home"], self.home)
        self.path = load_settings(home=self.home, env=ENV).weights_path("pulse")

    def scrape_counting_loads(self):
        with mock.patch.object(weights, "load", wraps=weights.load) as load:
            series = parse(render(self.home))
        return series, load.call_count

    def test_a_second_scrape_reads_no_weights_file(self):
        _, first = self.scrape_counting_loads()
        series, second = self.scrape_counting_loads()
        self.assertGreaterEqual(first, 1)
        self.assertEqual(second, 0)
        self.assertEqual(value(series, "kiri_atom_phase", host=HOST, atom="pulse", phase="watching"), 1)

    def test_a_new_model_shows_in_the_next_scrape(self):
        series, _ = self.scrape_counting_loads()
        before = value(series, "kiri_atom_threshold", host=HOST, atom="pulse")
        model = weights.load(self.path)
        model.threshold["score"] = before * 2
        weights.save(self.path, model)
        series, loads = self.scrape_counting_loads()
        self.assertEqual(loads, 1)
        self.assertEqual(value(series, "kiri_atom_threshold", host=HOST, atom="pulse"), before * 2)

    def test_a_weights_file_damaged_after_a_scrape_shows_in_the_next(self):
        series, _ = self.scrape_counting_loads()
        self.assertIsNotNone(value(series, "kiri_atom_threshold", host=HOST, atom="pulse"))
        self.path.write_text('{"format": "kiri-weights"', encoding="utf-8")   # cut short, in place
        series, _ = self.scrape_counting_loads()
        self.assertIsNone(value(series, "kiri_atom_threshold", host=HOST, atom="pulse"))
        self.assertEqual(value(series, "kiri_atom_phase", host=HOST, atom="pulse", phase="watching"), 0)
        with open_store(self.home) as store:
            entry = status.collect_status(load_settings(home=self.home, env=ENV), store)["atoms"]["pulse"]
        self.assertIn("not valid JSON", entry["weights_error"])


class PromtoolTest(unittest.TestCase):
    """The real `promtool check metrics`: no parse error and no lint finding (exit 0, silent)."""

    def setUp(self):
        self.tool = shutil.which("promtool")
        if self.tool is None:
            self.skipTest("promtool is not installed (Debian package prometheus)")

    def assertAccepted(self, text):
        proc = subprocess.run([self.tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual((proc.returncode, proc.stdout + proc.stderr), (0, ""), "promtool refused or linted it")

    def test_a_scrape_with_every_family(self):
        self.assertAccepted(render(_home["home"]))

    def test_an_empty_store(self):
        with tempfile.TemporaryDirectory(prefix="kiri-metrics-") as tmp:
            self.assertAccepted(render(Path(tmp) / "home"))

    def test_hostile_host_and_atom_names(self):
        self.assertAccepted(render(_home["home"], env={"KIRI_HOST_NAME": HOSTILE}))
        self.assertAccepted(hostile_atom_text())


# -- a real Prometheus scraping a real `kiri serve` -----------------------------------------

def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


def get(url, token=None, timeout=2):
    """(status, content type, text) of a GET; an HTTP error status raises (urllib.error.HTTPError)."""
    headers = {"Authorization": "Bearer " + token} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type"), response.read().decode("utf-8")


def wait_until(check, what, proc, log, timeout=20, poll=0.1):
    """Poll check() until it returns something; fail with the child's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except OSError:   # not listening yet, or not ready (an HTTP error status is an OSError too)
            found = None
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(poll)
    raise AssertionError(f"no {what} within {timeout} s:\n{log.read_text()[-3000:]}")


class PrometheusTest(unittest.TestCase):
    """Two `kiri serve` on the test home, one with web_token; one Prometheus scrapes both."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-prometheus-")
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def start(self, args, log_name, env=None):
        """A child process on loopback, stopped in cleanup; its output goes to a file here."""
        log = self.dir / log_name
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(self.dir))
        self.addCleanup(self.stop, proc)
        return proc, log

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=10)

    def kiri_serve(self, name, token=""):
        """`python -m kiri serve` on a free loopback port; its address once /metrics answers."""
        address = free_address()
        env = kiri_env(_home["home"], dict(ENV, KIRI_WEB_TOKEN=token, HOME=str(self.dir)))
        proc, log = self.start([sys.executable, "-m", "kiri", "serve", "--bind", address], name + ".log", env=env)
        status, content_type, body = wait_until(lambda: get(f"http://{address}/metrics", token), name, proc, log)
        self.assertEqual((status, content_type), (200, metrics.CONTENT_TYPE))
        parse(body)
        return address

    def prometheus(self, config):
        """A real Prometheus with this prometheus.yml; its base URL once it is ready."""
        binary = shutil.which("prometheus")
        (self.dir / "prometheus.yml").write_text(config)
        address = free_address()
        proc, log = self.start([binary, "--config.file=prometheus.yml", "--storage.tsdb.path=tsdb",
                                "--web.listen-address=" + address], "prometheus.log")
        wait_until(lambda: get(f"http://{address}/-/ready")[0] == 200, "ready Prometheus", proc, log)
        return f"http://{address}", proc, log

    def test_a_real_prometheus_holds_the_score_kiri_stored(self):
        if shutil.which("prometheus") is None:
            self.skipTest("prometheus is not installed (Debian package prometheus)")
        if run_kiri("serve", "--help", home=self.dir / "home", timeout=30).returncode != 0:
            self.skipTest("`kiri serve` does not exist (kiri/web)")
        token = secrets.token_urlsafe(16)
        token_file = self.dir / "kiri.token"
        token_file.write_text(token + "\n")
        plain, guarded = self.kiri_serve("serve"), self.kiri_serve("serve-token", token)
        with self.assertRaises(urllib.error.HTTPError) as refused:
            get(f"http://{guarded}/metrics")
        self.assertEqual(refused.exception.code, 401)
        base, proc, log = self.prometheus(
            "scrape_configs:\n" + SCRAPE_JOB.format(job="kiri", interval="1s", target=plain)
            + SCRAPE_JOB.format(job="kiri_token", interval="1s", target=guarded) + TOKEN_LINES.format(token_file=token_file))

        def query(expression):
            answer = json.loads(get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": expression}))[2])
            self.assertEqual(answer["status"], "success", answer)
            return answer["data"]["result"]

        def scraped_from_both():
            result = query('kiri_atom_score{atom="pulse"}')
            return result if len(result) == 2 else None

        both = wait_until(scraped_from_both, "kiri_atom_score from both targets in Prometheus", proc, log)
        with open_store(_home["home"]) as store:
            stored = store.latest_scores("pulse", limit=1)[0]["score"]
        self.assertEqual(sorted((r["metric"]["job"], r["metric"]["host"], float(r["value"][1])) for r in both),
                         [("kiri", HOST, stored), ("kiri_token", HOST, stored)])
        self.assertEqual([len(query(expression)) for expression in README_QUERIES], [2, 2, 0, 0],
                         "pulse is over its threshold; the daemon stopped after a cycle a moment ago; "
                         "its alert is answered")
        targets = json.loads(get(base + "/api/v1/targets")[2])["data"]["activeTargets"]
        self.assertEqual([(t["health"], t["lastError"]) for t in targets], [("up", "")] * 2)


if __name__ == "__main__":
    unittest.main()
