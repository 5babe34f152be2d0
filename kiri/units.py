"""Unit files that keep `python -m kiri daemon` running: launchd, systemd --user, cron.

`kiri daemon install --launchd|--systemd|--cron [--print]` is a thin layer over
`install()`; the three writers return text and touch nothing, so they can be read,
tested and printed. The facts behind each choice come from the man pages launchd.plist(5),
systemd.service(5), systemd.exec(5), systemd.syntax(7) and crontab(5).

What every unit gets, and why:
- an absolute python (launchd has no shell and no PATH search worth the name; cron's
  PATH is /usr/bin:/bin), and `-m kiri daemon` (cron: `daemon --once`, cron is the loop);
- KIRI_HOME, so the daemon, the CLI and the unit agree on where the data is;
- PYTHONPATH=<the clone> when KIRI runs from a source checkout rather than a pip install;
- never a secret. An environment variable whose name holds TOKEN, PASSWORD, SECRET, …
  is left out: unit files are world-readable (0644) and systemd even publishes a unit's
  Environment= over D-Bus (systemd.exec(5)). Secrets belong in KIRI_HOME/config.ini,
  chmod 600, which the daemon reads itself. Each writer names (never shows) what it left
  out, in a comment in the unit and in the next command `install()` returns.
"""

import os
import plistlib
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import NamedTuple, Optional

from .errors import KiriError
from .ground import atomic_write, default_home as _kiri_home
from .paths import REPO

LABEL = "com.kiri.daemon"
SYSTEMD_UNIT = "kiri.service"
KINDS = ("launchd", "systemd", "cron")
THROTTLE_SECONDS = 30      # launchd ThrottleInterval and systemd RestartSec: a daemon that
                           # dies at start (bad config) retries twice a minute, not every 10 s
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
CRON_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
SECRET_MARKERS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "API_KEY", "PRIVATE_KEY")
MODE = 0o644

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")   # a newline would end the unit's line (or cron's entry)
_AUTO = object()


class UnitError(KiriError, ValueError):
    """A value that cannot go into a unit file (bad kind, relative path, newline, …)."""


class Installed(NamedTuple):
    path: Optional[Path]    # the file written; None for cron and for print_only
    text: str               # the unit, plist or crontab line
    next_command: str       # what the user runs next (shell; `#` lines are explanations)


# -- shared pieces ---------------------------------------------------------------------

def split_env(env):
    """(kept, left_out): the variables safe to write, and the names of the secrets dropped."""
    kept, left_out = {}, []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(str(name)):
            raise UnitError(f"not an environment variable name: {name!r}")
        if any(marker in name.upper() for marker in SECRET_MARKERS):
            left_out.append(name)
        else:
            kept[name] = str(value)
    return kept, sorted(left_out)


def source_checkout(repo=REPO):
    """The clone KIRI runs from (needs PYTHONPATH), or None when it is pip-installed."""
    repo = Path(repo)
    return repo if (repo / "pyproject.toml").is_file() and (repo / "kiri" / "__init__.py").is_file() else None


def resolve_home(home=None, user_home=None):
    """The KIRI_HOME a unit gets, absolute: home if given, else $KIRI_HOME, else <user home>/.kiri."""
    if not home and user_home and not os.environ.get("KIRI_HOME"):
        home = Path(user_home) / ".kiri"
    return _absolute(home or _kiri_home(), "home")


def resolve_python(python=None):
    """An absolute interpreter path (a venv's symlink is kept, not resolved: it selects the venv)."""
    python = str(python or sys.executable)
    if not python:
        raise UnitError("no python interpreter given and sys.executable is empty")
    if os.sep not in python and not python.startswith("~"):
        found = shutil.which(python)
        if not found:
            raise UnitError(f"python interpreter not found on PATH: {python}")
        python = found
    return _absolute(python, "python")


def _absolute(path, what):
    text = os.path.abspath(os.path.expanduser(str(path)))
    if _CONTROL.search(text):
        raise UnitError(f"{what} path holds a control character (newline?): {text!r}")
    return text


def _settings(python, home, workdir, pythonpath, user_home):
    """Resolve the shared arguments: (python, home, workdir, pythonpath or None)."""
    python = resolve_python(python)
    home = resolve_home(home, user_home)
    if pythonpath is _AUTO:
        pythonpath = source_checkout()
    pythonpath = _absolute(pythonpath, "PYTHONPATH") if pythonpath else None
    # From a clone, run there (`-m kiri` finds the package even without PYTHONPATH);
    # installed, run in KIRI_HOME, which exists once the daemon has run.
    workdir = _absolute(workdir, "working directory") if workdir else (pythonpath or home)
    return python, home, workdir, pythonpath


def _environment(python, home, pythonpath, env, path=None, unbuffered=True):
    """The variables a unit sets, in a stable order, and the secret names left out."""
    kept, left_out = split_env(env)
    for name, value in kept.items():
        if _CONTROL.search(value):
            raise UnitError(f"environment variable {name} holds a control character (newline?)")
    out = {}
    if path:  # for a runner whose own PATH is too bare: the interpreter's directory, then path
        first = os.path.dirname(python)   # never empty: python is an absolute path
        out["PATH"] = ":".join([first] + [p for p in path.split(":") if p != first])
    if pythonpath:
        out["PYTHONPATH"] = pythonpath
    if unbuffered:
        out["PYTHONUNBUFFERED"] = "1"     # log lines reach the log file / journal as they happen
    out.update(kept)
    out["KIRI_HOME"] = home               # the home argument wins over an env KIRI_HOME
    return out, left_out


def _left_out_note(left_out):
    return "left out (secrets; keep them in KIRI_HOME/config.ini, chmod 600): " + ", ".join(left_out)


# -- launchd ---------------------------------------------------------------------------

def launchd_plist(label=LABEL, python=None, home=None, workdir=None, env=None, pythonpath=_AUTO,
                  user_home=None):
    """The LaunchAgent plist (bytes, XML) that keeps `python -m kiri daemon` alive.

    KeepAlive true with RunAtLoad: the daemon loops by itself, so launchd only starts it
    at login and relaunches it whenever it exits (never combined with StartInterval,
    which would relaunch it every ~10 s). Output is appended to KIRI_HOME/daemon.out and
    daemon.err; that directory must exist or the job fails with status 78 (install()
    creates it). Secret variables in `env` are left out and named in an XML comment.
    """
    if not isinstance(label, str) or not _LABEL.match(label):
        raise UnitError(f"launchd label must be letters, digits, '.', '_' or '-' (like {LABEL}), got {label!r}")
    python, home, workdir, pythonpath = _settings(python, home, workdir, pythonpath, user_home)
    # launchd's own PATH is /usr/bin:/bin:/usr/sbin:/sbin; add the interpreter's directory
    # and Homebrew's so the commands collectors run (git for Rhythm, …) are found.
    environment, left_out = _environment(python, home, pythonpath, env, path=LAUNCHD_PATH)
    plist = {
        "Label": label,
        "ProgramArguments": [python, "-m", "kiri", "daemon"],
        "WorkingDirectory": workdir,
        "EnvironmentVariables": environment,
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": THROTTLE_SECONDS,
        "StandardOutPath": os.path.join(home, "daemon.out"),
        "StandardErrorPath": os.path.join(home, "daemon.err"),
        "ProcessType": "Background",
    }
    data = plistlib.dumps(plist, sort_keys=False)
    comment = "Written by kiri daemon install (launchd)."
    if left_out:
        comment += " " + _left_out_note(left_out) + "."
    # An XML comment may not hold "--"; names only ever match [A-Za-z0-9_], so it cannot.
    return data.replace(b"<plist ", f"<!-- {comment} -->\n<plist ".encode(), 1)


# -- systemd ---------------------------------------------------------------------------

def systemd_quote(word):
    """One ExecStart= word, quoted the systemd way (systemd.syntax(7), Quoting).

    `%` starts a specifier everywhere, so it is doubled; `$` is variable expansion in
    ExecStart=, so it is doubled too (not for Environment=, which keeps "$$" literally).
    Anything else unusual goes in double quotes with C escapes."""
    word = word.replace("%", "%%").replace("$", "$$")
    return word if _SYSTEMD_SAFE.match(word) else _systemd_quoted(word)


def _systemd_quoted(text):
    # In double quotes only `\` and `"` need a C escape: control characters were refused earlier.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(python=None, home=None, workdir=None, env=None, pythonpath=_AUTO, user_home=None):
    """The systemd --user service (text) that keeps `python -m kiri daemon` running.

    No After=/Wants=network-online.target: that is a system unit, and a --user manager
    cannot see it, so the ordering would silently do nothing (systemd issues #3312,
    #26305); the daemon copes with a network that is not up yet, as it must anyway.
    Output goes to the journal (`journalctl --user -u kiri.service`).
    """
    python, home, workdir, pythonpath = _settings(python, home, workdir, pythonpath, user_home)
    # The user manager's PATH is already a normal one; only cron and launchd need ours.
    environment, left_out = _environment(python, home, pythonpath, env)
    # WorkingDirectory= takes the rest of the line as the path: no quotes, so no edge spaces.
    if workdir != workdir.strip() or workdir.endswith("\\"):
        raise UnitError(f"systemd cannot hold a path with edge spaces or a trailing backslash: {workdir!r}")
    note = ["# " + _left_out_note(left_out)] if left_out else []
    # Environment= items are `"NAME=value"`, always quoted (a value may hold spaces or `=`),
    # `%` doubled and `$` left alone: Environment= does not expand it.
    assignments = ["Environment=" + _systemd_quoted(f"{k}={v}".replace("%", "%%")) for k, v in environment.items()]
    lines = [
        "# Written by `kiri daemon install --systemd`.",
        "# Start at boot without a login session: loginctl enable-linger \"$USER\"",
        *note,
        "[Unit]",
        "Description=KIRI monitor daemon (python -m kiri daemon)",
        "",
        "[Service]",
        "Type=simple",
        "WorkingDirectory=" + workdir.replace("%", "%%"),
        *assignments,
        "ExecStart=" + " ".join(systemd_quote(w) for w in (python, "-m", "kiri", "daemon")),
        # always: the monitor should run forever; an explicit `systemctl --user stop`
        # is still obeyed. RestartSec keeps a crash loop well inside StartLimitBurst.
        "Restart=always",
        f"RestartSec={THROTTLE_SECONDS}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


# -- cron ------------------------------------------------------------------------------

def cron_quote(word):
    """shlex.quote for a crontab command: cron turns a bare `%` into a newline, so `\\%`."""
    return shlex.quote(word).replace("%", "\\%")


def cron_line(python=None, home=None, workdir=None, every_minutes=5, env=None, pythonpath=_AUTO,
              user_home=None):
    """One crontab line: `kiri daemon --once` every N minutes, output appended to KIRI_HOME/cron.log.

    cron runs /bin/sh with PATH=/usr/bin:/bin and no profile, hence the absolute python
    and the explicit variables. N must be 1–59; one that does not divide 60 restarts its
    count every hour (*/7 fires at :56 and then :00). Secrets in `env` are left out.
    """
    if isinstance(every_minutes, bool) or not isinstance(every_minutes, int) or not 1 <= every_minutes <= 59:
        raise UnitError(f"every_minutes must be a whole number from 1 to 59, got {every_minutes!r}")
    python, home, workdir, pythonpath = _settings(python, home, workdir, pythonpath, user_home)
    environment, _ = _environment(python, home, pythonpath, env, path=CRON_PATH, unbuffered=False)
    minute = "*" if every_minutes == 1 else f"*/{every_minutes}"
    assignments = " ".join(f"{k}={cron_quote(v)}" for k, v in environment.items())
    log = os.path.join(home, "cron.log")
    return (f"{minute} * * * * cd {cron_quote(workdir)} && {assignments} "
            f"{cron_quote(python)} -m kiri daemon --once >> {cron_quote(log)} 2>&1")


# -- install ---------------------------------------------------------------------------

def install(kind, target_dir=None, print_only=False, uid=None, user_home=None, **kw):
    """Write the unit for `kind` ('launchd', 'systemd' or 'cron') and say what to run next.

    kw go to the writer (label, python, home, workdir, env, pythonpath, every_minutes).
    The file is written atomically, mode 0644, creating its directory and KIRI_HOME (launchd
    needs the log directory). cron is never written: its line is returned with the crontab
    command that adds it. print_only writes nothing. `uid` (default os.getuid()) goes into
    the launchctl domain.
    """
    if kind not in KINDS:
        raise UnitError(f"unknown unit kind {kind!r}: expected one of {', '.join(KINDS)}")
    # The CLI may pass every flag; drop those that belong to another kind of unit.
    if kind != "launchd":
        kw.pop("label", None)
    if kind != "cron":
        kw.pop("every_minutes", None)
    left_out = split_env(kw.get("env"))[1]
    home = resolve_home(kw.get("home"), user_home)   # the writer resolves the same home
    if kind == "cron":
        text = cron_line(user_home=user_home, **kw)
        path = None   # crontab keeps the line; only the user changes a crontab
        marker = " -m kiri daemon --once"
        steps = [
            f"mkdir -p {shlex.quote(home)}",
            "# replaces an earlier KIRI line, keeps every other one:",
            f"( crontab -l 2>/dev/null | grep -v -F -e {shlex.quote(marker)}; "
            f"printf '%s\\n' {shlex.quote(text)} ) | crontab -",
            "# or paste the line by hand with: crontab -e   (check with: crontab -l)",
        ]
    elif kind == "launchd":
        label = kw.get("label", LABEL)
        text = launchd_plist(user_home=user_home, **kw).decode("utf-8")
        default_dir = Path(user_home or Path.home()) / "Library" / "LaunchAgents"
        path = Path(target_dir or default_dir) / f"{label}.plist"
        domain = f"gui/{os.getuid() if uid is None else int(uid)}"
        # bootstrap fails while the job is loaded, so a reinstall boots it out first.
        steps = [
            f"launchctl bootout {domain}/{label} 2>/dev/null; "
            f"launchctl bootstrap {domain} {shlex.quote(str(path))}",
            f"# check: launchctl print {domain}/{label}   logs: {shlex.quote(os.path.join(home, 'daemon.err'))}",
        ]
    else:
        text = systemd_unit(user_home=user_home, **kw)
        default_dir = Path(user_home or Path.home()) / ".config" / "systemd" / "user"
        path = Path(target_dir or default_dir) / SYSTEMD_UNIT
        steps = [
            "systemctl --user daemon-reload && systemctl --user enable --now kiri.service",
            "# keep it running after logout and start it at boot: loginctl enable-linger \"$USER\"",
            "# logs: journalctl --user -u kiri.service",
        ]
    if left_out:
        steps.append("# " + _left_out_note(left_out))
    command = "\n".join(steps)
    if print_only or path is None:
        return Installed(None, text, command)
    os.makedirs(home, mode=0o700, exist_ok=True)
    atomic_write(path, text, MODE)  # launchd and systemd read it as the user anyway
    return Installed(path, text, command)
