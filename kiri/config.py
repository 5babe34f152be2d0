"""Settings: defaults < config file (INI) < environment (KIRI_*) < command-line flags.

The config file is `KIRI_HOME/config.ini` (or `KIRI_CONFIG`); its `[kiri]` section
holds the keys below, and the environment variable of a key is `KIRI_` + the key in
upper case (`pulse_source` ↔ `KIRI_PULSE_SOURCE`). A config file that holds a secret
must not be readable by others (chmod 600), or KIRI refuses it.
"""

import configparser
import os
import re
import socket
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .core.engines import DEFAULT_ENGINE, ENGINES
from .atoms import RESERVED
from .errors import KiriError
from .ground import atomic_write, default_home

# key -> (default, what it means). Values are text, as a config file or the environment gives them.
KEYS = {
    "host_name": ("", "this machine's name in alerts, status and exports; empty = its short hostname"),
    "engine": (DEFAULT_ENGINE, "fast, value (the scalar-autograd reference) or torch (optional)"),
    "pulse_source": ("system", "system (this machine) or mikrotik"),
    "pulse_disk": ("", "path whose volume D measures; empty = / (Linux) or the data volume (macOS)"),
    "mikrotik_url": ("", "RouterOS REST base, e.g. https://192.168.88.1"),
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
    "tick": ("30", "seconds the daemon sleeps between checks for due work"),
    "alert_after": ("2", "an atom alerts when this many readings in a row are over its threshold (or its likelihood is)"),
    "alert_cooldown": ("3600", "seconds during which repeats of one situation merge into one alert"),
    "likelihood_window": ("12", "an atom's recent readings: how many are averaged for its likelihood"),
    "likelihood_history": ("2000", "how many readings before them the likelihood compares with"),
    "likelihood_alert": ("0.1", "flag an atom whose likelihood is above this (between 0 and 1)"),
    "retrain_days": ("7", "each atom retrains on its last N days, every N days"),
    "learn_after": ("288", "an atom with no model trains itself once it has this many real readings (a day at 5 min)"),
    "spawn_after": ("", "the old name of learn_after (used when learn_after is not set)"),
    "nerve_retrain_answers": ("3", "Nerve retrains after this many new answers (at most hourly, and daily)"),
    "retain_days": ("90", "readings, scores and decisions older than this many days are deleted (answers are kept)"),
}
DEFAULTS = {key: default for key, (default, _) in KEYS.items()}
SECRETS = ("mikrotik_password", "telegram_token")
NUMBERS = ("pulse_interval", "rhythm_interval", "drift_interval", "tick", "alert_cooldown", "retrain_days",
           "learn_after", "alert_after", "nerve_retrain_answers", "likelihood_window", "likelihood_history", "likelihood_alert",
           "retain_days")


@dataclass
class Settings:
    home: Path
    engine: str = DEFAULT_ENGINE
    values: dict = field(default_factory=dict)
    atoms: dict = field(default_factory=dict)   # your own atoms: name -> {schema, command, interval, steps}

    def get(self, key):
        return self.values.get(key, DEFAULTS[key])

    def flag(self, key):
        text = self.get(key).strip().lower()
        if text in ("1", "yes", "true", "on"):
            return True
        if text in ("0", "no", "false", "off"):
            return False
        raise KiriError(f"setting {key} must be yes or no, got {text!r}")

    def number(self, key):
        try:
            value = float(self.get(key))
        except ValueError:
            raise KiriError(f"setting {key} must be a number, got {self.get(key)!r}") from None
        if not value > 0:
            raise KiriError(f"setting {key} must be greater than 0, got {self.get(key)!r}")
        return value

    def count(self, key, unit="readings"):
        """A number of readings (or of another `unit`): a whole number greater than 0."""
        value = self.number(key)
        if not value.is_integer():
            raise KiriError(f"setting {key} must be a whole number of {unit}, got {self.get(key)!r}")
        return int(value)

    def fraction(self, key):
        """A level between 0 and 1 (both excluded)."""
        value = self.number(key)
        if value >= 1:
            raise KiriError(f"setting {key} must be below 1, got {self.get(key)!r}")
        return value

    def check(self):
        """Read every number and flag now, so a typo fails at start, not hours later in the loop."""
        for key in NUMBERS:
            self.number(key)
        self.fraction("likelihood_alert")
        for key in ("likelihood_window", "likelihood_history", "learn_after", "alert_after"):
            self.count(key)
        if self.get("spawn_after").strip():
            self.count("spawn_after")
        self.count("retain_days", "days")
        self.flag("mikrotik_verify")
        return self

    def paths(self, key):
        text = self.get(key).replace(",", os.pathsep)
        return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]

    @property
    def learn_after(self):
        """Real readings an atom collects before it trains itself; `spawn_after` is its old name."""
        old_name = self.get("spawn_after").strip() and self.get("learn_after") == DEFAULTS["learn_after"]
        return self.count("spawn_after" if old_name else "learn_after")

    @property
    def host(self):
        return self.get("host_name").strip() or socket.gethostname().split(".")[0]

    def host_of(self, atom):
        """The machine an atom watches: this one, or for a Pulse read from a router, the router."""
        if atom == "pulse" and self.get("pulse_source") == "mikrotik":
            try:
                return urllib.parse.urlsplit(self.get("mikrotik_url")).hostname or self.host
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


def load_settings(home=None, engine=None, env=None):
    """Resolve every setting; `home` and `engine` are the command-line flags (None = not given)."""
    env = os.environ if env is None else env
    home_path = Path(home).expanduser() if home else default_home(env)
    values = dict(DEFAULTS)
    file_values, atoms = read_config_file(config_path(home_path, env))
    values.update(file_values)
    for key in DEFAULTS:
        if env.get("KIRI_" + key.upper()):
            values[key] = env["KIRI_" + key.upper()]
    if engine:
        values["engine"] = engine
    if values["engine"] not in ENGINES:
        raise KiriError(f"engine must be one of {', '.join(ENGINES)}, got {values['engine']!r}")
    return Settings(home=home_path, engine=values["engine"], values=values, atoms=atoms)


def config_path(home, env=None):
    """The config file: $KIRI_CONFIG if set, else `home`/config.ini."""
    env = os.environ if env is None else env
    return Path(env.get("KIRI_CONFIG") or Path(home) / "config.ini")


def read_config_file(path):
    """([kiri] section as a dict, {atom name: its [atom:NAME] section}); a missing file is empty."""
    if not path.exists():
        return {}, {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise KiriError(f"config file {path}: {str(e).splitlines()[0]}") from None
    values = dict(parser["kiri"]) if parser.has_section("kiri") else {}
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise KiriError(f"config file {path}: unknown key {unknown[0]!r} in [kiri]")
    if any(values.get(key) for key in SECRETS) and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KiriError(f"config file {path} holds a secret but is readable by others; run: chmod 600 {path}")
    atoms = {}
    for section in parser.sections():
        if section.startswith("atom:"):
            name = section[len("atom:"):].strip()
            if name.lower() in RESERVED:
                raise KiriError(f"config file {path}: [{section}] takes the name of a built-in atom; choose another")
            atoms[name] = dict(parser[section])
        elif section != "kiri":
            raise KiriError(f"config file {path}: unknown section [{section}] (expected [kiri] or [atom:NAME])")
    return values, atoms


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
    current, _ = read_config_file(path)
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
