"""Pulse from a Prometheus node_exporter on Linux or macOS, read over HTTP (urllib only).

node_exporter_url names its metrics page (http://nas.local:9100/metrics; a bare
http://nas.local:9100 gets /metrics added). The page is in the Prometheus text exposition
format 0.0.4, parsed here by a small strict parser that keeps only what Pulse reads:

    C  node_cpu_seconds_total, from two scrapes CPU_WINDOW seconds apart
    M  Linux: node_memory_MemTotal_bytes, MemAvailable_bytes
       macOS: node_memory_{total,internal,purgeable,wired,compressed}_bytes (node_exporter 1.4+)
    D  node_filesystem_{size,free,avail}_bytes of the volume holding / (macOS: the data volume)
    S  Linux: node_memory_SwapTotal_bytes, SwapFree_bytes; macOS: node_memory_swap_{total,used}_bytes
    L  node_load1
    N  node_network_up (Linux), node_network_address_info (--collector.netdev.address-info;
       the only network state node_exporter gives on macOS)

Every number is checked where it comes in: NaN, an infinity, a negative or impossible value
is an error naming the metric. An answer is read within a deadline and up to BODY_MAX bytes.
"""
import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from kiri.atoms.pulse.macos import DATA_VOLUME
from kiri.atoms.sources import CollectorError
from kiri.ground import connection_problem, http_url_problem, one_line, printable, read_capped

# A scrape is 50-300 KB on a usual machine: 8 MB is room for hundreds of CPUs, disks and
# textfile metrics, and bounds what a wrong server can make us hold.
BODY_MAX = 8 * 2 ** 20
BYTES_MAX = 2.0 ** 64
SECONDS_MAX = 1e12   # a CPU counter of 30,000 years is no counter
LOAD_MAX = 1e6

# CPU % is a rate of counters, so it takes two scrapes. Both are taken within one reading,
# CPU_WINDOW seconds apart, rather than one reading (5 minutes) apart with the last scrape
# kept in the store: the window is then the ~1 s the system sources measure (/proc/stat
# twice, `top -l 2`), so C means the same whichever source fed the model, and every reading
# stands alone: the first, a manual `kiri pulse collect`, one after the daemon stopped for a
# day, none skewed by a stale or reset counter. The cost: one more scrape per reading.
CPU_WINDOW = 1.0

IDLE_MODES = ("idle", "iowait")   # iowait is time a CPU had nothing to run, as in linux.py
LOOPBACK = ("lo", "lo0")
MISSING_HINT = "is this a node_exporter with its default collectors?"
ADDRESS_INFO_HINT = "start node_exporter with --collector.netdev.address-info (on macOS it has no other network state)"

LINUX_MEMORY = ("node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
                "node_memory_SwapTotal_bytes", "node_memory_SwapFree_bytes")
DARWIN_MEMORY = ("node_memory_total_bytes", "node_memory_internal_bytes", "node_memory_purgeable_bytes",
                 "node_memory_wired_bytes", "node_memory_compressed_bytes",
                 "node_memory_swap_total_bytes", "node_memory_swap_used_bytes")
WANTED = frozenset(("node_cpu_seconds_total", "node_load1", "node_filesystem_size_bytes",
                    "node_filesystem_free_bytes", "node_filesystem_avail_bytes",
                    "node_network_up", "node_network_address_info") + LINUX_MEMORY + DARWIN_MEMORY)


# ----------------------------------------------------------------------------
# The text exposition format 0.0.4

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABELS_START = re.compile(r"[ \t]*\{")
_LABELS_END = re.compile(r"[ \t]*\}")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|(?=\}))')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"\\": "\\", '"': '"', "n": "\n"}
# A value as exporters print it (Go's "2.5e+10", "NaN", "+Inf"), then an optional timestamp in ms.
# No part of a pattern here can match the same text in two ways: a long line takes linear time.
_VALUE = re.compile(r"[ \t]+([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:[+-]?inf(?:inity)?|nan))"
                    r"(?:[ \t]+-?[0-9]{1,19})?[ \t]*\Z")
_TYPE_LINE = re.compile(r"#[ \t]*TYPE(?:[ \t]|\Z)")
_TYPE = re.compile(r"#[ \t]*TYPE[ \t]+[a-zA-Z_:][a-zA-Z0-9_:]*[ \t]+(counter|gauge|histogram|summary|untyped)[ \t]*\Z")


def parse(text, names=WANTED):
    """{name: [(labels, value), ...]} for the families in `names`, from exposition text.

    Every line is checked, kept or not: one that is no comment, TYPE or sample line is a
    ValueError naming it, so an HTML page or a cut answer is never taken for metrics.
    """
    if not text.endswith("\n"):   # the format ends every line, the last too: this one was cut
        raise ValueError("the answer is empty" if not text else "the answer ends in the middle of a line")
    families = {}
    for number, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            _check_comment(line, number)
        elif line:
            name, labels, value = _sample(line, number)
            if name in names:
                families.setdefault(name, []).append((labels, value))
    return families


def _check_comment(line, number):
    """A comment (a HELP line too) may say anything; a TYPE line must name a family and a type."""
    if _TYPE_LINE.match(line) and not _TYPE.match(line):
        raise _bad_line(line, number, "is a malformed TYPE line")


def _sample(line, number):
    """(name, labels, value) of a sample line: name{label="value",...} value [timestamp]."""
    name = _NAME.match(line)
    if not name:
        raise _bad_line(line, number, "is not a sample")
    labels, position = {}, name.end()
    start = _LABELS_START.match(line, position)
    if start:
        labels, position = _labels(line, start.end(), number)
    value = _VALUE.match(line, position)
    if not value:
        raise _bad_line(line, number, "has no valid value")
    return name.group(), labels, float(value.group(1))


def _labels(line, position, number):
    """The labels of a sample line from just after its '{', and the position after its '}'."""
    labels = {}
    while True:
        end = _LABELS_END.match(line, position)
        if end:
            return labels, end.end()
        label = _LABEL.match(line, position)
        if not label:
            raise _bad_line(line, number, "has malformed labels")
        if label.group(1) in labels:
            raise _bad_line(line, number, f"repeats the label {label.group(1)}")
        labels[label.group(1)] = _unescape(label.group(2), line, number)
        position = label.end()


def _unescape(text, line, number):
    """A label value with its escapes undone: only \\\\, \\" and \\n are escapes."""
    try:
        return _ESCAPE.sub(lambda escape: _ESCAPED[escape.group(1)], text)
    except KeyError:
        raise _bad_line(line, number, "has a label value with an unknown escape") from None


def _bad_line(line, number, what):
    return ValueError(f"line {number} {what}: {printable(line, 80)}")


# ----------------------------------------------------------------------------
# From the samples to the pulse dict

class Scrape:
    """The samples Pulse reads from one answer, and where the answer came from (for messages)."""

    def __init__(self, families, where):
        self.families = families
        self.where = where

    def has(self, name):
        return name in self.families

    def samples(self, name, hint=MISSING_HINT):
        """[(labels, value), ...] of the family `name`; its absence is a CollectorError."""
        if name not in self.families:
            raise CollectorError(f"node_exporter: {name} missing from {self.where}: {hint}")
        return self.families[name]

    def value(self, name, low, high, labels=None, hint=MISSING_HINT):
        """The value of the first sample of `name` that carries `labels`, checked to lie from low to high."""
        labels = labels or {}
        for sample_labels, value in self.samples(name, hint):
            if labels.items() <= sample_labels.items():
                return self.checked(value, name, low, high)
        series = name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"
        raise CollectorError(f"node_exporter: {printable(series, 120)} missing from {self.where}")

    def checked(self, value, name, low, high):
        """`value` if it lies from low to high (NaN lies nowhere), else a CollectorError naming `name`."""
        if not low <= value <= high:
            raise CollectorError(f"node_exporter: {name} of {self.where} is {value!r}, "
                                 f"not a number from {low:.15g} to {high:.15g}")
        return value


def on_macos(scrape):
    """Whether the scrape has macOS's metric names (node_exporter names memory differently there)."""
    return not scrape.has("node_memory_MemTotal_bytes") and scrape.has("node_memory_total_bytes")


def cpu_seconds(scrape):
    """{(cpu, mode): seconds} of node_cpu_seconds_total."""
    return {(labels.get("cpu"), labels.get("mode")): scrape.checked(value, "node_cpu_seconds_total", 0, SECONDS_MAX)
            for labels, value in scrape.samples("node_cpu_seconds_total")}


def cpu_percent(before, after):
    """Busy CPU % of all CPUs between two scrapes: 1 - idle time / all time, as linux.py."""
    first, second = cpu_seconds(before), cpu_seconds(after)
    common = first.keys() & second.keys()   # a CPU taken offline between the scrapes is left out
    elapsed = sum(second[key] - first[key] for key in common)
    idle = sum(second[key] - first[key] for key in common if key[1] in IDLE_MODES)
    if elapsed <= 0:
        raise CollectorError(f"node_exporter: node_cpu_seconds_total did not advance between two scrapes "
                             f"of {after.where}")
    # node_exporter smooths small backward jumps of idle, which can still push this out of range.
    return min(100.0, max(0.0, 100.0 * (1.0 - idle / elapsed)))


def memory_percent(scrape):
    """Memory used %: Linux's MemTotal - MemAvailable, macOS's Activity Monitor "Memory Used" as macos.py."""
    if on_macos(scrape):
        newer = "macOS needs node_exporter 1.4 or later"
        total = scrape.value("node_memory_total_bytes", 1, BYTES_MAX)
        anonymous = scrape.value("node_memory_internal_bytes", 0, total, hint=newer)
        app = anonymous - scrape.value("node_memory_purgeable_bytes", 0, anonymous, hint=newer)
        used = (app + scrape.value("node_memory_wired_bytes", 0, total)
                + scrape.value("node_memory_compressed_bytes", 0, total))
        return min(100.0, 100.0 * used / total)
    total = scrape.value("node_memory_MemTotal_bytes", 1, BYTES_MAX)
    available = scrape.value("node_memory_MemAvailable_bytes", 0, total)
    return 100.0 * (total - available) / total


def swap_percent(scrape):
    """Swap used %; no swap at all (a total of 0) is 0 %, a normal machine."""
    if on_macos(scrape):
        total = scrape.value("node_memory_swap_total_bytes", 0, BYTES_MAX)
        used = scrape.value("node_memory_swap_used_bytes", 0, total)
    else:
        total = scrape.value("node_memory_SwapTotal_bytes", 0, BYTES_MAX)
        used = total - scrape.value("node_memory_SwapFree_bytes", 0, total)
    return 100.0 * used / total if total > 0 else 0.0


def volume_of(path, mountpoints):
    """The mountpoint whose volume holds `path`: the longest one that is `path` or a folder above it."""
    holding = [mountpoint for mountpoint in mountpoints
               if path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")]
    return max(holding, key=len) if holding else None


def disk_percent(scrape, path=None):
    """Used % of the volume holding `path` (default / or, on macOS, the data volume), as df: used / (used + avail)."""
    path = path or (DATA_VOLUME if on_macos(scrape) else "/")
    mountpoints = [labels.get("mountpoint", "") for labels, _ in scrape.samples("node_filesystem_size_bytes")]
    mountpoint = volume_of(path, mountpoints)
    if mountpoint is None:
        raise CollectorError(f"node_exporter: no filesystem of {scrape.where} holds {printable(path, 80)} "
                             f"(it lists {one_line(', '.join(sorted(set(mountpoints))) or 'none', 120)})")
    volume = {"mountpoint": mountpoint}
    size = scrape.value("node_filesystem_size_bytes", 0, BYTES_MAX, volume)
    used = size - scrape.value("node_filesystem_free_bytes", 0, size, volume)
    available = scrape.value("node_filesystem_avail_bytes", 0, size, volume)
    if used + available <= 0:
        raise CollectorError(f"node_exporter: the filesystem at {printable(mountpoint, 80)} of {scrape.where} "
                             "reports no space (is it a pseudo filesystem?)")
    return 100.0 * used / (used + available)


def network_up(scrape):
    """1 if a non-loopback interface is up and has an address beyond the local link, else 0.

    Up is node_network_up (operstate 'up'), as in linux.py. A link-local address (fe80::,
    169.254.x.x) alone is no network, as in macos.py, but node_exporter tells addresses only
    with --collector.netdev.address-info: when it does, an interface needs a "global" one too.
    """
    has_state, has_addresses = scrape.has("node_network_up"), scrape.has("node_network_address_info")
    if not has_state and not has_addresses:
        raise CollectorError(f"node_exporter: node_network_up missing from {scrape.where}: {ADDRESS_INFO_HINT}")
    up = {labels.get("device") for labels, value in scrape.families.get("node_network_up", ()) if value == 1}
    routable = {labels.get("device") for labels, value in scrape.families.get("node_network_address_info", ())
                if labels.get("scope") == "global" and value == 1}
    # With one family only, the other's set is empty and the union is that family's.
    devices = up & routable if has_state and has_addresses else up | routable
    return 1 if devices - set(LOOPBACK) else 0


def pulse_from(before, after, disk_path=None):
    """The pulse dict from two Scrapes of one node_exporter, CPU_WINDOW seconds apart."""
    return {
        "C": cpu_percent(before, after),
        "M": memory_percent(after),
        "D": disk_percent(after, disk_path),
        "S": swap_percent(after),
        "L": after.value("node_load1", 0, LOAD_MAX),
        "N": network_up(after),
    }


# ----------------------------------------------------------------------------
# HTTP

def metrics_url(url):
    """`url`, with /metrics added when it names no page (Prometheus' own default path)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path="/metrics").geturl() if parts.path in ("", "/") else url


def page_of(url):
    """`url` as messages show it: without the query, which may hold a token."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def fetch(url, timeout):
    """The body of GET `url`, read within `timeout` seconds in all and up to BODY_MAX bytes."""
    host = urllib.parse.urlsplit(url).netloc
    # 0.0.4 is the format parsed here; an exporter that also speaks OpenMetrics would answer that if asked.
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return read_capped(response, BODY_MAX, deadline)
    except urllib.error.HTTPError as error:
        with error:   # it holds the open connection
            raise CollectorError(f"node_exporter: HTTP {error.code} from {page_of(url)}: {one_line(error.reason, 100)}") from None
    except (OSError, http.client.HTTPException) as error:
        # No connection (a URLError, with the cause in .reason), a timeout or reset while
        # reading, the deadline passed or the answer over BODY_MAX (read_capped).
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise CollectorError("node_exporter: " + one_line(connection_problem(reason, host, timeout))) from None
    except ValueError as error:   # an address urllib cannot use after all, e.g. a host name too long
        raise CollectorError(f"node_exporter: cannot make a request to {host}: {one_line(error)}") from None


def scrape(url, timeout):
    """One answer of the node_exporter at `url`, parsed: a Scrape."""
    where = page_of(url)
    try:
        return Scrape(parse(fetch(url, timeout).decode("utf-8")), where)
    except UnicodeDecodeError:
        raise CollectorError(f"node_exporter: the answer of {where} is not UTF-8 text") from None
    except ValueError as error:
        raise CollectorError(f"node_exporter: {where} sent no Prometheus metrics: {error}") from None


def collect(url, disk_path=None, timeout=10, window=CPU_WINDOW, sleep=time.sleep):
    """One pulse reading of the machine whose node_exporter answers at `url`.

    `disk_path` picks the volume D measures, as pulse_disk does for this machine; `sleep`
    is injectable so tests need not wait.
    """
    problem = http_url_problem(url) if isinstance(url, str) else "must be text"
    if problem:
        raise CollectorError("node_exporter: the address (node_exporter_url) " + problem)
    url = metrics_url(url)
    before = scrape(url, timeout)
    sleep(window)
    return pulse_from(before, scrape(url, timeout), disk_path)
