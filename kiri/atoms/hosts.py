"""Machines KIRI is not installed on, watched from here: each host a Pulse of its own.

    [host:nas]
    source = node_exporter                  # or mikrotik
    url = http://nas.local:9100/metrics
    interval = 60                           # seconds between its readings (default: pulse_interval)
    steps = 2000                            # training steps (default: Pulse's 2000)
    disk = /volume1                         # node_exporter: the volume D measures (default /)

    [host:router]
    source = mikrotik
    url = https://192.168.88.1
    user = kiri
    password = …                            # a secret: the config file must be chmod 600
    verify = yes                            # and cafile = /path/to/ca.pem, as mikrotik_* in [kiri]

A host is the atom `pulse_<name>` (in lower case, `-` and `.` as `_`): Pulse's language
with its own model, lifecycle (cold → learning → watching), scores and alerts, labelled
with the host's name wherever KIRI names a machine. Its reading touches nothing but the
network (module.REMOTE), so the daemon reads many hosts at once.
"""

import dataclasses
import re
from types import SimpleNamespace

from ..errors import KiriError
from ..ground import http_url_problem
from . import HOST_PREFIX
from .custom import INTERVAL_MAX, STEPS_MAX
from .pulse import schema as pulse
from .sources import CollectorError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")   # the atom name stays under the store's 64
SOURCES = ("node_exporter", "mikrotik")
KEYS = {"node_exporter": {"source", "url", "interval", "steps", "disk"},
        "mikrotik": {"source", "url", "interval", "steps", "user", "password", "verify", "cafile"}}
SECRET_KEYS = ("password",)


def atom_name(host):
    """The atom that watches `host`: pulse_<host>, in lower case (its weights file's name must
    not depend on whether the file system tells case apart), with '-' and '.' as '_'."""
    return HOST_PREFIX + re.sub(r"[.-]", "_", host).lower()


def atoms_of(hosts):
    """{atom name: host name} for the [host:NAME] sections ({host name: section})."""
    return {atom_name(host): host for host in hosts}


def make_module(host, section, default_interval):
    """An atom module (SPEC, read, synthetic, HOST, REMOTE) for one [host:NAME] section."""
    if not NAME.match(host):
        raise KiriError(f"host name {host!r} must be 1 to 40 letters, digits, '.', '-' or '_', "
                        "starting with a letter or digit")
    source = section.get("source", "").strip()
    if source not in SOURCES:
        raise KiriError(f"host {host}: source must be {' or '.join(SOURCES)}, got {source!r}")
    unknown = sorted(set(section) - KEYS[source])
    if unknown:
        raise KiriError(f"host {host}: unknown key {unknown[0]!r} for a {source} source")
    url = section.get("url", "").strip()
    problem = http_url_problem(url) if url else "is missing"
    if problem:   # never quoted: an address may hold a token or a password
        raise KiriError(f"host {host}: url {problem}")
    try:
        interval = float(section.get("interval", default_interval))
    except ValueError:
        raise KiriError(f"host {host}: interval must be a number of seconds") from None
    if not 0 < interval <= INTERVAL_MAX:
        raise KiriError(f"host {host}: interval must be greater than 0 and at most {INTERVAL_MAX} seconds")
    try:
        steps = int(section.get("steps", pulse.SPEC.steps))
    except ValueError:
        raise KiriError(f"host {host}: steps must be a whole number") from None
    if not 1 <= steps <= STEPS_MAX:
        raise KiriError(f"host {host}: steps must be from 1 to {STEPS_MAX}")
    verify = section.get("verify", "yes").strip().lower()
    if verify not in ("yes", "no"):
        raise KiriError(f"host {host}: verify must be yes or no")
    if verify == "no" and section.get("cafile", "").strip():
        raise KiriError(f"host {host}: cafile and verify = no contradict each other: drop one")
    read = _node_exporter(url, section.get("disk", "").strip() or None) if source == "node_exporter" else \
        _mikrotik(url, section.get("user", ""), section.get("password", ""), section.get("cafile", "").strip() or None,
                  verify == "yes")
    spec = dataclasses.replace(pulse.SPEC, name=atom_name(host), interval=interval, steps=steps)

    def read_host(spec, settings, store):
        try:
            return read(spec, settings, store)
        except CollectorError as e:   # which of many hosts could not be read
            raise CollectorError(f"host {host}: {e}") from None
    return SimpleNamespace(SPEC=spec, read=read_host, synthetic=pulse.synthetic, HOST=host, REMOTE=True)


def _node_exporter(url, disk):
    def read(spec, settings, store):
        from .pulse import node_exporter
        return node_exporter.collect(url, disk_path=disk), "node_exporter"
    return read


def _mikrotik(url, user, password, cafile, verify):
    def read(spec, settings, store):
        from .pulse import mikrotik
        return mikrotik.collect(url, user, password, cafile=cafile, verify=verify), "mikrotik"
    return read
