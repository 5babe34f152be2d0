"""Pulse on macOS: run the system's own commands, turn their text into numbers.

There is no /proc on macOS, so every value comes from a command's output. The
parsers are pure functions of that text (tested on recorded outputs); read() runs
the commands through an injectable `run(argv) -> stdout`.
"""
import functools
import os
import re

from kiri.atoms.sources import CollectorError, run_command as _run_command

# Absolute paths: a LaunchAgent starts with PATH=/usr/bin:/bin:/usr/sbin:/sbin.
VM_STAT = "/usr/bin/vm_stat"
SYSCTL = "/usr/sbin/sysctl"
TOP = "/usr/bin/top"
DF = "/bin/df"
IFCONFIG = "/sbin/ifconfig"

# On APFS `/` is the sealed system snapshot (a few GB used, whatever the user
# stores); user data lives on this volume, so that is the one that fills up.
DATA_VOLUME = "/System/Volumes/Data"

# A number as printed under any locale: "1.28" or "1,28".
_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"


def _number(text):
    return float(text.replace(",", "."))


def _clamp(percent):
    return min(100.0, max(0.0, percent))


# ----------------------------------------------------------------------------
# Memory: vm_stat + sysctl hw.memsize

def parse_vm_stat(text):
    """(page_size, {label: pages}) from `vm_stat` output; unknown labels are kept, not checked."""
    header = re.search(r"page size of ([0-9]+) bytes", text)
    if not header:
        raise CollectorError("pulse: vm_stat output has no 'page size of N bytes' header")
    pages = {}
    for line in text.splitlines():
        label, colon, value = line.rpartition(":")
        value = value.strip().rstrip(".")
        if colon and value.isdigit():
            pages[label.strip().strip('"')] = int(value)
    return int(header.group(1)), pages


def parse_memsize(text):
    """Physical memory in bytes from `sysctl -n hw.memsize` (or `sysctl hw.memsize`)."""
    value = text.rpartition(":")[2].strip()
    if not value.isdigit() or int(value) == 0:
        raise CollectorError(f"pulse: sysctl hw.memsize is not a byte count: {text.strip()[:40]!r}")
    return int(value)


def memory_percent(vm_stat_text, memsize):
    """Memory used %, from `vm_stat` output and hw.memsize in bytes."""
    page_size, pages = parse_vm_stat(vm_stat_text)
    needed = ("Anonymous pages", "Pages purgeable", "Pages wired down", "Pages occupied by compressor")
    missing = [label for label in needed if label not in pages]
    if missing:
        raise CollectorError(f"pulse: vm_stat output lacks {', '.join(repr(label) for label in missing)}")
    # Activity Monitor's "Memory Used" (app + wired + compressed): leaves file cache out, as Linux MemAvailable does.
    app = pages["Anonymous pages"] - pages["Pages purgeable"]
    used = app + pages["Pages wired down"] + pages["Pages occupied by compressor"]
    return _clamp(100.0 * used * page_size / memsize)


# ----------------------------------------------------------------------------
# Swap and load: sysctl vm.swapusage, vm.loadavg

_SWAP_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_swapusage(text):
    """Swap used % from `sysctl vm.swapusage`, e.g. 'total = 2048.00M  used = 1017.50M  free = ...'."""
    sizes = {}
    for name, number, unit in re.findall(r"(total|used)\s*=\s*(" + _NUMBER + r")([KMG])", text):
        sizes[name] = _number(number) * _SWAP_UNITS[unit]
    if "total" not in sizes or "used" not in sizes:
        raise CollectorError(f"pulse: sysctl vm.swapusage has no total/used: {text.strip()[:60]!r}")
    # macOS grows swap on demand; total 0 just means nothing is swapped out.
    if sizes["total"] == 0:
        return 0.0
    return _clamp(100.0 * sizes["used"] / sizes["total"])


def parse_loadavg(text):
    """The 1-minute load average from `sysctl -n vm.loadavg`, e.g. '{ 1.28 1.18 1.13 }'."""
    match = re.search(r"\{\s*(" + _NUMBER + r")", text)
    if not match:
        raise CollectorError(f"pulse: sysctl vm.loadavg is not a load average: {text.strip()[:40]!r}")
    return _number(match.group(1))


# ----------------------------------------------------------------------------
# CPU: top -l 2

def parse_top_cpu(text):
    """Busy CPU % (100 - idle) from the LAST 'CPU usage:' line of `top -l 2` output.

    The first sample top prints is not a current reading (all zeros, or a
    since-boot average), so an output with a single sample is refused.
    """
    cpu_lines = [line for line in text.splitlines() if line.startswith("CPU usage:")]
    if len(cpu_lines) < 2:
        raise CollectorError(f"pulse: top printed {len(cpu_lines)} 'CPU usage' line(s), need 2 (run it with -l 2)")
    idle = re.search(r"(" + _NUMBER + r")% idle", cpu_lines[-1])
    if not idle:
        raise CollectorError(f"pulse: top CPU line has no idle %: {cpu_lines[-1].strip()!r}")
    return _clamp(100.0 - _number(idle.group(1)))


# ----------------------------------------------------------------------------
# Disk: df

def parse_df(text):
    """Used % of the first filesystem in `df` output: Used / (Used + Available), as df's Capacity.

    Works with 512- or 1024-blocks and with or without the inode columns.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Filesystem"):
        raise CollectorError("pulse: df output has no 'Filesystem' header and data line")
    fields = lines[1].split()
    # The device name may contain spaces, so find the blocks/used/available run of numbers.
    for i in range(1, len(fields) - 2):
        if fields[i].isdigit() and fields[i + 1].isdigit() and fields[i + 2].isdigit():
            used, available = int(fields[i + 1]), int(fields[i + 2])
            break
    else:
        raise CollectorError(f"pulse: df line has no block counts: {lines[1].strip()!r}")
    if used + available == 0:
        raise CollectorError("pulse: df reports an empty filesystem")
    return 100.0 * used / (used + available)


# ----------------------------------------------------------------------------
# Network: ifconfig -a

def _interfaces(text):
    """Yield (header line, [indented lines]) for each interface in `ifconfig -a` output."""
    header, body = None, []
    for line in text.splitlines():
        if line and not line[0].isspace() and ": flags=" in line:
            if header is not None:
                yield header, body
            header, body = line, []
        elif header is not None:
            body.append(line.strip())
    if header is not None:
        yield header, body


def routable_address(line):
    """Whether an `inet`/`inet6` line of ifconfig holds an address beyond the local link.

    Link-local addresses do not count: fe80:: is on every IPv6 interface, and 169.254.x.x
    is what macOS assigns itself when no DHCP server answers, so neither means a network.
    """
    words = line.split()
    if len(words) < 2 or words[0] not in ("inet", "inet6"):
        return False
    return not words[1].lower().startswith("fe80") and not words[1].startswith("169.254.")


def network_up(ifconfig_text):
    """1 if some non-loopback interface is up, has link and a routable address, else 0.

    'status: active' alone is not enough: awdl0 (AirDrop) reports it with only a
    link-local fe80:: address even when the Mac is on no network, and an Ethernet port
    whose DHCP went unanswered is active with only a self-assigned 169.254.x.x.
    """
    seen = 0
    for header, body in _interfaces(ifconfig_text):
        seen += 1
        flags = set(re.search(r"<([^>]*)>", header).group(1).split(",")) if "<" in header else set()
        has_link = "status: active" in body
        has_address = any(routable_address(line) for line in body)
        if {"UP", "RUNNING"} <= flags and "LOOPBACK" not in flags and has_link and has_address:
            return 1
    if seen == 0:
        # lo0 is always there, so an output without interfaces is not ifconfig's.
        raise CollectorError("pulse: ifconfig output lists no interfaces")
    return 0


# ----------------------------------------------------------------------------
# Reading the machine

# The default `run`: the shared runner, its messages starting "pulse:".
run_command = functools.partial(_run_command, source="pulse")


def read(run=run_command, disk_path=None):
    """One pulse reading of this Mac: {"C", "M", "D", "S", "L", "N"}.

    `run(argv) -> stdout` is injectable so tests can feed recorded outputs.
    disk_path defaults to the APFS data volume (or `/` before macOS 10.15).
    """
    if disk_path is None:
        disk_path = DATA_VOLUME if os.path.isdir(DATA_VOLUME) else "/"
    memsize = parse_memsize(run([SYSCTL, "-n", "hw.memsize"]))
    return {
        # Two samples one second apart; only the second is a current reading.
        "C": parse_top_cpu(run([TOP, "-l", "2", "-n", "0", "-s", "1"])),
        "M": memory_percent(run([VM_STAT]), memsize),
        "D": parse_df(run([DF, "-P", "-k", disk_path])),
        "S": parse_swapusage(run([SYSCTL, "vm.swapusage"])),
        "L": parse_loadavg(run([SYSCTL, "-n", "vm.loadavg"])),
        "N": network_up(run([IFCONFIG, "-a"])),
    }
