"""Settings: defaults < config file (INI) < environment (KIRI_*) < command-line flags.

The config file is `KIRI_HOME/config.ini` (or `KIRI_CONFIG`); its `[kiri]` section
holds the keys below, and the environment variable of a key is `KIRI_` + the key in
upper case (`pulse_source` ↔ `KIRI_PULSE_SOURCE`). A config file that holds a secret
must not be readable by others (chmod 600), or KIRI refuses it.
"""

import configparser
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .core.engines import DEFAULT_ENGINE, ENGINES
from .errors import KiriError

DEFAULT_HOME = "~/.kiri"

# key -> default (as text, the way a config file or the environment gives it)
DEFAULTS = {
    "engine": DEFAULT_ENGINE,
    "pulse_source": "system",        # system | mikrotik
    "pulse_disk": "",                # path whose volume D measures; empty = / (Linux) or the data volume (macOS)
    "mikrotik_url": "",              # e.g. https://192.168.88.1
    "mikrotik_user": "",
    "mikrotik_password": "",
    "mikrotik_cafile": "",           # trust this CA file for the router's certificate
    "mikrotik_verify": "yes",        # no = skip certificate verification (explicitly)
    "rhythm_repos": "",              # git repositories whose commits Rhythm counts, separated by ':' or ','
}
SECRETS = ("mikrotik_password",)


@dataclass
class Settings:
    home: Path
    engine: str = DEFAULT_ENGINE
    values: dict = field(default_factory=dict)

    def get(self, key):
        return self.values.get(key, DEFAULTS[key])

    def flag(self, key):
        text = self.get(key).strip().lower()
        if text in ("1", "yes", "true", "on"):
            return True
        if text in ("0", "no", "false", "off"):
            return False
        raise KiriError(f"setting {key} must be yes or no, got {text!r}")

    def paths(self, key):
        text = self.get(key).replace(",", os.pathsep)
        return [Path(p).expanduser() for p in text.split(os.pathsep) if p.strip()]

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
    home_path = Path(home or env.get("KIRI_HOME") or DEFAULT_HOME).expanduser()
    values = dict(DEFAULTS)
    values.update(read_config_file(Path(env.get("KIRI_CONFIG") or home_path / "config.ini")))
    for key in DEFAULTS:
        if env.get("KIRI_" + key.upper()):
            values[key] = env["KIRI_" + key.upper()]
    if engine:
        values["engine"] = engine
    if values["engine"] not in ENGINES:
        raise KiriError(f"engine must be one of {', '.join(ENGINES)}, got {values['engine']!r}")
    return Settings(home=home_path, engine=values["engine"], values=values)


def read_config_file(path):
    """The [kiri] section of an INI file as a dict; a missing file is an empty dict."""
    if not path.exists():
        return {}
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
    return values
