"""Where shipped files live: the repository's data/ and weights/ in a clone, or
<data root>/share/kiri/<kind>/ after a pip install (pyproject.toml's data-files)."""

import site
import sys
import sysconfig
from pathlib import Path

from .errors import KiriError

REPO = Path(__file__).resolve().parent.parent


def install_roots(site_dir=REPO):
    """The directories pip may have put KIRI's data files under for this interpreter, no repeats.

    pip installs data-files under its scheme's "data" directory, which depends on how it
    was run. In order: the prefix the package itself was installed under (`site_dir`,
    the directory holding kiri/, is <data>/lib/pythonX.Y/site-packages; this also covers
    `--prefix`), the active scheme's (a venv; /usr/local on Debian), the user scheme's
    (`--user`: ~/.local, or ~/Library/Python/X.Y for macOS's framework Pythons), and
    sys.prefix and sys.base_prefix as a last resort.
    """
    roots = [Path(site_dir).parent.parent.parent, sysconfig.get_paths()["data"], site.getuserbase(),
             sys.prefix, sys.base_prefix]
    unique = []
    for root in roots:
        if root and str(root) not in unique:
            unique.append(str(root))
    return unique


def shipped(kind, name, checkout=REPO, roots=None):
    """Path of a shipped file, e.g. shipped("weights", "names.json"): the source checkout's
    first, then <root>/share/kiri/<kind>/<name> for each of `roots` (default install_roots())."""
    in_checkout = Path(checkout) / kind / name
    if in_checkout.is_file():
        return in_checkout
    roots = install_roots() if roots is None else roots
    for root in roots:
        installed = Path(root) / "share" / "kiri" / kind / name
        if installed.is_file():
            return installed
    raise KiriError(f"KIRI's shipped {kind}/{name} is missing: not in {checkout} nor under share/kiri in "
                    f"{', '.join(map(str, roots)) or 'no install directory'}; reinstall kiri")
