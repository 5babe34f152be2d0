"""Settings: defaults < config file (INI) < environment (KIRI_*) < command-line flags.

The config file is `KIRI_HOME/config.ini` (or `KIRI_CONFIG`); its `[kiri]` section
holds the same keys as the environment without the `KIRI_` prefix, in lower case.
"""

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from .core.engines import DEFAULT_ENGINE, ENGINES
from .errors import KiriError

DEFAULT_HOME = "~/.kiri"


@dataclass
class Settings:
    home: Path
    engine: str = DEFAULT_ENGINE

    @property
    def db_path(self):
        return self.home / "kiri.db"

    @property
    def weights_dir(self):
        return self.home / "weights"

    @property
    def log_path(self):
        return self.home / "kiri.log"


def load_settings(home=None, engine=None, env=None):
    """Resolve every setting; `home` and `engine` are the command-line flags (None = not given)."""
    env = os.environ if env is None else env
    home_path = Path(home or env.get("KIRI_HOME") or DEFAULT_HOME).expanduser()
    values = {"engine": DEFAULT_ENGINE}
    values.update(read_config_file(Path(env.get("KIRI_CONFIG") or home_path / "config.ini")))
    for key in list(values):
        if env.get("KIRI_" + key.upper()):
            values[key] = env["KIRI_" + key.upper()]
    if engine:
        values["engine"] = engine
    if values["engine"] not in ENGINES:
        raise KiriError(f"engine must be one of {', '.join(ENGINES)}, got {values['engine']!r}")
    return Settings(home=home_path, engine=values["engine"])


def read_config_file(path):
    """The [kiri] section of an INI file as a dict; a missing file is an empty dict."""
    if not path.exists():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise KiriError(f"config file {path}: {str(e).splitlines()[0]}") from None
    return dict(parser["kiri"]) if parser.has_section("kiri") else {}
