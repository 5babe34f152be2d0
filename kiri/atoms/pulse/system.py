"""Pulse from the machine KIRI runs on: pick the Linux or macOS source once."""
import sys

from kiri.atoms.pulse import linux, macos
from kiri.atoms.sources import CollectorError
from kiri.ground import PLATFORM, platform_name


def source_for(platform):
    """The read() function for a sys.platform value, or None if KIRI has none."""
    return {"linux": linux.read, "macos": macos.read}.get(platform_name(platform))


_read = source_for(PLATFORM)


def collect(disk_path=None):
    """One pulse reading of this machine: {"C", "M", "D", "S", "L", "N"} as raw numbers.

    `disk_path` picks the volume D measures (default: / on Linux, the data volume on macOS).
    """
    if _read is None:
        raise CollectorError(f"pulse: no system source for platform {sys.platform}")
    return _read(disk_path=disk_path) if disk_path else _read()
