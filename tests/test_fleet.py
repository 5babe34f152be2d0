"""Watched hosts: machines KIRI is not installed on, each declared as [host:NAME] in
config.ini and watched as a Pulse of its own (kiri/atoms/hosts.py).

The config (atoms, specs, the host each atom watches, every refusal in one line), the
daemon reading a fleet of fake node_exporters at once (kiri/bench/fleet_servers.py),
Nerve's one HOSTS field and the alert that names the host, a host's first model trained
in the Trainer's thread, and the real command line. Each test has its own KIRI_HOME.
"""

import dataclasses
import datetime
import os
import random
import re
import shutil
import tempfile
import threading
import time
import unittest
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from kiri.atoms import nerve, verbs
from kiri.atoms.pulse import node_exporter
from kiri.atoms.pulse import schema as pulse
from kiri.bench.fleet_servers import FakeFleet
from kiri.config import load_settings
from kiri.daemon import Daemon, Trainer
from kiri.errors import KiriError
from kiri.outbox import LogSink
from kiri.status import collect_status, format_status
from kiri.store import open_store
from tests.helpers import CommandLineAssertions, capture_kiri_log, run_kiri

HERE = "here"   # this machine's name (host_name) in every home of these tests
UNUSED_URL = "http://127.0.0.1:9/metrics"   # a host whose readings are all injected: never asked


def local(day, hour=0, minute=0):
    """Local-time timestamp of a date at hour:minute (DST-proof: mktime of the wall clock)."""
    return time.mktime((day.year, day.month, day.day, hour, minute, 0, 0, 0, -1))


HISTORY_END = local(datetime.date(2024, 1, 3), 12)   # a Wednesday noon
AFTERNOON = local(datetime.date(2024, 1, 3), 14)     # the same Wednesday, 14:00: a working hour
# Pulse's synthetic machine at a weekday 14:00, and one far from it.
NORMAL = dict(C=52, M=55, D=44, S=30, L=5.2, N=1)
NORMAL_TOO = dict(C=48, M=54, D=45, S=28, L=4.8, N=1)
ANOMALY = dict(C=97, M=95, D=44, S=90, L=18, N=1)
# The built-in atoms' readings, injected so that no test reads this machine.
BUILTINS = {"pulse": NORMAL, "rhythm": dict(H=14, W=2, I=0, A=100, F=30, G=0), "drift": dict(A=1, C=1, S=0)}
BUILTIN_NERVE_FIELDS = {"P", "R", "D"}
NERVE_OWN_FIELDS = {"U", "H", "W"}

_shared = {}


def trained_host_weights():
    """One Pulse model for a host (30 steps on 200 synthetic readings ending HISTORY_END), trained
    once per test run; each host atom of a test gets a copy (a host's weights name no atom)."""
    if "weights" not in _shared:
        tmp = tempfile.mkdtemp(prefix="kiri-fleet-shared-")
        _shared["dir"] = tmp
        home = Path(tmp) / "home"
        write_config(home, hosts={"h0": {"source": "node_exporter", "url": UNUSED_URL}})
        settings = load_settings(home=home, env={})
        module = verbs.atom_module("pulse_h0", settings)
        with open_store(home) as store:
            verbs.add_synthetic(module, store, 200, seed=7, end=HISTORY_END)
            verbs.train(module, settings, store, steps=30, warm_start=True)
        _shared["weights"] = settings.weights_path("pulse_h0")
    return _shared["weights"]


def tearDownModule():
    if "dir" in _shared:
        shutil.rmtree(_shared["dir"], ignore_errors=True)


def write_config(home, hosts=(), text="", mode=0o600):
    """home/config.ini: [kiri] host_name = here, then `hosts` ({name: {key: value}}) as
    [host:NAME] sections, then `text` as it is; chmod `mode`. Returns its path."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[kiri]", f"host_name = {HERE}", ""]
    for name, section in dict(hosts).items():
        lines += [f"[host:{name}]"] + [f"{key} = {value}" for key, value in section.items()] + [""]
    path = home / "config.ini"
    path.write_text("\n".join(lines) + text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def fleet_hosts(urls):
    """[host:h0], [host:h1], … watching the node_exporters at `urls`."""
    return {f"h{i}": {"source": "node_exporter", "url": url} for i, url in enumerate(urls)}


class HomeCase(unittest.TestCase):
    """A temporary KIRI_HOME (self.home), an injected clock (self.now), the kiri logs captured."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="kiri-fleet-")
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.home = self.tmp / "home"
        self.now = AFTERNOON
        self.log = capture_kiri_log(self)

    def clock(self):
        return self.now

    def settings(self, **env):
        return load_settings(home=self.home, env=env)

    def store(self):
        store = open_store(self.home)
        self.addCleanup(store.close)
        return store

    def daemon(self, settings, store):
        return Daemon(settings, store, clock=self.clock, sinks=[LogSink()])

    def install_weights(self, settings, *atoms):
        for atom in atoms:
            path = settings.weights_path(atom)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trained_host_weights(), path)


# --------------------------------------------------------------------------------------
# 1. the config: each [host:NAME] is an atom


class HostAtomsFromConfigTest(HomeCase):
    def write_nas_and_router(self):
        return write_config(self.home, hosts={
            "nas": {"source": "node_exporter", "url": "http://nas.local:9100/metrics", "interval": "60",
                    "disk": "/volume1"},
            "Router-1": {"source": "mikrotik", "url": "https://192.168.88.1", "user": "kiri",
                         "password": "s3cret-pw", "verify": "no"}})

    def test_declared_hosts_come_after_the_other_atoms_sorted_each_as_pulse_with_its_own_name(self):
        self.write_nas_and_router()
        settings = self.settings(KIRI_PULSE_INTERVAL="120")
        atoms = verbs.all_atoms(settings)
        self.assertEqual(list(atoms), ["pulse", "rhythm", "drift", "pulse_nas", "pulse_router_1"])
        for name, interval in (("pulse_nas", 60.0), ("pulse_router_1", 120.0)):
            with self.subTest(atom=name):
                spec = atoms[name].SPEC
                self.assertEqual(spec, dataclasses.replace(pulse.SPEC, name=name, interval=interval))
                self.assertEqual(spec.schema, pulse.SPEC.schema)
                self.assertEqual(spec.labels, pulse.SPEC.labels)
                self.assertTrue(atoms[name].REMOTE)
        self.assertEqual(atoms["pulse_nas"].HOST, "nas")
        self.assertEqual(atoms["pulse_router_1"].HOST, "Router-1")
        # The same module by its name alone, as `kiri atom pulse_nas …` finds it.
        self.assertEqual(verbs.atom_module("pulse_router_1", settings).SPEC, atoms["pulse_router_1"].SPEC)

    def test_host_of_names_the_watched_host_for_its_atom_and_this_machine_for_the_others(self):
        self.write_nas_and_router()
        settings = self.settings()
        self.assertEqual(settings.host_of("pulse_nas"), "nas")
        self.assertEqual(settings.host_of("pulse_router_1"), "Router-1")
        for atom in ("pulse", "rhythm", "drift"):
            self.assertEqual(settings.host_of(atom), HERE)
        self.assertEqual(settings.hosts["Router-1"]["password"], "s3cret-pw")

    def test_a_host_without_an_interval_follows_pulse_interval_and_its_own_interval_wins(self):
        self.write_nas_and_router()
        atoms = verbs.all_atoms(self.settings())
        self.assertEqual(atoms["pulse_router_1"].SPEC.interval, 300.0)   # pulse_interval's default
        self.assertEqual(atoms["pulse_nas"].SPEC.interval, 60.0)

    def test_a_home_without_hosts_has_only_the_built_in_atoms(self):
        write_config(self.home)
        settings = self.settings()
        self.assertEqual(list(verbs.all_atoms(settings)), ["pulse", "rhythm", "drift"])
        self.assertEqual(settings.hosts, {})


# --------------------------------------------------------------------------------------
# 2. the config: what is refused, in one line naming the file and the host


NODE = "source = node_exporter\nurl = http://nas.local:9100/metrics\n"
BAD_CONFIGS = [
    # (what, sections after [kiri], the message after "config file PATH: ")
    ("an unknown source", "[host:nas]\nsource = snmp\nurl = http://nas.local:9100/metrics\n",
     "host nas: source must be node_exporter or mikrotik, got 'snmp'"),
    ("no source", "[host:nas]\nurl = http://nas.local:9100/metrics\n",
     "host nas: source must be node_exporter or mikrotik, got ''"),
    ("a key the source has not", "[host:nas]\n" + NODE + "user = kiri\n",
     "host nas: unknown key 'user' for a node_exporter source"),
    ("a key no source has", "[host:nas]\n" + NODE + "colour = blue\n",
     "host nas: unknown key 'colour' for a node_exporter source"),
    ("no url", "[host:nas]\nsource = node_exporter\n", "host nas: url is missing"),
    ("an empty url", "[host:nas]\nsource = node_exporter\nurl =\n", "host nas: url is missing"),
    ("a url that is no web address", "[host:nas]\nsource = node_exporter\nurl = ftp://nas.local/metrics\n",
     "host nas: url must start with https:// (or http://) and name a host"),
    ("an interval of 0", "[host:nas]\n" + NODE + "interval = 0\n",
     "host nas: interval must be greater than 0 and at most 604800 seconds"),
    ("a negative interval", "[host:nas]\n" + NODE + "interval = -60\n",
     "host nas: interval must be greater than 0 and at most 604800 seconds"),
    ("an interval of nan", "[host:nas]\n" + NODE + "interval = nan\n",
     "host nas: interval must be greater than 0 and at most 604800 seconds"),
    ("an interval over a week", "[host:nas]\n" + NODE + "interval = 1e9\n",
     "host nas: interval must be greater than 0 and at most 604800 seconds"),
    ("an interval that is not a number", "[host:nas]\n" + NODE + "interval = five minutes\n",
     "host nas: interval must be a number of seconds"),
    ("verify neither yes nor no", "[host:rt]\nsource = mikrotik\nurl = https://192.168.88.1\nverify = maybe\n",
     "host rt: verify must be yes or no"),
    ("a cafile and verify = no", "[host:rt]\nsource = mikrotik\nurl = https://192.168.88.1\nverify = no\n"
     "cafile = /etc/ca.pem\n", "host rt: cafile and verify = no contradict each other: drop one"),
    ("steps of 0", "[host:nas]\n" + NODE + "steps = 0\n", "host nas: steps must be from 1 to 100000"),
    ("steps that are not a whole number", "[host:nas]\n" + NODE + "steps = 2.5\n",
     "host nas: steps must be a whole number"),
    ("a host name with a space", "[host:my nas]\n" + NODE,
     "host name 'my nas' must be 1 to 40 letters, digits, '.', '-' or '_', starting with a letter or digit"),
    ("a host name starting with '-'", "[host:-nas]\n" + NODE,
     "host name '-nas' must be 1 to 40 letters, digits, '.', '-' or '_', starting with a letter or digit"),
    ("an empty host name", "[host:]\n" + NODE,
     "host name '' must be 1 to 40 letters, digits, '.', '-' or '_', starting with a letter or digit"),
    ("a host name of 41 characters", f"[host:{'n' * 41}]\n" + NODE,
     f"host name '{'n' * 41}' must be 1 to 40 letters, digits, '.', '-' or '_', starting with a letter or digit"),
    ("two hosts differing only in case", "[host:NAS]\n" + NODE + "\n[host:nas]\n" + NODE,
     "hosts NAS and nas would share the atom pulse_nas; rename one"),
    ("two hosts differing only in '-' and '.'", "[host:a-b]\n" + NODE + "\n[host:a.b]\n" + NODE,
     "hosts a-b and a.b would share the atom pulse_a_b; rename one"),
    ("a declared atom named hosts", "[atom:hosts]\nschema = T=0:100:5\ncommand = /bin/true\n",
     "atom name 'hosts' would share Nerve's token 'HOSTS'; choose a longer name"),
    ("a declared atom named Hosts", "[atom:Hosts]\nschema = T=0:100:5\ncommand = /bin/true\n",
     "atom name 'Hosts' would share Nerve's token 'HOSTS'; choose a longer name"),
]


class HostConfigRefusalTest(HomeCase, CommandLineAssertions):
    def refusal(self, text, mode=0o600):
        """The KiriError load_settings raises for a config ending in `text`, and the file's path."""
        path = write_config(self.home, text=text, mode=mode)
        with self.assertRaises(KiriError) as caught:
            self.settings()
        return str(caught.exception), path

    def test_each_bad_host_or_atom_section_is_refused_in_one_line_naming_the_file_and_the_host(self):
        for what, text, message in BAD_CONFIGS:
            with self.subTest(what):
                error, path = self.refusal(text)
                self.assertEqual(error, f"config file {path}: {message}")
                self.assertEqual(len(error.splitlines()), 1)

    def test_a_url_holding_a_user_and_password_is_refused_without_showing_the_password(self):
        error, path = self.refusal("[host:nas]\nsource = node_exporter\n"
                                   "url = http://kiri:Pa55word@nas.local:9100/metrics\n")
        self.assertEqual(error, f"config file {path}: host nas: url must not hold a user or password")
        self.assertNotIn("Pa55word", error)

    def test_a_mikrotik_host_with_a_password_in_a_file_others_can_read_is_refused(self):
        text = "[host:router]\nsource = mikrotik\nurl = https://192.168.88.1\nuser = kiri\npassword = Pa55word\n"
        error, path = self.refusal(text, mode=0o644)
        self.assertEqual(error, f"config file {path} holds a secret but is readable by others; "
                                f"run: chmod 600 {path}")
        self.assertNotIn("Pa55word", error)
        os.chmod(path, 0o600)   # the same file, once only its owner reads it, is taken
        self.assertEqual(list(self.settings().hosts), ["router"])

    def test_a_host_without_a_password_may_be_in_a_file_others_can_read(self):
        write_config(self.home, text="[host:nas]\n" + NODE, mode=0o644)
        self.assertEqual(self.settings().host_of("pulse_nas"), "nas")

    def test_the_command_line_refuses_a_bad_host_in_one_line_without_a_traceback(self):
        cases = [("an unknown source", BAD_CONFIGS[0][1], 0o600, BAD_CONFIGS[0][2]),
                 ("two hosts sharing an atom", BAD_CONFIGS[17][1], 0o600, BAD_CONFIGS[17][2]),
                 ("a password in a url", "[host:nas]\nsource = node_exporter\n"
                  "url = http://kiri:Pa55word@nas.local:9100/metrics\n", 0o600,
                  "host nas: url must not hold a user or password"),
                 ("a secret readable by others", "[host:router]\nsource = mikrotik\nurl = https://192.168.88.1\n"
                  "password = Pa55word\n", 0o644, "holds a secret but is readable by others")]
        user = self.tmp / "user"
        user.mkdir()
        for what, text, mode, message in cases:
            with self.subTest(what):
                path = write_config(self.home, text=text, mode=mode)
                proc = run_kiri("status", home=self.home, env={"HOME": str(user)}, timeout=60)
                self.assertUserError(proc, message)
                self.assertIn(str(path), proc.stderr)
                self.assertNotIn("Pa55word", proc.stderr + proc.stdout)


# --------------------------------------------------------------------------------------
# 3. the daemon reads every due host at once


class FleetDaemonTest(HomeCase):
    @classmethod
    def setUpClass(cls):
        cls.fleet = FakeFleet(hosts=3, seed=5)
        cls.fleet.__enter__()
        cls.addClassCleanup(cls.fleet.close)

    def setUp(self):
        super().setUp()
        for i in range(3):
            self.fleet.set_down(i, False)
        self.now = time.time()
        write_config(self.home, hosts=fleet_hosts(self.fleet.urls))

    def watched(self):
        """Wrap node_exporter.collect (the real one still answers): who read, and when."""
        calls, lock, real = [], threading.Lock(), node_exporter.collect

        def collect(url, *args, **kwargs):
            started = time.monotonic()
            try:
                return real(url, *args, **kwargs)
            finally:
                with lock:
                    calls.append((url, threading.get_ident(), started, time.monotonic()))
        return calls, mock.patch.object(node_exporter, "collect", collect)

    def test_one_cycle_reads_every_host_at_once_and_stores_one_reading_of_each(self):
        settings, store = self.settings(), self.store()
        d = self.daemon(settings, store)
        calls, patch = self.watched()
        with patch:
            result = d.cycle(inject=BUILTINS, collect_all=True)
        self.assertEqual(result.errors, [])
        hosts = ["pulse_h0", "pulse_h1", "pulse_h2"]
        readings = {}
        for atom in hosts:
            rows = store.observations(atom)
            self.assertEqual(len(rows), 1, atom)
            self.assertEqual(rows[0]["source"], "node_exporter")
            self.assertEqual(rows[0]["ts"], result.ts, f"{atom} was not stored in this cycle")
            self.assertEqual(set(rows[0]["values"]), {"C", "M", "D", "S", "L", "N"})
            readings[atom] = rows[0]["values"]
            self.assertEqual(store.count_real(atom, 10), 1)
            self.assertEqual(result.absent[atom], "no weights yet")   # read, stored, not yet scored
        self.assertEqual(len({tuple(sorted(v.items())) for v in readings.values()}), 3,
                         f"the hosts' readings should differ: {readings}")
        # Each in a thread of its own, all at once: every read began before any ended.
        self.assertEqual(sorted(url for url, *_ in calls), sorted(self.fleet.urls))
        self.assertEqual(len({ident for _, ident, _, _ in calls}), 3)
        self.assertLess(max(start for *_, start, _ in calls), min(end for *_, end in calls))

    def test_a_host_that_is_down_is_absent_with_a_reason_naming_it_and_the_others_are_read(self):
        self.fleet.set_down(1, True)
        settings, store = self.settings(), self.store()
        result = self.daemon(settings, store).cycle(inject=BUILTINS, collect_all=True)
        self.assertEqual(result.errors, [])
        why = result.absent["pulse_h1"]
        self.assertTrue(why.startswith("unavailable: host h1: node_exporter: HTTP 503 from "), why)
        self.assertEqual(store.observations("pulse_h1"), [])
        for atom in ("pulse_h0", "pulse_h2"):
            self.assertEqual(len(store.observations(atom)), 1, atom)
            self.assertEqual(result.absent[atom], "no weights yet")
        self.assertEqual(store.get_kv("atom.pulse_h1.source"), why[len("unavailable: "):])
        self.assertTrue(any("host h1: node_exporter: HTTP 503" in line for line in self.log.lines), self.log.lines)
        # Back up: read again at the next due cycle, and its reason is cleared.
        self.fleet.set_down(1, False)
        self.now += 1
        result = self.daemon(settings, store).cycle(inject=BUILTINS, collect_all=True)
        self.assertNotIn("unavailable", result.absent.get("pulse_h1", ""))
        self.assertEqual(len(store.observations("pulse_h1")), 1)
        self.assertEqual(store.get_kv("atom.pulse_h1.source"), "")

    def test_a_host_read_less_than_its_interval_ago_waits(self):
        settings, store = self.settings(), self.store()
        d = self.daemon(settings, store)
        d.cycle(inject=BUILTINS, collect_all=True)
        self.now += 10
        calls, patch = self.watched()
        with patch:
            result = d.cycle(inject=BUILTINS)
        self.assertEqual(calls, [])
        for atom in ("pulse_h0", "pulse_h1", "pulse_h2"):
            self.assertTrue(result.waiting[atom].startswith("not due yet"), result.waiting)
            self.assertEqual(len(store.observations(atom)), 1)


# --------------------------------------------------------------------------------------
# 4. Nerve and the alert


class HostAlertTest(HomeCase):
    def setUp(self):
        super().setUp()
        write_config(self.home, hosts={f"h{i}": {"source": "node_exporter", "url": UNUSED_URL} for i in range(3)})
        self.settings_ = self.settings(KIRI_ALERT_AFTER="1", KIRI_ALERT_COOLDOWN="1")
        self.install_weights(self.settings_, "pulse_h0", "pulse_h1", "pulse_h2")
        self.store_ = self.store()

    def cycle(self, **hosts):
        result = self.daemon(self.settings_, self.store_).cycle(inject=dict(BUILTINS, **hosts))
        self.assertEqual(result.errors, [])
        return result

    def test_nerve_sees_every_host_as_one_HOSTS_field_holding_the_highest_ratio(self):
        result = self.cycle(pulse_h0=NORMAL, pulse_h1=ANOMALY, pulse_h2=NORMAL_TOO)
        ratios = {s.atom: s.ratio for s in result.scores}
        self.assertEqual(set(ratios), {"pulse_h0", "pulse_h1", "pulse_h2"})   # pulse has no weights here
        self.assertGreater(ratios["pulse_h1"], 1)
        self.assertLess(ratios["pulse_h0"], 1)
        self.assertLess(ratios["pulse_h2"], 1)
        state = result.decision["state"]
        self.assertEqual(set(state), BUILTIN_NERVE_FIELDS | NERVE_OWN_FIELDS | {"HOSTS"})
        self.assertAlmostEqual(state["HOSTS"], max(ratios.values()))
        self.assertAlmostEqual(state["HOSTS"], ratios["pulse_h1"])
        self.assertAlmostEqual(result.sustained["pulse_h1"], ratios["pulse_h1"])
        self.assertEqual(result.decision["action"], "alert")
        # Nerve's own language has the one field, and no action for a host.
        spec = nerve.spec(list(verbs.all_atoms(self.settings_)))
        self.assertIn("HOSTS", spec.schema)
        self.assertFalse([a for a in spec.schema["act"]["labels"] if "pulse_h" in a])

    def test_all_normal_hosts_give_HOSTS_below_one_and_no_alert(self):
        result = self.cycle(pulse_h0=NORMAL, pulse_h1=NORMAL_TOO, pulse_h2=NORMAL)
        state = result.decision["state"]
        self.assertAlmostEqual(state["HOSTS"], max(s.ratio for s in result.scores))
        self.assertLess(state["HOSTS"], 1)
        self.assertEqual(result.decision["action"], "ok")
        self.assertIsNone(result.alert)

    def test_the_alert_names_the_unusual_host_and_its_atom_and_none_of_the_others(self):
        result = self.cycle(pulse_h0=NORMAL, pulse_h1=ANOMALY, pulse_h2=NORMAL_TOO)
        message = result.alert["message"]
        self.assertTrue(message.startswith("KIRI alert on h1: pulse_h1 is unusual ("), message)
        for other in ("h0", "h2", HERE):
            self.assertNotIn(other, message)
        alert = self.store_.alerts(limit=1)[0]
        self.assertEqual(alert["atom"], "pulse_h1")
        self.assertEqual(alert["details"]["host"], "h1")
        self.assertEqual(alert["situation"].split(":")[0], "pulse_h1")
        self.assertEqual([s["atom"] for s in alert["details"]["scores"]], ["pulse_h1"])
        self.assertTrue(any(line.startswith("ALERT ") and "KIRI alert on h1" in line for line in self.log.lines))

    def test_metrics_label_each_host_atom_with_its_host(self):
        from kiri import metrics
        result = self.cycle(pulse_h0=NORMAL, pulse_h1=ANOMALY, pulse_h2=NORMAL_TOO)
        text = metrics.render(self.settings_, self.store_, now=self.now)
        for s in result.scores:
            host = s.atom[len("pulse_"):]
            self.assertIn(f'kiri_atom_score{{host="{host}",atom="{s.atom}"}} ', text)
        self.assertIn('kiri_alerts{host="h1",atom="pulse_h1",state="open"} 1', text)

    def test_the_dashboard_shows_each_host_atom_on_its_host(self):
        from kiri.web import pages, views
        self.cycle(pulse_h0=NORMAL, pulse_h1=ANOMALY, pulse_h2=NORMAL_TOO)
        view = views.overview(self.settings_, self.store_, self.now, 86400)
        html = pages.overview(pages.Site(host=HERE, csrf="x", read_only=True), view, "day")
        for host in ("h0", "h1", "h2"):
            self.assertIn(f'>pulse_{host}</a> <span class="muted small">on {host}</span>', html)
        self.assertNotIn('>pulse</a> <span class="muted small">', html, "this machine's own atoms need no 'on'")

    def test_two_unusual_hosts_are_one_alert_naming_both_and_HOSTS_is_the_higher(self):
        worse = dict(ANOMALY, C=100, M=100, S=100, L=20)
        result = self.cycle(pulse_h0=ANOMALY, pulse_h1=NORMAL, pulse_h2=worse)
        ratios = {s.atom: s.ratio for s in result.scores}
        self.assertAlmostEqual(result.decision["state"]["HOSTS"], max(ratios["pulse_h0"], ratios["pulse_h2"]))
        message = result.alert["message"]
        self.assertTrue(message.startswith("KIRI alert on h0, h2: pulse_h0 is unusual"), message)
        self.assertIn("\npulse_h2 is unusual", message)
        self.assertNotIn("h1", message)


# --------------------------------------------------------------------------------------
# 5. a host's first model, trained beside the cycles


STEPS = 30   # a host's Pulse trains SPEC.steps (2000, no per-host setting): shortened here for speed


class HostTrainerTest(HomeCase):
    def setUp(self):
        super().setUp()
        write_config(self.home, hosts={"h0": {"source": "node_exporter", "url": UNUSED_URL}})
        self.settings_ = self.settings(KIRI_LEARN_AFTER="30", KIRI_RETRAIN_DAYS="365")
        self.store_ = self.store()
        rng = random.Random(3)
        start = self.now - 31 * 300
        self.store_.add_observations([{"atom": "pulse_h0", "ts": start + i * 300, "source": "node_exporter",
                                       "values": pulse.synthetic(rng, start + i * 300)} for i in range(30)])

    def test_a_host_with_learn_after_real_readings_trains_once_in_the_background(self):
        settings, store = self.settings_, self.store_
        d = self.daemon(settings, store)
        module = d.modules["pulse_h0"]
        self.assertEqual(module.SPEC.steps, pulse.SPEC.steps)
        d.modules["pulse_h0"] = SimpleNamespace(**dict(vars(module), SPEC=dataclasses.replace(module.SPEC, steps=STEPS)))
        d.trainer = Trainer(settings, d.modules, self.clock)
        self.addCleanup(d.trainer.stop)
        weights = settings.weights_path("pulse_h0")

        first = d.cycle(inject=dict(BUILTINS, pulse_h0=NORMAL))
        self.assertEqual(first.errors, [])
        self.assertEqual(first.meta, ["spawn:pulse_h0 (training in the background)"])
        self.now += 1
        second = d.cycle(inject=dict(BUILTINS, pulse_h0=NORMAL_TOO))
        self.assertEqual(second.errors, [])
        self.assertEqual(second.meta, [], "queued again while it trains (or trained)")

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not [x for x in store.decisions() if x["action"] == "spawn:pulse_h0"]:
            time.sleep(0.1)
        spawned = [x for x in store.decisions() if x["action"] == "spawn:pulse_h0"]
        self.assertEqual(len(spawned), 1, "no spawn:pulse_h0 decision within 120 s")
        self.assertEqual(spawned[0]["source"], "rule")
        self.assertTrue(weights.exists())
        self.assertTrue(d.atom("pulse_h0").trained)
        self.assertTrue(any("pulse_h0: learned from 30 real readings; watching" in line for line in self.log.lines),
                        self.log.lines)

        # Watching now: the next cycle scores the host, and queues nothing.
        self.now += 1
        third = d.cycle(inject=dict(BUILTINS, pulse_h0=NORMAL))
        self.assertEqual(third.meta, [])
        self.assertEqual([s.atom for s in third.scores], ["pulse_h0"])

        d.trainer.stop()
        self.assertFalse(d.trainer.thread.is_alive())

    def test_the_trainer_queues_an_atom_once_while_it_is_pending(self):
        gate = threading.Event()
        modules = {}
        trainer = Trainer(self.settings_, modules, self.clock)
        self.addCleanup(trainer.stop)
        self.addCleanup(gate.set)
        with mock.patch("kiri.lifecycle.run", side_effect=lambda *a, **k: gate.wait(30) and "done"):
            self.assertTrue(trainer.submit("spawn:pulse_h0"))
            self.assertFalse(trainer.submit("spawn:pulse_h0"))
            self.assertFalse(trainer.submit("retrain:pulse_h0:7d"))
            self.assertTrue(trainer.submit("spawn:pulse_h1"))
            gate.set()
            deadline = time.monotonic() + 30
            while trainer.pending and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(trainer.pending, set())
            self.assertTrue(trainer.submit("spawn:pulse_h0"))   # done: it may be queued again
        trainer.stop(wait=5)
        self.assertFalse(trainer.thread.is_alive())

    def test_status_shows_a_host_atom_on_its_host(self):
        self.install_weights(self.settings_, "pulse_h0")
        info = collect_status(self.settings_, self.store_, now=self.now)
        self.assertEqual(info["atoms"]["pulse_h0"]["host"], "h0")
        self.assertEqual(info["atoms"]["pulse"]["host"], HERE)
        text = format_status(info, now=self.now)
        lines = [line for line in text.splitlines() if line.strip().startswith("pulse_h0")]
        self.assertEqual(len(lines), 1, text)
        self.assertTrue(lines[0].startswith("  pulse_h0 (on h0) watching: "), lines[0])
        self.assertIn("30 real + 0 synthetic readings", lines[0])
        for name in ("pulse", "rhythm", "drift"):
            line = next(x for x in text.splitlines() if x.strip().startswith(name + " "))
            self.assertNotIn("(on ", line)


# --------------------------------------------------------------------------------------
# 6. the real command line


class TrainerFailureTest(HomeCase):
    def test_a_training_that_fails_in_the_background_is_an_error_of_the_next_cycle(self):
        # learn_after 5 lets it try with 5 readings, fewer than any atom trains on.
        write_config(self.home, hosts={"h0": {"source": "node_exporter", "url": UNUSED_URL}})
        settings, store = self.settings(KIRI_LEARN_AFTER="5", KIRI_RETRAIN_DAYS="365"), self.store()
        store.add_observations([{"atom": "pulse_h0", "ts": self.now - (5 - i) * 300, "source": "node_exporter",
                                 "values": NORMAL} for i in range(5)])
        d = self.daemon(settings, store)
        d.trainer = Trainer(settings, d.modules, self.clock)
        self.addCleanup(d.trainer.stop)
        first = d.cycle(inject=BUILTINS)
        self.assertIn("spawn:pulse_h0 (training in the background)", first.meta)
        deadline = time.monotonic() + 30
        while d.trainer.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        self.now += 1
        second = d.cycle(inject=BUILTINS)
        errors = [e for e in second.errors if e[0] == "spawn:pulse_h0"]
        self.assertEqual(len(errors), 1, second.errors)
        self.assertEqual(errors[0][1], "housekeeping")
        self.assertIn("only 5", errors[0][2])


class FleetCommandLineTest(HomeCase):
    def test_kiri_atom_collect_reads_a_host_and_status_lists_it_on_that_host(self):
        user = self.tmp / "user"
        user.mkdir()
        env = {"HOME": str(user)}
        with FakeFleet(hosts=1, seed=9) as fleet:
            write_config(self.home, hosts=fleet_hosts(fleet.urls))
            proc = run_kiri("atom", "pulse_h0", "collect", home=self.home, env=env, timeout=60)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertNotIn("Traceback", proc.stderr)
        store = self.store()
        rows = store.observations("pulse_h0")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["source"], "node_exporter")
        self.assertEqual(store.observations("pulse"), [])   # this machine is not read
        proc = run_kiri("status", home=self.home, env=env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, re.compile(r"^  pulse_h0 \(on h0\) cold: collecting, \d+ readings to go .*"
                                                 r"1 real \+ 0 synthetic readings", re.MULTILINE))
        self.assertRegex(proc.stdout, re.compile(r"^  pulse +cold", re.MULTILINE))

    def test_kiri_atom_collect_of_a_host_that_is_down_fails_in_one_line_naming_it(self):
        user = self.tmp / "user"
        user.mkdir()
        with FakeFleet(hosts=1, seed=9) as fleet:
            write_config(self.home, hosts=fleet_hosts(fleet.urls))
            fleet.set_down(0, True)
            proc = run_kiri("atom", "pulse_h0", "collect", home=self.home, env={"HOME": str(user)}, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
        self.assertIn("host h0: node_exporter: HTTP 503", proc.stderr)


if __name__ == "__main__":
    unittest.main()
