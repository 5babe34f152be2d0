"""Rhythm's data sources: how long the user has been idle, and how many commits they made.

The parsers are pure functions of a command's text (tested on recorded outputs);
idle_seconds(), count_commits() and read() run the commands through an injectable
`run(argv) -> stdout`, and take the clock as a function, so tests never wait.
"""
import functools
import os
import re
import shutil
import sys
import time

from kiri.atoms.sources import CollectorError, run_command as _run_command
from kiri.ground import platform_name

# Absolute path: a LaunchAgent starts with PATH=/usr/bin:/bin:/usr/sbin:/sbin.
IOREG = "/usr/sbin/ioreg"

NOT_AVAILABLE = "rhythm: idle time is not available on this system (no xprintidle, no loginctl session)"


# ----------------------------------------------------------------------------
# Running commands

# The default `run`: the shared runner, its messages starting "rhythm:".
run_command = functools.partial(_run_command, source="rhythm")


# ----------------------------------------------------------------------------
# Idle time on macOS: ioreg -c IOHIDSystem

def parse_ioreg_idle(text):
    """Seconds since the last keyboard/mouse input, from `ioreg -c IOHIDSystem` output.

    The line is `"HIDIdleTime" = 4500000000`, in nanoseconds. Several IOHIDSystem entries
    can appear, and any input resets only the one it went through, so the smallest is
    the time since the last input of any kind.
    """
    values = re.findall(r'"HIDIdleTime"\s*=\s*([0-9]+)', text)
    if not values:
        raise CollectorError("rhythm: ioreg output has no HIDIdleTime (no IOHIDSystem on this Mac?)")
    return min(int(v) for v in values) / 1e9


# ----------------------------------------------------------------------------
# Idle time on Linux: xprintidle (X11), else logind

def parse_xprintidle(text):
    """Seconds idle from `xprintidle` output, which is one number of milliseconds."""
    value = text.strip()
    if not value.isdigit():
        raise CollectorError(f"rhythm: xprintidle did not print milliseconds: {value[:40]!r}")
    return int(value) / 1000.0


def _properties(text):
    """{name: value} from `loginctl show-*` output, one `Name=value` per line."""
    values = {}
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals:
            values[name.strip()] = value.strip()
    return values


def parse_display_session(text):
    """The id of the user's primary session from `loginctl show-user <uid> -p Display`, or None.

    Why this and not $XDG_SESSION_ID or `loginctl list-sessions`: a daemon run by
    systemd or cron has no XDG_SESSION_ID; list-sessions changed its columns in
    systemd 256 and now also lists the user's "manager" session, which never goes
    idle. Display is logind's own choice of the user's main session (graphical
    first, else a text one); it is missing or empty when nobody is logged in.
    """
    session = _properties(text).get("Display", "")
    return session or None


def parse_loginctl_idle(text, now):
    """Seconds idle from `loginctl show-session <id> -p IdleHint -p IdleSinceHint`, or None.

    IdleHint=no is 0 s idle. IdleHint=yes is now - IdleSinceHint (microseconds since
    the epoch); None when the session says it is idle but not since when.
    Note that desktops set the hint only after their own idle delay (GNOME: 5 min),
    and text sessions stay "no" unless logind's IdleAction is set, so this is coarser
    than xprintidle or ioreg.
    """
    values = _properties(text)
    hint = values.get("IdleHint")
    if hint == "no":
        return 0.0
    if hint != "yes":
        raise CollectorError(f"rhythm: loginctl output has no IdleHint=yes/no: {text.strip()[:60]!r}")
    since = values.get("IdleSinceHint", "")
    if not since.isdigit():
        raise CollectorError(f"rhythm: loginctl IdleSinceHint is not a timestamp: {since[:40]!r}")
    if int(since) == 0:
        return None
    # The hint comes from another clock reading; never report negative idle time.
    return max(0.0, now - int(since) / 1e6)


def loginctl_idle(run, now, uid):
    """Seconds idle of the user's primary logind session, or None if logind cannot tell."""
    session = parse_display_session(run(["loginctl", "show-user", str(uid), "-p", "Display"]))
    if session is None:
        return None
    text = run(["loginctl", "show-session", session, "-p", "IdleHint", "-p", "IdleSinceHint"])
    return parse_loginctl_idle(text, now)


def idle_seconds(platform=sys.platform, run=run_command, env=os.environ, now=time.time, which=shutil.which):
    """Seconds since the user last touched keyboard or mouse, on this machine.

    macOS asks IOKit through ioreg. Linux asks the X server (xprintidle) when there
    is a display, else logind. `which` finds commands; it is injectable like `run`.
    """
    platform = platform_name(platform)
    if platform == "macos":
        return parse_ioreg_idle(run([IOREG, "-c", "IOHIDSystem"]))
    if platform != "linux":
        raise CollectorError(f"rhythm: idle time is not available on this platform ({platform})")

    # xprintidle is exact to the millisecond but needs an X display. Under Wayland it
    # only sees input to X (XWayland) windows, hence logind as the fallback.
    xprintidle = which("xprintidle") if env.get("DISPLAY") else None
    if xprintidle:
        try:
            return parse_xprintidle(run([xprintidle]))
        except CollectorError:
            pass  # e.g. the X server refused the connection: logind may still know
    try:
        seconds = loginctl_idle(run, now(), os.getuid())
    except CollectorError:
        seconds = None  # no loginctl, no logind (containers), or the user is not logged in
    if seconds is None:
        raise CollectorError(NOT_AVAILABLE)
    return seconds


# ----------------------------------------------------------------------------
# Commits: git rev-list

def count_commits(repos, since_seconds, run=run_command, now=time.time):
    """Total commits made in the last `since_seconds` seconds across the git repositories `repos`.

    Counts commits on every local branch (not only the one checked out), by committer
    date; `--branches` also makes a fresh repository without commits count 0 rather
    than fail. rev-list --count prints one number, whatever the user's log format config.
    """
    since = int(now() - since_seconds)
    total = 0
    for repo in repos:
        path = os.path.expanduser(repo)
        if not os.path.isdir(path):
            raise CollectorError(f"rhythm: git repository not found: {repo}")
        # "@<unix time>" is git's unambiguous form; a bare number could be read as a date.
        out = run(["git", "-C", path, "rev-list", "--count", f"--since=@{since}", "--branches"])
        if not out.strip().isdigit():
            raise CollectorError(f"rhythm: git rev-list in {repo} did not print a count: {out.strip()[:40]!r}")
        total += int(out)
    return total


# ----------------------------------------------------------------------------
# Derived values

def activity_percent(idle_s, interval_s):
    """Share of the last interval with input activity: 100 % if just active, 0 % if idle all along."""
    if interval_s <= 0:
        raise ValueError(f"interval must be positive, got {interval_s}")
    idle_part = min(max(idle_s, 0.0), interval_s) / interval_s
    return min(100.0, max(0.0, 100.0 * (1.0 - idle_part)))


def focus_minutes(previous_focus_min, idle_s, interval_s, break_s=300):
    """Length of the current focus block in minutes: a pause of break_s or more ends it."""
    if idle_s >= break_s:
        return 0.0
    return previous_focus_min + interval_s / 60.0


# ----------------------------------------------------------------------------
# Reading the machine

def read(previous=None, interval_s=300, repos=(), now=time.time, idle=idle_seconds, run=run_command):
    """One rhythm reading: {"I", "A", "H", "W", "F", "G"} (see the keys below).

    `previous` is the previous rhythm reading (or None); only its "F" is used, to
    extend the focus block. The caller should pass None after a long gap (the machine
    slept), since the block cannot have lasted through it.
    """
    t = now()
    idle_s = idle()
    local = time.localtime(t)
    previous_focus = (previous or {}).get("F") or 0.0
    return {
        "I": idle_s / 60.0,                                   # idle minutes
        "A": activity_percent(idle_s, interval_s),            # % of the interval with input
        "H": local.tm_hour + local.tm_min / 60.0 + local.tm_sec / 3600.0,  # local hour, 0-24
        "W": local.tm_wday,                                   # 0 = Monday .. 6 = Sunday
        "F": focus_minutes(previous_focus, idle_s, interval_s),
        "G": count_commits(repos, interval_s, run=run, now=lambda: t),
    }
