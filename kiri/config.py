"""Settings: defaults < config file (INI) < environment (KIRI_*) < command-line flags.

The config file is `KIRI_HOME/config.ini` (or `KIRI_CONFIG`); its `[kiri]` section
holds the keys below, and the environment variable of a key is `KIRI_` + the key in
upper case (`pulse_source` ↔ `KIRI_PULSE_SOURCE`). A config file that holds a secret
must not be readable by others (chmod 600), or KIRI refuses it.
"""

import configparser
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .core.engines import DEFAULT_ENGINE, ENGINES
from .atoms import RESERVED
from .errors import KiriError
from .ground import default_home

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
    "alert_cooldown": ("3600", "seconds during which repeats of one situation merge into one alert"),
    "likelihood_window": ("12", "an atom's recent readings: how many are averaged for its likelihood"),
    "likelihood_history": ("2000", "how many readings before them the likelihood compares with"),
    "likelihood_alert": ("0.1", "flag an atom whose likelihood is above this (between 0 and 1)"),
    "retrain_days": ("7", "each atom retrains on its last N days, every N days"),
    "spawn_after": ("288", "a declared atom with no weights is trained once it has this many readings"),
    "nerve_retrain_answers": ("3", "Nerve retrains after this many new answers (and daily)"),
}
DEFAULTS = {key: default for key, (default, _) in KEYS.items()}
SECRETS = ("mikrotik_password", "telegram_token")
NUMBERS = ("pulse_interval", "rhythm_interval", "drift_interval", "tick", "alert_cooldown", "retrain_days",
           "spawn_after", "nerve_retrain_answers", "likelihood_window", "likelihood_history", "likelihood_alert")


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

    def count(self, key):
        """A number of readings: a whole number greater than 0."""
        value = self.number(key)
        if not value.is_integer():
            raise KiriError(f"setting {key} must be a whole number of readings, got {self.get(key)!r}")
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
        for key in ("likelihood_window", "likelihood_history"):
            self.count(key)
        self.flag("mikrotik_verify")
        return self

    def paths(self, key):
        text = self.get(key).replace(",", os.pathsep)
        return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]

    @property
    def host(self):
        return self.get("host_name").strip() or socket.gethostname().split(".")[0]

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
    file_values, atoms = read_config_file(Path(env.get("KIRI_CONFIG") or home_path / "config.ini"))
    values.update(file_values)
    for key in DEFAULTS:
        if env.get("KIRI_" + key.upper()):
            values[key] = env["KIRI_" + key.upper()]
    if engine:
        values["engine"] = engine
    if values["engine"] not in ENGINES:
        raise KiriError(f"engine must be one of {', '.join(ENGINES)}, got {values['engine']!r}")
    return Settings(home=home_path, engine=values["engine"], values=values, atoms=atoms)


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


def write_default_config(home):
    """Create `home` and a commented config.ini (mode 0600) listing every key; never overwrite."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(str(home), 0o700)
    path = home / "config.ini"
    if path.exists():
        raise KiriError(f"{path} already exists; edit it (or remove it to start afresh)")
    lines = ["# KIRI settings. Uncomment a key to change it; the environment (KIRI_<KEY>) overrides this file.",
             "# Secrets (telegram_token, mikrotik_password) make KIRI refuse this file unless it is chmod 600.",
             "[kiri]"]
    for key, (default, meaning) in KEYS.items():
        lines += [f"# {meaning}", f"# {key} = {default}"]
    lines += ["", "# Your own atom: a command that prints one JSON object of values, read every interval.",
              "# Fields are name=lo:hi:buckets, or name=learn:buckets to cut them where your readings fall.",
              "# [atom:gpu]", "# schema = T=20:100:8 U=0:100:5", "# command = /usr/local/bin/gpu-stats",
              "# interval = 300", ""]
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
