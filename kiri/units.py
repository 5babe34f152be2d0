"""Unit files that keep `python -m kiri daemon` running: launchd, systemd --user, cron.

`kiri daemon install --launchd|--systemd|--cron [--print]` is a thin layer over
`install()`, and `kiri daemon uninstall` over `uninstall()`; the three writers return text
and touch nothing, so they can be read, tested and printed. The facts behind each choice
come from the man pages launchd.plist(5), systemd.service(5), systemd.exec(5),
systemd.syntax(7) and crontab(5).

What every unit gets, and why:
- an absolute python (launchd has no shell and no PATH search worth the name; cron's
  PATH is /usr/bin:/bin), and `-m kiri daemon` (cron: `daemon --once`, cron is the loop);
- KIRI_HOME, so the daemon, the CLI and the unit agree on where the data is;
- PYTHONPATH=<the clone> when KIRI runs from a source checkout rather than a pip install;
- only paths that last: a KIRI_HOME, clone or python in a temporary directory is refused,
  and one a later change may take away (a venv, one pyenv version, a folder macOS keeps
  from background jobs) is warned about in the next command (see "paths that last");
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
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional
from xml.parsers.expat import ExpatError

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

def current_user():
    """This user's login name, or None when the user database does not know the uid."""
    try:
        import pwd   # Unix only, as launchd is
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return None


def launchd_plist(label=LABEL, python=None, home=None, workdir=None, env=None, pythonpath=_AUTO,
                  user_home=None, user_name=_AUTO):
    """The LaunchAgent plist (bytes, XML) that keeps `python -m kiri daemon` alive.

    KeepAlive true with RunAtLoad: the daemon loops by itself, so launchd only starts it
    at login and relaunches it whenever it exits (never combined with StartInterval,
    which would relaunch it every ~10 s). Output is appended to KIRI_HOME/daemon.out and
    daemon.err; that directory must exist or the job fails with status 78 (install()
    creates it). Secret variables in `env` are left out and named in an XML comment.

    UserName (default: this user) is ignored in an agent (launchd.plist(5)); it lets the
    same file run at boot as a LaunchDaemon on a headless Mac, as that user, not as root.
    """
    if not isinstance(label, str) or not _LABEL.match(label):
        raise UnitError(f"launchd label must be letters, digits, '.', '_' or '-' (like {LABEL}), got {label!r}")
    user_name = current_user() if user_name is _AUTO else user_name
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
    if user_name:
        plist["UserName"] = user_name
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


# -- paths that last ------------------------------------------------------------------
# A unit runs for months: every path it names must outlive the shell that installed it.

# Emptied at boot or of files unused for days (macOS keeps per-user temp dirs under
# /private/var/folders): a KIRI_HOME, clone or python there breaks the service some day.
TEMP_DIRS = ("/tmp", "/var/tmp", "/private/var/folders")
# macOS privacy protection (TCC) keeps background jobs out of these folders of the user's home.
PROTECTED_FOLDERS = ("Documents", "Desktop", "Downloads", "Library/Mobile Documents")
# An interpreter inside one version of a version manager (pyenv, asdf) or of Homebrew's
# Cellar: uninstalling or upgrading that version deletes it.
_MANAGED = re.compile(r"(?P<root>.+)/(?:versions|installs/python)/[^/]+/bin/(?P<exe>[^/]+)\Z")
_CELLAR = re.compile(r"(?P<prefix>.+)/Cellar/(?P<formula>python@[^/]+)/[^/]+/(?P<rest>.+)\Z")
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/opt/homebrew/bin/python3")
# What the unit's python must report for another to replace it: the same Python version
# and the same kiri package (a pip-installed kiri lives in one interpreter's site-packages).
_PROBE = ("import os, sys, kiri; "
          "print('%d.%d' % sys.version_info[:2], os.path.realpath(os.path.dirname(kiri.__file__)))")


def temporary_dirs():
    return TEMP_DIRS + (tempfile.gettempdir(),)


def inside(path, folders):
    """The first of `folders` holding `path`, as written or with symlinks resolved (macOS's
    /tmp is /private/tmp, a venv's python a link out of it), or None."""
    forms = {os.path.abspath(path), os.path.realpath(path)}
    for folder in folders:
        for top in {os.path.abspath(folder), os.path.realpath(folder)}:
            if any(form == top or form.startswith(top.rstrip(os.sep) + os.sep) for form in forms):
                return folder
    return None


def refuse_temporary(places):
    """UnitError (one line) when a path the unit names ({what: path}) is in a temporary directory."""
    advice = {"python": "run the install with a python installed for good",
              "KIRI_HOME": "choose a lasting one with --home DIR or KIRI_HOME",
              "working directory": "move the clone out of it, or pip install kiri",
              "PYTHONPATH": "move the clone out of it, or pip install kiri"}
    for what, path in places.items():
        folder = path and inside(path, temporary_dirs())
        if folder:
            raise UnitError(f"{what} {path} is in {folder}, which the system empties: the service "
                            f"would break; {advice[what]}")


def in_virtualenv(python):
    """Whether `python` is a virtualenv's: a pyvenv.cfg beside its bin/ (for the running python
    that is sys.prefix != sys.base_prefix)."""
    return os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg"))


def version_pinned(python):
    return bool(_MANAGED.match(python) or _CELLAR.match(python))


def stable_pythons(python):
    """Interpreters that outlive a version-pinned `python`: its manager's shim or Homebrew's
    opt/ link first (the same Python today), then the usual system ones."""
    managed, cellar = _MANAGED.match(python), _CELLAR.match(python)
    if managed:
        own = [f"{managed['root']}/shims/{managed['exe']}"]
    elif cellar:
        own = [f"{cellar['prefix']}/opt/{cellar['formula']}/{cellar['rest']}"]
    else:
        own = []
    return own + list(SYSTEM_PYTHONS)


def probe_python(python, pythonpath, workdir):
    """`3.11 <kiri's directory>` as `python` runs in the unit (its PYTHONPATH, its working
    directory: a pyenv shim picks its version there), or None if it cannot run kiri."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        done = subprocess.run([python, "-c", _PROBE], env=env, cwd=workdir if os.path.isdir(workdir) else None,
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def choose_python(python, pythonpath, workdir, candidates=None, probe=None):
    """(python, notes): a version-pinned python is replaced by the first of `candidates`
    (default stable_pythons) that runs the same Python and the same kiri (`probe`, default
    probe_python); else it is kept, with a warning."""
    if not version_pinned(python):
        return python, []
    probe = probe or probe_python
    candidates = stable_pythons(python) if candidates is None else list(candidates)
    wanted = probe(python, pythonpath, workdir) if candidates else None
    for candidate in candidates:
        if wanted and candidate != python and probe(candidate, pythonpath, workdir) == wanted:
            return candidate, [f"# python: {candidate}, which runs the same Python as {python} "
                               "but outlives an upgrade of that version"]
    return python, [f"# WARNING: {python} belongs to one installed version of Python; uninstalling or "
                    "upgrading it stops the service: then run kiri daemon install again"]


def interpreter_notes(python):
    """`#` lines about a python that a later change may take away."""
    if not in_virtualenv(python):
        return []
    venv = os.path.dirname(os.path.dirname(python))
    return [f"# WARNING: {python} is the virtualenv {venv}'s: deleting or recreating it stops the service; "
            "install again from a python outside it, or after recreating it"]


def protected_folder_notes(places, user_home=None):
    """`#` lines for paths the job would need ({what: path}) inside folders macOS protects (TCC)."""
    user_home = Path(user_home or Path.home())
    notes = []
    for what, path in places.items():
        folder = path and inside(path, [str(user_home / f) for f in PROTECTED_FOLDERS])
        if folder:
            shown = "~/" + os.path.relpath(folder, str(user_home))
            notes.append(f"# WARNING: {what} {path} is in {shown}, which macOS privacy protection (TCC) "
                         "keeps from background jobs: the agent would fail and restart every "
                         f"{THROTTLE_SECONDS} s. Move it out (e.g. the clone to ~/kiri, KIRI_HOME to "
                         "~/.kiri) or pip install kiri, then install again.")
    return notes


def headless_notes(path, label, domain, user_name):
    """What `gui/<uid>` needs, and what runs on a Mac nobody logs in to at the screen."""
    daemon = f"/Library/LaunchDaemons/{label}.plist"
    return [
        f"# {domain} is the session of a login at the screen: from SSH alone bootstrap fails, and after "
        "a reboot the agent waits for someone to log in.",
        "# headless (a Mac Mini over SSH): turn on automatic login, or run this file at boot as a LaunchDaemon "
        + (f"(its UserName key runs it as {user_name}):" if user_name else "(it has no UserName key: add yours):"),
        f"#   sudo install -m 644 -o root -g wheel {shlex.quote(str(path))} {daemon} && "
        f"rm {shlex.quote(str(path))}",
        f"#   sudo launchctl bootstrap system {daemon}",
    ]


# -- install ---------------------------------------------------------------------------

def install(kind, target_dir=None, print_only=False, uid=None, user_home=None, **kw):
    """Write the unit for `kind` ('launchd', 'systemd' or 'cron') and say what to run next.

    kw go to the writer (label, python, home, workdir, env, pythonpath, every_minutes).
    A KIRI_HOME, clone or python in a temporary directory is refused (UnitError); without
    a `python`, a version-pinned interpreter gives way to a stable one running the same
    Python (choose_python). Warnings about paths a later change may break are `#` lines
    at the end of the next command. The file is written atomically, mode 0644, creating
    its directory and KIRI_HOME; launchd needs KIRI_HOME for its log files, so it is
    created with print_only too, which otherwise writes nothing. cron is never written:
    its line is returned with the crontab command that adds it. `uid` (default
    os.getuid()) goes into the launchctl domain.
    """
    if kind not in KINDS:
        raise UnitError(f"unknown unit kind {kind!r}: expected one of {', '.join(KINDS)}")
    # The CLI may pass every flag; drop those that belong to another kind of unit.
    if kind != "launchd":
        kw.pop("label", None)
        kw.pop("user_name", None)
    if kind != "cron":
        kw.pop("every_minutes", None)
    left_out = split_env(kw.get("env"))[1]
    # Resolve once, so the checks see exactly the paths the unit will hold.
    python, home, workdir, pythonpath = _settings(kw.get("python"), kw.get("home"), kw.get("workdir"),
                                                  kw.get("pythonpath", _AUTO), user_home)
    # PYTHONPATH is named only when it is not the working directory, so nothing is said twice.
    places = {"python": python, "KIRI_HOME": home, "working directory": workdir,
              "PYTHONPATH": pythonpath if pythonpath != workdir else None}
    refuse_temporary(places)
    # Only the default python may be swapped; one given explicitly is kept (and warned about).
    python, notes = choose_python(python, pythonpath, workdir, candidates=() if kw.get("python") else None)
    places["python"] = python
    notes += interpreter_notes(python)
    kw.update(python=python, home=home, workdir=workdir, pythonpath=pythonpath)
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
        user_name = kw.setdefault("user_name", current_user())
        text = launchd_plist(user_home=user_home, **kw).decode("utf-8")
        default_dir = Path(user_home or Path.home()) / "Library" / "LaunchAgents"
        path = Path(target_dir or default_dir) / f"{label}.plist"
        domain = f"gui/{os.getuid() if uid is None else int(uid)}"
        # bootstrap fails while the job is loaded, so a reinstall boots it out first.
        steps = [
            f"launchctl bootout {domain}/{label} 2>/dev/null; "
            f"launchctl bootstrap {domain} {shlex.quote(str(path))}",
            f"# check: launchctl print {domain}/{label}   logs: {shlex.quote(os.path.join(home, 'daemon.err'))}",
            *headless_notes(path, label, domain, user_name),
        ]
        notes += protected_folder_notes(places, user_home)
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
    command = "\n".join(steps + notes)
    # launchd opens the log files in KIRI_HOME before the daemon runs (without it: status 78),
    # so the folder is made even for a plist that is only printed.
    if kind == "launchd" or (path and not print_only):
        try:
            os.makedirs(home, mode=0o700, exist_ok=True)
        except OSError as e:
            raise UnitError(f"cannot create KIRI_HOME {home}: {e.strerror or e}") from None
    if print_only or path is None:
        return Installed(None, text, command)
    try:
        atomic_write(path, text, MODE)  # launchd and systemd read it as the user anyway
    except OSError as e:
        raise UnitError(f"cannot write {path}: {e.strerror or e}") from None
    return Installed(path, text, command)


# -- uninstall -------------------------------------------------------------------------

CRON_MARKER = " -m kiri daemon --once"   # what install()'s `grep -v -F` filter drops from a crontab


class Uninstalled(NamedTuple):
    path: Optional[Path]    # the file removed (print_only: the one that would be); None for cron
    next_command: str       # what stops the service, or (cron) removes KIRI's line


def unit_path(kind, target_dir=None, user_home=None, label=LABEL):
    """Where install() writes the unit of `kind` ('launchd' or 'systemd')."""
    if kind == "launchd":
        return Path(target_dir or Path(user_home or Path.home()) / "Library" / "LaunchAgents") / f"{label}.plist"
    return Path(target_dir or Path(user_home or Path.home()) / ".config" / "systemd" / "user") / SYSTEMD_UNIT


def is_kiris(kind, data, label=LABEL):
    """Whether a unit file's bytes are KIRI's: a plist with KIRI's label running `-m kiri daemon`,
    a systemd unit whose ExecStart runs it."""
    if kind == "launchd":
        try:
            plist = plistlib.loads(data)
        except (ValueError, ExpatError):   # not a plist at all
            return False
        return isinstance(plist, dict) and plist.get("Label") == label and \
            plist.get("ProgramArguments", [])[1:] == ["-m", "kiri", "daemon"]
    return any(line.startswith("ExecStart=") and line.endswith(" -m kiri daemon")
               for line in data.decode("utf-8", "replace").splitlines())


def stop_command(kind, uid=None, label=LABEL):
    """The command that stops the service manager's KIRI job and keeps it from restarting it."""
    if kind == "launchd":
        return f"launchctl bootout gui/{os.getuid() if uid is None else int(uid)}/{label}"
    return f"systemctl --user disable --now {SYSTEMD_UNIT}"


def installed_units(user_home=None):
    """[(kind, path)] of the KIRI launchd agent and systemd unit present in their default places."""
    found = []
    for kind in ("launchd", "systemd"):
        path = unit_path(kind, user_home=user_home)
        try:
            if is_kiris(kind, path.read_bytes()):
                found.append((kind, path))
        except OSError:
            pass   # not installed (or unreadable, so not ours to speak of)
    return found


def uninstall(kind, target_dir=None, print_only=False, uid=None, user_home=None, label=LABEL):
    """Remove the unit install() wrote for `kind`, and say what stops the service it ran.

    Only KIRI's own file is removed (is_kiris); a missing file or someone else's is a
    UnitError and nothing changes. A systemd unit still enabled is refused too: `systemctl
    --user disable` needs the file to remove its symlink (before systemd 257), so that runs
    first. cron: the crontab is the user's, so nothing is removed here; the command returned
    drops KIRI's line with install()'s filter. print_only checks everything, removes nothing.
    """
    if kind not in KINDS:
        raise UnitError(f"unknown unit kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "cron":
        return Uninstalled(None, f"crontab -l 2>/dev/null | grep -v -F -e {shlex.quote(CRON_MARKER)} | crontab -")
    path = unit_path(kind, target_dir, user_home, label)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnitError(f"nothing to uninstall: {path} does not exist") from None
    except OSError as e:
        raise UnitError(f"cannot read {path}: {e.strerror}") from None
    if not is_kiris(kind, data, label):
        raise UnitError(f"{path} was not written by kiri daemon install; left alone")
    if kind == "launchd":
        command = stop_command(kind, uid, label)   # by label: works with the plist gone
    else:
        enabled = path.parent / "default.target.wants" / SYSTEMD_UNIT
        if os.path.lexists(str(enabled)):
            raise UnitError(f"{SYSTEMD_UNIT} is still enabled ({enabled}); run first: {stop_command(kind)}")
        # Disabled, but it may still run (started by hand): stop it, then let systemd forget the unit.
        command = f"systemctl --user stop {SYSTEMD_UNIT} 2>/dev/null; systemctl --user daemon-reload"
    if not print_only:
        path.unlink()
    return Uninstalled(path, command)
