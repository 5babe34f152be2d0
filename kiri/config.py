"""Settings: defaults < config file (INI) < environment (KIRI_*) < command-line flags.

The config file is `KIRI_HOME/config.ini` (or `KIRI_CONFIG`); its `[kiri]` section
holds the keys below, and the environment variable of a key is `KIRI_` + the key in
upper case (`pulse_source` ↔ `KIRI_PULSE_SOURCE`). A config file that holds a secret
must not be readable by others (chmod 600), or KIRI refuses it.
"""

import configparser
import math
import os
import re
import socket
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .core.engines import DEFAULT_ENGINE, ENGINES
from .atoms import RESERVED, custom
from .atoms import hosts as host_atoms
from .atoms.custom import INTERVAL_MAX
from .errors import KiriError
from .ground import atomic_write, default_home, expand_user, http_url_problem, printable

# key -> (default, what it means). Values are text, as a config file or the environment gives them.
KEYS = {
    "host_name": ("", "this machine's name in alerts, status and exports; empty = its short hostname"),
    "engine": (DEFAULT_ENGINE, "fast, value (the scalar-autograd reference) or torch (optional)"),
    "pulse_source": ("system", "system (this machine), mikrotik or node_exporter"),
    "pulse_disk": ("", "path whose volume D measures; empty = / (Linux) or the data volume (macOS)"),
    "mikrotik_url": ("", "RouterOS REST base, e.g. https://192.168.88.1"),
    "node_exporter_url": ("", "a node_exporter's metrics URL, e.g. http://nas.local:9100/metrics"),
    "mikrotik_user": ("", "RouterOS user (a read-only one is enough)"),
    "mikrotik_password": ("", "RouterOS password (secret: keep this file chmod 600)"),
    "mikrotik_cafile": ("", "trust this CA file for the router's certificate"),
    "mikrotik_verify": ("yes", "no = skip certificate verification (explicitly)"),
    "rhythm_repos": ("", "git repositories whose commits Rhythm counts, separated by ':' or ','"),
    "telegram_token": ("", "the bot's token from @BotFather (secret); empty = no Telegram"),
    "telegram_chat_id": ("", "the chat alerts go to (a user's id, a group's negative id, or @channel)"),
    "telegram_api": ("https://api.telegram.org", "the Bot API server"),
    "pulse_interval": ("300", "seconds between Pulse readings in the daemon"),
    "rhythm_interval": ("300", "seconds between Rhythm readings in the daemon"),
    "drift_interval": ("3600", "seconds per Drift period in the daemon"),
    "tick": ("30", "seconds from the start of one daemon cycle to the next (checks for due work)"),
    "alert_after": ("2", "an atom alerts when this many readings in a row are over its threshold (or its likelihood is)"),
    "alert_cooldown": ("3600", "seconds during which repeats of one situation merge into one alert"),
    "likelihood_window": ("12", "an atom's recent readings: how many are averaged for its likelihood"),
    "likelihood_history": ("2000", "how many readings before them the likelihood compares with"),
    "likelihood_alert": ("0.3", "flag an atom whose likelihood is above this (between 0 and 1)"),
    "retrain_days": ("7", "each atom retrains on its last N days, every N days"),
    "learn_after": ("288", "an atom with no model trains itself once it has this many real readings (a day at 5 min)"),
    "spawn_after": ("", "the old name of learn_after (used when learn_after is not set)"),
    "nerve_retrain_answers": ("3", "Nerve retrains after this many new answers (at most hourly, and daily)"),
    "retain_days": ("90", "readings, scores and decisions older than this many days are deleted (answers are kept)"),
    "web_bind": ("127.0.0.1:9788", "where `kiri serve` listens, HOST:PORT; any address but loopback needs web_token"),
    "web_token": ("", "the dashboard's access token (secret); required to listen beyond loopback"),
    "web_read_only": ("no", "yes = the dashboard shows everything and takes no answers"),
    "web_url": ("", "the dashboard's address as others reach it (alerts link to it); empty = http://web_bind"),
    "alertmanager_url": ("", "Alertmanager's base URL, e.g. http://127.0.0.1:9093; empty = no Alertmanager"),
}
DEFAULTS = {key: default for key, (default, _) in KEYS.items()}
SECRETS = ("mikrotik_password", "telegram_token", "web_token")
MAX_CONFIG_BYTES = 1_000_000   # a config is a few kB; more is a wrong file (KIRI_CONFIG=/dev/zero), not read whole
DAY = 86400
# Every numeric setting: key -> (its unit, the most it may be, whether it is a whole number).
# Each must be greater than 0, and is checked when the settings are loaded: a value out of
# these bounds (inf, 1e30, nan) fails at once in one line, not hours later in the loop.
NUMBERS = {
    "pulse_interval": ("seconds", INTERVAL_MAX, False),
    "rhythm_interval": ("seconds", INTERVAL_MAX, False),
    "drift_interval": ("seconds", INTERVAL_MAX, False),
    "tick": ("seconds", 3600, False),
    "alert_cooldown": ("seconds", 30 * DAY, False),
    "retrain_days": ("days", 3650, False),
    "learn_after": ("readings", 1_000_000, True),
    "spawn_after": ("readings", 1_000_000, True),
    "alert_after": ("readings", 1000, True),
    "nerve_retrain_answers": ("answers", 100_000, True),
    "likelihood_window": ("readings", 100_000, True),
    "likelihood_history": ("readings", 1_000_000, True),
    "likelihood_alert": ("", 1, False),   # a level between 0 and 1, both excluded (fraction)
    "retain_days": ("days", 36500, True),
}


@dataclass
class Settings:
    home: Path
    engine: str = DEFAULT_ENGINE
    values: dict = field(default_factory=dict)
    atoms: dict = field(default_factory=dict)   # your own atoms: name -> {schema, command, interval, steps}
    hosts: dict = field(default_factory=dict)   # watched hosts: name -> {source, url, interval, …} (atoms/hosts.py)
    origins: dict = field(default_factory=dict)   # key -> where its value came from: "config file …", "KIRI_…"
    config_file: Optional[Path] = None            # the config file read (it may not exist)

    def get(self, key):
        return self.values.get(key, DEFAULTS[key])

    def flag(self, key):
        text = self.get(key).strip().lower()
        if text in ("1", "yes", "true", "on"):
            return True
        if text in ("0", "no", "false", "off"):
            return False
        raise self._bad(key, "must be yes or no")

    def _bad(self, key, what, quote=True):
        """The one-line error for a setting's value: where it came from, the key, what is wrong,
        and the value unless `quote` is False (an address may hold a password)."""
        where = f"{self.origins[key]}: " if key in self.origins else ""
        return KiriError(f"{where}setting {key} {what}" + (f", got {self.get(key)!r}" if quote else ""))

    def number(self, key):
        """A numeric setting within its bounds (NUMBERS): an int for a whole number, else a float."""
        unit, most, whole = NUMBERS[key]
        try:
            value = float(self.get(key))
        except ValueError:
            raise self._bad(key, "must be a number") from None
        if math.isnan(value):
            raise self._bad(key, "must be a number")
        if not value > 0:
            raise self._bad(key, "must be greater than 0")
        if key == "likelihood_alert" and value >= 1:
            raise self._bad(key, "must be below 1")
        if value > most:
            raise self._bad(key, f"must be at most {most:,} {unit}")
        if whole and not value.is_integer():
            raise self._bad(key, f"must be a whole number of {unit}")
        return int(value) if whole else value

    def count(self, key, unit=None):
        """A whole-number setting; `unit` is NUMBERS' now, the argument is kept for its callers."""
        return int(self.number(key))

    def fraction(self, key):
        """A level between 0 and 1 (both excluded)."""
        return self.number(key)

    def check(self):
        """Read every number and flag now, so a typo fails at start, not hours later in the loop."""
        for key in NUMBERS:
            if key != "spawn_after" or self.get(key).strip():   # the old name: empty is "not set"
                self.number(key)
        self.flag("mikrotik_verify")
        self.flag("web_read_only")
        self.web_bind
        self.http_url("alertmanager_url")
        self.http_url("node_exporter_url")
        self.http_url("web_url")
        return self

    @property
    def web_bind(self):
        """(host, port) where `kiri serve` listens, from web_bind's HOST:PORT ([::1]:PORT for IPv6)."""
        text = self.get("web_bind").strip()
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self._bad("web_bind", "must be HOST:PORT with a port from 1 to 65535")
        return host, int(port)

    def http_url(self, key):
        """A setting that is an http(s) base URL, without a trailing '/'; '' when it is not set."""
        text = self.get(key).strip()
        problem = http_url_problem(text) if text else None
        if problem:
            raise self._bad(key, problem, quote=False)
        return text.rstrip("/")

    @property
    def web_url(self):
        """The dashboard's address as others reach it: web_url, else http:// + web_bind."""
        host, port = self.web_bind
        return self.http_url("web_url") or "http://%s:%d" % (f"[{host}]" if ":" in host else host, port)

    def paths(self, key):
        text = self.get(key).replace(",", os.pathsep)
        # os.path's expanduser leaves a ~name of no user as it is: that repository is not there, and Rhythm says so.
        return [Path(os.path.expanduser(p)) for p in text.split(os.pathsep) if p.strip()]

    @property
    def learn_after(self):
        """Real readings an atom collects before it trains itself; `spawn_after` is its old name."""
        old_name = self.get("spawn_after").strip() and self.get("learn_after") == DEFAULTS["learn_after"]
        return self.count("spawn_after" if old_name else "learn_after")

    @property
    def host(self):
        return self.get("host_name").strip() or socket.gethostname().split(".")[0]

    def host_of(self, atom):
        """The machine an atom watches: this one, a watched host ([host:NAME]), or for a Pulse
        read from a router or a node_exporter, that machine."""
        watched = host_atoms.atoms_of(self.hosts).get(atom)
        if watched:
            return watched
        remote = {"mikrotik": "mikrotik_url", "node_exporter": "node_exporter_url"}.get(self.get("pulse_source"))
        if atom == "pulse" and remote:
            try:
                return urllib.parse.urlsplit(self.get(remote)).hostname or self.host
            except ValueError:   # an address urllib cannot read: the source says so when it reads
                return self.host
        return self.host

    @property
    def db_path(self):
        return self.home / "kiri.db"

    @property
    def weights_dir(self):
        return self.home / "weights"

    def weights_path(self, atom):
        return self.weights_dir / f"{atom}.json"

    @property
    def log_path(self):
        return self.home / "kiri.log"

    def managed(self, path):
        """What of the home's own `path` is ("the database", "in the weights folder", …), or None.
        Compared as the real path (through symbolic links) and, for a file that exists, as the
        same file (a hard link)."""
        from .daemon import UNIT_OUTPUT   # here: the loop's modules import the settings, not the reverse
        from .lock import LOCK_FILE
        real = os.path.realpath(path)
        weights = os.path.realpath(self.weights_dir)
        if real == weights or real.startswith(weights + os.sep):
            return "in the weights folder"
        owned = [(self.db_path.with_name(self.db_path.name + end), "the database")
                 for end in ("", "-wal", "-shm", "-journal")]
        owned += [(self.config_file, "the config file")] if self.config_file else []
        owned += [(self.home / LOCK_FILE, "the daemon's lock file")]
        owned += [(self.home / (name + end), "a log file") for name in (self.log_path.name,) + UNIT_OUTPUT
                  for end in ("", ".1", ".2", ".3")]   # with the rotated ones (kiri.log keeps three)
        for mine, what in owned:
            if real == os.path.realpath(mine) or _same_file(path, mine):
                return what
        return None

    def output_path(self, path, option, folder=False, allowed=None):
        """`path`, given to `option` (--out, --metrics) as a place to write, as a Path; a KiriError
        when it is one of KIRI's own files (writing there would destroy it), or a folder where a
        file is wanted (or, with `folder`, a file where a folder is). `allowed`: the one file of
        KIRI's that this option exists to write (names train --out: the names weights)."""
        if allowed and os.path.realpath(path) == os.path.realpath(allowed):
            return Path(path)
        if folder and os.path.exists(path) and not os.path.isdir(path):
            raise KiriError(f"{option} {path} is a file; give a folder")
        if not folder and os.path.isdir(path):
            raise KiriError(f"{option} {path} is a folder; give a file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not folder and not os.path.isdir(parent):   # a typo: not made for it, as a shell's > would not
            raise KiriError(f"cannot write {option} {path}: the folder {parent} does not exist")
        what = self.managed(path)
        if what:
            raise KiriError(f"{option} {path} is {what} of the KIRI home {self.home}; KIRI will not write "
                            "over it: give another file")
        return Path(path)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:   # either does not exist (or cannot be looked at): not the same file
        return False


def load_settings(home=None, engine=None, env=None, missing_config_ok=False):
    """Resolve every setting and check each (Settings.check, and every declared atom's section);
    `home` and `engine` are the command-line flags (None = not given).

    A KIRI_CONFIG naming no file is an error, unless `missing_config_ok` (for `kiri setup`, which
    writes it); KIRI_HOME/config.ini is optional."""
    env = os.environ if env is None else env
    home_path = expand_user(home, "--home") if home else default_home(env)
    check_home(home_path)
    values = dict(DEFAULTS)
    path = config_path(home_path, env)
    file_values, atoms, hosts = read_config_file(path, must_exist=bool(env.get("KIRI_CONFIG")) and not missing_config_ok)
    values.update(file_values)
    origins = {key: f"config file {path}" for key in file_values}
    for key in DEFAULTS:
        if env.get("KIRI_" + key.upper()):
            values[key] = env["KIRI_" + key.upper()]
            origins[key] = "KIRI_" + key.upper()
    if engine:
        values["engine"] = engine
    if values["engine"] not in ENGINES:
        raise KiriError(f"engine must be one of {', '.join(ENGINES)}, got {values['engine']!r}")
    for name, section in atoms.items():   # a declared atom's command or interval is checked now too
        try:
            custom.make_module(name, section)
        except KiriError as e:
            raise KiriError(f"config file {path}: {e}") from None
    settings = Settings(home=home_path, engine=values["engine"], values=values, atoms=atoms, hosts=hosts,
                        origins=origins, config_file=path).check()
    watched = {}
    for name, section in hosts.items():   # each watched host's source is checked now too
        try:
            module = host_atoms.make_module(name, section, settings.number("pulse_interval"))
        except KiriError as e:
            raise KiriError(f"config file {path}: {e}") from None
        if module.SPEC.name in watched:
            raise KiriError(f"config file {path}: hosts {watched[module.SPEC.name]} and {name} would share "
                            f"the atom {module.SPEC.name}; rename one")
        watched[module.SPEC.name] = name
    return settings


def check_home(home):
    """A KIRI home that is a file, or would be inside one, is a mistake: said before anything
    reads or writes there."""
    for place in (home,) + tuple(home.parents):   # the nearest that exists decides
        if place.exists():
            if not place.is_dir():
                where = "it is a file" if place == home else f"it would be inside the file {place}"
                raise KiriError(f"the KIRI home {home} is not a folder: {where} (KIRI_HOME or --home)")
            return


def config_path(home, env=None):
    """The config file: $KIRI_CONFIG if set, else `home`/config.ini."""
    env = os.environ if env is None else env
    return Path(env.get("KIRI_CONFIG") or Path(home) / "config.ini")


def read_config_file(path, must_exist=False):
    """([kiri] section as a dict, {atom name: its [atom:NAME] section}, {host name: its
    [host:NAME] section}); a missing file is empty
    unless `must_exist`. A file that is there but cannot be read is an error, never "empty":
    settings silently left at their defaults (no Telegram, say) would go unnoticed."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise KiriError(f"config file {path} is a folder, not a file")
        if not stat.S_ISREG(mode):   # a pipe would hang the reader, /dev/zero never end
            raise KiriError(f"config file {path} is not a regular file")
        # utf-8-sig: an editor that starts the file with a byte-order mark (Notepad) wrote UTF-8 all the same.
        with open(path, encoding="utf-8-sig") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if must_exist:
            raise KiriError(f"KIRI_CONFIG names {path}, which does not exist") from None
        if os.path.islink(path):
            raise KiriError(f"config file {path} is a link to a file that does not exist") from None
        return {}, {}, {}
    except OSError as e:
        raise KiriError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise KiriError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise KiriError(f"config file {path} is over {MAX_CONFIG_BYTES // 1000} kB: not a KIRI config")
    if "\x00" in text:   # no text file holds one, and no path or command can (a CA file, a disk, a repository)
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise KiriError(f"config file {path} holds a NUL character (line {line}): not a text file")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        raise KiriError(f"config file {path}: {str(e).splitlines()[0]}") from None
    values = dict(parser["kiri"]) if parser.has_section("kiri") else {}
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise KiriError(f"config file {path}: unknown key {unknown[0]!r} in [kiri]")
    atoms, hosts = {}, {}
    for section in parser.sections():
        if section.startswith("host:"):
            hosts[section[len("host:"):].strip()] = dict(parser[section])
        elif section.startswith("atom:"):
            name = section[len("atom:"):].strip()
            if name.lower() in RESERVED:
                raise KiriError(f"config file {path}: [{printable(section, 80)}] takes the name of a built-in atom; "
                                "choose another")
            atoms[name] = dict(parser[section])
        elif section != "kiri":
            raise KiriError(f"config file {path}: unknown section [{printable(section, 80)}] "
                            "(expected [kiri], [atom:NAME] or [host:NAME])")
    secret = any(values.get(key) for key in SECRETS) \
        or any(section.get(key) for section in hosts.values() for key in host_atoms.SECRET_KEYS)
    if secret and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KiriError(f"config file {path} holds a secret but is readable by others; run: chmod 600 {path}")
    return values, atoms, hosts


def write_default_config(home, values=None, path=None):
    """Create `home` and a commented config.ini (mode 0600) listing every key; never overwrite.

    values ({key: text}) are written uncommented; `path` (default home/config.ini) is where."""
    home, values = Path(home), values or {}
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(str(home), 0o700)
    path = Path(path) if path else home / "config.ini"
    if path.exists():
        raise KiriError(f"{path} already exists; edit it (or remove it to start afresh)")
    lines = ["# KIRI settings. Uncomment a key to change it; the environment (KIRI_<KEY>) overrides this file.",
             "# Secrets (telegram_token, mikrotik_password) make KIRI refuse this file unless it is chmod 600.",
             "[kiri]"]
    for key, (default, meaning) in KEYS.items():
        lines += [f"# {meaning}", f"{key} = {values[key]}" if key in values else f"# {key} = {default}"]
    lines += ["", "# Your own atom: a command that prints one JSON object of values, read every interval.",
              "# Fields are name=lo:hi:buckets, or name=learn:buckets to cut them where your readings fall.",
              "# [atom:gpu]", "# schema = T=20:100:8 U=0:100:5", "# command = /usr/local/bin/gpu-stats",
              "# interval = 300", ""]
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def set_config_values(path, values):
    """Set `values` ({key: text}) in the [kiri] section of the config file at `path`, keeping
    every other line; returns the keys whose value changed. A key's line is replaced, else its
    commented `# key = …` line, else it is added to the section. Nothing changed: the file is
    not touched; else it is rewritten atomically, mode 0600 (it may now hold a secret)."""
    path = Path(path)
    current = read_config_file(path)[0]
    changed = [key for key, value in values.items() if current.get(key) != value]
    if not changed:
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    for key in changed:
        _set_line(lines, key, values[key])
    atomic_write(path, "\n".join(lines) + "\n", 0o600)
    return changed


def _set_line(lines, key, value):
    header = next((i for i, line in enumerate(lines) if line.strip().lower() == "[kiri]"), None)
    if header is None:
        lines += ["[kiri]", f"{key} = {value}"]
        return
    start = header + 1
    end = next((i for i in range(start, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    setting = re.compile(rf"\s*{re.escape(key)}\s*[=:]", re.IGNORECASE)
    commented = re.compile(rf"\s*[#;]\s*{re.escape(key)}\s*[=:]", re.IGNORECASE)
    for pattern in (setting, commented):
        found = next((i for i in range(start, end) if pattern.match(lines[i])), None)
        if found is not None:
            lines[found] = f"{key} = {value}"
            if pattern is setting:   # the old value's continuation lines go with it
                while found + 1 < end and lines[found + 1][:1].isspace() and lines[found + 1].strip():
                    del lines[found + 1]
                    end -= 1
            return
    while end > start and not lines[end - 1].strip():
        end -= 1   # after the section's last line, before its blank ones
    lines.insert(end, f"{key} = {value}")
