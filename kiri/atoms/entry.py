"""`python -m kiri.atoms.<atom>.<verb> …` runs `kiri <atom> <verb> …`.

The layers point one way: the atoms know nothing of the command line that drives them,
so these entry points must not import kiri.cli. And each verb's flags, output, exit codes
and error messages stay defined once, in the CLI. So the module form does not rebuild the
command: it replaces its own process with `python -m kiri <atom> <verb> <args…>`.
"""

import os
import sys

# The directory holding the `kiri` package this file belongs to (…/kiri/atoms/entry.py).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_as_kiri(atom, verb):
    """Replace this process with `sys.executable -m kiri atom verb <this process's arguments>`,
    the same `kiri` package found first (its directory leads PYTHONPATH). Does not return."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "kiri", atom, verb] + sys.argv[1:]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
