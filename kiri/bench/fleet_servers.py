"""A fleet of fake Prometheus node_exporters on 127.0.0.1, for the fleet benchmark and its tests.

    with FakeFleet(hosts=100, seed=1) as fleet:
        for url in fleet.urls:                       # http://127.0.0.1:PORT/metrics, host order
            node_exporter.collect(url)
        fleet.set_down(7, True)                      # host 7 now answers 503
        print(fleet.requests)                        # GETs answered so far, all hosts

Each host is its own ThreadingHTTPServer (its own port and serving thread), so a scrape of
one host is what a scrape of a machine on the network is, without the network. Each answers
GET /metrics with a recorded node_exporter 1.5.0 page (data/node_exporter-1.5.0.metrics,
Linux, 2 CPUs), but with the series Pulse reads made to differ per host and to move with
time, so the hosts look like different, living machines:

    node_cpu_seconds_total        advances with wall time at the host's busy fraction (5-60 %)
    node_memory_MemAvailable_bytes  the host's own level of used memory, with a little noise
    node_load1                    follows the host's CPU use
    node_filesystem_{free,avail}_bytes of /   the host's own fill level

Everything else is served as recorded. Any other path answers 404, a host set down 503.
The page is parsed once per fleet; a host keeps only a few numbers, so 100 hosts are cheap.
"""

import http.server
import random
import re
import socketserver
import threading
import time

from ..paths import shipped

PAGE = "node_exporter-1.5.0.metrics"   # shipped in data/ (paths.shipped): the page every host serves
POLL_INTERVAL = 0.1   # how often an idle server checks for shutdown; all are stopped at once

# How a CPU's busy and idle time split into modes; each adds up to 1, so every CPU's counters
# together advance exactly by the wall time, as on a real machine. Other modes stay as recorded.
BUSY_SHARES = {"user": 0.70, "system": 0.25, "softirq": 0.05}
IDLE_SHARES = {"idle": 0.98, "iowait": 0.02}   # the client counts iowait as idle too

CPU_NOISE = 0.03      # spread of a CPU's busy fraction around its host's, per request
MEMORY_NOISE = 0.01   # spread of the used-memory fraction, per request
LOAD_NOISE = 0.05
PAGE_SIZE = 4096      # memory and disk are counted in pages and blocks

_CPU_LINE = re.compile(r'node_cpu_seconds_total\{cpu="([^"]*)",mode="([^"]*)"\} (\S+)\Z')
# The other series a host varies, by how their line starts; the disk ones only for /.
_SERIES = {"node_memory_MemAvailable_bytes ": "available", "node_memory_MemTotal_bytes ": "total",
           "node_load1 ": "load", "node_filesystem_size_bytes{": "size",
           "node_filesystem_free_bytes{": "free", "node_filesystem_avail_bytes{": "avail"}
_ROOT = 'mountpoint="/"}'


class FakeFleet:
    """`hosts` fake node_exporters, host i's levels drawn from random.Random(f"{seed}:{i}"),
    so one seed gives the same fleet on every run. Start them with `with`."""

    def __init__(self, hosts=100, seed=1):
        if not isinstance(hosts, int) or hosts < 1:
            raise ValueError(f"hosts must be a whole number of at least 1, not {hosts!r}")
        self.hosts = hosts
        self.seed = seed
        self.requests = 0          # GETs answered, whatever their status
        self.urls = []
        self._lock = threading.Lock()   # guards requests, the noise source and every host's counters
        self._noise = random.Random(f"{seed}:noise")
        self._page = _Page(shipped("data", PAGE).read_text(encoding="utf-8"))
        self._hosts = []
        self._servers = []
        self._threads = []

    # -- lifecycle --------------------------------------------------------------

    def __enter__(self):
        try:
            for index in range(self.hosts):
                host = _Host(self._page, random.Random(f"{self.seed}:{index}"))
                server = _HostServer(("127.0.0.1", 0), _Handler)
                server.fleet, server.host = self, host
                thread = threading.Thread(target=server.serve_forever, name=f"fake-node-exporter-{index}",
                                          kwargs={"poll_interval": POLL_INTERVAL}, daemon=True)
                self._hosts.append(host)
                self._servers.append(server)
                self._threads.append(thread)
                thread.start()
                self.urls.append("http://127.0.0.1:%d/metrics" % server.server_address[1])
        except BaseException:
            self.close()   # a host that failed to start must not leave the others running
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop every host and close its port; safe to call twice."""
        # shutdown() waits up to a poll interval for its server's loop to notice: calling it
        # for all servers at once keeps closing 100 hosts as quick as closing one.
        stoppers = [threading.Thread(target=server.shutdown, daemon=True)
                    for server, thread in zip(self._servers, self._threads) if thread.is_alive()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=5)
        for server in self._servers:
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=2)
        self._servers, self._threads = [], []

    # -- scripting --------------------------------------------------------------

    def set_down(self, index, down=True):
        """Make host `index` answer 503 to every scrape (down=False: serve it again)."""
        self._hosts[index].down = down

    # -- serving ----------------------------------------------------------------

    def answer(self, host, path):
        """(status, body) for a GET of `path` on `host`."""
        with self._lock:
            self.requests += 1
        if path.split("?")[0] != "/metrics":
            return 404, b"404 page not found\n"   # what node_exporter says
        if host.down:
            return 503, b"this host is down\n"
        with self._lock:   # only the state change is locked; the page is built outside
            values = host.advance(time.monotonic(), self._noise)
        return 200, self._page.render(values).encode("utf-8")


class _Page:
    """The recorded page as lines, and where the lines are that vary from host to host."""

    def __init__(self, text):
        self.lines = text.rstrip("\n").split("\n")
        self.cpus = []   # (line index, cpu, mode, recorded seconds)
        self.index = {}  # the line index of each single varying series
        self.recorded = {}
        for number, line in enumerate(self.lines):
            cpu = _CPU_LINE.match(line)
            if cpu:
                self.cpus.append((number, cpu.group(1), cpu.group(2), float(cpu.group(3))))
                continue
            key = next((key for prefix, key in _SERIES.items() if line.startswith(prefix)), None)
            if key in ("size", "free", "avail") and _ROOT not in line:
                key = None   # another filesystem: served as recorded
            if key:
                self.index[key] = number
                self.recorded[key] = float(line.rsplit(" ", 1)[1])
        missing = set(_SERIES.values()) - self.index.keys()
        if missing or not self.cpus:
            raise ValueError(f"{PAGE} lacks the series a fake host varies: {sorted(missing) or 'CPU'}")
        self.cpu_count = len({cpu for _, cpu, _, _ in self.cpus})

    def render(self, values):
        """The page text with `values` ({line index: text}) in place of the recorded values."""
        lines = list(self.lines)
        for number, value in values.items():
            lines[number] = lines[number].rsplit(" ", 1)[0] + " " + value
        return "\n".join(lines) + "\n"   # the format ends every line, the last too


class _Host:
    """One fake machine: its own levels, drawn once from its seed, and its CPU counters."""
    __slots__ = ("page", "busy", "queue", "used", "free", "avail", "counters", "last", "down")

    def __init__(self, page, draw):
        self.page = page
        self.busy = draw.uniform(0.05, 0.60)    # fraction of CPU time busy
        self.queue = draw.uniform(0.8, 1.5)     # load per busy CPU: how much waits to run
        self.used = draw.uniform(0.15, 0.85)    # fraction of memory in use
        # A fuller root disk than recorded, by up to a quarter of its free space; avail keeps
        # its recorded share of free (the root-reserved blocks), so avail <= free <= size.
        fill = draw.uniform(0.75, 1.0)
        self.free = _pages(page.recorded["free"] * fill)
        self.avail = min(self.free, _pages(page.recorded["avail"] * fill))
        # As if the machine had been up for a while at its busy fraction, so counters differ too.
        uptime = draw.uniform(3600, 30 * 86400)
        self.counters = [seconds + uptime * _share(mode, self.busy) for _, _, mode, seconds in page.cpus]
        self.last = time.monotonic()
        self.down = False

    def advance(self, now, noise):
        """{line index: value text} of this host at `now`; moves its CPU counters on. Call locked."""
        elapsed = max(0.0, now - self.last)   # never backwards: the counters only grow
        self.last = now
        busy = {}
        for position, (number, cpu, mode, _) in enumerate(self.page.cpus):
            if cpu not in busy:   # one busy fraction per CPU per request, all its modes from it
                busy[cpu] = min(1.0, max(0.0, noise.gauss(self.busy, CPU_NOISE)))
            self.counters[position] += elapsed * _share(mode, busy[cpu])
        total = self.page.recorded["total"]
        used = min(1.0, max(0.0, noise.gauss(self.used, MEMORY_NOISE)))
        load = sum(busy.values()) * self.queue + noise.gauss(0.0, LOAD_NOISE)
        index = self.page.index
        values = {number: repr(seconds) for (number, _, _, _), seconds in zip(self.page.cpus, self.counters)}
        values[index["available"]] = "%d" % min(total, _pages(total * (1.0 - used)))
        values[index["load"]] = "%.2f" % max(0.0, load)
        values[index["free"]] = "%d" % self.free
        values[index["avail"]] = "%d" % self.avail
        return values


def _share(mode, busy):
    """The part of a CPU's time that `mode` gets when the CPU is `busy` (0 to 1) of the time."""
    if mode in BUSY_SHARES:
        return busy * BUSY_SHARES[mode]
    return (1.0 - busy) * IDLE_SHARES.get(mode, 0.0)


def _pages(count):
    """`count` bytes rounded down to whole pages, never below 0."""
    return max(0, int(count) // PAGE_SIZE * PAGE_SIZE)


class _HostServer(http.server.ThreadingHTTPServer):
    daemon_threads = True   # a client that hangs mid-request never holds up close()

    def server_bind(self):
        # HTTPServer.server_bind looks up the host's name (socket.getfqdn), which can wait on
        # DNS; a fake on 127.0.0.1 needs no name, and 100 lookups would slow the start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass   # a client that timed out and hung up is expected in a benchmark


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = self.server.fleet.answer(self.server.host, self.path)
        self.send_response(status)
        # The version tells a client the page is exposition format 0.0.4, as node_exporter does.
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8" if status == 200
                         else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass   # a line per scrape would drown the benchmark's own output


def serve(hosts, seed, out=None, wait=None):
    """Serve a fleet until `wait()` returns (default: until stdin closes), after printing its
    URLs on `out` as one JSON list. `kiri bench fleet` runs this in a child process, so the CPU
    the fake machines spend answering is not counted as KIRI's."""
    import json
    import sys
    out = out or sys.stdout
    with FakeFleet(hosts=hosts, seed=seed) as fleet:
        out.write(json.dumps(fleet.urls) + "\n")
        out.flush()
        (wait or sys.stdin.read)()


if __name__ == "__main__":
    import sys
    serve(int(sys.argv[1]), int(sys.argv[2]))
