"""Where shipped files live: the repository's data/ and weights/, or <prefix>/share/kiri after pip install."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shipped(kind, name):
    """Path of a shipped file, e.g. shipped("weights", "names.json"); prefers a source checkout."""
    in_repo = REPO / kind / name
    if in_repo.exists():
        return in_repo
    installed = Path(sys.prefix) / "share" / "kiri" / kind / name
    return installed if installed.exists() else in_repo
