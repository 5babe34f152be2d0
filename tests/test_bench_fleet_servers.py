"""The fake node_exporter fleet of the fleet benchmark: every host answers a page the real
client (kiri.atoms.pulse.node_exporter) reads, the hosts differ and move with time, other
paths are 404, a host set down is 503 alone, and the ports close with the with-block."""
import socket
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from kiri.atoms.pulse import node_exporter
from kiri.atoms.sources import CollectorError
from kiri.bench.fleet_servers import PAGE, FakeFleet
from kiri.paths import shipped


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8")


def cpu_counters(url):
    scrape = node_exporter.Scrape(node_exporter.parse(get(url)), url)
    return node_exporter.cpu_seconds(scrape)


def port_of(url):
    return urllib.parse.urlsplit(url).port


class FleetTest(unittest.TestCase):
    def setUp(self):
        self.fleet = FakeFleet(hosts=3, seed=1).__enter__()
        self.addCleanup(self.fleet.__exit__, None, None, None)

    def test_every_host_gives_a_valid_reading(self):
        self.assertEqual(len(self.fleet.urls), 3)
        self.assertEqual(len({port_of(url) for url in self.fleet.urls}), 3)
        for url in self.fleet.urls:
            self.assertTrue(url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url)
            reading = node_exporter.collect(url, window=0.2)
            self.assertEqual(set(reading), {"C", "M", "D", "S", "L", "N"})
            for key in ("C", "M", "D"):
                self.assertTrue(0 <= reading[key] <= 100, (key, reading))
            self.assertGreaterEqual(reading["L"], 0)
            self.assertEqual(reading["N"], 1)
        self.assertGreaterEqual(self.fleet.requests, 6)   # two scrapes per reading

    def test_hosts_differ(self):
        readings = [node_exporter.collect(url, window=0.2) for url in self.fleet.urls]
        self.assertGreater(len({(round(r["C"], 3), round(r["M"], 3)) for r in readings}), 1, readings)
        self.assertEqual(len({round(r["M"], 6) for r in readings}), 3, readings)

    def test_cpu_counters_never_go_back(self):
        url = self.fleet.urls[0]
        first = cpu_counters(url)
        time.sleep(0.3)
        second = cpu_counters(url)
        self.assertEqual(first.keys(), second.keys())
        for key in first:
            self.assertGreaterEqual(second[key], first[key], key)
        self.assertGreater(sum(second.values()), sum(first.values()))
        # Two CPUs, so the counters advance about twice the wall time between the scrapes.
        self.assertLess(sum(second.values()) - sum(first.values()), 10)

    def test_only_the_varied_lines_change(self):
        recorded = shipped("data", PAGE).read_text(encoding="utf-8").split("\n")
        served = get(self.fleet.urls[1]).split("\n")
        self.assertEqual(len(served), len(recorded))
        changed = {line.split(" ")[0] for line, old in zip(served, recorded) if line != old}
        for series in changed:
            self.assertTrue(series.startswith(("node_cpu_seconds_total{", "node_memory_MemAvailable_bytes",
                                               "node_load1", "node_filesystem_free_bytes{",
                                               "node_filesystem_avail_bytes{")), series)
            if series.startswith("node_filesystem_"):
                self.assertIn('mountpoint="/"}', series)

    def test_other_paths_are_404(self):
        base = self.fleet.urls[0][:-len("/metrics")]
        for path in ("/", "/other", "/metrics/x"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                get(base + path)
            caught.exception.close()
            self.assertEqual(caught.exception.code, 404, path)

    def test_a_host_set_down_answers_503_alone(self):
        self.fleet.set_down(1, True)
        with self.assertRaises(CollectorError) as caught:
            node_exporter.collect(self.fleet.urls[1], window=0.05)
        self.assertIn("HTTP 503", str(caught.exception))
        for url in (self.fleet.urls[0], self.fleet.urls[2]):
            node_exporter.collect(url, window=0.05)
        self.fleet.set_down(1, False)
        node_exporter.collect(self.fleet.urls[1], window=0.05)

    def test_the_same_seed_gives_the_same_hosts(self):
        with FakeFleet(hosts=3, seed=1) as again, FakeFleet(hosts=3, seed=2) as other:
            memory = [[node_exporter.collect(url, window=0.05)["D"] for url in fleet.urls]
                      for fleet in (self.fleet, again, other)]
        self.assertEqual(memory[0], memory[1])
        self.assertNotEqual(memory[0], memory[2])


class LifecycleTest(unittest.TestCase):
    def test_ports_close_after_the_block(self):
        with FakeFleet(hosts=3) as fleet:
            urls = list(fleet.urls)
            get(urls[0])
        for url in urls:
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port_of(url)), timeout=2).close()

    def test_a_hundred_hosts(self):
        with FakeFleet(hosts=100, seed=3) as fleet:
            self.assertEqual(len(set(fleet.urls)), 100)
            with ThreadPoolExecutor(max_workers=20) as pool:
                readings = list(pool.map(lambda url: node_exporter.collect(url, window=0.05), fleet.urls))
            self.assertEqual(len(readings), 100)
            self.assertGreater(len({round(reading["M"], 6) for reading in readings}), 50)
            self.assertEqual(fleet.requests, 200)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port_of(fleet.urls[-1])), timeout=2).close()

    def test_hosts_must_be_one_or_more(self):
        for hosts in (0, -1, 2.5, "3"):
            with self.assertRaises(ValueError):
                FakeFleet(hosts=hosts)


if __name__ == "__main__":
    unittest.main()
