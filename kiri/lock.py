"""One daemon per KIRI home, and whether it is alive.

`kiri daemon` and `kiri daemon --once` hold an OS lock, flock(2) on KIRI_HOME/daemon.lock,
for their whole run. The kernel lets it go the moment the process ends, however it ends
(SIGTERM, SIGKILL, a crash), so no leftover file can keep a new daemon from starting.
The holder writes its PID, mode and start time into the file. Only the lock says whether
a daemon runs: a file left by a killed daemon names a PID that may belong to another
program by now, so a PID is read, and signalled, only while its lock is held.

Whether the daemon is alive, from the lock and what it stores each cycle (daemon.py):
- running: the lock is held;
- stopped: the lock is free and the last run ended cleanly (a stop is recorded after the
  last heartbeat, or that heartbeat came from --once, which ends right after it);
- stale: the lock is free, but the last heartbeat came from a daemon that never recorded
  its stop: it was killed or it crashed;
- never: nothing stored yet.
"""

import json
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple, Optional

from .daemon import HEARTBEAT_KEY, LAST_CYCLE_KEY, STOPPED_KEY
from .errors import KiriError
from .ground import is_finite_number

try:
    import fcntl
except ImportError:   # Windows: no flock; every command that needs the lock says so in one line
    fcntl = None

LOCK_FILE = "daemon.lock"
MODES = ("forever", "once")
# A reader (`kiri status`) takes the lock shared for an instant to see whether it is free;
# a daemon that starts in that instant tries again for this long before giving up.
RETRY_SECONDS, RETRY_EVERY = 0.2, 0.02


class Holder(NamedTuple):
    """Who holds the lock, as the holder wrote it (None where the file did not say)."""
    pid: Optional[int]
    mode: Optional[str]
    started: Optional[float]


def lock_path(home):
    return Path(home) / LOCK_FILE


def _require_fcntl():
    if fcntl is None:
        raise KiriError("one daemon per home needs flock(2), which this platform does not have "
                        "(kiri daemon runs on Linux and macOS)")


# -- taking the lock -------------------------------------------------------------------

class DaemonLock:
    """`with DaemonLock(home, "forever"):` — this process is the one daemon of `home` until the block ends.

    Entering raises KiriError naming the holder when another process has it."""

    def __init__(self, home, mode):
        self.home, self.mode, self.fd = Path(home), mode, None

    def __enter__(self):
        _require_fcntl()
        path = lock_path(self.home)
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)   # as private as open_store makes it
            # Not inherited (PEP 446): a collector's child process cannot keep the lock alive.
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
        except FileExistsError:   # only mkdir raises it: something that is not a folder is there
            raise KiriError(f"KIRI home {self.home} is not a folder") from None
        except OSError as e:
            raise KiriError(f"cannot open {path}: {e.strerror}") from None
        if not _lock_exclusive(fd):
            other = parse_holder(os.read(fd, 4096))
            os.close(fd)
            raise KiriError(f"another kiri daemon ({describe_holder(other)}) holds {self.home}; "
                            "stop it with kiri daemon stop")
        # Ours now: replace the last holder's lines with ours.
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "mode": self.mode, "started": time.time()}).encode() + b"\n")
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.close(self.fd)   # closing the last descriptor releases the lock
        self.fd = None


def _lock_exclusive(fd):
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(RETRY_EVERY)


# -- reading it ------------------------------------------------------------------------

def holder(home):
    """The Holder of `home`'s lock while a daemon holds it, else None."""
    _require_fcntl()
    path = lock_path(home)
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except FileNotFoundError:
        return None   # no daemon ever ran here
    except OSError as e:
        raise KiriError(f"cannot read {path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            # A holder writes its line right after taking the lock; read in between, the
            # file is empty (every field None) or, for microseconds, still names the last holder.
            return parse_holder(os.read(fd, 4096))
        return None   # we got it, so nobody holds it; closing gives it back
    finally:
        os.close(fd)


def parse_holder(data):
    """The Holder a lock file names; a field that is missing or malformed is None, never an error."""
    try:
        fields = json.loads(data.decode("utf-8"))
    except ValueError:   # empty, cut short, not UTF-8: the holder is just starting
        fields = None
    fields = fields if isinstance(fields, dict) else {}
    return Holder(_pid(fields.get("pid")), _mode(fields.get("mode")), _ts(fields.get("started")))


def parse_heartbeat(value):
    """The stored heartbeat as {"ts", "pid", "mode", "started"}, or None.

    An older KIRI stored only the time (a float): its pid, mode and start are None."""
    if is_finite_number(value):
        value = {"ts": value}
    if not isinstance(value, dict) or _ts(value.get("ts")) is None:
        return None
    return {"ts": value["ts"], "pid": _pid(value.get("pid")), "mode": _mode(value.get("mode")),
            "started": _ts(value.get("started"))}


def _pid(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _mode(value):
    return value if value in MODES else None


def _ts(value):
    return value if is_finite_number(value) else None


def describe_holder(h):
    """'PID 1234, running since 2024-05-01 12:00:03' (or as much of it as the lock file said)."""
    since = "" if h.started is None else time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(h.started))
    what = "daemon --once" if h.mode == "once" else "running"
    return f"PID {'unknown' if h.pid is None else h.pid}, {what}{since}"


# -- is it alive -----------------------------------------------------------------------

def daemon_status(home, store, now=None):
    """running / stopped / stale / never, with what is known about that run, as one JSON-able dict.

    pid, mode, started: the running daemon's (from its lock), else the last heartbeat's;
    uptime: the running daemon's; last_cycle_age and last_cycle_errors: the last finished cycle
    of that run (None and [] before its first); stopped_at: when the last run ended (stopped only)."""
    now = time.time() if now is None else now
    running = holder(home)
    beat = parse_heartbeat(store.get_kv(HEARTBEAT_KEY))
    stopped = store.get_kv(STOPPED_KEY)
    stop_ts = _ts(stopped.get("ts")) if isinstance(stopped, dict) else None
    if running is not None and beat is not None and beat["pid"] != running.pid:
        beat = None   # the heartbeat is an earlier run's: this one has not finished a cycle yet
    who = running._asdict() if running is not None else (beat or {})
    info = {"state": state_of(running, beat, stop_ts), "pid": who.get("pid"), "mode": who.get("mode"),
            "started": who.get("started"), "uptime": None, "last_cycle_age": None, "last_cycle_errors": [],
            "stopped_at": None}
    if running is not None and running.started is not None:
        info["uptime"] = now - running.started
    if beat is not None:
        info["last_cycle_age"] = now - beat["ts"]
        cycle = store.get_kv(LAST_CYCLE_KEY)   # written with the heartbeat, so it is that cycle's
        info["last_cycle_errors"] = (cycle.get("errors") if isinstance(cycle, dict) else None) or []
    if info["state"] == "stopped":
        info["stopped_at"] = max(t for t in (stop_ts, beat["ts"] if beat else None) if t is not None)
    return info


def state_of(running, beat, stop_ts):
    """The state from the lock's Holder (or None), the last heartbeat (or None) and the last stop's time."""
    if running is not None:
        return "running"
    if beat is None:
        return "never" if stop_ts is None else "stopped"
    # A --once run ends right after its heartbeat; a forever run records its stop when it ends.
    if beat["mode"] == "once" or (stop_ts is not None and stop_ts >= beat["ts"]):
        return "stopped"
    return "stale"


# -- stopping it -----------------------------------------------------------------------

def stop(home, wait=30.0, poll=0.1):
    """SIGTERM to the daemon holding `home`'s lock, then wait up to `wait` s for the lock to
    be free. Returns its Holder, or None when no daemon runs there."""
    running = holder(home)
    if running is None:
        return None
    if running.pid is None:
        raise KiriError(f"a kiri daemon holds {home} but has not written its PID yet; try again in a moment")
    try:
        os.kill(running.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass   # it ended between our look and our signal: what we wanted
    except PermissionError:
        raise KiriError(f"not allowed to signal PID {running.pid} (another user's daemon?)") from None
    deadline = time.monotonic() + wait
    while holder(home) is not None:
        if time.monotonic() >= deadline:
            raise KiriError(f"PID {running.pid} still holds {home} after {wait:g} s (it finishes its current "
                            f"stage first: try again with a longer --wait, or kill -9 {running.pid})")
        time.sleep(poll)
    return running
