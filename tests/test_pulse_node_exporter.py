"""node_exporter pulse source: the exposition parser on a recorded scrape and on hostile texts,
the mapping to C M D S L N (Linux and macOS names), the HTTP client against a fake exporter on
127.0.0.1, `kiri pulse collect` as a real subprocess, and the real prometheus-node-exporter."""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
from pathlib import Path

from kiri.atoms.pulse import linux, node_exporter
from kiri.atoms.pulse.schema import SPEC, read
from kiri.atoms.sources import CollectorError
from kiri.bench.loopback import JsonHandler, QuietServer
from kiri.config import Settings
from kiri.errors import KiriError
from kiri.store import Store
from tests.helpers import run_kiri

# A complete scrape of node_exporter 1.5.0 on Linux (Debian 12, 2 CPUs, no swap), default flags.
SAMPLE = (Path(__file__).parent / "data" / "node_exporter-1.5.0.metrics").read_text(encoding="utf-8")

# macOS: constructed, not recorded (no Mac here). The names are those of node_exporter's
# Darwin collectors (meminfo_darwin.go, 1.4+; netdev with --collector.netdev.address-info);
# most values are from a public scrape of a 16 GB Intel MacBook, internal/purgeable made up.
DARWIN = """\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 78815.94
node_cpu_seconds_total{cpu="0",mode="nice"} 0
node_cpu_seconds_total{cpu="0",mode="system"} 9706.08
node_cpu_seconds_total{cpu="0",mode="user"} 17779.6
node_filesystem_avail_bytes{device="/dev/disk1s1",fstype="apfs",mountpoint="/System/Volumes/Data"} 4.25092554752e+11
node_filesystem_avail_bytes{device="/dev/disk1s5s1",fstype="apfs",mountpoint="/"} 4.25092554752e+11
node_filesystem_avail_bytes{device="map auto_home",fstype="autofs",mountpoint="/System/Volumes/Data/home"} 0
node_filesystem_free_bytes{device="/dev/disk1s1",fstype="apfs",mountpoint="/System/Volumes/Data"} 4.4365203456e+11
node_filesystem_free_bytes{device="/dev/disk1s5s1",fstype="apfs",mountpoint="/"} 4.84650889216e+11
node_filesystem_free_bytes{device="map auto_home",fstype="autofs",mountpoint="/System/Volumes/Data/home"} 0
node_filesystem_size_bytes{device="/dev/disk1s1",fstype="apfs",mountpoint="/System/Volumes/Data"} 4.99963174912e+11
node_filesystem_size_bytes{device="/dev/disk1s5s1",fstype="apfs",mountpoint="/"} 4.99963174912e+11
node_filesystem_size_bytes{device="map auto_home",fstype="autofs",mountpoint="/System/Volumes/Data/home"} 0
node_load1 2.5048828125
node_memory_active_bytes 5.238034432e+09
node_memory_compressed_bytes 2.478948352e+09
node_memory_free_bytes 5.01157888e+08
node_memory_inactive_bytes 5.574938624e+09
node_memory_internal_bytes 6e+09
node_memory_purgeable_bytes 1e+08
node_memory_swap_total_bytes 2.147483648e+09
node_memory_swap_used_bytes 1.095499776e+09
node_memory_total_bytes 1.7179869184e+10
node_memory_wired_bytes 3.3830912e+09
node_network_address_info{address="127.0.0.1",device="lo0",netmask="8",scope="link-local"} 1
node_network_address_info{address="fe80::1c2b:3aff:fe4d:5e6f",device="awdl0",netmask="64",scope="link-local"} 1
node_network_address_info{address="192.168.1.23",device="en0",netmask="24",scope="global"} 1
"""

# What each CPU spent in one second between two scrapes: 25 % busy.
ONE_SECOND = {"idle": 0.75, "user": 0.2, "system": 0.05}
CPU_LINE = re.compile(r'^(node_cpu_seconds_total\{[^}]*mode="(\w+)"[^}]*\}) (\S+)$', re.MULTILINE)


def later(text, spent=ONE_SECOND):
    """`text` with every CPU's counters advanced by `spent` seconds per mode: the next scrape."""
    return CPU_LINE.sub(lambda m: f"{m.group(1)} {float(m.group(3)) + spent.get(m.group(2), 0):.2f}", text)


def edited(text, name, value):
    """`text` with every sample line of the family `name` given `value`, or removed (None)."""
    pattern = re.compile(rf"^({re.escape(name)}(?:\{{[^\n]*\}})?) \S+\n", re.MULTILINE)
    return pattern.sub("" if value is None else lambda m: f"{m.group(1)} {value}\n", text)


def scrape(text, where="sample"):
    return node_exporter.Scrape(node_exporter.parse(text), where)


def reading(text, **kwargs):
    return node_exporter.pulse_from(scrape(text), scrape(later(text)), **kwargs)


def free_port():
    with socket.socket() as probe:   # free a moment ago; nothing else here takes ports at random
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ParseTest(unittest.TestCase):
    def test_every_line_of_the_recorded_scrape(self):
        names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", SAMPLE, re.MULTILINE))
        families = node_exporter.parse(SAMPLE, names)
        samples = [line for line in SAMPLE.splitlines() if line and not line.startswith("#")]
        self.assertEqual(sum(len(found) for found in families.values()), len(samples))
        self.assertEqual(families["node_load1"], [({}, 0.54)])
        self.assertIn(({"device": "/dev/vda", "fstype": "ext4", "mountpoint": "/"}, 2.70553174016e+11),
                      families["node_filesystem_size_bytes"])

    def test_only_the_wanted_families_are_kept(self):
        families = node_exporter.parse(SAMPLE)
        self.assertLessEqual(set(families), node_exporter.WANTED)
        self.assertEqual(len(families["node_cpu_seconds_total"]), 16)   # 2 CPUs x 8 modes

    def test_escapes_in_label_values(self):
        # The example of the format's documentation.
        line = ('msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",'
                'error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n')
        [(labels, value)] = node_exporter.parse(line, {"msdos_file_access_time_seconds"})["msdos_file_access_time_seconds"]
        self.assertEqual(labels, {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'})
        self.assertEqual(value, 1.458255915e9)

    def test_values_timestamps_and_spacing(self):
        text = ("# a comment\n\n# HELP x anything at all \\ here\n# TYPE x gauge\n"
                'x NaN\nx{a="1"} +Inf\nx{a="2",} -Inf 1395066363000\nx { a = "3" , b="}" } 2.5e-3\n'
                'x{} 7\nx\t.5\t-12\nx{a="{x=\\"1\\"} 2"} 1e400\n')
        values = [value for _, value in node_exporter.parse(text, {"x"})["x"]]
        self.assertNotEqual(values[0], values[0])   # NaN
        self.assertEqual(values[1:], [float("inf"), float("-inf"), 0.0025, 7.0, 0.5, float("inf")])
        self.assertEqual(node_exporter.parse(text, {"x"})["x"][3][0], {"a": "3", "b": "}"})

    def test_hostile_texts_are_one_line_errors(self):
        cases = [
            ("", "the answer is empty"),
            ("node_load1 0.5", "ends in the middle of a line"),
            ("<!DOCTYPE html>\n<html><body>Node Exporter</body></html>\n", "line 1 is not a sample: <!DOCTYPE html>"),
            ('{"cpu-load": "7"}\n', "line 1 is not a sample"),
            ("node_load1\n", "line 1 has no valid value"),
            ("node_load1 high\n", "has no valid value"),
            ("node_load1 1_000\n", "has no valid value"),
            ("node_load1 0x10\n", "has no valid value"),
            ("node_load1 0.5 12.5\n", "has no valid value"),          # a timestamp is whole milliseconds
            ("node_load1 0.5 " + "9" * 400 + "\n", "has no valid value"),
            ("node_load1 0.5\r\n", "has no valid value"),
            ("node_load10.5\n", "has no valid value"),
            ('x{a="\\t"} 1\n', "unknown escape"),
            ('x{a="open} 1\n', "malformed labels"),
            ('x{a="1"\n', "malformed labels"),
            ('x{a="1" b="2"} 1\n', "malformed labels"),
            ('x{1a="1"} 1\n', "malformed labels"),
            ('x{a="1",a="2"} 1\n', "repeats the label a"),
            ("# TYPE x speed\n", "malformed TYPE line"),
            ("# TYPE\n", "malformed TYPE line"),
            ("node_load1 1\n\x00\n", "line 2 is not a sample: \\x00"),
        ]
        for text, words in cases:
            with self.subTest(text=text[:40]):
                with self.assertRaises(ValueError) as caught:
                    node_exporter.parse(text)
                self.assertIn(words, str(caught.exception))
                self.assertEqual(len(str(caught.exception).splitlines()), 1)
                self.assertLess(len(str(caught.exception)), 200)

    def test_long_lines_take_linear_time(self):
        started = time.monotonic()
        escaped = 'x{a="' + "\\\\" * 500000 + '"} 1\n'
        self.assertEqual(node_exporter.parse(escaped, {"x"})["x"][0][0]["a"], "\\" * 500000)
        for text in ('x{a="' + 'b\\"' * 300000 + "\n", "node_load1 " + "1" * 1000000 + "x\n",
                     "node_load1 " + " " * 500000 + "1" + " " * 500000 + "x\n",
                     "x{" + 'a="1",' * 100000 + "\n"):
            with self.assertRaises(ValueError):
                node_exporter.parse(text)
        self.assertLess(time.monotonic() - started, 5.0)


class PulseFromTest(unittest.TestCase):
    def test_recorded_linux_scrape(self):
        values = reading(SAMPLE)
        self.assertAlmostEqual(values["C"], 25.0)
        self.assertAlmostEqual(values["M"], 100 * (1 - 2.490630144e10 / 2.5276063744e10))
        used = 2.70553174016e11 - 2.4675080192e11   # size - free, as df and linux.py count it
        self.assertAlmostEqual(values["D"], 100 * used / (used + 8.5141921792e10))
        self.assertEqual(values["S"], 0.0)   # no swap at all
        self.assertEqual(values["L"], 0.54)
        self.assertEqual(values["N"], 1)     # eth0 up; lo is not counted
        self.assertEqual(sorted(values), sorted(SPEC.schema.keys() - {"H", "W"}))

    def test_macos_names(self):
        values = reading(DARWIN)
        self.assertAlmostEqual(values["C"], 25.0)
        # Activity Monitor's "Memory Used" as macos.py: app (internal - purgeable) + wired + compressed.
        self.assertAlmostEqual(values["M"], 100 * (6e9 - 1e8 + 3.3830912e9 + 2.478948352e9) / 1.7179869184e10)
        used = 4.99963174912e11 - 4.4365203456e11   # of the data volume, not the sealed system one
        self.assertAlmostEqual(values["D"], 100 * used / (used + 4.25092554752e11))
        self.assertAlmostEqual(values["S"], 100 * 1.095499776e9 / 2.147483648e9)
        self.assertEqual(values["L"], 2.5048828125)
        self.assertEqual(values["N"], 1)   # en0 has a global address

    def test_cpu_from_two_scrapes(self):
        before = scrape(SAMPLE)
        self.assertAlmostEqual(node_exporter.cpu_percent(before, scrape(later(SAMPLE, {"idle": 1.0}))), 0.0)
        self.assertAlmostEqual(node_exporter.cpu_percent(before, scrape(later(SAMPLE, {"user": 1.0}))), 100.0)
        # iowait is idle time, as in linux.py; steal and irq are busy.
        spent = {"iowait": 0.5, "steal": 0.25, "irq": 0.25}
        self.assertAlmostEqual(node_exporter.cpu_percent(before, scrape(later(SAMPLE, spent))), 50.0)

    def test_cpu_counters_that_do_not_advance_or_go_back(self):
        for after in (SAMPLE, later(SAMPLE, {"idle": -1.0, "user": -1.0})):
            with self.assertRaisesRegex(CollectorError, "^node_exporter: node_cpu_seconds_total did not advance "
                                                        "between two scrapes of sample$"):
                node_exporter.cpu_percent(scrape(SAMPLE), scrape(after))

    def test_a_cpu_gone_between_the_scrapes_is_left_out(self):
        after = later(SAMPLE, {"idle": 1.0})
        after = re.sub(r'^node_cpu_seconds_total\{cpu="0",mode="user"\} (\S+)$',
                       lambda m: f'node_cpu_seconds_total{{cpu="0",mode="user"}} {float(m.group(1)) + 1}', after,
                       flags=re.MULTILINE)
        # cpu0: 1 s idle and 1 s busy, cpu1: 1 s idle: busy 1 s of 3.
        self.assertAlmostEqual(node_exporter.cpu_percent(scrape(SAMPLE), scrape(after)), 100 / 3)
        without_cpu1 = "\n".join(line for line in after.split("\n") if 'cpu="1"' not in line)
        self.assertAlmostEqual(node_exporter.cpu_percent(scrape(SAMPLE), scrape(without_cpu1)), 50.0)

    def test_a_missing_metric_is_named(self):
        cases = [("node_load1", "node_load1 missing from sample: is this a node_exporter with its default collectors?"),
                 ("node_cpu_seconds_total", "node_cpu_seconds_total missing from sample"),
                 ("node_memory_MemAvailable_bytes", "node_memory_MemAvailable_bytes missing from sample"),
                 ("node_memory_SwapFree_bytes", "node_memory_SwapFree_bytes missing from sample"),
                 ("node_filesystem_avail_bytes", "node_filesystem_avail_bytes missing from sample"),
                 ("node_network_up", "node_network_up missing from sample: start node_exporter with "
                                     "--collector.netdev.address-info")]
        for name, words in cases:
            with self.subTest(name=name):
                with self.assertRaises(CollectorError) as caught:
                    reading(edited(SAMPLE, name, None))
                self.assertTrue(str(caught.exception).startswith("node_exporter: " + words), caught.exception)

    def test_neither_linux_nor_macos_memory(self):
        text = edited(SAMPLE, "node_memory_MemTotal_bytes", None)
        with self.assertRaisesRegex(CollectorError, "node_memory_MemTotal_bytes missing from sample"):
            reading(text)

    def test_macos_before_node_exporter_1_4(self):
        with self.assertRaisesRegex(CollectorError, "node_memory_internal_bytes missing from sample: "
                                                    "macOS needs node_exporter 1.4 or later"):
            reading(edited(DARWIN, "node_memory_internal_bytes", None))

    def test_macos_without_address_info(self):
        with self.assertRaisesRegex(CollectorError, "node_network_up missing .*--collector.netdev.address-info"):
            reading(edited(DARWIN, "node_network_address_info", None))

    def test_every_number_is_finite_and_in_its_range(self):
        cases = [("node_load1", "NaN"), ("node_load1", "+Inf"), ("node_load1", "-0.5"), ("node_load1", "1" * 400),
                 ("node_memory_MemTotal_bytes", "0"), ("node_memory_MemTotal_bytes", "1e30"),
                 ("node_memory_MemAvailable_bytes", "3e10"), ("node_memory_MemAvailable_bytes", "-1"),
                 ("node_memory_SwapFree_bytes", "1"), ("node_filesystem_size_bytes", "NaN"),
                 ("node_filesystem_avail_bytes", "3e11"), ("node_filesystem_free_bytes", "-Inf"),
                 ("node_cpu_seconds_total", "NaN"), ("node_cpu_seconds_total", "-1"), ("node_cpu_seconds_total", "1e300")]
        for name, value in cases:
            with self.subTest(name=name, value=value[:20]):
                with self.assertRaises(CollectorError) as caught:
                    reading(edited(SAMPLE, name, value))
                message = str(caught.exception)
                self.assertRegex(message, rf"^node_exporter: {name} of sample is \S+, not a number from ")
                self.assertLess(len(message), 200)
        darwin_cases = [("node_memory_purgeable_bytes", "7e9"), ("node_memory_swap_used_bytes", "3e9"),
                        ("node_memory_wired_bytes", "nan")]
        for name, value in darwin_cases:
            with self.subTest(name=name, value=value):
                with self.assertRaisesRegex(CollectorError, rf"^node_exporter: {name} of sample is "):
                    reading(edited(DARWIN, name, value))

    def test_edges_stay_in_range(self):
        full = reading(edited(SAMPLE, "node_memory_MemAvailable_bytes", "0"))
        self.assertEqual(full["M"], 100.0)
        swapping = edited(edited(SAMPLE, "node_memory_SwapTotal_bytes", "2e9"), "node_memory_SwapFree_bytes", "5e8")
        self.assertAlmostEqual(reading(swapping)["S"], 75.0)
        crowded = edited(DARWIN, "node_memory_wired_bytes", "1.7e10")   # more than all memory together
        self.assertEqual(reading(crowded)["M"], 100.0)

    def test_network(self):
        up = 'node_network_up{device="%s"} %s\n'
        address = 'node_network_address_info{address="%s",device="%s",netmask="64",scope="%s"} 1\n'
        cases = [(up % ("lo", 1), 0),                                    # loopback only
                 (up % ("eth0", 0) + up % ("lo", 1), 0),                 # the link is down
                 (up % ("eth0", 1), 1),                                  # no address info: operstate alone
                 (up % ("eth0", 1) + address % ("fe80::1", "eth0", "link-local"), 0),
                 (up % ("eth0", 1) + address % ("10.0.0.5", "eth0", "global"), 1),
                 (up % ("eth0", 0) + up % ("wg0", 1) + address % ("10.0.0.5", "eth0", "global"), 0),
                 (address % ("169.254.3.4", "en0", "link-local"), 0),     # macOS: DHCP went unanswered
                 (address % ("2001:db8::5", "en0", "global"), 1),
                 (address % ("::1", "lo0", "global"), 0)]
        for text, expected in cases:
            with self.subTest(text=text):
                self.assertEqual(node_exporter.network_up(scrape(text)), expected)

    def test_disk_of_a_path(self):
        mounts = ["/", "/srv", "/srv/data", "/srvx", "/System/Volumes/Data"]
        self.assertEqual(node_exporter.volume_of("/", mounts), "/")
        self.assertEqual(node_exporter.volume_of("/srv/data/photos", mounts), "/srv/data")
        self.assertEqual(node_exporter.volume_of("/srv/backup", mounts), "/srv")
        self.assertEqual(node_exporter.volume_of("/srvy", mounts), "/")
        self.assertIsNone(node_exporter.volume_of("/home", ["/boot"]))
        # pulse_disk names a path on the watched machine; its volume is measured.
        self.assertEqual(reading(SAMPLE, disk_path="/var/log")["D"], reading(SAMPLE)["D"])
        self.assertNotEqual(reading(DARWIN, disk_path="/")["D"], reading(DARWIN)["D"])
        with self.assertRaisesRegex(CollectorError, r"^node_exporter: no filesystem of sample holds relative "
                                                    r"\(it lists /\)$"):
            reading(SAMPLE, disk_path="relative")
        with self.assertRaisesRegex(CollectorError, "/System/Volumes/Data/home of sample reports no space"):
            reading(DARWIN, disk_path="/System/Volumes/Data/home/me")


# ----------------------------------------------------------------------------
# A fake exporter on loopback

def serving(body, status=200):
    # JsonHandler's answer is bytes with a Content-Length; its JSON content type does not matter here.
    return lambda handler: handler.answer(status, body)


def cut_short(body):
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body) + 1000))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def slow(handler):
    handler.server.release.wait(5)   # bounded; tearDown releases it at once
    handler.answer(200, SAMPLE)


class FakeExporter(JsonHandler):
    """Gives each GET the next of server.answers (the last one again when they run out)."""

    def do_GET(self):
        self.server.paths.append(self.path)
        answers = self.server.answers
        (answers.pop(0) if len(answers) > 1 else answers[0])(self)


class FakeExporterTestCase(unittest.TestCase):
    def setUp(self):
        self.server = QuietServer(("127.0.0.1", 0), FakeExporter)
        self.server.paths = []
        self.server.answers = [serving(SAMPLE), serving(later(SAMPLE))]
        self.server.release = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"

    def tearDown(self):
        self.server.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)

    def collect(self, url=None, **kwargs):
        return node_exporter.collect(url or self.url + "/metrics", sleep=lambda seconds: None, **kwargs)


class HttpClientTest(FakeExporterTestCase):
    def test_normal_path(self):
        waits = []
        values = node_exporter.collect(self.url + "/metrics", timeout=2, sleep=waits.append)
        self.assertEqual(values, reading(SAMPLE))
        self.assertEqual(waits, [node_exporter.CPU_WINDOW])   # the two scrapes are a CPU window apart
        self.assertEqual(self.server.paths, ["/metrics", "/metrics"])

    def test_a_bare_address_gets_metrics_added(self):
        for url, path in ((self.url, "/metrics"), (self.url + "/", "/metrics"), (self.url + "/node?x=1", "/node?x=1")):
            with self.subTest(url=url):
                self.server.paths, self.server.answers = [], [serving(SAMPLE), serving(later(SAMPLE))]
                self.collect(url)
                self.assertEqual(self.server.paths, [path, path])

    def test_bad_answers_are_one_line(self):
        page = self.url + "/metrics"
        html = b"<html>\n\t\t\t<head><title>Node Exporter</title></head>\n</html>"
        cases = [
            (serving(b"404 page not found\n", 404), f"node_exporter: HTTP 404 from {page}: Not Found"),
            (serving(b"", 500), f"node_exporter: HTTP 500 from {page}: Internal Server Error"),
            (serving(html), f"node_exporter: {page} sent no Prometheus metrics: the answer ends in the middle of a line"),
            (serving(html + b"\n"), f"node_exporter: {page} sent no Prometheus metrics: line 1 is not a sample: <html>"),
            (serving(b"node_load1 \xff\n"), f"node_exporter: the answer of {page} is not UTF-8 text"),
            (serving(b"node_load1 1\n"), f"node_exporter: node_cpu_seconds_total missing from {page}: "
                                         "is this a node_exporter with its default collectors?"),
            (cut_short(SAMPLE.encode()), f"node_exporter: the answer from {self.host} was cut short"),
            (serving(b"node_load1 1\n" * (5 * 2 ** 22)), f"node_exporter: {self.host} sent an answer larger than 8 MB"),
        ]
        for answer, words in cases:
            with self.subTest(words=words):
                self.server.answers = [answer]
                with self.assertRaises(CollectorError) as caught:
                    self.collect(timeout=5)
                self.assertEqual(str(caught.exception), words)

    def test_timeout(self):
        self.server.answers = [slow]
        started = time.monotonic()
        with self.assertRaises(CollectorError) as caught:
            self.collect(timeout=0.3)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(str(caught.exception), f"node_exporter: no answer from {self.host} within 0.3 s")

    def test_connection_refused(self):
        port = free_port()
        with self.assertRaises(CollectorError) as caught:
            self.collect(f"http://127.0.0.1:{port}/metrics", timeout=2)
        self.assertEqual(str(caught.exception), f"node_exporter: connection refused by 127.0.0.1:{port}")

    def test_unusable_addresses(self):
        for url in ("nas.local:9100", "ftp://nas.local/metrics", "http://user:pw@nas.local:9100", "http://[::1",
                    "http://nas local:9100", None):
            with self.subTest(url=url):
                with self.assertRaisesRegex(CollectorError, r"^node_exporter: the address \(node_exporter_url\) [^\n]+$"):
                    node_exporter.collect(url, sleep=lambda seconds: None)
                self.assertNotIn("pw", str(url and self.server.paths))

    def test_a_query_is_sent_but_never_shown(self):
        self.server.answers = [serving(b"", 403)]
        with self.assertRaises(CollectorError) as caught:
            self.collect(self.url + "/metrics?token=s3cret")
        self.assertNotIn("s3cret", str(caught.exception))
        self.assertEqual(self.server.paths, ["/metrics?token=s3cret"])


class SchemaReadTest(unittest.TestCase):
    def test_the_url_must_be_set(self):
        settings = Settings(home=Path(tempfile.gettempdir()), values={"pulse_source": "node_exporter"})
        with self.assertRaisesRegex(KiriError, "^pulse: pulse_source is node_exporter but node_exporter_url is not set$"):
            read(SPEC, settings, None)

    def test_unknown_source_names_all_three(self):
        settings = Settings(home=Path(tempfile.gettempdir()), values={"pulse_source": "snmp"})
        with self.assertRaisesRegex(KiriError, "must be system, mikrotik or node_exporter, got 'snmp'"):
            read(SPEC, settings, None)


class CommandLineTest(FakeExporterTestCase):
    """`kiri pulse collect` as a user runs it: a real subprocess, its own KIRI_HOME."""

    def setUp(self):
        super().setUp()
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.home = Path(tmp.name) / "home"

    def collect_with(self, url):
        env = {"KIRI_PULSE_SOURCE": "node_exporter", "KIRI_NODE_EXPORTER_URL": url, "HOME": str(self.home.parent)}
        return run_kiri("pulse", "collect", home=self.home, env=env, timeout=60)

    def stored(self):
        if not (self.home / "kiri.db").exists():
            return []
        with Store(self.home / "kiri.db") as store:
            return store.observations("pulse")

    def test_normal_path(self):
        proc = self.collect_with(self.url)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("1/1 | C=25% M=1% D=22% S=0% L=0.54 N=1", proc.stdout)
        [observation] = self.stored()
        self.assertEqual(observation["source"], "node_exporter")
        self.assertEqual(observation["values"], reading(SAMPLE))

    def test_bad_input_is_one_line_and_nothing_is_stored(self):
        port = free_port()
        cases = [(f"http://127.0.0.1:{port}", [], f"node_exporter: connection refused by 127.0.0.1:{port}"),
                 (self.url + "/nothing", [serving(b"404 page not found\n", 404)], "node_exporter: HTTP 404 from"),
                 (self.url, [serving(b"garbage, not metrics\n")], "sent no Prometheus metrics: line 1")]
        for url, answers, words in cases:
            with self.subTest(words=words):
                self.server.answers = answers or self.server.answers
                proc = self.collect_with(url)
                self.assertNotEqual(proc.returncode, 0)
                self.assertNotIn("Traceback", proc.stderr)
                self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
                self.assertIn(words, proc.stderr)
                self.assertEqual(self.stored(), [])


class RealNodeExporterTest(unittest.TestCase):
    """The real prometheus-node-exporter (Debian's package) on a free loopback port."""

    def setUp(self):
        binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if not binary:
            self.skipTest("prometheus-node-exporter is not installed (Debian: apt-get install prometheus-node-exporter)")
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.log = self.tmp / "node_exporter.log"
        self.url = f"http://127.0.0.1:{free_port()}/metrics"
        # Its default collectors, as most run it, and the address info macOS needs (so that
        # N is read from both node_network_up and the addresses). Its own textfile folder, so
        # nothing of this machine's setup decides the test.
        with open(self.log, "wb") as log:
            self.exporter = subprocess.Popen(
                [binary, "--web.listen-address=" + self.url.split("/")[2], "--collector.netdev.address-info",
                 f"--collector.textfile.directory={self.tmp}"], stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop)
        self.wait_until_ready()

    def stop(self):
        if self.exporter.poll() is None:   # only the process this test started
            self.exporter.kill()
        self.exporter.wait(timeout=10)

    def wait_until_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exporter.poll() is not None:
                self.fail(f"node_exporter exited ({self.exporter.returncode}):\n{self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.fail(f"node_exporter did not answer within {timeout} s:\n{self.log.read_text()[-2000:]}")

    def test_kiri_pulse_collect_reads_it(self):
        home = self.tmp / "home"
        env = {"KIRI_PULSE_SOURCE": "node_exporter", "KIRI_NODE_EXPORTER_URL": self.url, "HOME": str(self.tmp)}
        proc = run_kiri("pulse", "collect", home=home, env=env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with Store(home / "kiri.db") as store:
            [observation] = store.observations("pulse")
        values = observation["values"]
        self.assertEqual(observation["source"], "node_exporter")
        for key in "CMDS":
            self.assertTrue(0 <= values[key] <= 100, (key, values))
        self.assertGreaterEqual(values["L"], 0)
        self.assertIn(values["N"], (0, 1))
        if os.path.isdir("/proc/self") and os.uname().sysname == "Linux":
            # It watches this machine: memory and disk as the system source reads them here.
            here = linux.read(interval=0.05)
            self.assertLess(abs(values["M"] - here["M"]), 10, (values, here))
            self.assertLess(abs(values["D"] - here["D"]), 2, (values, here))


if __name__ == "__main__":
    unittest.main()
