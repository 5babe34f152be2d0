"""Pulse on Linux: read /proc and /sys, turn the text into numbers.

The parsers are pure functions of the text so they can be tested on recorded
outputs; read() is the only code here that touches the machine.
"""
import os
import time

from kiri.atoms.sources import CollectorError


# ----------------------------------------------------------------------------
# CPU: /proc/stat

def parse_proc_stat(text):
    """The counters of the aggregate `cpu` line of /proc/stat, as a list of ints.

    Order: user nice system idle iowait irq softirq steal guest guest_nice;
    older kernels print fewer columns, so the list may be shorter (at least 4).
    """
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                counters = [int(field) for field in fields[1:]]
            except ValueError:
                raise CollectorError(f"pulse: /proc/stat cpu line is not numbers: {line.strip()!r}") from None
            if len(counters) < 4:
                raise CollectorError(f"pulse: /proc/stat cpu line has {len(counters)} fields, expected at least 4")
            return counters
    raise CollectorError("pulse: /proc/stat has no 'cpu' line")


def _total_and_idle(counters):
    # guest and guest_nice (fields 9, 10) are already counted in user and nice,
    # so the total stops at steal; iowait is time the CPU had nothing to run.
    total = sum(counters[:8])
    idle = counters[3] + (counters[4] if len(counters) > 4 else 0)
    return total, idle


def cpu_percent(before, after):
    """Busy CPU % between two parse_proc_stat() readings (one reading alone is a since-boot average)."""
    total_before, idle_before = _total_and_idle(before)
    total_after, idle_after = _total_and_idle(after)
    elapsed = total_after - total_before
    if elapsed <= 0:
        # Both reads fell in the same clock tick, or the counters went back: no data.
        raise CollectorError("pulse: /proc/stat CPU counters did not advance between the two samples")
    idle = idle_after - idle_before
    busy = 100.0 * (1.0 - idle / elapsed)
    # iowait may decrease (proc_stat(5)), which can push the ratio slightly out of range.
    return min(100.0, max(0.0, busy))


# ----------------------------------------------------------------------------
# Memory and swap: /proc/meminfo

def _meminfo_values(text):
    values = {}
    for line in text.splitlines():
        key, colon, rest = line.partition(":")
        fields = rest.split()
        if colon and fields:
            try:
                values[key.strip()] = int(fields[0])
            except ValueError:
                pass  # not a field we use; a garbled one we need is caught below
    return values


def parse_meminfo(text):
    """(memory_used_percent, swap_used_percent) from the text of /proc/meminfo."""
    kib = _meminfo_values(text)
    total = kib.get("MemTotal", 0)
    if total <= 0:
        raise CollectorError("pulse: /proc/meminfo has no usable MemTotal")
    if "MemAvailable" in kib:
        available = kib["MemAvailable"]
    else:
        # Kernels before 3.14 have no MemAvailable; this is the usual estimate.
        missing = [key for key in ("MemFree", "Buffers", "Cached") if key not in kib]
        if missing:
            raise CollectorError(f"pulse: /proc/meminfo lacks MemAvailable and {', '.join(missing)}")
        available = kib["MemFree"] + kib["Buffers"] + kib["Cached"] + kib.get("SReclaimable", 0)
    memory = 100.0 * (total - available) / total

    swap_total = kib.get("SwapTotal", 0)
    swap_free = kib.get("SwapFree", 0)
    # No swap configured is a normal machine, not an error: 0 % used.
    swap = 100.0 * (swap_total - swap_free) / swap_total if swap_total > 0 else 0.0
    return min(100.0, max(0.0, memory)), min(100.0, max(0.0, swap))


# ----------------------------------------------------------------------------
# Load: /proc/loadavg

def parse_loadavg(text):
    """The 1-minute load average from the text of /proc/loadavg."""
    fields = text.split()
    try:
        return float(fields[0])
    except (IndexError, ValueError):
        raise CollectorError(f"pulse: /proc/loadavg is not a load average: {text.strip()[:40]!r}") from None


# ----------------------------------------------------------------------------
# Disk: os.statvfs

def disk_percent(stat):
    """Used % of a filesystem from an os.statvfs() result, the way df computes it.

    used / (used + available to users): the blocks reserved for root count neither
    as used nor as available, so a disk at 100 % is full for ordinary processes.
    """
    block = stat.f_frsize or stat.f_bsize
    used = (stat.f_blocks - stat.f_bfree) * block
    available = stat.f_bavail * block
    if used + available <= 0:
        raise CollectorError("pulse: the filesystem reports no blocks (is it a pseudo filesystem?)")
    return 100.0 * used / (used + available)


# ----------------------------------------------------------------------------
# Network: /sys/class/net/*/operstate

def network_up(operstates):
    """1 if any non-loopback interface has operstate 'up', else 0.

    operstates maps interface name -> operstate text. Only 'up' counts (as in
    node_exporter's node_network_up); loopback reports 'unknown' anyway.
    Note: a bridge or veth being up also counts, so does a container's eth0.
    """
    for name, state in operstates.items():
        if name != "lo" and state.strip() == "up":
            return 1
    return 0


# ----------------------------------------------------------------------------
# Reading the machine

def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as error:
        raise CollectorError(f"pulse: cannot read {path}: {error.strerror or error}") from None


def read_operstates(net_dir="/sys/class/net"):
    """Interface name -> operstate, for every interface under net_dir."""
    try:
        names = sorted(os.listdir(net_dir))
    except OSError as error:
        raise CollectorError(f"pulse: cannot list {net_dir}: {error.strerror or error}") from None
    operstates = {}
    for name in names:
        try:
            with open(os.path.join(net_dir, name, "operstate")) as f:
                operstates[name] = f.read().strip()
        except OSError:
            pass  # the interface vanished between listing and reading
    return operstates


def read(disk_path="/", interval=0.2, sleep=time.sleep, proc_dir="/proc", net_dir="/sys/class/net"):
    """One pulse reading of this Linux machine: {"C", "M", "D", "S", "L", "N"}.

    CPU needs two /proc/stat samples `interval` seconds apart; `sleep` is
    injectable so tests need not wait, and the directories so tests can use a fake tree.
    """
    stat_path = os.path.join(proc_dir, "stat")
    before = parse_proc_stat(_read_text(stat_path))
    sleep(interval)
    after = parse_proc_stat(_read_text(stat_path))

    memory, swap = parse_meminfo(_read_text(os.path.join(proc_dir, "meminfo")))
    load = parse_loadavg(_read_text(os.path.join(proc_dir, "loadavg")))
    try:
        disk = disk_percent(os.statvfs(disk_path))
    except OSError as error:
        raise CollectorError(f"pulse: cannot read disk usage of {disk_path}: {error.strerror or error}") from None

    return {
        "C": cpu_percent(before, after),
        "M": memory,
        "D": disk,
        "S": swap,
        "L": load,
        "N": network_up(read_operstates(net_dir)),
    }
