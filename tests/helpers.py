"""Shared test helpers: run the real `python -m kiri` in a subprocess with an isolated KIRI_HOME."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_kiri(*args, home=None, env=None, timeout=300, module="kiri"):
    """Run `python -m <module> args…`; returns the CompletedProcess (text, captured)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if home is not None:
        full_env["KIRI_HOME"] = str(home)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module] + [str(a) for a in args], cwd=str(REPO),
                          env=full_env, capture_output=True, text=True, timeout=timeout)
