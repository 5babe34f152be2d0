"""Unit files that keep `python -m kiri daemon` running: launchd, systemd --user, cron.

`kiri daemon install --launchd|--systemd|--cron [--print]` is a thin layer over
`install()`; the three writers return text and touch nothing, so they can be read,
tested and printed. Facts behind each choice are in ../shared/reference/
launchd-systemd-cron.md (launchd.plist(5), systemd 252 man pages, crontab(5)).

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
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

from .errors import KiriError
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
_AUTO = object()


class UnitError(KiriError, ValueError):
    """A value that cannot go into a unit file (bad kind, relative path, newline, …)."""


class Installed(NamedTuple):
    path: Optional[Path]    # the file written; None for cron and for print_only
    text: str               # the unit, plist or crontab line
    next_command: str       # what the user runs next (shell; `#` lines are explanations)


# -- shared pieces ---------------------------------------------------------------------

def is_secret(name):
    """True for an environment variable name that must never be written into a unit file."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def split_env(env):
    """(kept, left_out): the variables safe to write, and the names of the secrets dropped."""
    kept, left_out = {}, []
    for name, value in (env or {}).items():
        if not _ENV_NAME.match(str(name)):
            raise UnitError(f"not an environment variable name: {name!r}")
        if is_secret(name):
            left_out.append(name)
        else:
            kept[name] = str(value)
    return kept, sorted(left_out)


def source_checkout(repo=REPO):
    """The clone KIRI runs from (needs PYTHONPATH), or None when it is pip-installed."""
    repo = Path(repo)
    return repo if (repo / "pyproject.toml").is_file() and (repo / "kiri" / "__init__.py").is_file() else None


def default_home(user_home=None, environ=None):
    """KIRI_HOME from the environment, else <user home>/.kiri; always absolute."""
    environ = os.environ if environ is None else environ
    if environ.get("KIRI_HOME"):
        return _absolute(environ["KIRI_HOME"], "KIRI_HOME")
    return _absolute(Path(user_home or Path.home()) / ".kiri", "home")


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
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UnitError(f"{what} path holds a control character (newline?): {text!r}")
    return text


def _settings(python, home, workdir, pythonpath, user_home):
    """Resolve the shared arguments: (python, home, workdir, pythonpath or None)."""
    python = resolve_python(python)
    home = _absolute(home, "home") if home else default_home(user_home)
    if pythonpath is _AUTO:
        checkout = source_checkout()
        pythonpath = str(checkout) if checkout else None
    pythonpath = _absolute(pythonpath, "PYTHONPATH") if pythonpath else None
    # From a clone, run there (`-m kiri` finds the package even without PYTHONPATH);
    # installed, run in KIRI_HOME, which exists once the daemon has run.
    workdir = _absolute(workdir, "working directory") if workdir else (pythonpath or home)
    return python, home, workdir, pythonpath


def _environment(home, pythonpath, env, path=None, unbuffered=True):
    """The variables a unit sets, in a stable order, and the secret names left out."""
    kept, left_out = split_env(env)
    for name, value in kept.items():
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise UnitError(f"environment variable {name} holds a control character (newline?)")
    out = {}
    if path:
        out["PATH"] = path
    if pythonpath:
        out["PYTHONPATH"] = pythonpath
    if unbuffered:
        out["PYTHONUNBUFFERED"] = "1"     # log lines reach the log file / journal as they happen
    out.update(kept)
    out["KIRI_HOME"] = home               # the home argument wins over an env KIRI_HOME
    return out, left_out


def _left_out_note(left_out):
    return ("left out (secrets; keep them in KIRI_HOME/config.ini, chmod 600): " + ", ".join(left_out)
            if left_out else "")


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
    import plistlib

    _check_label(label)
    python, home, workdir, pythonpath = _settings(python, home, workdir, pythonpath, user_home)
    # launchd's own PATH is /usr/bin:/bin:/usr/sbin:/sbin; add the interpreter's directory
    # and Homebrew's so the commands collectors run (git for Rhythm, …) are found.
    path = _join_path(os.path.dirname(python), LAUNCHD_PATH)
    environment, left_out = _environment(home, pythonpath, env, path=path)
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


def _check_label(label):
    if not isinstance(label, str) or not _LABEL.match(label):
        raise UnitError(f"launchd label must be letters, digits, '.', '_' or '-' (like {LABEL}), got {label!r}")


def _join_path(first, rest):
    parts = rest.split(":")
    return ":".join([first] + [p for p in parts if p != first]) if first else rest


# -- systemd ---------------------------------------------------------------------------

def systemd_quote(word):
    """One ExecStart=/Environment= item, quoted the systemd way (systemd.syntax(7), Quoting).

    `%` starts a specifier everywhere, so it is doubled; `$` is variable expansion in
    ExecStart=, so it is doubled too (Environment= keeps "$$" literally: only call this
    for command words). Anything else unusual goes in double quotes with C escapes.
    """
    word = word.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.match(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_assignment(name, value):
    """`"NAME=value"` for Environment=: always quoted (a value may hold spaces or `=`),
    C escapes, `%` doubled, `$` left alone (Environment= does not expand it)."""
    text = f"{name}={value}".replace("%", "%%")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_path(path):
    """WorkingDirectory= takes the rest of the line as the path: no quotes, `%` doubled."""
    if path != path.strip() or path.endswith("\\"):
        raise UnitError(f"systemd cannot hold a path with edge spaces or a trailing backslash: {path!r}")
    return path.replace("%", "%%")


def systemd_unit(python=None, home=None, workdir=None, env=None, pythonpath=_AUTO, user_home=None):
    """The systemd --user service (text) that keeps `python -m kiri daemon` running.

    No After=/Wants=network-online.target: that is a system unit, and a --user manager
    cannot see it, so the ordering would silently do nothing (systemd issues #3312,
    #26305); the daemon copes with a network that is not up yet, as it must anyway.
    Output goes to the journal (`journalctl --user -u kiri.service`).
    """
    python, home, workdir, pythonpath = _settings(python, home, workdir, pythonpath, user_home)
    # The user manager's PATH is already a normal one; only cron and launchd need ours.
    environment, left_out = _environment(home, pythonpath, env)
    lines = [
        "# Written by `kiri daemon install --systemd`.",
        "# Start at boot without a login session: loginctl enable-linger \"$USER\"",
    ]
    if left_out:
        lines.append("# " + _left_out_note(left_out))
    lines += [
        "[Unit]",
        "Description=KIRI monitor daemon (python -m kiri daemon)",
        "",
        "[Service]",
        "Type=simple",
        "WorkingDirectory=" + _systemd_path(workdir),
    ]
    lines += ["Environment=" + _systemd_assignment(k, v) for k, v in environment.items()]
    lines += [
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
    environment, _ = _environment(home, pythonpath, env, path=_join_path(os.path.dirname(python), CRON_PATH),
                                  unbuffered=False)
    minute = "*" if every_minutes == 1 else f"*/{every_minutes}"
    assignments = " ".join(f"{k}={cron_quote(v)}" for k, v in environment.items())
    log = os.path.join(home, "cron.log")
    return (f"{minute} * * * * cd {cron_quote(workdir)} && {assignments} "
            f"{cron_quote(python)} -m kiri daemon --once >> {cron_quote(log)} 2>&1")


# -- install ---------------------------------------------------------------------------

def unit_path(kind, target_dir=None, label=LABEL, user_home=None):
    """Where install() writes: <target_dir or the per-user default>/<file>; None for cron."""
    _check_kind(kind)
    if kind == "cron":
        return None
    user_home = Path(user_home or Path.home())
    if kind == "launchd":
        _check_label(label)
        return Path(target_dir or user_home / "Library" / "LaunchAgents") / f"{label}.plist"
    return Path(target_dir or user_home / ".config" / "systemd" / "user") / SYSTEMD_UNIT


def install(kind, target_dir=None, print_only=False, uid=None, user_home=None, **kw):
    """Write the unit for `kind` ('launchd', 'systemd' or 'cron') and say what to run next.

    kw go to the writer (label, python, home, workdir, env, pythonpath, every_minutes).
    The file is written atomically (temp file in the same directory, then os.replace), mode
    0644, creating its directory and KIRI_HOME (launchd needs the log directory). cron is
    never written: its line is returned with the crontab command that adds it.
    print_only writes nothing. `uid` (default os.getuid()) goes into the launchctl domain.
    """
    _check_kind(kind)
    # The CLI may pass every flag; drop those that belong to another kind of unit.
    if kind != "launchd":
        kw.pop("label", None)
    if kind != "cron":
        kw.pop("every_minutes", None)
    left_out = split_env(kw.get("env"))[1]
    note = ["# " + _left_out_note(left_out)] if left_out else []
    home = _absolute(kw["home"], "home") if kw.get("home") else default_home(user_home)
    kw["home"] = home
    if kind == "cron":
        line = cron_line(user_home=user_home, **kw)
        marker = " -m kiri daemon --once"
        command = "\n".join([
            f"mkdir -p {shlex.quote(home)}",
            "# replaces an earlier KIRI line, keeps every other one:",
            f"( crontab -l 2>/dev/null | grep -v -F -e {shlex.quote(marker)}; "
            f"printf '%s\\n' {shlex.quote(line)} ) | crontab -",
            "# or paste the line by hand with: crontab -e   (check with: crontab -l)",
        ] + note)
        return Installed(None, line, command)

    if kind == "launchd":
        label = kw.get("label", LABEL)
        data = launchd_plist(user_home=user_home, **kw)
        text = data.decode("utf-8")
        path = unit_path(kind, target_dir, label=label, user_home=user_home)
        domain = f"gui/{os.getuid() if uid is None else int(uid)}"
        # bootstrap fails while the job is loaded, so a reinstall boots it out first.
        command = "\n".join([
            f"launchctl bootout {domain}/{label} 2>/dev/null; "
            f"launchctl bootstrap {domain} {shlex.quote(str(path))}",
            f"# check: launchctl print {domain}/{label}   logs: {shlex.quote(os.path.join(home, 'daemon.err'))}",
        ] + note)
    else:
        text = systemd_unit(user_home=user_home, **kw)
        data = text.encode("utf-8")
        path = unit_path(kind, target_dir, user_home=user_home)
        command = "\n".join([
            "systemctl --user daemon-reload && systemctl --user enable --now kiri.service",
            "# keep it running after logout and start it at boot: loginctl enable-linger \"$USER\"",
            "# logs: journalctl --user -u kiri.service",
        ] + note)
    if print_only:
        return Installed(None, text, command)
    os.makedirs(home, mode=0o700, exist_ok=True)
    write_atomic(path, data)
    return Installed(path, text, command)


def write_atomic(path, data, mode=MODE):
    """Write bytes so that `path` is always either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)    # mkstemp makes 0600; launchd and systemd read it as the user anyway
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _check_kind(kind):
    if kind not in KINDS:
        raise UnitError(f"unknown unit kind {kind!r}: expected one of {', '.join(KINDS)}")
