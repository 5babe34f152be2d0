"""`kiri setup`: one guided command that turns this machine into a monitored one.

    setup.run(given={"host_name": "box1"}, service=False)    # = kiri setup --host-name box1 --no-service

Five steps, each a function below that says what it did:
1. config   KIRI_HOME (0700) and config.ini (0600), created with the values given, or in an
            existing one only the keys given are changed (write_config);
2. sources  one reading from each atom's source, not stored: what it reads here, or why it
            cannot (check_sources);
3. Telegram a test alert through the code `kiri alerts test` runs (notify.send_test_alert);
4. service  launchd on macOS, systemd --user on Linux when it answers, else a cron line for
            you to add (service_kind, units.install); start=True runs its start command;
5. verify   the service runs and has stored its first reading (wait_for_first_reading).

Values come from flags; on a terminal whatever is missing is asked (secrets with getpass, so
they are not echoed); with no terminal the defaults are used, and said. A secret never goes
on a command line (a file only its owner may read holds it) and is never printed or logged;
config.ini keeps it, mode 0600, because the daemon reads it there.
"""

import concurrent.futures
import contextlib
import getpass
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
import urllib.parse

from . import lock, notify, units
from .atoms import BUILTIN, verbs
from .atoms.sources import CollectorError, run_command
from .config import DEFAULTS, SECRETS, config_path, load_settings, set_config_values, write_default_config
from .errors import KiriError
from .ground import PLATFORM, http_url_problem
from .status import describe_daemon, duration
from .store import StoreError, open_store

DEFAULT_WAIT = 60   # seconds verify waits for the service's first reading


# -- what a value may be -----------------------------------------------------------------
# Each check takes the text as typed and returns it cleaned, or raises KiriError in one line.
# None of them echoes a chat id or a secret: a token typed in the wrong place must not be shown.

HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
CHAT_ID = re.compile(r"-?[0-9]{1,20}\Z|@[A-Za-z][A-Za-z0-9_]{4,31}\Z")
TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,200}\Z")
PULSE_SOURCES = ("system", "mikrotik", "node_exporter")


def check_host_name(text):
    text = text.strip()
    if not HOST_NAME.match(text):
        raise KiriError(f"host name must be 1 to 63 letters, digits, '.', '-' or '_', got {text!r}")
    return text


def check_pulse_source(text):
    text = text.strip().lower()
    if text not in PULSE_SOURCES:
        raise KiriError(f"pulse source must be system, mikrotik or node_exporter, got {text!r}")
    return text


def check_mikrotik_url(text):
    text = text.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
    except ValueError:   # e.g. an unclosed [ of an IPv6 address
        host = None
    if "@" in text:
        raise KiriError("give the router's user and password separately, not inside its address")
    if not host or parts.scheme not in ("https", "http") or not text.isprintable() or " " in text:
        raise KiriError(f"router address must look like https://192.168.88.1, got {text!r}")
    return text


def check_node_exporter_url(text):
    # ground's words, as the daemon's own check (Settings.http_url) gives them: they never
    # quote the address, whose query may hold a token.
    text = text.strip()
    problem = http_url_problem(text)
    if problem:
        raise KiriError(f"node_exporter address {problem}")
    return text


def check_mikrotik_user(text):
    text = text.strip()
    if not 1 <= len(text) <= 64 or ":" in text or not text.isprintable():
        raise KiriError("RouterOS user must be 1 to 64 printable characters, without ':'")
    return text


def check_password(text):
    if not 1 <= len(text) <= 256 or not text.isprintable():
        raise KiriError("the password must be one line of 1 to 256 printable characters")
    return text


def check_chat_id(text):
    text = text.strip()
    if not CHAT_ID.match(text):
        raise KiriError("telegram chat id must be a number (a group's is negative) or @channelname")
    return text


def check_token(text):
    text = text.strip()
    if not TOKEN.match(text):
        raise KiriError("that is not a bot token (one word like 123456:ABC-DEF…, from @BotFather)")
    return text


CHECKS = {"host_name": check_host_name, "pulse_source": check_pulse_source, "mikrotik_url": check_mikrotik_url,
          "node_exporter_url": check_node_exporter_url, "mikrotik_user": check_mikrotik_user,
          "mikrotik_password": check_password,
          "telegram_token": check_token, "telegram_chat_id": check_chat_id}
SECRET_FILE_FLAGS = {"telegram_token": "--telegram-token-file", "mikrotik_password": "--mikrotik-password-file"}


def read_secret_file(path, key):
    """The secret (`key`: telegram_token or mikrotik_password) on the first line of `path`.

    The file must be a regular file no other user may read (chmod 600). Its contents never
    appear in an error, nor its name when it does not exist: a slip may have put the secret
    itself where the file name belongs."""
    flag = SECRET_FILE_FLAGS[key]
    what = "bot token" if key == "telegram_token" else "password"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise KiriError(f"{flag}: no such file (give a file that holds the {what}, not the {what} itself)") from None
    except OSError as e:
        raise KiriError(f"{flag}: cannot read the file: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KiriError(f"{flag}: {path} is not a regular file")
    if mode & 0o077:
        raise KiriError(f"{path} may be read by other users (mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read(4096).splitlines()
    except (OSError, UnicodeError):
        raise KiriError(f"{flag}: cannot read {path} as text") from None
    try:
        return CHECKS[key](lines[0].strip() if lines else "")
    except KiriError as e:
        raise KiriError(f"{path}: {e}") from None


# -- 1. the values, and the config file ----------------------------------------------------

def gather(given, settings, ask=None, ask_secret=None, report=print):
    """The values to write: `given` ({key: checked text}), and when `ask` is set (a terminal)
    the answers about the others, Enter keeping what `settings` has. With no terminal, says
    which defaults hold."""
    values = dict(given)
    if ask is None:
        say_defaults(values, settings, report)
        return values

    def now(key):
        return values.get(key, settings.get(key))

    question(values, "host_name", "This machine's name in alerts", now("host_name") or settings.host, ask, report)
    question(values, "pulse_source", "Pulse reads this machine (system), a MikroTik router (mikrotik) "
             "or a node_exporter (node_exporter)", now("pulse_source"), ask, report)
    if now("pulse_source") == "node_exporter":
        question(values, "node_exporter_url", "node_exporter address, e.g. http://nas.local:9100/metrics",
                 shown_value("node_exporter_url", now("node_exporter_url")), ask, report)
    if now("pulse_source") == "mikrotik":
        question(values, "mikrotik_url", "Router address, e.g. https://192.168.88.1", now("mikrotik_url"), ask, report)
        question(values, "mikrotik_user", "RouterOS user (a read-only one is enough)", now("mikrotik_user"), ask, report)
        question(values, "mikrotik_password", "RouterOS password (not shown)",
                 "Enter keeps the saved one" if now("mikrotik_password") else "", ask_secret, report)
    question(values, "telegram_token", "Telegram bot token from @BotFather (not shown)",
             "Enter keeps the saved one" if now("telegram_token") else "Enter: no Telegram", ask_secret, report)
    if now("telegram_token"):
        question(values, "telegram_chat_id", "Telegram chat id (README, Telegram: how to find it)",
                 now("telegram_chat_id"), ask, report)
    return values


def question(values, key, words, shown, ask, report, tries=3):
    """Ask for `key` unless it was given; an empty answer keeps what is there (not given)."""
    if key in values:
        return
    for _ in range(tries):
        try:
            text = ask(f"{words} [{shown}]: " if shown else f"{words}: ").strip()
        except EOFError:
            raise KiriError("the input ended before every question was answered (flags answer them: "
                            "kiri setup --help)") from None
        if not text:
            return
        try:
            values[key] = CHECKS[key](text)
            return
        except KiriError as e:
            report(f"  {e}")
    raise KiriError(f"no usable answer for {key} after {tries} tries")


def say_defaults(values, settings, report):
    """On no terminal: one line naming the defaults that hold for what nobody gave or set."""
    def unset(key):
        return key not in values and settings.get(key) == DEFAULTS[key]
    defaults = []
    if unset("host_name"):
        defaults.append(f"host name {settings.host} (this machine's)")
    if unset("pulse_source"):
        defaults.append("Pulse reads this machine")
    if unset("telegram_token"):
        defaults.append("no Telegram (add it with --telegram-token-file FILE --telegram-chat-id ID)")
    if defaults:
        report("no terminal to ask on, so the defaults: " + "; ".join(defaults))


def write_config(home, values, env=None):
    """KIRI_HOME (0700) and its config file (0600) holding `values`, or in the file already there
    only the keys of `values` set: (path, created, changed keys)."""
    path = config_path(home, env)
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_default_config(home, values, path)
            return path, True, [key for key in DEFAULTS if key in values]
        return path, False, set_config_values(path, values)
    except OSError as e:
        raise KiriError(f"cannot write {path}: {e.strerror or e}") from None


def shown_value(key, value):
    """`value` as setup shows it: a node_exporter address without its query, which may hold a
    token (as node_exporter.page_of shows it in errors); '?…' says there is one."""
    if key != "node_exporter_url" or not value:
        return value
    if http_url_problem(value):   # a saved address the daemon refuses: its error does not quote it either
        return "Enter keeps the saved one"
    parts = urllib.parse.urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def describe_config(path, created, changed, values):
    """'config: wrote … (mode 0600): host_name = box1, telegram_token (hidden)', or what changed."""
    said = ", ".join(f"{key} (hidden)" if key in SECRETS else f"{key} = {shown_value(key, values[key])}"
                     for key in changed)
    if created:
        return f"config: wrote {path} (mode 0600): " + (said or "every key at its default")
    if changed:
        return f"config: changed {said} in {path}"
    return f"config: {path} unchanged (" + ("it already holds what was given)" if values else "nothing given to change)")


# -- 2. each atom's source -----------------------------------------------------------------

def check_sources(settings, store):
    """One line per atom: what its source reads here now (one reading, not stored), or why not."""
    results = {}
    modules = verbs.all_atoms(settings)

    def read(name):
        module = modules[name]
        try:
            return module.read(module.SPEC, settings, store if not getattr(module, "REMOTE", False) else None)
        except KiriError as e:
            return e
    # Watched hosts are read at once, as the daemon reads them: one by one, a dozen
    # unreachable ones would keep setup waiting for minutes.
    remote = [name for name, module in modules.items() if getattr(module, "REMOTE", False)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(32, len(remote)))) as pool:
        readings = dict(zip(remote, pool.map(read, remote)))
    for name, module in modules.items():
        if not hasattr(module, "read"):   # Drift reads nothing: it counts what you log
            results[name] = (True, "ok: counts `kiri task add|done|switch` events (or `kiri drift collect "
                                   f"--added N …`), one period every {duration(module.SPEC.interval)}")
            continue
        reading = readings[name] if name in readings else read(name)
        if isinstance(reading, KiriError):
            why = str(reading)
            results[name] = (False, why[len(name) + 2:] if why.startswith(name + ": ") else why)
        else:
            values, source = reading
            results[name] = (True, f"ok ({describe_reading(module.SPEC, values)}) from {source}")
    still = still_running([name.capitalize() if name in BUILTIN else name for name, (ok, _) in results.items() if ok])
    return [f"{name}: {text}" if ok else f"{name}: not available: {text} — {still}"
            for name, (ok, text) in results.items()]


def still_running(names):
    """'Pulse and Drift still run', 'Drift still runs'."""
    if not names:
        return "no atom can read here"
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return listed + (" still runs" if len(names) == 1 else " still run")


def describe_reading(spec, values):
    """'CPU 12%, memory 61%, …, network up': a reading in the words of its atom's labels."""
    words = []
    for field in spec.schema:
        name, unit, *states = spec.labels.get(field, (field, ""))
        if field not in values:   # a clock field: the reading's own time, not something it measured
            continue
        value, states = values[field], (states[0] if states else {})
        text = states[value] if value in states else f"{value:.0f}%" if unit == "%" else f"{round(value, 1):g}{unit}"
        words.append(f"{name} {text}")
    return ", ".join(words)


# -- 3. Telegram ---------------------------------------------------------------------------

def test_telegram(settings, store, report):
    """A test alert through every sink when Telegram is set up (as `kiri alerts test`), else what is missing."""
    token, chat = settings.get("telegram_token").strip(), settings.get("telegram_chat_id").strip()
    if token and chat:
        report("telegram: a test alert, as `kiri alerts test` sends it:")
        notify.send_test_alert(settings, store, report=lambda line: report("  " + line))
    elif token:
        report("telegram: a token but no chat id yet: find it (README, Telegram), then kiri setup --telegram-chat-id ID")
    elif chat:
        report("telegram: a chat id but no token: kiri setup --telegram-token-file FILE (chmod 600)")
    else:
        report(f"telegram: not set up; alerts go to {settings.log_path}")


# -- 4. the service ------------------------------------------------------------------------

def user_systemd():
    """Whether `systemctl --user` reaches a user service manager (many containers, su and
    sudo sessions have none)."""
    if shutil.which("systemctl") is None:
        return False
    try:
        return subprocess.run(["systemctl", "--user", "show-environment"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def service_kind(platform=PLATFORM, systemd_usable=user_systemd):
    """launchd on macOS; on Linux systemd --user when it answers, else cron; cron on other Unixes."""
    if platform == "macos":
        return "launchd"
    if platform == "linux" and systemd_usable():
        return "systemd"
    if platform == "win32":
        raise KiriError("kiri setup installs a service on Linux and macOS; here, run kiri daemon yourself")
    return "cron"


def install_service(settings, kind, env, report):
    """Write the unit for `kind` (cron: print the line, KIRI never edits a crontab); returns units.Installed."""
    # Settings from the shell reach the service too, as with `kiri daemon install`; secrets are left out.
    keep = {k: v for k, v in env.items() if k.startswith("KIRI_") and k != "KIRI_HOME" and v}
    installed = units.install(kind, home=settings.home, env=keep)
    if installed.path is not None:
        report(f"service: {kind}: wrote {installed.path}")
    else:
        report("service: cron (no launchd or systemd --user here); KIRI never edits a crontab, so add this line:")
        report("  " + installed.text.strip())
    return installed


def start_commands(kind, path, uid=None):
    """The commands that (re)start an installed service, as argument lists; none for cron."""
    if kind == "systemd":
        return [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", units.SYSTEMD_UNIT],
                ["systemctl", "--user", "restart", units.SYSTEMD_UNIT]]
    if kind == "launchd":
        domain = f"gui/{os.getuid() if uid is None else int(uid)}"
        return [["launchctl", "bootout", f"{domain}/{units.LABEL}"], ["launchctl", "bootstrap", domain, str(path)]]
    return []


def start_service(kind, path, report, run=run_command):
    """Run start_commands; the first one failing is a KiriError (launchd's bootout may fail: not loaded)."""
    for argv in start_commands(kind, path):
        note = ""
        try:
            run(argv, source="service")
        except CollectorError:
            if argv[1] != "bootout":
                raise
            note = " (it was not loaded)"
        report("  ran: " + " ".join(shlex.quote(a) for a in argv) + note)


# -- 5. verify -----------------------------------------------------------------------------

def first_reading(settings, store, since):
    """The first real reading stored at or after `since`, looking at the atoms in order, or None."""
    for name in verbs.all_atoms(settings):
        found = store.observations(name, since=since, real_only=True, injected=False, limit=1)
        if found:
            return found[0]
    return None


def wait_for_first_reading(settings, since, wait, logs, report, poll=1.0, clock=time.monotonic, sleep=time.sleep):
    """Wait up to `wait` s for a daemon of settings.home started at or after `since` to run and
    store a real reading; say what it found, or raise KiriError pointing at `logs`."""
    deadline = clock() + wait
    with opened_store(settings.home) as store:
        while True:
            info = lock.daemon_status(settings.home, store)
            ours = info["state"] == "running" and (info["started"] or since) >= since - 1
            reading = first_reading(settings, store, since) if ours else None
            if reading is not None:
                module = verbs.atom_module(reading["atom"], settings)
                report(f"verify: {describe_daemon(info)}; first reading at "
                       f"{time.strftime('%H:%M:%S', time.localtime(reading['ts']))}: {reading['atom']} "
                       f"({describe_reading(module.SPEC, reading['values'])})")
                return info
            if clock() >= deadline:
                break
            sleep(poll)
    if info["state"] == "running" and not ours:
        raise KiriError(f"another kiri daemon holds {settings.home} ({describe_daemon(info)}), so the service "
                        "cannot start: stop it with kiri daemon stop, then run kiri setup --start again")
    if ours:
        raise KiriError(f"the service runs but took no reading within {wait:g} s: see {settings.log_path}")
    raise KiriError(f"the service did not take a reading within {wait:g} s: see {logs}")


@contextlib.contextmanager
def opened_store(home):
    try:
        store = open_store(home)
    except (StoreError, OSError) as e:
        raise KiriError(str(e)) from None
    with store:
        yield store


# -- all of it -----------------------------------------------------------------------------

def run(home=None, given=None, secret_files=None, service=True, start=False, verify=True, wait=DEFAULT_WAIT,
        interactive=False, ask=input, ask_secret=getpass.getpass, report=print, env=None, kind=None):
    """`kiri setup`. given: {key: text} of host_name, pulse_source, mikrotik_url, mikrotik_user,
    node_exporter_url, telegram_chat_id (None = not given); secret_files: {telegram_token |
    mikrotik_password: path}.
    service=False stops after Telegram; start runs the service's start command, and then,
    with verify, waits up to `wait` s for its first reading. interactive: ask what is missing
    (ask, ask_secret). kind: the service kind (default service_kind()). Every mistake is a
    KiriError, raised before anything is written when it is in a value given."""
    env = os.environ if env is None else env
    if start and not service:
        raise KiriError("--start starts the service, so it cannot go with --no-service")
    values = {key: CHECKS[key](text) for key, text in (given or {}).items() if text is not None}
    values.update({key: read_secret_file(path, key) for key, path in (secret_files or {}).items() if path})
    if home is not None:
        home = os.path.abspath(os.path.expanduser(home))   # the unit needs it absolute
    before = load_settings(home, env=env, missing_config_ok=True)   # setup writes it
    report(f"kiri setup: home {before.home}")
    values = gather(values, before, ask if interactive else None, ask_secret, report)

    path, created, changed = write_config(before.home, values, env)
    report(describe_config(path, created, changed, values))
    settings = load_settings(before.home, env=env).check()
    with opened_store(settings.home) as store:
        report("sources (one reading each, not stored):")
        for line in check_sources(settings, store):
            report("  " + line)
        test_telegram(settings, store, report)

    if not service:
        report("service: not installed (--no-service); run the monitor with `kiri daemon`, "
               "or install it with `kiri setup` later")
        return
    run_service(settings, kind or service_kind(), start, verify, wait, env, report)


def run_service(settings, kind, start, verify, wait, env, report):
    """Steps 4 and 5: install the service of `kind`, then start it and verify, or say how."""
    installed = install_service(settings, kind, env, report)
    if kind == "cron":
        report("next:\n" + indent(installed.next_command))
        report("verify: not run: cron starts the daemon once you have added the line; "
               "`kiri daemon status` shows it after the next 5-minute mark")
        return
    if not start:
        report("next: start it (a daemon already running keeps its old settings until it restarts):\n"
               + indent(installed.next_command))
        report("verify: not run, since setup did not start the service (kiri setup --start runs "
               "its start command and waits for the first reading)")
        return
    report(f"starting the {kind} service:")
    since = time.time()
    start_service(kind, installed.path, report)
    if not verify:
        report("verify: skipped (--no-verify); `kiri daemon status` shows whether it runs")
        return
    logs = "journalctl --user -u kiri.service" if kind == "systemd" else settings.home / "daemon.err"
    wait_for_first_reading(settings, since, wait, logs, report)
    report("done: `kiri status` shows each atom and how many readings it needs before it learns")


def indent(text):
    return "\n".join("  " + line for line in text.splitlines())
